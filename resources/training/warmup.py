"""Warm-up SFT of the student: a plain AdamW loop (so the optimizer state can be saved and continued by influence),
its settings (:class:`WarmupParams`) and the saving and loading of weights plus optimizer state."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from resources.cost.usage import TALLY
from resources.models import load_causal_lm
from resources.training.encoding import EncodedExample, check_choice, collate, token_loss_sums

log = logging.getLogger(__name__)
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_CONFIG = "optimizer.json"
SCHEDULES = ("constant", "ramp_then_hold")
WARMUP_LOSSES = ("example_mean", "token_mean")


@dataclass(frozen=True)
class WarmupParams:
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
    model: PreTrainedModel, window: list[EncodedExample], pad_id: int, config: WarmupParams
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
    config: WarmupParams,
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
            window = [examples[i] for i in order[start : start + width]]
            loss = accumulated_loss(model, window, pad_id, config)
            TALLY.add(tokens_trained=sum(len(example.input_ids) for example in window))
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
