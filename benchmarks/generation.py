"""Teacher generation throughput on the embedded model: unbatched vs the batching the pipeline uses.

Run: python benchmarks/generation.py [--prompts 16] [--batch 16]. Both are measured in the same run on
the same answer prompts; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl
import torch

from resources.generation.interface import SamplingParams
from resources.generation.transformers_backend import TransformersGenerator
from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import chat_prompt

ROOT = Path(__file__).resolve().parent.parent


def throughput(generator: TransformersGenerator, prompts: list[str], params: SamplingParams) -> tuple[float, int]:
    """Seconds and generated tokens for answering every prompt."""
    started = time.perf_counter()
    outputs = generator.generate(prompts, params)
    seconds = time.perf_counter() - started
    tokens = sum(len(generator.tokenizer(o[0], add_special_tokens=False)["input_ids"]) for o in outputs)
    return seconds, tokens


def main() -> int:
    """Measure tokens/s at batch size 1 and at the pipeline's batch size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = load_causal_lm(resolve_model_source("embedded:smollm2", ROOT / ".montessori" / "models"))
    reference = pl.read_ndjson(ROOT / "data" / "reference_set.jsonl")
    prompts = [chat_prompt(tokenizer, text) for text in reference["instruction"][: args.prompts]]
    params = SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=args.max_new_tokens)
    rates = {}
    for label, batch in (("unbatched", 1), ("batched", args.batch)):
        seconds, tokens = throughput(TransformersGenerator(model, tokenizer, batch), prompts, params)
        rates[label] = tokens / seconds
        print(f"{label:<10} batch {batch:>3}: {tokens} tokens in {seconds:.1f} s = {rates[label]:.1f} tokens/s")
    speedup = rates["batched"] / rates["unbatched"]
    print(f"batching speedup: {speedup:.2f}x")
    print(json.dumps({"unbatched_tokens_per_s": round(rates["unbatched"], 1),
                      "batched_tokens_per_s": round(rates["batched"], 1), "batch": args.batch,
                      "speedup": round(speedup, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
