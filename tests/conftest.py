"""Shared fixtures: a test profile on tiny random models with every location in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dagster_project.settings import PROFILE_DIR, Settings, load_settings


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the session, so tiny models are built once."""
    return tmp_path_factory.mktemp("models")


def write_profile(folder: Path, model_cache: Path, **overrides: dict) -> Path:
    """Copy the bundled test profile with storage under ``folder`` and ``overrides`` merged per block."""
    raw = yaml.safe_load((PROFILE_DIR / "test.yaml").read_text())
    raw["storage"] = {"tables": str(folder / "tables"), "checkpoints": str(folder / "checkpoints")}
    raw["models"]["cache_dir"] = str(model_cache)
    for block, values in overrides.items():
        raw.setdefault(block, {}).update(values)
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


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
