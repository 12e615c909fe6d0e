"""Resumable runner of an experiment's (arm, replicate) jobs.

Each finished job's result is written as one JSON file (atomically: a kill leaves the old state or the
whole new file, never a part), so a rerun after a kill skips every finished job and recomputes only the
rest. A stored result whose ``key`` differs from the run's (the design changed) is recomputed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from resources.storage.tables import publish_bytes

RESERVED = ("arm", "replicate", "key", "seconds")


@dataclass(frozen=True)
class Job:
    """One arm of one replicate, of one ``study`` of the experiment ("": the first; a later one keeps its
    records in a subfolder of its name, so an arm may be measured in several studies)."""

    arm: str
    replicate: int
    study: str = ""

    @property
    def file_name(self) -> str:
        """The job's result file, relative to the jobs folder."""
        return f"{self.study}/{self.arm}-r{self.replicate}.json" if self.study else f"{self.arm}-r{self.replicate}.json"

    @property
    def label(self) -> str:
        """The job's study and arm, for progress lines."""
        return f"{self.study} {self.arm}" if self.study else self.arm


def plan_studies(studies: Mapping[str, Sequence[str]], replicates: int) -> list[Job]:
    """Every (study, arm, replicate) of ``studies`` (study name -> arms), replicate by replicate and within a
    replicate study by study: an interrupted run leaves whole replicates of every study."""
    return [Job(arm, replicate, study) for replicate in range(replicates)
            for study, arms in studies.items() for arm in arms]


def _stored(path: Path, key: str) -> dict | None:
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record.get("key") == key else None


def _progress(done: int, total: int, job: Job, text: str) -> str:
    return f"[{done}/{total}] {job.label} replicate {job.replicate}: {text}"


def _metrics(record: Mapping) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in RESERVED and isinstance(v, int | float))


def run_jobs(
    jobs: Sequence[Job],
    run: Callable[[Job], Mapping[str, object]],
    folder: Path,
    key: str = "",
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run each job through ``run`` (which returns the job's JSON-serializable results, e.g. metrics) unless
    ``folder`` already holds its result under the same ``key``; store each result as soon as it is done.
    Logs one line when a job starts and one when it is done or skipped (with the time left from
    :func:`time_left`). Returns every job's record: arm, replicate, key, seconds and the results."""
    folder = Path(folder)
    records: list[dict] = []
    durations: dict[str, list[float]] = {}  # seconds of the jobs run now, per arm
    pending = [job for job in jobs if _stored(folder / job.file_name, key) is None]
    for number, job in enumerate(jobs, 1):
        path = folder / job.file_name
        stored = _stored(path, key)
        if stored is not None:
            records.append(stored)
            log(_progress(number, len(jobs), job, f"finished earlier, skipped ({_metrics(stored)})"))
            continue
        log(_progress(number, len(jobs), job, "started"))
        started = time.monotonic()
        result = dict(run(job))
        clash = [name for name in RESERVED if name in result]
        if clash:
            raise ValueError(f"job results may not use the reserved name(s) {clash}")
        record = {"arm": job.arm, "replicate": job.replicate, "key": key,
                  "seconds": time.monotonic() - started, **result}
        publish_bytes(path, json.dumps(record, indent=2).encode())
        records.append(record)
        durations.setdefault(job.label, []).append(record["seconds"])
        left = time_left(durations, pending[sum(map(len, durations.values())):])
        log(_progress(number, len(jobs), job,
                      f"done in {record['seconds']:.0f} s ({_metrics(record)}); about {left / 60:.0f} min left"))
    return records


def time_left(durations: Mapping[str, Sequence[float]], pending: Sequence[Job]) -> float:
    """Seconds the ``pending`` jobs should take: each at the mean duration of the finished jobs of its arm (by
    :attr:`Job.label`; arms cost differently: the first arm of a replicate may make every arm's data), or of all
    finished jobs while none of its arm has finished."""
    finished = [seconds for arm in durations.values() for seconds in arm]
    overall = sum(finished) / len(finished) if finished else 0.0
    mean = {arm: sum(seconds) / len(seconds) for arm, seconds in durations.items() if seconds}
    return sum(mean.get(job.label, overall) for job in pending)
