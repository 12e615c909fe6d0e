"""Student-side stages: the warm-up split, warm-up training and influence scoring of candidates."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import polars as pl
import torch

from resources.examples import encode_pairs
from resources.generation import rate_logger
from resources.influence import make_influence_engine
from resources.influence_cache import SCORE_COLUMNS, InfluenceCache
from resources.models import load_causal_lm
from resources.training import WarmupConfig, load_training_state, save_training_state, warmup_sft


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
    config: WarmupConfig,
    max_length: int,
    output_folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
) -> list[float]:
    """Warm the student up on ``rows`` (instruction, response) and save model + optimizer state."""
    model, tokenizer = load_causal_lm(student_folder, device, dtype)
    examples = encode_pairs(tokenizer, rows["instruction"].to_list(), rows["response"].to_list(), max_length)
    optimizer, losses = warmup_sft(model, examples, tokenizer.pad_token_id, config, log)
    save_training_state(model, tokenizer, optimizer, output_folder)
    return losses


def score_influence(
    warm_folder: str,
    reference: pl.DataFrame,
    candidates: pl.DataFrame,
    method: str,
    param_pattern: str | None,
    batch_size: int,
    max_length: int,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
    chunk_size: int = 8,
    on_chunk: Callable[[pl.DataFrame], None] | None = None,
) -> pl.DataFrame:
    """Score every candidate's local influence on the reference loss from the warm state, ``chunk_size``
    candidates at a time; ``on_chunk`` receives each finished chunk (e.g. to persist it)."""
    model, tokenizer, optimizer = load_training_state(warm_folder, device, dtype)

    def encode(table: pl.DataFrame) -> list:
        return encode_pairs(tokenizer, table["instruction"].to_list(), table["response"].to_list(), max_length)

    engine = make_influence_engine(
        method, model, optimizer, encode(reference), tokenizer.pad_token_id, batch_size, param_pattern
    )
    progress = rate_logger(log, "influence")
    parts = []
    for start in range(0, candidates.height, chunk_size):
        chunk = candidates.slice(start, chunk_size)
        scores = engine.score_all(
            encode(chunk), lambda done, _, offset=start: progress(offset + done, candidates.height)
        )
        table = pl.DataFrame([asdict(s) for s in scores], schema={c: pl.Float64 for c in SCORE_COLUMNS})
        parts.append(pl.concat([chunk, table], how="horizontal"))
        if on_chunk:
            on_chunk(parts[-1])
    return pl.concat(parts)


def score_with_cache(
    cache: InfluenceCache, candidates: pl.DataFrame, log: Callable[[str], None], **scoring: object
) -> pl.DataFrame:
    """Scores for ``candidates``: cached ones reused, the rest scored with :func:`score_influence`, each
    finished chunk cached at once, so a run killed midway resumes from its last completed chunk."""
    cached = cache.load().filter(pl.col("candidate_id").is_in(candidates["candidate_id"].implode()))
    todo = candidates.join(cached.select("candidate_id"), on="candidate_id", how="anti")
    log(f"influence cache {cache.key}: reused {cached.height} scores, scoring {todo.height} new candidates")
    if todo.height:
        fresh = score_influence(candidates=todo, log=log, on_chunk=cache.save, **scoring)
        cached = pl.concat([cached, fresh.select(cached.columns)])
    return candidates.join(cached, on="candidate_id", how="left", maintain_order="left")


def shard_candidates(candidates: pl.DataFrame, shards: int) -> list[pl.DataFrame]:
    """Split candidates into at most ``shards`` non-empty parts, whole prompts each, round robin over the
    sorted prompt ids; an ``order`` column remembers the original row order for :func:`merge_shards`."""
    numbered = candidates.with_row_index("order")
    prompts = sorted(numbered["prompt_id"].unique().to_list())
    owner = pl.DataFrame({"prompt_id": prompts, "shard": [i % shards for i in range(len(prompts))]})
    assigned = numbered.join(owner, on="prompt_id", how="left")
    parts = [assigned.filter(pl.col("shard") == k).drop("shard") for k in range(shards)]
    return [part for part in parts if part.height]


def merge_shards(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate shard results back into the original candidate order (deterministic)."""
    return pl.concat(parts).sort("order").drop("order")
