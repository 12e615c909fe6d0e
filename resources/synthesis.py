"""Instruction synthesis: few-shot prompts from seeds, sampling, parsing, filters, dedup, answers.

Every sample is kept as a row, rejected ones included, with the exact prompt, the raw output and
the filter verdict so that any decision can be audited.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
from transformers import PreTrainedTokenizerBase

from resources.examples import chat_prompt
from resources.generation import Generator, Progress, SamplingParams
from resources.text import dedup_rouge_l_detailed, filter_verdict, parse_instruction

INSTRUCTION_PREFILL = "<instruction>"
SYNTHESIS_TEMPLATE = (
    "You are asked to come up with a new, diverse task instruction for a helpful assistant. "
    "Here are some example instructions:\n\n{examples}\n\n"
    "Write one new instruction that is different from the examples, self-contained and answerable "
    "with text alone. Put it between <instruction> and </instruction> tags."
)


@dataclass(frozen=True)
class SynthesisPrompt:
    """One few-shot synthesis prompt: its id, the seed ids it shows and the user message."""

    prompt_id: str
    seed_ids: list[str]
    message: str


@dataclass(frozen=True)
class SynthesisConfig:
    """What the synthesis engine needs besides the model."""

    instruction: SamplingParams
    response: SamplingParams
    min_words: int = 5
    max_words: int = 400
    rouge_threshold: float = 0.7


def build_prompts(seeds: pl.DataFrame, num_prompts: int, shots: int, seed: int) -> list[SynthesisPrompt]:
    """Draw ``num_prompts`` few-shot prompts, each showing ``shots`` random seed instructions."""
    if seeds.height < shots:
        raise ValueError(f"need at least {shots} seed instructions for {shots}-shot prompts, got {seeds.height}")
    rng = random.Random(seed)
    ids, texts = seeds["id"].to_list(), seeds["instruction"].to_list()
    prompts = []
    for index in range(num_prompts):
        picks = rng.sample(range(len(ids)), shots)
        examples = "\n".join(f"<instruction>{texts[i]}</instruction>" for i in picks)
        message = SYNTHESIS_TEMPLATE.format(examples=examples)
        digest = hashlib.sha256(message.encode()).hexdigest()[:8]
        prompts.append(SynthesisPrompt(f"p{seed}-{index:03d}-{digest}", [ids[i] for i in picks], message))
    return prompts


def teacher_prompt(tokenizer: PreTrainedTokenizerBase, message: str) -> str:
    """The chat-formatted synthesis prompt, with the assistant turn prefilled by the opening tag."""
    return chat_prompt(tokenizer, message) + INSTRUCTION_PREFILL


def candidate_id(prompt_id: str, instruction: str, response: str) -> str:
    """Content hash of one candidate (stable across runs for identical text)."""
    return hashlib.sha256(f"{prompt_id}\x00{instruction}\x00{response}".encode()).hexdigest()[:16]


def synthesize(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[SynthesisPrompt],
    config: SynthesisConfig,
    existing: list[str],
    log: Callable[[str], None] = print,
    progress: Callable[[str], Progress] | None = None,
) -> pl.DataFrame:
    """Sample instructions, filter and dedup them (``existing`` texts count as kept), answer the kept ones."""
    full_prompts = [teacher_prompt(tokenizer, p.message) for p in prompts]
    outputs = generator.generate(full_prompts, config.instruction, progress and progress("instructions"))
    rows = [
        {"prompt_id": p.prompt_id, "seed_ids": p.seed_ids, "prompt": p.message, "teacher_prompt": full,
         "sample_index": k, "raw_output": raw}
        for p, full, samples in zip(prompts, full_prompts, outputs, strict=True)
        for k, raw in enumerate(samples)
    ]
    table = pl.DataFrame(rows)
    parsed = [parse_instruction(raw) for raw in table["raw_output"]]
    verdicts = [filter_verdict(text, config.min_words, config.max_words) for text in parsed]
    passing = [i for i, v in enumerate(verdicts) if v == "ok"]
    dedup = dedup_rouge_l_detailed([parsed[i] for i in passing], config.rouge_threshold, existing)
    max_rouge: list[float | None] = [None] * table.height
    for i, verdict in zip(passing, dedup, strict=True):
        max_rouge[i] = verdict.max_rouge
        if not verdict.keep:
            verdicts[i] = "near_duplicate"
    table = table.with_columns(
        pl.Series("instruction", parsed, dtype=pl.String),
        pl.Series("verdict", verdicts),
        pl.Series("max_rouge_l", max_rouge, dtype=pl.Float64),
    ).with_columns(kept=pl.col("verdict") == "ok")
    log(f"synthesis: {table.height} samples, {int(table['kept'].sum())} kept; verdicts "
        + ", ".join(f"{v}={n}" for v, n in table["verdict"].value_counts().sort("verdict").iter_rows()))
    return _answer(generator, tokenizer, table, config.response, progress)


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
