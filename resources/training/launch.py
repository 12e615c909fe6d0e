"""A generic ``accelerate launch`` runner: train on several processes (GPUs) in a subprocess, so the Dagster step
itself stays one process.

The parent writes the training table (Parquet) and a job file (JSON) to a work folder and runs
``python -m accelerate.commands.launch --config_file CONFIG [--num_processes N] -m ENTRY_MODULE WORK``. The entry
module (teacher DPO: ``resources.training``; student SFT: ``resources.evaluation``) calls :func:`serve` with its
training function; every launched process trains its share, the main process writes the result. Warm-up SFT is not
launched this way: influence continues the warm-up's exact AdamW state on one device per shard, so the student
and its optimizer must fit one GPU anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = "data.parquet"  # the preference pairs (DPO) or instruction/response rows (SFT)
JOB_FILE = "job.json"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class AccelerateLaunch:
    """An accelerate config file (see ``deploy/accelerate/``) and, optionally, the number of processes."""

    config_file: str
    num_processes: int | None = None

    def command(self, entry_module: str, work: Path) -> list[str]:
        """The ``accelerate launch`` command line that runs ``entry_module`` on ``work``."""
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", self.config_file]
        if self.num_processes:
            command += ["--num_processes", str(self.num_processes)]
        return [*command, "-m", entry_module, str(work)]

    def run(self, entry_module: str, job: dict, data: pl.DataFrame, what: str, log_fn: Callable[[str], None]) -> dict:
        """Run ``job`` (with ``data`` as its table) under ``accelerate launch``; return the main process's result."""
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            data.write_parquet(work / DATA_FILE)
            (work / JOB_FILE).write_text(json.dumps(job))
            command = self.command(entry_module, work)
            log_fn(f"{what} through accelerate: {' '.join(command)}")
            completed = subprocess.run(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, check=False)
            if completed.returncode != 0:
                raise RuntimeError(f"accelerate launch of {what} failed with exit code {completed.returncode} "
                                   f"(runtime.accelerate_config={self.config_file}):\n{completed.stdout[-4000:]}")
            result = json.loads((work / RESULT_FILE).read_text())
        log_fn(f"accelerate ran {what} on {result['processes']} processes ({result['distributed_type']})")
        return result


def process_device(job: dict) -> torch.device:
    """The device of this launched process (its local rank's GPU, or the CPU)."""
    return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if job["device"] == "cuda" else "cpu")


def share_of_batch(batch_size: int) -> int:
    """This process's part of a global batch split across the launched processes."""
    return max(1, batch_size // int(os.environ.get("WORLD_SIZE", "1")))


def serve(work: Path, train: Callable[[dict, pl.DataFrame], list[dict[str, float]]]) -> None:
    """Entry point of one launched process: ``train`` on the job in ``work``; the main process writes the result."""
    from accelerate import PartialState

    job = json.loads((work / JOB_FILE).read_text())
    history = train(job, pl.read_parquet(work / DATA_FILE))
    state = PartialState()
    if state.is_main_process:
        result = {"history": history, "processes": state.num_processes, "distributed_type": state.distributed_type}
        (work / RESULT_FILE).write_text(json.dumps(result))
