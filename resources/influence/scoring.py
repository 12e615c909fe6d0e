"""Influence scoring of candidates: encode them, score with an engine (exact, first-order or projected), serve
unchanged candidates from the score cache (and, for projected, their features from the feature store), and
split/merge shards for one-pod-per-shard scale-out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import polars as pl
import torch
from transformers import PreTrainedTokenizerBase

from resources.cost.usage import TALLY
from resources.generation.interface import rate_logger
from resources.influence.engines import (
    FirstOrderInfluence,
    InfluenceScore,
    ProjectedInfluence,
    make_influence_engine,
)
from resources.influence.feature_store import FeatureStore, StoredFeatures
from resources.influence.projection import ProjectionSpec
from resources.influence.score_cache import LOSS_COLUMN, SCORE_COLUMNS, InfluenceCache
from resources.training.encoding import EncodedExample, collate, encode_pairs, per_example_loss
from resources.training.warmup import check_finite, load_training_state

SOURCE_COLUMN = "scored_from"
"""Where a row's score came from: ``score_cache``, ``feature_store`` (projected, features stored earlier) or
``computed``; for logs and metadata (the influence asset drops it: it must not change the table's data version)."""


@dataclass(frozen=True)
class InfluenceParams:
    """How candidates are scored (built from the ``influence`` settings block by field name; no defaults here).

    - ``method``: ``exact`` (one real AdamW step per candidate), ``first_order`` (the step's effect to first order) or
      ``projected`` (first order through stored, randomly projected updates: a new reference set re-scores stored
      candidates without a backward pass); ``projection_dim``: projected only, sign columns per side of each
      weight matrix.
    - ``reference_loss``: ``example_mean`` or ``batch_token_mean`` (the official definition) over batches of
      ``reference_batch_size`` reference pairs; pairs and candidates encoded to ``max_length`` with ``truncation``.
    - ``param_pattern``: first-order only, the parameters included (regex; None: all);
      ``candidate_batch_size``: first-order candidates per batched backward (does not change a score).
    - ``chunk_size``: candidates scored between two saves (does not change a score).
    """

    method: str
    param_pattern: str | None
    reference_batch_size: int
    max_length: int
    reference_loss: str
    truncation: str
    candidate_batch_size: int
    chunk_size: int
    projection_dim: int

    def feature_settings(self, dtype: torch.dtype) -> dict:
        """What shapes a candidate's stored features besides the warm student (the feature store's key): the
        projection, the parameters included, the encoding and the compute precision (``dtype``)."""
        return {"projection": ProjectionSpec(self.projection_dim).versioned(), "param_pattern": self.param_pattern,
                "max_length": self.max_length, "truncation": self.truncation, "compute_dtype": str(dtype)}


def example_losses(
    model: torch.nn.Module, examples: list[EncodedExample], pad_id: int, batch_size: int
) -> list[float]:
    """Each example's mean answer-token loss under ``model`` (in input order), batched by length so that
    padding stays small; no parameter changes (``torch.inference_mode``)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    losses = [0.0] * len(examples)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            picked = order[start : start + batch_size]
            values = per_example_loss(model, collate([examples[i] for i in picked], pad_id)).double().cpu().tolist()
            for index, value in zip(picked, values, strict=True):
                losses[index] = check_finite(value, f"the warm student's loss on candidate {index}")
    return losses


def score_table(scores: list[InfluenceScore]) -> pl.DataFrame:
    """Engine scores as the score columns (float64), one row each."""
    return pl.DataFrame([asdict(s) for s in scores], schema={c: pl.Float64 for c in SCORE_COLUMNS})


def pair_encoder(
    tokenizer: PreTrainedTokenizerBase, max_length: int, truncation: str
) -> Callable[[pl.DataFrame], list[EncodedExample]]:
    """Encodes a table's (instruction, response) rows as training examples."""
    def encode(table: pl.DataFrame) -> list[EncodedExample]:
        return encode_pairs(
            tokenizer, table["instruction"].to_list(), table["response"].to_list(), max_length, truncation
        )

    return encode


def score_influence(
    warm_folder: str,
    reference: pl.DataFrame,
    candidates: pl.DataFrame,
    params: InfluenceParams,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
    on_chunk: Callable[[pl.DataFrame], None] | None = None,
    features: FeatureStore | None = None,
) -> pl.DataFrame:
    """Score every candidate's local influence on the reference loss from the warm state, ``params.chunk_size``
    candidates at a time; ``on_chunk`` receives each finished chunk (e.g. to persist it). Each row also gets
    ``candidate_loss``, the warm student's own loss on the candidate (before any influence step), the score of the
    ``student_loss`` preference signal; it is computed one candidate at a time, because in a padded batch the last
    bits depend on the batch's other rows and a resumed run must reproduce an uninterrupted run's table exactly;
    and :data:`SOURCE_COLUMN` (``computed``, or ``feature_store`` for a projected score from stored features).

    The projected method (:func:`projected_scores`) builds the candidates' features chunk by chunk into
    ``features`` (None: in memory only), then scores them all against ``reference``; ``on_chunk`` gets one table.

    The warm state is loaded in float32 whatever ``dtype`` (the profile's precision) says, because one
    AdamW step at the warm-up learning rate vanishes in bfloat16; ``dtype`` only sets the first-order and projected
    methods' compute precision."""
    if params.method == "projected":
        table = projected_scores(features, warm_folder, [reference], candidates, params, device, dtype, log)[0]
        if on_chunk:
            on_chunk(table)
        return table
    model, tokenizer, optimizer = load_training_state(warm_folder, device, torch.float32)
    encode = pair_encoder(tokenizer, params.max_length, params.truncation)
    candidate_loss = pl.Series(
        LOSS_COLUMN, example_losses(model, encode(candidates), tokenizer.pad_token_id, batch_size=1), pl.Float64
    )
    engine = make_influence_engine(
        params.method, model, optimizer, encode(reference), tokenizer.pad_token_id, params.reference_batch_size,
        params.param_pattern, params.reference_loss, params.candidate_batch_size, dtype,
    )
    progress = rate_logger(log, "influence")
    parts = []
    for start in range(0, candidates.height, params.chunk_size):
        chunk = candidates.slice(start, params.chunk_size)
        scores = engine.score_all(
            encode(chunk), lambda done, _, offset=start: progress(offset + done, candidates.height)
        )
        table = score_table(scores)
        table = table.with_columns(candidate_loss.slice(start, chunk.height), pl.lit("computed").alias(SOURCE_COLUMN))
        parts.append(pl.concat([chunk, table], how="horizontal"))
        if on_chunk:
            on_chunk(parts[-1])
    return pl.concat(parts)


def projected_scores(
    store: FeatureStore | None,
    warm_folder: str,
    references: list[pl.DataFrame],
    candidates: pl.DataFrame,
    params: InfluenceParams,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
) -> list[pl.DataFrame]:
    """Projected influence of every candidate against each of ``references`` (one table per set, as
    :func:`score_influence` makes them). Features already in ``store`` are served from it: no backward pass runs for
    them. The others are built ``params.chunk_size`` candidates at a time with the warm student's loss on each, and
    every chunk is saved at once (a killed build resumes from its last saved chunk). Then, per reference set, one
    reference gradient and a dot product per candidate. ``store`` None: nothing is read or kept."""
    model, tokenizer, optimizer = load_training_state(warm_folder, device, torch.float32)
    pad_id = tokenizer.pad_token_id
    encode = pair_encoder(tokenizer, params.max_length, params.truncation)
    engine = ProjectedInfluence(model, optimizer, None, pad_id, ProjectionSpec(params.projection_dim),
                                params.reference_batch_size, params.param_pattern, params.reference_loss,
                                params.candidate_batch_size, dtype)
    ids = candidates["candidate_id"].to_list()
    parts = [store.load(ids)] if store else []
    served = {c for part in parts for c in part.candidate_ids}
    todo = candidates.filter(~pl.col("candidate_id").is_in(list(served)))
    log(f"influence feature store {store.key if store else '(none)'}: {len(served)} of {candidates.height} candidates "
        f"served from the store, building features for {todo.height}")
    progress = rate_logger(log, "influence features")
    for start in range(0, todo.height, params.chunk_size):
        chunk = todo.slice(start, params.chunk_size)
        examples = encode(chunk)
        losses = example_losses(model, examples, pad_id, batch_size=1)
        built = engine.features(examples, lambda done, _, offset=start: progress(offset + done, todo.height))
        if store:
            store.save(chunk["candidate_id"].to_list(), losses, built)
        parts.append(StoredFeatures(chunk["candidate_id"].to_list(), losses, built))
    rows = {c: (part, k) for part in parts for k, c in enumerate(part.candidate_ids)}
    features = torch.stack([rows[c][0].features[rows[c][1]] for c in ids]) if ids else torch.empty(0, 0)
    candidate_loss = pl.Series(LOSS_COLUMN, [rows[c][0].candidate_loss[rows[c][1]] for c in ids], pl.Float64)
    source = pl.Series(SOURCE_COLUMN, ["feature_store" if c in served else "computed" for c in ids], pl.String)
    tables = []
    for reference in references:
        scores = engine.scores(features, engine.reference_side(encode(reference)))
        table = score_table(scores)
        tables.append(pl.concat([candidates, table.with_columns(candidate_loss, source)], how="horizontal"))
    return tables


def score_with_cache(
    cache: InfluenceCache,
    warm_folder: str,
    reference: pl.DataFrame,
    candidates: pl.DataFrame,
    params: InfluenceParams,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
    features: FeatureStore | None = None,
) -> pl.DataFrame:
    """Scores for ``candidates``: cached ones reused, the rest scored with :func:`score_influence`, each
    finished chunk cached at once, so a run killed midway resumes from its last completed chunk (the projected
    method: from its last chunk of features saved in ``features``). :data:`SOURCE_COLUMN` says where each row's
    score came from (``score_cache`` for the reused ones)."""
    cached = cache.load().filter(pl.col("candidate_id").is_in(candidates["candidate_id"].implode()))
    todo = candidates.join(cached.select("candidate_id"), on="candidate_id", how="anti")
    log(f"influence cache {cache.key}: reused {cached.height} scores, scoring {todo.height} new candidates")
    TALLY.add(reused_examples=cached.height)
    cached = cached.with_columns(pl.lit("score_cache").alias(SOURCE_COLUMN))
    if todo.height:
        fresh = score_influence(warm_folder, reference, todo, params, device, dtype, log, cache.save, features)
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


def first_order_influences(
    warm_folder: str,
    references: list[pl.DataFrame],
    candidates: pl.DataFrame,
    params: InfluenceParams,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
) -> list[list[float]]:
    """First-order influence of every candidate against each reference set of ``references``, from one pass over
    the candidates (:meth:`FirstOrderInfluence.effects_against`): the numbers one :func:`score_influence` per
    set gives (same warm state, chunks and batches), at about the cost of one (``params.method`` is not read).
    No ``candidate_loss``, no cache."""
    model, tokenizer, optimizer = load_training_state(warm_folder, device, torch.float32)
    encode = pair_encoder(tokenizer, params.max_length, params.truncation)
    engine = FirstOrderInfluence(model, optimizer, encode(references[0]), tokenizer.pad_token_id,
                                 params.reference_batch_size, params.param_pattern, params.reference_loss,
                                 params.candidate_batch_size, dtype)
    term_sets = [engine.terms, *(engine.reference_terms(encode(reference))[1] for reference in references[1:])]
    progress = rate_logger(log, f"influence against {len(references)} reference sets")
    influences: list[list[float]] = [[] for _ in references]
    for start in range(0, candidates.height, params.chunk_size):
        chunk = encode(candidates.slice(start, params.chunk_size))
        effects = engine.effects_against(term_sets, chunk, lambda done, _, at=start: progress(at + done,
                                                                                               candidates.height))
        for per_set, values in zip(influences, effects, strict=True):
            per_set.extend(-value for value in values)
    return influences
