"""Shared fixtures: a test profile on tiny random models with every location in a temp folder."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagster_project.settings import Settings, load_settings
from tests.helpers import write_profile


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the session, so tiny models are built once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def profile_path(tmp_path: Path, model_cache: Path) -> Path:
    """A settings file for the test profile with all outputs under ``tmp_path``."""
    return write_profile(tmp_path, model_cache)


@pytest.fixture
def settings(profile_path: Path) -> Settings:
    """The validated test settings."""
    return load_settings(str(profile_path))


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A real S3 API (moto server) on loopback with a bucket ``montessori``; yields a boto3 client."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-p", str(port), "-H", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    import boto3
    import s3fs

    # fsspec caches one S3FileSystem per set of arguments; a cached one still points at an earlier test's server
    s3fs.S3FileSystem.clear_instance_cache()
    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="montessori")
            break
        except Exception:  # noqa: BLE001 - the server is still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    yield boto3.client("s3", endpoint_url=endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    server.terminate()
    server.wait(timeout=30)
