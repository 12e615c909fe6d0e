"""The warm student: split the warm-up rows off the candidates and train the warm-up from the base student."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from resources.models import load_causal_lm
from resources.training.encoding import encode_pairs
from resources.training.warmup import WarmupParams, save_training_state, warmup_sft


def split_warmup(kept: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split kept samples by synthesis prompt: whole prompts go to warm-up, the rest are candidates.

    Splitting by prompt keeps every candidate prompt's samples together, so pairs can be formed."""
    prompt_ids = sorted(kept["prompt_id"].unique().to_list())
    if len(prompt_ids) < 2:
        raise ValueError(f"need kept samples from at least 2 prompts to split warm-up/candidates, got {prompt_ids}")
    random.Random(seed).shuffle(prompt_ids)
    count = min(len(prompt_ids) - 1, max(1, round(fraction * len(prompt_ids))))
    warm = kept.filter(pl.col("prompt_id").is_in(prompt_ids[:count]))
    return warm, kept.filter(~pl.col("prompt_id").is_in(prompt_ids[:count]))


def train_warm_student(
    student_folder: str,
    rows: pl.DataFrame,
    config: WarmupParams,
    max_length: int,
    output_folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
    truncation: str = "left",
) -> list[float]:
    """Warm the student up on ``rows`` (instruction, response), encoded with ``truncation`` (see
    :func:`resources.training.encoding.encode_example`), and save model + optimizer state."""
    model, tokenizer = load_causal_lm(student_folder, device, dtype)
    examples = encode_pairs(
        tokenizer, rows["instruction"].to_list(), rows["response"].to_list(), max_length, truncation
    )
    optimizer, losses = warmup_sft(model, examples, tokenizer.pad_token_id, config, log)
    save_training_state(model, tokenizer, optimizer, output_folder)
    return losses
