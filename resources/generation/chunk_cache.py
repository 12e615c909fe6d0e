"""Resumable generation: prompts are generated in fixed chunks and every finished chunk is saved, so a
crashed or killed run resumes from its last completed chunk instead of starting over.

Chunk ``k`` is always generated with seed ``seed + start``, exactly as an uninterrupted run does, so a resumed run
writes the same text as one that was never interrupted. Within a chunk the generator samples groups of prompts
together (:meth:`~resources.generation.interface.Generator.batch_prompts`: a transformers batch, a single prompt on
vLLM), each seeded by its position; the cache keeps one file per group, keyed by the model, the sampling parameters,
the group's position and its prompts. A later run whose prompts changed only in some groups (e.g. one seed added)
reads the other groups back and generates only the changed ones, with the seeds a fresh run would use, so its
tables are those of a fresh run.
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
        """``params.n`` completions per prompt, chunk by chunk; saved groups are read back, consecutive missing
        groups of a chunk are generated in one call (seeded by its position) and saved group by group."""
        results: list[list[str]] = []
        fresh = 0
        group = max(1, self.generator.batch_prompts(params))
        for start in range(0, len(prompts), self.chunk_size):
            chunk = prompts[start : start + self.chunk_size]
            groups = [(first, prompts[first : min(first + group, start + len(chunk))])
                      for first in range(start, start + len(chunk), group)]
            saved = [self._read(self._path(params, first, texts)) for first, texts in groups]
            missing = [(first, texts) for (first, texts), found in zip(groups, saved, strict=True) if found is None]
            generated: dict[int, list[list[str]]] = {}
            for run in _consecutive(missing):
                first = run[0][0]
                texts = [text for _, part in run for text in part]
                fresh += len(texts)
                report = progress and (lambda done, _, offset=first: progress(offset + done, len(prompts)))
                outputs = self.generator.generate(texts, dataclasses.replace(params, seed=params.seed + first), report)
                for at, part in run:
                    generated[at] = outputs[at - first : at - first + len(part)]
                    frame = pl.DataFrame({"completions": generated[at]}, schema={"completions": pl.List(pl.String)})
                    self.store.write(frame, self._path(params, at, part))
            results += [text for (first, _), found in zip(groups, saved, strict=True)
                        for text in (found if found is not None else generated[first])]
        TALLY.add(reused_examples=len(prompts) - fresh)
        self.log(f"generation: reused {len(prompts) - fresh} of {len(prompts)} prompts from saved chunks, "
                 f"generated {fresh}")
        return results

    def _read(self, path: UPath) -> list[list[str]] | None:
        return TableStore.read(path, self.store.policy)["completions"].to_list() if path.exists() else None


def _consecutive(groups: list[tuple[int, list[str]]]) -> list[list[tuple[int, list[str]]]]:
    """``groups`` (start, prompts) split into runs of adjacent groups."""
    runs: list[list[tuple[int, list[str]]]] = []
    for start, texts in groups:
        if runs and runs[-1][-1][0] + len(runs[-1][-1][1]) == start:
            runs[-1].append((start, texts))
        else:
            runs.append([(start, texts)])
    return runs
