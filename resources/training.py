"""Training engines: warm-up SFT of the student (plain loop) and teacher DPO (TRL ``DPOTrainer``).

Warm-up uses a plain AdamW loop rather than TRL's ``SFTTrainer`` on purpose: influence scoring must
continue *this exact optimizer* (same hyperparameters, the learning rate the schedule holds at the end,
its moments), and the state must be saved as safetensors, not pickle. The loop reproduces what the
official warm-up gets from the HF Trainer (transformers 4.44.2, ``warmup_stable_decay`` with warm-up
ratio 1, stable and decay 0, ``min_lr_ratio`` 1): ``ramp_then_hold``; see :class:`WarmupConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, Trainer, TrainerCallback

from resources.accelerate_launch import AccelerateLaunch, process_device, serve, share_of_batch
from resources.examples import EncodedExample, check_choice, collate, token_loss_sums
from resources.models import load_causal_lm, resolve_dtype
from resources.text import CLOSE_TAG, OPEN_TAG

if TYPE_CHECKING:
    from peft import PeftConfig

log = logging.getLogger(__name__)
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_CONFIG = "optimizer.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md")
SCHEDULES = ("constant", "ramp_then_hold")
WARMUP_LOSSES = ("example_mean", "token_mean")


@dataclass(frozen=True)
class WarmupConfig:
    """Warm-up SFT hyperparameters (the paper: lr 5e-6; the official run: effective batch 32, ramp then hold,
    token mean).

    - ``batch_size`` examples per forward pass; ``gradient_accumulation`` passes per optimizer step, so the
      effective batch is their product. As in the HF Trainer, an epoch makes ``max(1, passes //
      gradient_accumulation)`` steps: rows past the last full accumulation window are not trained on.
    - ``schedule``: ``constant`` keeps ``learning_rate``; ``ramp_then_hold`` raises it linearly from 0 over
      ``rows * epochs // effective batch`` optimizer steps (step k uses ``learning_rate * k / ramp``), then
      holds it. Influence continues the optimizer at the held rate.
    - ``loss``: ``example_mean`` is the mean of the examples' mean token losses; ``token_mean`` is the
      token-weighted mean over every labelled token of the whole accumulated batch (HF's loss with
      ``num_items_in_batch``)."""

    learning_rate: float
    epochs: int
    batch_size: int
    weight_decay: float
    seed: int
    gradient_accumulation: int
    schedule: str
    loss: str

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"warm-up {name} must be at least 1, got {getattr(self, name)}")
        check_choice(self.schedule, SCHEDULES, "warm-up schedule")
        check_choice(self.loss, WARMUP_LOSSES, "warm-up loss")

    @property
    def effective_batch(self) -> int:
        """Examples per optimizer step."""
        return self.batch_size * self.gradient_accumulation

    def steps_per_epoch(self, rows: int) -> int:
        """Optimizer steps one epoch over ``rows`` examples makes."""
        return max(1, math.ceil(rows / self.batch_size) // self.gradient_accumulation)

    def ramp_steps(self, rows: int) -> int:
        """Optimizer steps over which ``ramp_then_hold`` raises the learning rate (0: no ramp)."""
        return rows * self.epochs // self.effective_batch if self.schedule == "ramp_then_hold" else 0

    def learning_rate_at(self, step: int, rows: int) -> float:
        """The learning rate of optimizer step ``step`` (from 0) of a warm-up on ``rows`` examples; at the
        step count, the rate the optimizer is left with (what influence's probe step uses)."""
        ramp = self.ramp_steps(rows)
        return self.learning_rate * (step / max(1, ramp)) if step < ramp else self.learning_rate


def check_finite(value: float, what: str) -> float:
    """Raise FloatingPointError naming ``what`` when a loss is NaN or infinite."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is {value}: training diverged or the data is degenerate")
    return value


def accumulated_loss(
    model: PreTrainedModel, window: list[EncodedExample], pad_id: int, config: WarmupConfig
) -> float:
    """Backpropagate the ``config.loss`` of one optimizer step's examples, ``config.batch_size`` at a time
    (gradients add up in ``.grad``); return the loss value."""
    token_mean = config.loss == "token_mean"
    normalizer = max(1, sum(e.label_count for e in window)) if token_mean else len(window)
    total = 0.0
    for start in range(0, len(window), config.batch_size):
        sums, counts = token_loss_sums(model, collate(window[start : start + config.batch_size], pad_id))
        part = sums.sum() if token_mean else (sums / counts.clamp(min=1)).sum()
        (part / normalizer).backward()
        total += part.item()
    return total / normalizer


def warmup_sft(
    model: PreTrainedModel,
    examples: list[EncodedExample],
    pad_id: int,
    config: WarmupConfig,
    log_fn: Callable[[str], None] = log.info,
) -> tuple[torch.optim.AdamW, list[float]]:
    """Fine-tune ``model`` in place on ``examples``; return the optimizer (with its state, its learning rate
    the one the schedule holds after the last step) and the step losses."""
    if not examples:
        raise ValueError("warm-up needs at least one example")
    rows = len(examples)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps, width = config.steps_per_epoch(rows), config.effective_batch
    if steps * width < rows:
        log_fn(f"warm-up: {rows - steps * width} of {rows} rows per epoch fill no whole accumulation window of "
               f"{width} and are not trained on")
    order = list(range(rows))
    losses: list[float] = []
    model.train()
    for epoch in range(config.epochs):
        random.Random(config.seed + epoch).shuffle(order)
        for start in range(0, steps * width, width):
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate_at(len(losses), rows)
            optimizer.zero_grad(set_to_none=True)
            loss = accumulated_loss(model, [examples[i] for i in order[start : start + width]], pad_id, config)
            optimizer.step()
            losses.append(check_finite(loss, f"warm-up loss at step {len(losses) + 1}"))
        log_fn(f"warm-up epoch {epoch + 1}/{config.epochs}: {len(losses)} steps, last loss {losses[-1]:.4f}")
    for group in optimizer.param_groups:
        group["lr"] = config.learning_rate_at(len(losses), rows)
    model.eval()
    return optimizer, losses


def save_training_state(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, optimizer: torch.optim.AdamW, folder: Path
) -> None:
    """Write model, tokenizer and AdamW state (moments as safetensors, hyperparameters as JSON)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param)
        if state:
            for key in ("exp_avg", "exp_avg_sq", "step"):
                tensors[f"{key}/{name}"] = state[key].detach().reshape(-1).clone() if key == "step" else state[
                    key
                ].detach().contiguous()
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    group = optimizer.param_groups[0]
    hyper = {k: group[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad")}
    (folder / OPTIMIZER_CONFIG).write_text(json.dumps(hyper))


def load_training_state(
    folder: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.optim.AdamW]:
    """Load what :func:`save_training_state` wrote: model, tokenizer and an AdamW with its state."""
    model, tokenizer = load_causal_lm(folder, device, dtype)
    hyper = json.loads((Path(folder) / OPTIMIZER_CONFIG).read_text())
    hyper["betas"] = tuple(hyper["betas"])
    optimizer = torch.optim.AdamW(model.parameters(), **hyper)
    tensors = load_file(str(Path(folder) / OPTIMIZER_FILE), device=str(model.device))
    for name, param in model.named_parameters():
        if f"step/{name}" in tensors:
            optimizer.state[param] = {
                "step": tensors[f"step/{name}"].to("cpu").reshape(()),
                "exp_avg": tensors[f"exp_avg/{name}"],
                "exp_avg_sq": tensors[f"exp_avg_sq/{name}"],
            }
    model.eval()
    return model, tokenizer, optimizer


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
    """:func:`train_dpo` here, or under ``accelerate launch`` (this module as entry point) with ``launch``."""
    if launch is None:
        return train_dpo(teacher_folder, pairs, params, output_folder, device, resolve_dtype(precision))
    job = {"model": teacher_folder, "output": str(output_folder), "device": device.type, "precision": precision,
           "params": dataclasses.asdict(params)}
    return launch.run(__name__, job, pairs, "DPO", log_fn)["history"]


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
