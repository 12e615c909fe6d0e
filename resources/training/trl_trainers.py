"""TRL-based training: teacher DPO (``DPOTrainer``), the SFT/LoRA parameter objects shared with the evaluation's
student SFT, trainer arguments, and saving a trained policy. Runs in-process or under ``accelerate launch``."""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import torch
from transformers import PrinterCallback, Trainer, TrainerCallback

from resources.cost.usage import TALLY
from resources.models import load_causal_lm, resolve_dtype
from resources.synthesis.text_filters import CLOSE_TAG, OPEN_TAG
from resources.training.launch import AccelerateLaunch, process_device, serve, share_of_batch
from resources.training.warmup import check_finite

if TYPE_CHECKING:
    from peft import PeftConfig


log = logging.getLogger(__name__)


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md")


@dataclass(frozen=True)
class LoraParams:
    """A LoRA adapter for the teacher's DPO; it is merged into the weights before the checkpoint is saved."""

    r: int
    alpha: int
    dropout: float
    target_modules: str | list[str]

    def peft_config(self) -> PeftConfig:
        """The peft ``LoraConfig`` of these parameters."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


@dataclass(frozen=True)
class SFTParams:
    """Student fine-tuning (TRL SFT) hyperparameters shared by every dataset being compared."""

    learning_rate: float
    epochs: float
    batch_size: int
    max_length: int
    activation_checkpointing: bool = False


@dataclass(frozen=True)
class DPOParams:
    """Teacher DPO hyperparameters (the paper: beta 0.1, lr 1e-6, one epoch, batch 2)."""

    beta: float
    learning_rate: float
    epochs: float
    batch_size: int
    max_length: int
    seed: int
    lora: LoraParams | None
    activation_checkpointing: bool = False


def trainer_arguments(
    output_dir: str, learning_rate: float, epochs: float, batch_size: int, max_length: int, seed: int,
    device: torch.device | str, dtype: torch.dtype, activation_checkpointing: bool,
) -> dict[str, object]:
    """The TRL config arguments shared by teacher DPO and student SFT: log every step, save nothing, no
    reporting or progress bars, CPU or bf16 from ``device`` and ``dtype``. ``activation_checkpointing`` is
    passed explicitly because TRL turns it on by default: it recomputes every layer's forward during backward,
    trading compute for memory (the same weights; benchmarks/activation_checkpointing.py measures the cost)."""
    return {
        "output_dir": output_dir, "learning_rate": learning_rate, "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size, "max_length": max_length, "logging_steps": 1,
        "activation_checkpointing": activation_checkpointing,
        "save_strategy": "no", "report_to": [], "seed": seed, "use_cpu": torch.device(device).type == "cpu",
        "bf16": dtype == torch.bfloat16, "disable_tqdm": True,
    }


def tokens_seen(history: list[dict[str, float]]) -> int:
    """The tokens a TRL training saw (its cumulative ``num_tokens`` metric, every process counted; the attention
    mask's tokens of every batch: DPO counts chosen and rejected), from its log history; 0 when not logged."""
    return int(max((entry.get("num_tokens", 0) for entry in history), default=0))


class _LossRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
        if logs and "loss" in logs:
            self.history.append({k: float(v) for k, v in logs.items() if isinstance(v, int | float)})


def teacher_completion(text: str, target: str) -> str:
    """The assistant turn DPO scores for one side of a pair: a parsed instruction re-tagged, or a raw output
    after the ``<instruction>`` prefill it was sampled from (so the turn is exactly what the teacher wrote)."""
    if target == "raw_output":
        return f"{OPEN_TAG}{text}"
    return f"{OPEN_TAG}{text}{CLOSE_TAG}"


def dpo_dataset(pairs: pl.DataFrame) -> list[dict[str, list[dict[str, str]]]]:
    """Conversational DPO records: the synthesis prompt as user turn, the pair's texts as completions
    (formatted by its ``target`` column; tables without one hold instructions)."""
    targets = pairs["target"] if "target" in pairs.columns else pl.repeat("instruction", pairs.height, eager=True)
    return [
        {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": teacher_completion(chosen, target)}],
            "rejected": [{"role": "assistant", "content": teacher_completion(rejected, target)}],
        }
        for prompt, chosen, rejected, target in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"], targets,
                                                    strict=True)
    ]


