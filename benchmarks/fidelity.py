"""Fidelity to the official protocol on the embedded model: does the warm-up regime or the reference-loss
definition change which candidates score positive, and how candidates rank?

Two warm states of SmolLM2-135M (float32) from the same synthetic-like warm-up rows:
- ``official``: effective batch 32 (2 x 16 accumulation), lr ramped from 0 then held at 5e-6, token-weighted
  loss, right truncation at 1024 tokens;
- ``today``: constant lr 5e-6, batch 2, mean of per-example losses, left truncation at 256 tokens.
From each, exact influence of 16 candidates on the reference set under both reference-loss definitions
(``batch_token_mean``, the official, and ``example_mean``), with the warm state's own encoding.

Warm-up rows: the held-out pairs, the math reference pairs and 24 seed prompts answered by the model; the
candidates: the other 16 seed prompts answered by the model (temperature 0.6, top_p 0.9, presence penalty 1,
96 new tokens, as the pipeline answers synthetic instructions). Reference: ``data/reference_set.jsonl``.

Run: python benchmarks/fidelity.py [--candidates 16] [--threads 2] [--model SOURCE]; the last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl
import torch

from resources.experiment.diagnostics import spearman
from resources.generation.interface import SamplingParams
from resources.generation.transformers_backend import TransformersGenerator
from resources.influence.engines import ExactInfluence
from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import chat_prompt, encode_pairs
from resources.training.warmup import WarmupParams, warmup_sft

ROOT = Path(__file__).resolve().parent.parent
PEAK = 5e-6
REGIMES = {
    "official": (WarmupParams(PEAK, epochs=1, batch_size=2, weight_decay=0.0, seed=0, gradient_accumulation=16,
                              schedule="ramp_then_hold", loss="token_mean"), "right", 1024),
    "today": (WarmupParams(PEAK, epochs=1, batch_size=2, weight_decay=0.0, seed=0, gradient_accumulation=1,
                           schedule="constant", loss="example_mean"), "left", 256),
}
DEFINITIONS = ("batch_token_mean", "example_mean")


def read(name: str) -> pl.DataFrame:
    return pl.read_ndjson(ROOT / "data" / name)


def answered_seeds(model, tokenizer) -> pl.DataFrame:  # noqa: ANN001
    """Every seed prompt with the model's own sampled answer (the pipeline's response sampling)."""
    seeds = read("seed_prompts.jsonl")
    prompts = [chat_prompt(tokenizer, text) for text in seeds["instruction"]]
    params = SamplingParams(temperature=0.6, top_p=0.9, presence_penalty=1.0, max_new_tokens=96, seed=0)
    answers = [a[0].strip() or "." for a in TransformersGenerator(model, tokenizer, 8).generate(prompts, params)]
    return seeds.select("instruction").with_columns(response=pl.Series(answers))


def positive(scores: list) -> int:  # noqa: ANN001
    """Candidates with positive influence under the paper's before-step rule."""
    return sum(s.influence > 0 for s in scores)


def main() -> int:
    """Warm up under both regimes, score under both definitions, print a table and the JSON summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="embedded:smollm2", help="model source (tiny-random:NAME for a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    folder = resolve_model_source(args.model, ROOT / ".montessori" / "models")
    model, tokenizer = load_causal_lm(folder)
    seeds = answered_seeds(model, tokenizer)
    candidates = seeds.head(args.candidates)
    warm_rows = pl.concat([read("heldout_set.jsonl").select("instruction", "response"),
                           read("reference_math.jsonl").select("instruction", "response"),
                           seeds.slice(args.candidates)])
    reference = read("reference_set.jsonl")
    print(f"warm-up rows {warm_rows.height}, candidates {candidates.height}, reference {reference.height} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)

    def encode(table: pl.DataFrame, truncation: str, max_length: int) -> list:
        return encode_pairs(tokenizer, table["instruction"].to_list(), table["response"].to_list(), max_length,
                            truncation)

    summary: dict[str, object] = {"warmup_rows": warm_rows.height, "candidates": candidates.height,
                                  "reference_pairs": reference.height}
    for regime, (config, truncation, max_length) in REGIMES.items():
        student, _ = load_causal_lm(folder)
        optimizer, losses = warmup_sft(student, encode(warm_rows, truncation, max_length), tokenizer.pad_token_id,
                                       config, print)
        rates = [config.learning_rate_at(k, warm_rows.height) for k in range(len(losses))]
        summary[f"{regime}_warmup_steps"] = len(losses)
        summary[f"{regime}_warmup_rates"] = sorted(set(rates))
        influence = {}
        for definition in DEFINITIONS:
            engine = ExactInfluence(student, optimizer, encode(reference, truncation, max_length),
                                    tokenizer.pad_token_id, 8, definition)
            influence[definition] = engine.score_all(encode(candidates, truncation, max_length))
            summary[f"{regime}_{definition}_positive"] = positive(influence[definition])
            summary[f"{regime}_{definition}_positive_null_step"] = sum(
                s.loss_null_step > s.loss_after for s in influence[definition])
            print(f"{regime} / {definition}: {positive(influence[definition])}/{candidates.height} positive "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
        a, b = ([s.influence for s in influence[d]] for d in DEFINITIONS)
        summary[f"{regime}_definition_spearman"] = round(spearman(a, b), 4)
        summary[f"{regime}_definition_sign_agreement"] = sum((x > 0) == (y > 0) for x, y in zip(a, b, strict=True))
        summary[f"{regime}_influence"] = {d: [round(s.influence, 6) for s in influence[d]] for d in DEFINITIONS}
    official, today = (summary[f"{r}_influence"]["batch_token_mean"] for r in REGIMES)
    summary["regime_spearman_batch_token_mean"] = round(spearman(official, today), 4)
    summary["seconds"] = round(time.perf_counter() - started)
    print(f"\n{'warm-up regime':<16}{'steps':>6}{'positive (batch token mean)':>29}{'positive (example mean)':>25}"
          f"{'Spearman(defs)':>16}")
    for regime in REGIMES:
        print(f"{regime:<16}{summary[f'{regime}_warmup_steps']:>6}"
              f"{summary[f'{regime}_batch_token_mean_positive']:>29}{summary[f'{regime}_example_mean_positive']:>25}"
              f"{summary[f'{regime}_definition_spearman']:>16}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
