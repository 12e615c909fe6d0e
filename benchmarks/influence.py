"""Influence scoring on the embedded model: the paper's loop vs exact-fast vs first-order.

Run: python benchmarks/influence.py [--candidates 16] [--baseline-candidates 2]. Every method is
measured in the same run on the same warm state; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from resources.examples import encode_pairs
from resources.influence import make_influence_engine
from resources.influence_baseline import paper_loop_influence
from resources.models import load_causal_lm, resolve_model_source
from resources.training import WarmupConfig, load_training_state, save_training_state, warmup_sft

ROOT = Path(__file__).resolve().parent.parent
LAST_LAYERS = r"layers\.(2[6-9])\."


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (no ties expected in float scores)."""
    ranks = lambda xs: torch.tensor(xs).argsort().argsort().double()  # noqa: E731
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def candidate_pairs(n: int) -> tuple[list[str], list[str]]:
    """Half real held-out pairs, half corrupted (shuffled words or a mismatched answer)."""
    heldout = pl.read_ndjson(ROOT / "data" / "heldout_set.jsonl")
    rng = random.Random(0)
    instructions, responses = heldout["instruction"].to_list(), heldout["response"].to_list()
    out_i, out_r = [], []
    for k in range(n):
        i = k // 2
        out_i.append(instructions[i])
        if k % 2 == 0:
            out_r.append(responses[i])
        elif k % 4 == 1:
            words = responses[i].split()
            rng.shuffle(words)
            out_r.append(" ".join(words))
        else:
            out_r.append(responses[(i + 7) % len(responses)])
    return out_i, out_r


def timed(fn):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main() -> int:
    """Measure every method, print a table and the JSON summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--baseline-candidates", type=int, default=2)
    parser.add_argument("--pad-to", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = resolve_model_source("embedded:smollm2", ROOT / ".montessori" / "models")
    model, tokenizer = load_causal_lm(folder)
    reference_table = pl.read_ndjson(ROOT / "data" / "reference_set.jsonl")
    reference = encode_pairs(tokenizer, reference_table["instruction"].to_list(),
                             reference_table["response"].to_list(), 256)
    heldout = pl.read_ndjson(ROOT / "data" / "heldout_set.jsonl")
    warm_examples = encode_pairs(tokenizer, heldout["instruction"][16:24].to_list(),
                                 heldout["response"][16:24].to_list(), 256)
    optimizer, _ = warmup_sft(model, warm_examples, tokenizer.pad_token_id, WarmupConfig(5e-6, 1, 2))
    candidates = encode_pairs(tokenizer, *candidate_pairs(args.candidates), 256)
    pad = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as scratch:
        save_training_state(model, tokenizer, optimizer, Path(scratch))
        shared = candidates[: args.baseline_candidates]
        print(f"paper loop on {len(shared)} candidates (reference padded to {args.pad_to}) ...", flush=True)
        baseline, baseline_s = timed(lambda: paper_loop_influence(scratch, reference, shared, pad, args.pad_to, 8))
        results = {}
        for name, method, pattern in (("exact", "exact", None), ("first_order", "first_order", None),
                                      ("first_order_last4", "first_order", LAST_LAYERS)):
            model, _, optimizer = load_training_state(scratch)
            print(f"{name} on {len(candidates)} candidates ...", flush=True)
            results[name], results[name + "_s"] = timed(lambda m=method, p=pattern, mo=model, op=optimizer:
                make_influence_engine(m, mo, op, reference, pad, 8, p).score_all(candidates))
    # The paper loop also pays one null step (same cost as a candidate) and one reference pass; the
    # fast engines' setup (reference pass, null step or reference gradient) is included in their times.
    per = {"baseline": baseline_s / (len(shared) + 1)}
    per.update({n: results[n + "_s"] / len(candidates) for n in ("exact", "first_order", "first_order_last4")})
    exact = results["exact"]
    exact_vs_baseline = max(abs(a.influence - b.influence) for a, b in zip(exact, baseline, strict=False))
    summary = {
        "baseline_s_per_candidate": round(per["baseline"], 2),
        "exact_s_per_candidate": round(per["exact"], 2),
        "exact_max_abs_diff": exact_vs_baseline,
        "exact_speedup": round(per["baseline"] / per["exact"], 1),
        "positive_share_before_step": sum(s.influence > 0 for s in exact) / len(exact),
        "positive_share_null_step": sum(s.loss_null_step > s.loss_after for s in exact) / len(exact),
    }
    print(f"\n{'method':<20}{'s/candidate':>12}{'speedup':>9}{'spearman':>10}{'sign agr.':>10}{'null-step sp.':>14}"
          f"{'null sign':>10}")
    print(f"{'paper loop':<20}{per['baseline']:>12.2f}{1.0:>9.1f}")
    for name in ("exact", "first_order", "first_order_last4"):
        scores = results[name]
        sp = spearman([s.influence for s in exact], [s.influence for s in scores])
        agree = sum((a.influence > 0) == (b.influence > 0) for a, b in zip(exact, scores, strict=True)) / len(exact)
        exact_null = [s.loss_null_step - s.loss_after for s in exact]
        null = [s.loss_null_step - s.loss_after for s in scores]
        null_sp = spearman(exact_null, null)
        null_agree = sum((a > 0) == (b > 0) for a, b in zip(exact_null, null, strict=True)) / len(exact)
        speedup = per["baseline"] / per[name]
        print(f"{name:<20}{per[name]:>12.2f}{speedup:>9.1f}{sp:>10.3f}{agree:>10.0%}{null_sp:>14.3f}{null_agree:>10.0%}")
        if name != "exact":
            summary.update({f"{name}_s_per_candidate": round(per[name], 3), f"{name}_speedup": round(speedup, 1),
                            f"{name}_spearman": round(sp, 4), f"{name}_sign_agreement": agree,
                            f"{name}_null_step_spearman": round(null_sp, 4),
                            f"{name}_null_step_sign_agreement": null_agree})
    print(f"exact vs paper loop: max |influence difference| = {exact_vs_baseline:.2e}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