def train_dpo(
    teacher_folder: str,
    pairs: pl.DataFrame,
    params: DPOParams,
    output_folder: Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, float]]:
    """DPO-tune the teacher at ``teacher_folder`` on ``pairs``; save it to ``output_folder``; return logs.

    With ``params.lora`` only an adapter is trained (its reference is the adapter-disabled base, so no second
    model is loaded) and the saved checkpoint is the base with the adapter merged in: a plain causal LM.
    Under ``accelerate launch`` every process calls this; only the main process writes ``output_folder``."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if pairs.height == 0:
        raise ValueError("DPO needs at least one preference pair; preference_pairs is empty")
    model, tokenizer = load_causal_lm(teacher_folder, device, dtype)
    reference = None if params.lora else load_causal_lm(teacher_folder, device, dtype)[0]
    recorder = _LossRecorder()
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(
            **trainer_arguments(scratch, params.learning_rate, params.epochs, params.batch_size, params.max_length,
                                params.seed, device, dtype, params.activation_checkpointing),
            beta=params.beta,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=reference,
            args=args,
            train_dataset=Dataset.from_list(dpo_dataset(pairs)),
            processing_class=tokenizer,
            callbacks=[recorder],
            peft_config=params.lora.peft_config() if params.lora else None,
        )
        trainer.remove_callback(PrinterCallback)  # the step log gets the history, not raw dicts on stdout
        if len(trainer.train_dataset) == 0:
            raise ValueError(
                f"every preference pair's prompt is longer than dpo.max_length={params.max_length} tokens; "
                "raise dpo.max_length"
            )
        trainer.train()
    for entry in recorder.history:
        check_finite(entry["loss"], "DPO loss")
    save_policy(trainer, output_folder, params.lora is not None, dtype)
    return recorder.history


def _dpo_job(job: dict, pairs: pl.DataFrame) -> list[dict[str, float]]:
    """One launched process's share of a DPO job (the global batch split across the processes)."""
    raw = job["params"]
    lora = LoraParams(**raw["lora"]) if raw.get("lora") else None
    params = DPOParams(**{**raw, "lora": lora, "batch_size": share_of_batch(raw["batch_size"])})
    return train_dpo(job["model"], pairs, params, Path(job["output"]), process_device(job),
                     resolve_dtype(job["precision"]))


def run_dpo(
    teacher_folder: str, pairs: pl.DataFrame, params: DPOParams, output_folder: Path, device: torch.device,
    precision: str, launch: AccelerateLaunch | None = None, log_fn: Callable[[str], None] = log.info,
) -> list[dict[str, float]]:
    """:func:`train_dpo` here, or under ``accelerate launch`` (this module as entry point) with ``launch``; the
    tokens it saw are added to the usage tally."""
    if launch is None:
        history = train_dpo(teacher_folder, pairs, params, output_folder, device, resolve_dtype(precision))
    else:
        job = {"model": teacher_folder, "output": str(output_folder), "device": device.type, "precision": precision,
               "params": dataclasses.asdict(params)}
        history = launch.run(__name__, job, pairs, "DPO", log_fn)["history"]
    TALLY.add(tokens_trained=tokens_seen(history))
    return history


def save_policy(trainer: Trainer, output_folder: Path, merge_adapter: bool, dtype: torch.dtype) -> None:
    """Write the trained model and tokenizer as a full checkpoint (``save_model`` gathers FSDP shards); with a
    LoRA adapter, merge it into the base weights. Every process must call this; the main process writes."""
    trainer.save_model(str(output_folder))
    if trainer.accelerator.is_main_process:
        (output_folder / "training_args.bin").unlink(missing_ok=True)
        if merge_adapter:
            merge_adapter_in_place(output_folder, dtype)
    trainer.accelerator.wait_for_everyone()


def merge_adapter_in_place(folder: Path, dtype: torch.dtype) -> None:
    """Replace the peft adapter saved in ``folder`` by its base model with the adapter merged in."""
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=dtype).merge_and_unload()
    for name in ADAPTER_FILES:
        (folder / name).unlink(missing_ok=True)
    merged.save_pretrained(folder, safe_serialization=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), _dpo_job)
