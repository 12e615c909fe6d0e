"""Instruction synthesis: few-shot prompts, sampling, parsing, filters, dedup, answers.

Every sample is kept as a row, rejected ones included, with the exact prompt, the raw output, the filter
verdict and the rules that judged it (columns ``style`` and ``filters``), so that any decision can be audited.

Styles, i.e. how prompts are written and outputs parsed (:data:`STYLES`):

- ``official`` follows Montessori-Instruct's protocol in this project's own wording: the teacher is asked
  for a short reason, whether the task needs an input, then one new instruction between ``<instruction>``
  tags; ``shots`` examples (default 8) of which ``generated_shots`` (default 2) are instructions kept
  earlier in the same run once that many exist; seed ``input`` fields are appended to their instruction;
  no prefilled assistant turn; the last closed tag pair is parsed and an output without one is rejected
  (``no_closed_tag``); near-duplicates are also judged against the examples the chunk's prompts showed.
- ``compact``: a short prompt whose assistant turn is prefilled with the opening tag, ``shots`` seed
  examples (default 3), the first pair or the text up to its end accepted; suits very small teachers.

Filters (``SynthesisParams.filters``): ``official`` (:func:`resources.synthesis.text_filters.official_filter`) or
``self_instruct`` (:func:`resources.synthesis.text_filters.filter_verdict`); ``SynthesisParams.script``: ``ascii``
(both references: non-ASCII text rejected) or ``any`` (text in any script kept, Unicode ROUGE-L tokens), recorded in
the ``filters`` column as ``{filters}+any_script``.

Official prompts depend on earlier output, so they are built and generated chunk by chunk: the prompts of
chunk k (``chunk_size`` prompts) draw their generated examples from the instructions kept in chunks before
k, as the reference code refreshes its pool once per generation batch, so a chunk generates as one batch.
Chunk k is sampled with seed ``seed + start`` (exactly the seeds a single call would use) and its prompts
with a random generator seeded by (prompt seed, prompt index). The run is therefore deterministic, and
with a caching generator (:class:`resources.generation.chunk_cache.ChunkedGeneration`, whose files are keyed by
prompts) a resumed run reads chunks < k back, rebuilds the same pool and hence the same prompts for chunk
k. Compact prompts do not depend on output and are generated in one call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import polars as pl
from transformers import PreTrainedTokenizerBase

from resources.generation.interface import Generator, Progress, SamplingParams
from resources.synthesis.text_filters import (
    SCRIPTS,
    dedup_rouge_l_detailed,
    filter_verdict,
    official_filter,
    parse_instruction,
    parse_last_instruction,
)
from resources.training.encoding import chat_prompt

INSTRUCTION_PREFILL = "<instruction>"
SYNTHESIS_TEMPLATE = (
    "You are asked to come up with a new, diverse task instruction for a helpful assistant. "
    "Here are some example instructions:\n\n{examples}\n\n"
    "Write one new instruction that is different from the examples, self-contained and answerable "
    "with text alone. Put it between <instruction> and </instruction> tags."
)
OFFICIAL_TEMPLATE = (
    "Your job is to write one new instruction that a person could give to an AI assistant: a question or a "
    "request, phrased as a command or as a question. It will become training data for language models, so it "
    "must be clear, concise, correct and worth answering.\n\n"
    "Work in three steps:\n"
    "1. In a sentence or two, say why you chose this instruction.\n"
    "2. Decide whether it needs an input to be answerable as it stands, such as the passage to summarize, "
    "the list to sort or the code to fix. If it does, write that input out in full right after the "
    "instruction text.\n"
    "3. Finish with the instruction, followed by its input if it has one, between <instruction> and "
    "</instruction>.\n\n"
    "Reference instructions, one per line:\n{examples}\n\n"
    "Now give your reason and exactly one new instruction in that format."
)
FILTERS = ("official", "self_instruct")


@dataclass(frozen=True)
class SynthesisPrompt:
    """One few-shot synthesis prompt: its id, the seed ids it shows, the user message, the example texts in
    the order shown, and the ids (``{prompt_id}#{sample_index}``) of the generated instructions among them."""

    prompt_id: str
    seed_ids: list[str]
    message: str
    examples: tuple[str, ...] = ()
    generated_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shot:
    """An instruction kept earlier in the run, as an official prompt may show it."""

    id: str
    text: str


@dataclass(frozen=True)
class Style:
    """How one style talks to the teacher and reads its answers."""

    prefill: str  # text the assistant turn starts with
    parse: Callable[[str], str | None]  # raw output -> instruction, None when there is none
    unparsed: str  # verdict of an output the parser finds nothing in
    chunked: bool  # prompts show earlier output: generate chunk by chunk; dedup also against shown examples


STYLES = {
    "compact": Style(INSTRUCTION_PREFILL, parse_instruction, "unparsed", chunked=False),
    "official": Style("", parse_last_instruction, "no_closed_tag", chunked=True),
}


@dataclass(frozen=True)
class SynthesisParams:
    """What the synthesis engine needs besides the model and the prompts.

    ``filters``: ``official`` or ``self_instruct`` (whose word bounds are ``min_words``/``max_words``).
    ``script``: ``ascii`` (the filters' ASCII rule) or ``any`` (:data:`~resources.synthesis.text_filters.SCRIPTS`).
    ``chunk_size``: official style only, prompts per generation chunk; a chunk's prompts draw their generated
    examples from instructions kept in earlier chunks (the reference's generation batch: 16 or 32)."""

    instruction: SamplingParams
    response: SamplingParams
    min_words: int
    max_words: int
    rouge_threshold: float
    filters: str
    chunk_size: int
    script: str

    def __post_init__(self) -> None:
        if self.filters not in FILTERS:
            raise ValueError(f"unknown synthesis filters {self.filters!r}; choose one of {FILTERS}")
        if self.script not in SCRIPTS:
            raise ValueError(f"unknown synthesis script {self.script!r}; choose one of {sorted(SCRIPTS)}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")

    @property
    def recorded_filters(self) -> str:
        """The rules that judged a sample, as the ``filters`` column records them (the script only when not ascii)."""
        return self.filters if self.script == "ascii" else f"{self.filters}+{self.script}_script"


def _prompt_id(seed: int, index: int, message: str) -> str:
    return f"p{seed}-{index:03d}-{hashlib.sha256(message.encode()).hexdigest()[:8]}"


def _tagged(examples: Sequence[str]) -> str:
    return "\n".join(f"<instruction>{text}</instruction>" for text in examples)


def build_prompts(seeds: pl.DataFrame, num_prompts: int, shots: int, seed: int) -> list[SynthesisPrompt]:
    """Draw ``num_prompts`` compact few-shot prompts, each showing ``shots`` random seed instructions."""
    if seeds.height < shots:
        raise ValueError(f"need at least {shots} seed instructions for {shots}-shot prompts, got {seeds.height}")
    rng = random.Random(seed)
    ids, texts = seeds["id"].to_list(), seeds["instruction"].to_list()
    prompts = []
    for index in range(num_prompts):
        picks = rng.sample(range(len(ids)), shots)
        examples = tuple(texts[i] for i in picks)
        message = SYNTHESIS_TEMPLATE.format(examples=_tagged(examples))
        prompts.append(SynthesisPrompt(_prompt_id(seed, index, message), [ids[i] for i in picks], message, examples))
    return prompts


@dataclass(frozen=True)
class CompactPrompts:
    """Compact prompts, built up front (:func:`build_prompts`): they do not depend on earlier output."""

    prompts: list[SynthesisPrompt]
    style: ClassVar[str] = "compact"

    def __len__(self) -> int:
        return len(self.prompts)

    def build(self, start: int, stop: int, pool: Sequence[Shot]) -> list[SynthesisPrompt]:
        """Prompts ``start`` to ``stop`` (``pool`` is not used)."""
        return self.prompts[start:stop]


@dataclass(frozen=True)
class OfficialPrompts:
    """Official prompts, built chunk by chunk: prompt ``index`` shows ``shots`` examples drawn by a generator
    seeded with (``seed``, ``index``): ``shots`` seeds, or ``shots - generated_shots`` seeds plus
    ``generated_shots`` instructions of the pool once it holds that many, in shuffled order."""

    seeds: pl.DataFrame
    num_prompts: int
    seed: int
    shots: int = 8
    generated_shots: int = 2
    style: ClassVar[str] = "official"

    def __post_init__(self) -> None:
        if not 0 <= self.generated_shots <= self.shots:
            raise ValueError(f"generated_shots must be within [0, shots={self.shots}], got {self.generated_shots}")
        if self.seeds.height < self.shots:
            raise ValueError(f"need at least {self.shots} seed instructions for {self.shots}-shot prompts, "
                             f"got {self.seeds.height}")

    def __len__(self) -> int:
        return self.num_prompts

    def seed_examples(self) -> list[str]:
        """Each seed's instruction, followed by a space and its ``input`` when it has a non-empty one."""
        if "input" not in self.seeds.columns:
            return self.seeds["instruction"].to_list()
        pairs = self.seeds.select("instruction", "input").iter_rows()
        return [f"{text} {extra}" if extra else text for text, extra in pairs]

    def build(self, start: int, stop: int, pool: Sequence[Shot]) -> list[SynthesisPrompt]:
        """Prompts ``start`` to ``stop``, their generated examples drawn from ``pool``."""
        ids, texts = self.seeds["id"].to_list(), self.seed_examples()
        prompts = []
        for index in range(start, stop):
            rng = random.Random(f"{self.seed}:{index}")
            picks = rng.sample(range(len(ids)), self.shots)
            drawn: list[Shot] = []
            if self.generated_shots and len(pool) >= self.generated_shots:
                picks = picks[: self.shots - self.generated_shots]
                drawn = rng.sample(list(pool), self.generated_shots)
            shown = [(ids[i], texts[i], False) for i in picks] + [(shot.id, shot.text, True) for shot in drawn]
            rng.shuffle(shown)
            examples = tuple(text for _, text, _ in shown)
            message = OFFICIAL_TEMPLATE.format(examples=_tagged(examples))
            prompts.append(SynthesisPrompt(
                _prompt_id(self.seed, index, message), [i for i, _, generated in shown if not generated], message,
                examples, tuple(i for i, _, generated in shown if generated),
            ))
        return prompts


PromptSource = CompactPrompts | OfficialPrompts


def few_shot_prompts(
    style: str, seeds: pl.DataFrame, num_prompts: int, seed: int, shots: int | None = None, generated_shots: int = 2
) -> PromptSource:
    """The prompts of one synthesis run in ``style`` (``official`` or ``compact``); ``shots`` defaults to the
    style's (8 or 3); ``generated_shots`` applies to the official style only."""
    if style == "official":
        return OfficialPrompts(seeds, num_prompts, seed, 8 if shots is None else shots, generated_shots)
    if style == "compact":
        return CompactPrompts(build_prompts(seeds, num_prompts, 3 if shots is None else shots, seed))
    raise ValueError(f"unknown synthesis style {style!r}; choose one of {sorted(STYLES)}")


def teacher_prompt(tokenizer: PreTrainedTokenizerBase, message: str, prefill: str = INSTRUCTION_PREFILL) -> str:
    """The chat-formatted synthesis prompt, with the assistant turn prefilled by ``prefill``."""
    return chat_prompt(tokenizer, message) + prefill


def candidate_id(prompt_id: str, instruction: str, response: str) -> str:
    """Content hash of one candidate (stable across runs for identical text)."""
    return hashlib.sha256(f"{prompt_id}\x00{instruction}\x00{response}".encode()).hexdigest()[:16]


def synthesize(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    prompts: PromptSource | Sequence[SynthesisPrompt],
    config: SynthesisParams,
    existing: list[str],
    log: Callable[[str], None] = print,
    progress: Callable[[str], Progress] | None = None,
) -> pl.DataFrame:
    """Sample instructions, filter and dedup them (``existing`` texts count as kept), answer the kept ones.

    ``prompts`` comes from :func:`few_shot_prompts`; a plain list of prompts is taken as compact prompts."""
    source = prompts if isinstance(prompts, PromptSource) else CompactPrompts(list(prompts))
    style = STYLES[source.style]
    size = config.chunk_size if style.chunked else max(len(source), 1)
    report = progress and progress("instructions")
    pool: list[Shot] = []
    tables = []
    for start in range(0, len(source), size):
        chunk = source.build(start, min(start + size, len(source)), pool)
        params = dataclasses.replace(config.instruction, seed=config.instruction.seed + start)
        chunk_report = report and (lambda done, _, offset=start: report(offset + done, len(source)))
        table = _sample(generator, tokenizer, chunk, style, params, chunk_report).with_columns(
            style=pl.lit(source.style), filters=pl.lit(config.recorded_filters)
        )
        shown = [text for prompt in chunk for text in prompt.examples] if style.chunked else []
        table = _judge(table, style, config, [*existing, *(shot.text for shot in pool), *shown])
        kept = table.filter(pl.col("kept")).select("prompt_id", "sample_index", "instruction").iter_rows()
        pool += [Shot(f"{prompt_id}#{k}", text) for prompt_id, k, text in kept]
        tables.append(table)
    table = pl.concat(tables)
    log(f"synthesis ({source.style} prompts, {config.filters} filters): {table.height} samples, "
        f"{int(table['kept'].sum())} kept; verdicts "
        + ", ".join(f"{v}={n}" for v, n in table["verdict"].value_counts().sort("verdict").iter_rows()))
    return _answer(generator, tokenizer, table, config.response, progress)


def _sample(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[SynthesisPrompt],
    style: Style,
    params: SamplingParams,
    progress: Progress | None,
) -> pl.DataFrame:
    """One row per sample: the prompt, its provenance and the raw output."""
    full_prompts = [teacher_prompt(tokenizer, p.message, style.prefill) for p in prompts]
    outputs = generator.generate(full_prompts, params, progress)
    rows = [
        {"prompt_id": p.prompt_id, "seed_ids": p.seed_ids, "generated_ids": list(p.generated_ids),
         "prompt": p.message, "teacher_prompt": full, "sample_index": k, "raw_output": raw}
        for p, full, samples in zip(prompts, full_prompts, outputs, strict=True)
        for k, raw in enumerate(samples)
    ]
    return pl.DataFrame(rows, schema_overrides={"seed_ids": pl.List(pl.String), "generated_ids": pl.List(pl.String)})


def _filter(config: SynthesisParams, text: str) -> tuple[str, str]:
    """``(verdict, text)`` under ``config.filters``; only the official filters rewrite the text."""
    if config.filters == "official":
        return official_filter(text, config.script)
    return filter_verdict(text, config.min_words, config.max_words, config.script), text


def _judge(table: pl.DataFrame, style: Style, config: SynthesisParams, pool: list[str]) -> pl.DataFrame:
    """Parse, filter and dedup one chunk's samples against ``pool`` (texts kept before them)."""
    judged = [
        (style.unparsed, None) if parsed is None else _filter(config, parsed)
        for parsed in map(style.parse, table["raw_output"])
    ]
    verdicts, texts = [v for v, _ in judged], [t for _, t in judged]
    passing = [i for i, v in enumerate(verdicts) if v == "ok"]
    dedup = dedup_rouge_l_detailed([texts[i] for i in passing], config.rouge_threshold, pool, config.script)
    max_rouge: list[float | None] = [None] * table.height
    for i, verdict in zip(passing, dedup, strict=True):
        max_rouge[i] = verdict.max_rouge
        if not verdict.keep:
            verdicts[i] = "near_duplicate"
    return table.with_columns(
        pl.Series("instruction", texts, dtype=pl.String),
        pl.Series("verdict", verdicts, dtype=pl.String),
        pl.Series("max_rouge_l", max_rouge, dtype=pl.Float64),
    ).with_columns(kept=pl.col("verdict") == "ok")


def _answer(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    table: pl.DataFrame,
    params: SamplingParams,
    progress: Callable[[str], Progress] | None,
) -> pl.DataFrame:
    kept = table.filter(pl.col("kept"))
    questions = [chat_prompt(tokenizer, text) for text in kept["instruction"]]
    generated = generator.generate(questions, params, progress and progress("responses"))
    answers = pl.Series("response", [samples[0].strip() for samples in generated], dtype=pl.String)
    answered = kept.select("prompt_id", "sample_index").with_columns(answers)
    table = table.join(answered, on=["prompt_id", "sample_index"], how="left")
    columns = [table[c] for c in ("prompt_id", "instruction", "response", "kept")]
    ids = [candidate_id(p, i, r) if keep else None for p, i, r, keep in zip(*columns, strict=True)]
    return table.with_columns(pl.Series("candidate_id", ids, dtype=pl.String))
