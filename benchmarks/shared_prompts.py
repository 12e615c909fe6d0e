"""Few-shot instruction sampling on the embedded model: each prompt copied n times before the prompt pass
(``num_return_sequences``, the baseline) vs encoded once with its KV cache repeated (the pipeline's
:func:`resources.generation.transformers_backend.shared_prompt_inputs`), for the
compact and the official synthesis prompts.

Run: python benchmarks/shared_prompts.py [--prompts 8] [--samples 4] [--max-new-tokens 48]. Both ways run on
the same prompts and seed in the same run and must give the same tokens; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl
import torch

from resources.generation.transformers_backend import shared_prompt_inputs
from resources.models import load_causal_lm, resolve_model_source
from resources.synthesis.synthesize import few_shot_prompts, teacher_prompt

ROOT = Path(__file__).resolve().parent.parent


def sample(model, encoded: dict, samples: int, max_new_tokens: int, shared: bool) -> tuple[float, torch.Tensor]:  # noqa: ANN001
    """Seconds and generated tokens of one batch, sampled as the synthesis does (T=1, top-p 0.9)."""
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.inference_mode():
        if shared:
            inputs = shared_prompt_inputs(model, encoded["input_ids"], encoded["attention_mask"], samples)
        else:
            inputs = {**encoded, "num_return_sequences": samples}
        output = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=0.9, top_k=None,
                                max_new_tokens=max_new_tokens, pad_token_id=model.generation_config.eos_token_id)
    return time.perf_counter() - started, output[:, encoded["input_ids"].shape[1]:]


def main() -> int:
    """Time both ways per synthesis style and print the speedup."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8, help="prompts per style (batches of 4 prompts)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = load_causal_lm(resolve_model_source("embedded:smollm2", ROOT / ".montessori" / "models"))
    tokenizer.padding_side = "left"
    seeds = pl.read_ndjson(ROOT / "data" / "seed_prompts.jsonl")
    results = {}
    for style in ("compact", "official"):
        prompts = few_shot_prompts(style, seeds, args.prompts, seed=7)
        texts = [teacher_prompt(tokenizer, p.message) for p in prompts.build(0, len(prompts), [])]
        totals = {"copied": 0.0, "shared": 0.0}
        identical, width = True, 0
        for start in range(0, len(texts), 4):
            encoded = tokenizer(texts[start : start + 4], return_tensors="pt", padding=True, add_special_tokens=False)
            width = max(width, encoded["input_ids"].shape[1])
            copied_s, copied = sample(model, encoded, args.samples, args.max_new_tokens, shared=False)
            shared_s, shared = sample(model, encoded, args.samples, args.max_new_tokens, shared=True)
            totals["copied"] += copied_s
            totals["shared"] += shared_s
            identical &= torch.equal(copied, shared)
        speedup = totals["copied"] / totals["shared"]
        results[style] = {"prompt_tokens_max": width, "copied_s": round(totals["copied"], 2),
                          "shared_s": round(totals["shared"], 2), "speedup": round(speedup, 2),
                          "identical_tokens": identical}
        print(f"{style:<9} prompts up to {width} tokens: copied {totals['copied']:.1f} s, shared "
              f"{totals['shared']:.1f} s = {speedup:.2f}x, identical tokens: {identical}")
    print(json.dumps({"prompts": args.prompts, "samples": args.samples, "max_new_tokens": args.max_new_tokens,
                      **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
