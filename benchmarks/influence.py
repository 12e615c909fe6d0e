"""Influence scoring on the embedded model: the paper's loop vs exact-fast vs first-order (sequential,
batched, last layers only), their agreement with exact, what the scores correlate with, where the
first-order time goes, and how each method's cost grows with reference-set size and candidate length.

Run: python benchmarks/influence.py [--candidates 32] [--baseline-candidates 2] [--model-cache DIR].
Every method is measured in the same run on the same warm state, in wall time and in process CPU time
(robust when other work shares the cores); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import polars as pl
import torch

from resources.experiment.diagnostics import spearman
from resources.influence.engines import FirstOrderInfluence, InfluenceScore, make_influence_engine
from resources.influence.paper_loop import paper_loop_influence
from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import IGNORE_INDEX, collate, encode_pairs, per_example_loss
from resources.training.warmup import WarmupParams, load_training_state, save_training_state, warmup_sft

ROOT = Path(__file__).resolve().parent.parent
LAST_LAYERS = r"layers\.(2[6-9])\."
VARIANTS = 4  # candidates per "prompt": the real answer, shuffled words, another answer, its first half
METHODS = {  # name: (method, param_pattern, candidate_batch_size)
    "exact": ("exact", None, 1),
    "first_order": ("first_order", None, 1),
    "first_order_batch4": ("first_order", None, 4),
    "first_order_last4": ("first_order", LAST_LAYERS, 1),
}


WARMUP = WarmupParams(5e-6, epochs=1, batch_size=2, weight_decay=0.0, seed=0, gradient_accumulation=1,
                      schedule="constant", loss="example_mean")


def candidate_pairs(n: int) -> tuple[list[str], list[str], list[int]]:
    """Instructions, responses and a prompt id: ``VARIANTS`` responses per held-out instruction."""
    heldout = pl.read_ndjson(ROOT / "data" / "heldout_set.jsonl")
    instructions, responses = heldout["instruction"].to_list(), heldout["response"].to_list()
    rng = random.Random(0)
    out_i, out_r, prompts = [], [], []
    for k in range(n):
        i, variant = divmod(k, VARIANTS)
        words = responses[i].split()
        if variant == 1:
            rng.shuffle(words)
        response = {0: responses[i], 1: " ".join(words), 2: responses[(i + 7) % len(responses)],
                    3: " ".join(words[: max(1, len(words) // 2)])}[variant]
        out_i.append(instructions[i])
        out_r.append(response)
        prompts.append(i)
    return out_i, out_r, prompts


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Result, wall seconds and process CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_engine(folder: str, name: str, reference: list, candidates: list, pad: int) -> dict:
    """Build the engine ``name`` on a fresh copy of the warm state, score ``candidates``; times split
    into set-up (reference pass or gradient, null step) and scoring."""
    method, pattern, batch = METHODS[name]
    model, _, optimizer = load_training_state(folder)
    engine, setup_wall, setup_cpu = timed(lambda: make_influence_engine(
        method, model, optimizer, reference, pad, 8, pattern, candidate_batch_size=batch))
    scores, wall, cpu = timed(lambda: engine.score_all(candidates))
    return {"scores": scores, "setup_wall": setup_wall, "setup_cpu": setup_cpu, "wall": wall, "cpu": cpu}


def pair_agreement(exact: list[InfluenceScore], other: list[float], prompts: list[int]) -> tuple[float, int]:
    """Share of within-prompt (positive, negative) pairs under exact's null-step sign whose order
    ``other`` keeps, and how many such pairs there are."""
    sign = [s.loss_null_step > s.loss_after for s in exact]
    pairs = [(i, j) for i, j in combinations(range(len(exact)), 2) if prompts[i] == prompts[j] and sign[i] != sign[j]]
    kept = sum((exact[i].influence > exact[j].influence) == (other[i] > other[j]) for i, j in pairs)
    return (kept / len(pairs) if pairs else float("nan")), len(pairs)


def breakdown(folder: str, reference: list, candidates: list, pad: int, batch: int, repeats: int = 2) -> dict:
    """First-order CPU seconds per candidate: forward, forward+backward with per-example gradients
    (no update), update+dot (every parameter tensor, from gradients already in memory), whole step."""
    model, _, optimizer = load_training_state(folder)
    engine = FirstOrderInfluence(model, optimizer, reference[:4], pad, 8, candidate_batch_size=batch)
    group = candidates[:batch]
    zeros = [torch.zeros(batch, t.reference_grad.numel()) for t in engine.terms]

    def forward() -> None:
        with torch.no_grad():
            per_example_loss(model, collate(group, pad))

    def backward() -> None:
        with engine.gradients.capture(batch, lambda i, g: None):
            per_example_loss(model, collate(group, pad)).sum().backward()

    def update() -> None:
        for terms, grads in zip(engine.terms, zeros, strict=True):
            terms.effect(grads, max(1, engine.block // batch))

    parts = {"forward": forward, "forward_backward": backward, "update_dot": update,
             "total": lambda: engine.score_all(group)}
    out = {}
    for name, fn in parts.items():
        fn()
        out[name] = round(sum(timed(fn)[2] for _ in range(repeats)) / repeats / batch, 3)
    return out


def scaling(folder: str, tokenizer, reference: list, pad: int) -> list[dict]:  # noqa: ANN001
    """Per-candidate CPU seconds of exact and first-order for 2-3 reference sizes and candidate lengths
    (candidates made by joining held-out answers, cut to the target length in tokens)."""
    heldout = pl.read_ndjson(ROOT / "data" / "heldout_set.jsonl")
    text = " ".join(heldout["response"].to_list())
    rows = []
    for length in (64, 128, 256):
        candidates = encode_pairs(tokenizer, heldout["instruction"][:3].to_list(), [text] * 3, length)
        for refs in ((8, 16, 32) if length == 64 else (32,)):
            for name in ("exact", "first_order"):
                run = run_engine(folder, name, reference[:refs], candidates, pad)
                rows.append({"method": name, "reference_size": refs, "candidate_tokens": length,
                             "setup_cpu_s": round(run["setup_cpu"], 2),
                             "cpu_s_per_candidate": round(run["cpu"] / len(candidates), 3)})
                print(rows[-1], flush=True)
    return rows


def main() -> int:
    """Measure every method, print tables and the JSON summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--baseline-candidates", type=int, default=2)
    parser.add_argument("--pad-to", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-cache", default=str(ROOT / ".montessori" / "models"))
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model, tokenizer = load_causal_lm(resolve_model_source("embedded:smollm2", args.model_cache))
    reference_table = pl.read_ndjson(ROOT / "data" / "reference_set.jsonl")
    reference = encode_pairs(tokenizer, reference_table["instruction"].to_list(),
                             reference_table["response"].to_list(), 256)
    heldout = pl.read_ndjson(ROOT / "data" / "heldout_set.jsonl")
    warm_examples = encode_pairs(tokenizer, heldout["instruction"][16:24].to_list(),
                                 heldout["response"][16:24].to_list(), 256)
    optimizer, _ = warmup_sft(model, warm_examples, tokenizer.pad_token_id, WARMUP)
    instructions, responses, prompts = candidate_pairs(args.candidates)
    candidates = encode_pairs(tokenizer, instructions, responses, 256)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        own_loss = [float(per_example_loss(model, collate([c], pad))[0]) for c in candidates]
    response_tokens = [sum(label != IGNORE_INDEX for label in c.labels) for c in candidates]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        save_training_state(model, tokenizer, optimizer, Path(scratch))
        for name in METHODS:
            print(f"{name} on {len(candidates)} candidates ...", flush=True)
            results[name] = run_engine(scratch, name, reference, candidates, pad)
        shared = candidates[: args.baseline_candidates]
        print(f"paper loop on {len(shared)} candidates (reference padded to {args.pad_to}) ...", flush=True)
        baseline, baseline_wall, baseline_cpu = timed(
            lambda: paper_loop_influence(scratch, reference, shared, pad, args.pad_to, 8))
        breakdowns = {f"batch{b}": breakdown(scratch, reference, candidates, pad, b) for b in (1, 4)}
        print("first-order CPU s per candidate:", breakdowns, flush=True)
        growth = [] if args.skip_scaling else scaling(scratch, tokenizer, reference, pad)
    # The paper loop pays its null step (one more candidate's cost) and a reference pass; the fast engines'
    # set-up (reference pass or gradient, null step) is amortized over the candidates in "s/candidate".
    n = len(candidates)
    per_wall = {"paper_loop": baseline_wall / (len(shared) + 1)}
    per_cpu = {"paper_loop": baseline_cpu / (len(shared) + 1)}
    exact = results["exact"]["scores"]
    summary: dict = {"candidates": n, "threads": args.threads, "load_avg_start": load_start,
                     "paper_loop_s_per_candidate": round(per_wall["paper_loop"], 2),
                     "paper_loop_cpu_s_per_candidate": round(per_cpu["paper_loop"], 2),
                     "exact_vs_paper_loop_max_abs_diff": max(abs(a.influence - b.influence)
                                                             for a, b in zip(exact, baseline, strict=False)),
                     "exact_positive_share_before_step": sum(s.influence > 0 for s in exact) / n,
                     "exact_positive_share_null_step": sum(s.loss_null_step > s.loss_after for s in exact) / n}
    print(f"\n{'method':<20}{'s/cand':>8}{'setup s':>9}{'cpu s/c':>9}{'speedup':>9}{'cpu sp.':>9}{'spearman':>10}"
          f"{'pairs':>8}{'null sign':>10}")
    print(f"{'paper loop':<20}{per_wall['paper_loop']:>8.2f}{'':>9}{per_cpu['paper_loop']:>9.2f}{1.0:>9.1f}{1.0:>9.1f}")
    for name, run in results.items():
        scores = run["scores"]
        per_wall[name] = (run["setup_wall"] + run["wall"]) / n
        per_cpu[name] = (run["setup_cpu"] + run["cpu"]) / n
        sp = spearman([s.influence for s in exact], [s.influence for s in scores])
        pairs, pair_count = pair_agreement(exact, [s.influence for s in scores], prompts)
        null = sum((a.loss_null_step > a.loss_after) == (b.loss_null_step > b.loss_after)
                   for a, b in zip(exact, scores, strict=True)) / n
        speedup, cpu_speedup = per_wall["paper_loop"] / per_wall[name], per_cpu["paper_loop"] / per_cpu[name]
        print(f"{name:<20}{per_wall[name]:>8.2f}{run['setup_wall']:>9.1f}{per_cpu[name]:>9.2f}{speedup:>9.1f}"
              f"{cpu_speedup:>9.1f}{sp:>10.3f}{pairs:>8.0%}{null:>10.0%}")
        summary[name] = {"s_per_candidate": round(per_wall[name], 3), "setup_s": round(run["setup_wall"], 2),
                         "scoring_s_per_candidate": round(run["wall"] / n, 3),
                         "cpu_s_per_candidate": round(per_cpu[name], 3),
                         "scoring_cpu_s_per_candidate": round(run["cpu"] / n, 3),
                         "speedup": round(speedup, 1), "cpu_speedup": round(cpu_speedup, 1),
                         "spearman_vs_exact": round(sp, 4), "pair_agreement": pairs, "pairs": pair_count,
                         "null_step_sign_agreement": null}
    exact_influence = [s.influence for s in exact]
    summary["exact_spearman_with_response_tokens"] = round(spearman(exact_influence, response_tokens), 3)
    summary["exact_spearman_with_own_loss"] = round(spearman(exact_influence, own_loss), 3)
    summary["first_order_cpu_breakdown"] = breakdowns
    summary["scaling"] = growth
    summary["load_avg_end"] = os.getloadavg()
    print(f"exact vs paper loop: max |influence difference| = {summary['exact_vs_paper_loop_max_abs_diff']:.2e}")
    print(f"exact influence vs response tokens: Spearman {summary['exact_spearman_with_response_tokens']}, "
          f"vs the student's own loss: {summary['exact_spearman_with_own_loss']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
