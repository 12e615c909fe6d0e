"""Training engines: warm-up SFT of the student (plain loop) and teacher DPO (TRL ``DPOTrainer``).

Warm-up uses a plain AdamW loop rather than TRL's ``SFTTrainer`` on purpose: influence scoring must
continue *this exact optimizer* (same hyperparameters, constant learning rate, its moments), and
the state must be saved as safetensors. ``SFTTrainer`` decays the learning rate to zero by default
and checkpoints optimizer state with pickle; the loop below is 20 lines and has neither problem.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, Trainer, TrainerCallback

from resources.examples import EncodedExample, collate, per_example_loss
from resources.models import load_causal_lm

if TYPE_CHECKING:
    from peft import PeftConfig

log = logging.getLogger(__name__)
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_CONFIG = "optimizer.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md")


@dataclass(frozen=True)
class WarmupConfig:
    """Warm-up SFT hyperparameters (the paper: lr 5e-6)."""

    learning_rate: float = 5e-6
    epochs: int = 1
    batch_size: int = 2
    weight_decay: float = 0.0
    seed: int = 0


def check_finite(value: float, what: str) -> float:
    """Raise FloatingPointError naming ``what`` when a loss is NaN or infinite."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is {value}: training diverged or the data is degenerate")
    return value


def warmup_sft(
    model: PreTrainedModel,
    examples: list[EncodedExample],
    pad_id: int,
    config: WarmupConfig,
    log_fn: Callable[[str], None] = log.info,
) -> tuple[torch.optim.AdamW, list[float]]:
    """Fine-tune ``model`` in place on ``examples``; return the optimizer (with its state) and step losses."""
    if not examples:
        raise ValueError("warm-up needs at least one example")
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    order = list(range(len(examples)))
    losses: list[float] = []
    model.train()
    for epoch in range(config.epochs):
        random.Random(config.seed + epoch).shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batch = collate([examples[i] for i in order[start : start + config.batch_size]], pad_id)
            optimizer.zero_grad(set_to_none=True)
            loss = per_example_loss(model, batch).mean()
            loss.backward()
            optimizer.step()
            losses.append(check_finite(loss.item(), f"warm-up loss at step {len(losses) + 1}"))
        log_fn(f"warm-up epoch {epoch + 1}/{config.epochs}: {len(losses)} steps, last loss {losses[-1]:.4f}")
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

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    def peft_config(self) -> PeftConfig:
        """The peft ``LoraConfig`` of these parameters."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


@dataclass(frozen=True)
class SFTParams:
    """Student fine-tuning (TRL SFT) hyperparameters shared by every dataset being compared."""

    learning_rate: float = 2e-5
    epochs: float = 1.0
    batch_size: int = 4
    max_length: int = 256


@dataclass(frozen=True)
class DPOParams:
    """Teacher DPO hyperparameters (the paper: beta 0.1, lr 1e-6, one epoch, batch 2)."""

    beta: float = 0.1
    learning_rate: float = 1e-6
    epochs: float = 1.0
    batch_size: int = 2
    max_length: int = 512
    seed: int = 0
    lora: LoraParams | None = None


def trainer_arguments(
    output_dir: str, learning_rate: float, epochs: float, batch_size: int, max_length: int, seed: int,
    device: torch.device | str, dtype: torch.dtype,
) -> dict[str, object]:
    """The TRL config arguments shared by teacher DPO and student SFT: log every step, save nothing, no
    reporting or progress bars, CPU or bf16 from ``device`` and ``dtype``."""
    return {
        "output_dir": output_dir, "learning_rate": learning_rate, "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size, "max_length": max_length, "logging_steps": 1,
        "save_strategy": "no", "report_to": [], "seed": seed, "use_cpu": torch.device(device).type == "cpu",
        "bf16": dtype == torch.bfloat16, "disable_tqdm": True,
    }


class _LossRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
        if logs and "loss" in logs:
            self.history.append({k: float(v) for k, v in logs.items() if isinstance(v, int | float)})


def dpo_dataset(pairs: pl.DataFrame) -> list[dict[str, list[dict[str, str]]]]:
    """Conversational DPO records: the synthesis prompt as user turn, tagged instructions as completions."""
    return [
        {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": f"<instruction>{chosen}</instruction>"}],
            "rejected": [{"role": "assistant", "content": f"<instruction>{rejected}</instruction>"}],
        }
        for prompt, chosen, rejected in pairs.select("prompt", "chosen", "rejected").iter_rows()
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
                                params.seed, device, dtype),
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
