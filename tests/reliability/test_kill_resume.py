"""SIGKILL a real materialization subprocess mid-generation and mid-influence; the rerun resumes from the
last saved chunk (its log says how many items were reused) and ends identical to an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources.storage.tables import TableStore, frame_hash
from tests.helpers import write_profile

CHUNKED = {"synthesis": {"num_prompts": 8, "chunk_size": 1}, "influence": {"chunk_size": 1, "shards": 1}}


def start(profile: Path, home: Path, select: str) -> subprocess.Popen:
    """``montessori run`` in its own process group (so the kill takes every child with it)."""
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    command = [sys.executable, "-m", "dagster_project.cli", "run", "--profile", str(profile), "--select", select]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def kill_after_first_chunk(process: subprocess.Popen, chunks: Path, timeout: float = 300) -> int:
    """SIGKILL ``process`` as soon as a chunk file appears under ``chunks``; return the chunks saved then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = len(list(chunks.rglob("*.parquet"))) if chunks.exists() else 0
        if saved:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return saved
        assert process.poll() is None, "the run ended before any chunk was saved:\n" + process.stdout.read()
        time.sleep(0.01)
    raise TimeoutError("no chunk was saved in time")


def run_to_end(profile: Path, home: Path, select: str) -> str:
    process = start(profile, home, select)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def table(folder: Path, name: str) -> str:
    """The content hash of the one stored version of ``name`` (a run writes one)."""
    (path,) = (folder / "tables" / "profile" / name).glob("*.parquet")
    return frame_hash(TableStore.read(path))


@pytest.mark.parametrize("name, select, chunk_folder, reused", [
    ("synthetic_instructions", "+synthetic_instructions", "generation_cache",
     r"generation: reused (\d+) of \d+ prompts from saved chunks"),
    ("influence_scores", "*influence_scores", "influence_cache", r"influence cache \w+: reused (\d+) scores"),
])
def test_killed_run_resumes_from_the_last_chunk(
    tmp_path: Path, model_cache: Path, name: str, select: str, chunk_folder: str, reused: str
) -> None:
    interrupted, clean = tmp_path / "interrupted", tmp_path / "clean"
    for folder in (interrupted, clean):
        folder.mkdir()
        (folder / "home").mkdir()
    profile = write_profile(interrupted, model_cache, **CHUNKED)
    if name == "influence_scores":  # upstream first, so the kill lands in influence scoring
        run_to_end(profile, interrupted / "home", "*warm_student")

    process = start(profile, interrupted / "home", select)
    saved = kill_after_first_chunk(process, interrupted / "tables" / chunk_folder)
    assert process.returncode == -signal.SIGKILL
    assert not (interrupted / "tables" / "profile" / name).exists(), "nothing half-written"

    output = run_to_end(profile, interrupted / "home", select)
    counts = [int(n) for n in re.findall(reused, output)]
    assert counts and counts[0] >= saved, output[-3000:]

    run_to_end(write_profile(clean, model_cache, **CHUNKED), clean / "home", select)
    assert table(interrupted, name) == table(clean, name)
