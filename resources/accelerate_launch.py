"""Teacher DPO and student SFT on several processes (GPUs) through ``accelerate launch``, in a subprocess, so
the Dagster step itself stays one process.

The parent writes the preference pairs (Parquet) and a job file (JSON: teacher folder, output folder, device,
precision, :class:`~resources.training.DPOParams`) to a work folder and runs
``python -m accelerate.commands.launch --config_file CONFIG [--num_processes N] -m resources.accelerate_launch WORK``.
Every launched process runs :func:`~resources.training.train_dpo` (DDP or FSDP, as the config file says) with
``dpo.batch_size`` split across the processes; the main process writes the checkpoint and the loss history.

Student SFT for the evaluation works the same way (TRL ``SFTTrainer``; the fine-tuned student is written to a
folder the step then loads). Warm-up SFT is not launched this way: influence scoring continues the warm-up's
exact AdamW state on one device
per shard, so the student and its optimizer must fit one GPU anyway, and several processes would add nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from resources.models import resolve_dtype
from resources.training import DPOParams, LoraParams, SFTParams, train_dpo

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = "data.parquet"  # the preference pairs (DPO) or instruction/response rows (SFT)
JOB_FILE = "job.json"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class AccelerateLaunch:
    """An accelerate config file (see ``deploy/accelerate/``) and, optionally, the number of processes."""

    config_file: str
    num_processes: int | None = None

    def command(self, work: Path) -> list[str]:
        """The ``accelerate launch`` command line that runs this module's entry point on ``work``."""
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", self.config_file]
        if self.num_processes:
            command += ["--num_processes", str(self.num_processes)]
        return [*command, "-m", __name__, str(work)]


def _launch(launch: AccelerateLaunch, job: dict, data: pl.DataFrame, what: str, log_fn: Callable[[str], None]) -> dict:
    """Run ``job`` (with ``data`` as its table) under ``accelerate launch``; return the main process's result."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        data.write_parquet(work / DATA_FILE)
        (work / JOB_FILE).write_text(json.dumps(job))
        command = launch.command(work)
        log_fn(f"{what} through accelerate: {' '.join(command)}")
        completed = subprocess.run(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"accelerate launch of {what} failed with exit code {completed.returncode} "
                               f"(runtime.accelerate_config={launch.config_file}):\n{completed.stdout[-4000:]}")
        result = json.loads((work / RESULT_FILE).read_text())
    log_fn(f"accelerate ran {what} on {result['processes']} processes ({result['distributed_type']})")
    return result


def run_dpo(
    teacher_folder: str,
    pairs: pl.DataFrame,
    params: DPOParams,
    output_folder: Path,
    device: torch.device,
    precision: str,
    launch: AccelerateLaunch | None = None,
    log_fn: Callable[[str], None] = log.info,
) -> list[dict[str, float]]:
    """:func:`train_dpo` in this process, or under ``accelerate launch`` when ``launch`` is given."""
    if launch is None:
        return train_dpo(teacher_folder, pairs, params, output_folder, device, resolve_dtype(precision))
    job = {"kind": "dpo", "model": teacher_folder, "output": str(output_folder), "device": device.type,
           "precision": precision, "params": dataclasses.asdict(params)}
    return _launch(launch, job, pairs, "DPO", log_fn)["history"]


def run_sft(
    student_folder: str,
    rows: pl.DataFrame,
    params: SFTParams,
    seed: int,
    output_folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    launch: AccelerateLaunch,
    log_fn: Callable[[str], None] = log.info,
) -> None:
    """Student SFT (:func:`~resources.evaluation.sft_student`) under ``accelerate launch``; the fine-tuned
    student is written to ``output_folder``."""
    job = {"kind": "sft", "model": student_folder, "output": str(output_folder), "device": device.type,
           "precision": str(dtype).removeprefix("torch."), "params": dataclasses.asdict(params), "seed": seed}
    _launch(launch, job, rows, "student SFT", log_fn)


def params_from_json(raw: dict) -> DPOParams:
    """Rebuild :class:`DPOParams` from ``dataclasses.asdict`` output."""
    lora = raw.get("lora")
    return DPOParams(**{**raw, "lora": LoraParams(**lora) if lora else None})


def _train(job: dict, data: pl.DataFrame, processes: int) -> list[dict[str, float]]:
    """One launched process's share of ``job``: the global batch is split across ``processes``."""
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if job["device"] == "cuda" else "cpu")
    dtype, output = resolve_dtype(job["precision"]), Path(job["output"])
    if job["kind"] == "dpo":
        params = params_from_json(job["params"])
        params = dataclasses.replace(params, batch_size=max(1, params.batch_size // processes))
        return train_dpo(job["model"], data, params, output, device, dtype)
    from resources.evaluation import sft_student  # imported here: evaluation imports this module

    params = SFTParams(**job["params"])
    params = dataclasses.replace(params, batch_size=max(1, params.batch_size // processes))
    sft_student(job["model"], data, params, job["seed"], device, dtype, output)
    return []


def main(work: Path) -> None:
    """Entry point of one launched process: train on the job in ``work``; the main process writes the results."""
    from accelerate import PartialState

    job = json.loads((work / JOB_FILE).read_text())
    history = _train(job, pl.read_parquet(work / DATA_FILE), int(os.environ.get("WORLD_SIZE", "1")))
    state = PartialState()
    if state.is_main_process:
        result = {"history": history, "processes": state.num_processes, "distributed_type": state.distributed_type}
        (work / RESULT_FILE).write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
