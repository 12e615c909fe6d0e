"""Resumable generation: prompts are generated in fixed chunks and every finished chunk is saved, so a
crashed or killed run resumes from its last completed chunk instead of starting over.

A chunk's file is keyed by the model, the sampling parameters, the chunk's position and its prompts.
Chunk ``k`` is always generated with seed ``seed + start``, exactly as an uninterrupted run does, so a
resumed run writes the same text as one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

import polars as pl
from upath import UPath

from resources.cost.usage import TALLY
from resources.generation.interface import GenerationStats, Generator, Progress, SamplingParams
from resources.storage.tables import TableStore


class ChunkedGeneration:
    """Wraps a :class:`Generator`; ``generate`` reuses saved chunks and saves each new chunk at once, under
    ``generation_cache/`` of the table ``store``. Prompts read back are counted as reused in the usage tally."""

    def __init__(
        self, generator: Generator, store: TableStore, model_key: str, chunk_size: int, log: Callable[[str], None]
    ) -> None:
        self.generator = generator
        self.tokenizer = generator.tokenizer
        self.folder = store.base / "generation_cache"
        self.model_key = model_key
        self.chunk_size = chunk_size
        self.log = log
        self.store = store

    @property
    def stats(self) -> GenerationStats:
        """The wrapped generator's counts: only chunks generated now, not the ones read back."""
        return self.generator.stats

    def _path(self, params: SamplingParams, start: int, prompts: list[str]) -> UPath:
        key = json.dumps([self.model_key, dataclasses.asdict(params), start, prompts])
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet"

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[str]]:
        """``params.n`` completions per prompt, chunk by chunk (saved chunks are read back, not regenerated)."""
        results: list[list[str]] = []
        reused = 0
        for start in range(0, len(prompts), self.chunk_size):
            chunk = prompts[start : start + self.chunk_size]
            path = self._path(params, start, chunk)
            if path.exists():
                results += TableStore.read(path, self.store.policy)["completions"].to_list()
                reused += len(chunk)
                TALLY.add(reused_examples=len(chunk))
                continue
            report = progress and (lambda done, _, offset=start: progress(offset + done, len(prompts)))
            outputs = self.generator.generate(chunk, dataclasses.replace(params, seed=params.seed + start), report)
            self.store.write(pl.DataFrame({"completions": outputs}, schema={"completions": pl.List(pl.String)}), path)
            results += outputs
        self.log(f"generation: reused {reused} of {len(prompts)} prompts from saved chunks, "
                 f"generated {len(prompts) - reused}")
        return results
