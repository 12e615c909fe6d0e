"""The influence feature store (``influence.method: projected``) against first-order on the embedded model: build
cost, retarget cost, fidelity at several projection sizes, storage, and why a size suffices.

Workload: the influence benchmark's (``benchmarks/influence.py``): its warm state, its candidates (held-out
instructions x 4 responses), reference set A = ``data/reference_set.jsonl``; retargeting goes to B =
``data/reference_math.jsonl`` (arithmetic). Measured, one torch thread, process CPU seconds (robust when other work
shares the cores), baseline and new method in the same run:

1. **Build vs first-order**, interleaved batch by batch (which goes first alternates): first-order scoring of each
   batch against A, and the projected engine building the same batch's features at the default size.
2. **Retarget to B**: the reference gradient of B (what any method pays), then what the store adds on top: reading
   every stored feature back from Parquet, a fresh projected engine, projecting the gradient, the exact null-step
   term and the dot products. Beside it, first-order's full re-score: the same reference gradient plus every
   candidate again at its measured per-candidate cost.
3. **Fidelity** at ``--sizes`` (the default size and the next smaller one under ``--seeds`` draws of the matrices),
   from one pass over the candidates that also gives first-order's scores against B: Spearman and within-prompt pair
   agreement (pairs of a positive and a negative candidate of one instruction under first-order's null-step sign)
   against first-order on A and B, and against exact on the first ``--exact-candidates``. Also: each candidate's
   update's cosine with the reference gradient, whose spread across candidates, set against the projection's error
   in the same units, is what a size has to resolve.
4. **First-order's update + dot**: where a candidate's time goes (``benchmarks/influence.py``'s breakdown) and the
   variants of the element-wise update that were tried, on the warm state's own moments.

With ``--effect R``, also the effect experiment's own candidates of replicate R (the ``effect`` profile run up to
its warm student under ``--effect-out``: the teacher's synthesis and the profile's warm-up, several minutes on 2
cores, reused by a rerun): first-order against the profile's math reference set and the general one, and the
projected default size, from one pass.

Run: python benchmarks/influence_store.py [--candidates 32] [--exact-candidates 8] [--sizes 8 12 16 24 32 64]
[--effect 0 [--effect-only]]; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from benchmarks.influence import ROOT, WARMUP, breakdown, candidate_pairs, pair_agreement, timed
from resources.experiment.diagnostics import spearman
from resources.influence.engines import (
    AdamWMoments,
    ExactInfluence,
    FirstOrderInfluence,
    InfluenceScore,
    ProjectedInfluence,
)
from resources.influence.feature_store import FeatureStore
from resources.influence.projection import DEFAULT_DIM, ProjectionSpec
from resources.models import load_causal_lm, resolve_model_source
from resources.storage.tables import TableStore
from resources.training.encoding import encode_pairs
from resources.training.warmup import save_training_state, warmup_sft

BATCH = 4  # candidates per backward pass, both methods


def fidelity(reference: list[InfluenceScore], effects: list[float], prompts: list[int]) -> dict[str, float]:
    """Spearman and within-prompt pair agreement of ``effects`` (minus influence) with ``reference``'s scores."""
    influence = [-e for e in effects]
    pairs, count = pair_agreement(reference, influence, prompts)
    return {"spearman": round(spearman([s.influence for s in reference], influence), 4),
            "pair_agreement": round(pairs, 4), "pairs": count}


def as_scores(loss_before: float, null_effect: float, effects: list[float]) -> list[InfluenceScore]:
    """First-order-style scores from effects (``loss_after = loss_before + effect``)."""
    return [InfluenceScore(loss_before, loss_before + e, loss_before + null_effect, -e) for e in effects]


def update_norm_sq(moments: AdamWMoments, grads: torch.Tensor, block: int) -> torch.Tensor:
    """``|(Δθ(g) − Δθ(0)) / lr|²`` for each row of ``grads`` (float64)."""
    total = grads.new_zeros(grads.shape[0], dtype=torch.float64)
    for start in range(0, grads.shape[1], block):
        end = min(start + block, grads.shape[1])
        diff = moments.direction(grads[:, start:end], start, end) - moments.direction(
            grads.new_zeros(1, end - start), start, end)
        total += diff.square().sum(1).double()
    return total * (moments.step_scale / moments.lr) ** 2


def interleaved_build(first_order: FirstOrderInfluence, projected: ProjectedInfluence, candidates: list
                      ) -> tuple[list[InfluenceScore], torch.Tensor, float, float]:
    """First-order scores against its reference set and projected features for every candidate, batch by batch,
    alternating which runs first; with each method's CPU seconds."""
    scores: list[InfluenceScore | None] = [None] * len(candidates)
    features = torch.empty(len(candidates), projected.projector.features)
    cpu = {"first_order": 0.0, "projected": 0.0}
    for turn, batch in enumerate(first_order.batched(candidates)):
        group = [candidates[k] for k in batch]
        runs = [("first_order", lambda g=group: first_order.score_all(g)),
                ("projected", lambda g=group: projected.features(g))]
        for name, run in runs if turn % 2 == 0 else runs[::-1]:
            result, _, seconds = timed(run)
            cpu[name] += seconds
            if name == "first_order":
                for k, score in zip(batch, result, strict=True):
                    scores[k] = score
            else:
                features[batch] = result
    return scores, features, cpu["first_order"], cpu["projected"]


def fidelity_pass(first_order: FirstOrderInfluence, terms_b: list, engines: dict[str, ProjectedInfluence],
                  candidates: list) -> dict[str, object]:
    """One backward pass per batch giving: first-order effects against A and B, every engine's features, and each
    candidate's ``|(Δθ(g) − Δθ(0)) / lr|²``."""
    n = len(candidates)
    effects_a, effects_b, norms = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), \
        torch.zeros(n, dtype=torch.float64)
    features = {name: torch.empty(n, e.projector.features) for name, e in engines.items()}
    for batch in first_order.batched(candidates):
        rows, index = len(batch), torch.tensor(batch)
        parts = {name: torch.empty(rows, e.projector.features) for name, e in engines.items()}
        sums = torch.zeros(3, rows, dtype=torch.float64)

        def sink(i: int, grads: torch.Tensor, rows: int = rows, parts: dict = parts, sums: torch.Tensor = sums) -> None:
            flat, block = grads.reshape(rows, -1), max(1, first_order.block // rows)
            sums[0] += first_order.terms[i].effect(flat, block)
            sums[1] += terms_b[i].effect(flat, block)
            sums[2] += update_norm_sq(first_order.moments[i], flat, block)
            for name, engine in engines.items():
                parts[name][:, engine.projector.slice(i)] = engine.tensor_features(i, grads)

        first_order.backward([candidates[k] for k in batch], sink)
        effects_a[index], effects_b[index], norms[index] = sums[0], sums[1], sums[2]
        for name in engines:
            features[name][batch] = parts[name]
    return {"effects_a": effects_a.tolist(), "effects_b": effects_b.tolist(), "update_norms": norms.sqrt().tolist(),
            "features": features}


def update_variants(first_order: FirstOrderInfluence, rows: int = BATCH, repeats: int = 3,
                    elements: int = 1 << 25) -> dict[str, float]:
    """CPU seconds per candidate of the update + dot, scaled to every scored parameter, eager as the engine runs it
    and in the variants tried, on the warm state's moments of the first tensors holding ``elements`` parameters
    (random gradients), interleaved ``repeats`` times (median)."""
    generator = torch.Generator().manual_seed(0)
    cases, total = [], sum(t.reference_grad.numel() for t in first_order.terms)
    for terms in first_order.terms:
        if sum(g.shape[1] for _, g in cases) >= elements:
            break
        cases.append((terms, torch.randn(rows, terms.reference_grad.numel(), generator=generator) * 1e-4))
    scale = total / sum(g.shape[1] for _, g in cases) / rows
    block = max(1, first_order.block // rows)

    def blocks(size: int) -> None:
        for terms, grads in cases:
            terms.effect(grads, max(1, size // rows))

    def folded() -> None:  # out= buffers (no allocation per block) and sqrt(beta2 / bias2) folded out: 6 passes, not 7
        a, d = torch.empty(rows * block), torch.empty(rows * block)
        for terms, grads in cases:
            m = terms.moments
            root = (m.beta2 / m.bias2) ** 0.5
            for start in range(0, grads.shape[1], block):
                end = min(start + block, grads.shape[1])
                g, width = grads[:, start:end], end - start
                num, den = a[: rows * width].view(rows, width), d[: rows * width].view(rows, width)
                torch.addcmul(m.exp_avg_sq[start:end].expand(rows, width), g, g, value=(1 - m.beta2) / m.beta2,
                              out=den)
                den.sqrt_().add_(m.eps / root)
                torch.lerp(m.exp_avg[start:end].expand(rows, width), g, 1 - m.beta1, out=num)
                num.div_(den) @ terms.reference_grad[start:end]

    prescaled_v = [t.moments.exp_avg_sq * (t.moments.beta2 / t.moments.bias2) for t, _ in cases]

    def prescaled() -> None:  # v · beta2 / bias2 computed once (one pass less per candidate, +4 bytes per parameter)
        for (terms, grads), v in zip(cases, prescaled_v, strict=True):
            m = terms.moments
            for start in range(0, grads.shape[1], block):
                g = grads[:, start : start + block]
                num = torch.lerp(m.exp_avg[start : start + block], g, 1 - m.beta1)
                den = torch.addcmul(v[start : start + block], g, g, value=(1 - m.beta2) / m.bias2)
                num.div_(den.sqrt_().add_(m.eps)) @ terms.reference_grad[start : start + block]

    variants = {"engine (64K-element blocks)": lambda: blocks(first_order.block), "16K blocks": lambda: blocks(1 << 14),
                "256K blocks": lambda: blocks(1 << 18), "out= buffers, scale folded": folded,
                "pre-scaled v (+4 B/param)": prescaled}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            seconds[name].append(timed(run)[2] * scale)
    return {name: round(sorted(values)[len(values) // 2], 3) for name, values in seconds.items()}


def effect_fidelity(replicate: int, out: Path, spec: ProjectionSpec) -> dict[str, object]:
    """Projected (``spec``) against first-order on the effect experiment's candidates of ``replicate``, against its
    math reference set (A) and the general one (B)."""
    import yaml

    from assets.config import resolve_path
    from dagster_project.experiment import materialize_upstream
    from dagster_project.resources import build_resources
    from dagster_project.runs import ensure_dagster_home
    from dagster_project.settings import load_settings
    from resources.storage.tables import publish_bytes
    from resources.training.warm_start import split_warmup
    from resources.training.warmup import load_training_state

    ensure_dagster_home()
    settings = load_settings("effect")
    document = settings.document()
    document["runtime"]["seed"] = seed = settings.runtime.seed + replicate
    document["name"] = f"{document['name']}-store"
    document["storage"].update(tables=str(out / "tables"), cache=str(out / "cache"),
                               checkpoints=str(out / "checkpoints"))
    profile = out / f"effect-r{replicate}.yaml"
    publish_bytes(profile, yaml.safe_dump(document, sort_keys=False).encode())
    print(f"effect profile, replicate {replicate}: pipeline up to the warm student ...", flush=True)
    _, summary = materialize_upstream(str(profile), ["warm_student"], {"montessori/benchmark": "influence_store"},
                                      "of the effect candidates")
    synthetic = TableStore.read(summary["synthetic_instructions"]["path"])
    _, candidates = split_warmup(synthetic.filter(pl.col("kept")), settings.warmup.fraction, seed)
    uri = TableStore.read(summary["warm_student"]["path"])["uri"][0]
    folder = build_resources(load_settings(str(profile)))["stores"].checkpoint_store().local_folder(uri)
    model, tokenizer, optimizer = load_training_state(folder)
    pad, influence = tokenizer.pad_token_id, settings.influence

    def encode(table: pl.DataFrame) -> list:
        return encode_pairs(tokenizer, table["instruction"].to_list(), table["response"].to_list(),
                            influence.max_length, influence.truncation)

    references = [encode(pl.read_ndjson(resolve_path(path))) for path in (settings.data.reference_set,
                                                                           "data/reference_set.jsonl")]
    prompt_ids = candidates["prompt_id"].to_list()
    prompts = [sorted(set(prompt_ids)).index(p) for p in prompt_ids]
    first_order = FirstOrderInfluence(model, optimizer, references[0], pad, influence.reference_batch_size,
                                      candidate_batch_size=BATCH)
    loss_b, terms_b = first_order.reference_terms(references[1])
    engine = ProjectedInfluence(model, optimizer, None, pad, spec, influence.reference_batch_size)
    print(f"effect candidates: {candidates.height}, fidelity pass ...", flush=True)
    curve = fidelity_pass(first_order, terms_b, {"default": engine}, encode(candidates))
    result: dict[str, object] = {"replicate": replicate, "candidates": candidates.height}
    for key, effects, null, loss, terms in (
            ("A", curve["effects_a"], first_order.null_effect_value, first_order.loss_before, first_order.terms),
            ("B", curve["effects_b"], first_order.null_effect(terms_b), loss_b, terms_b)):
        projected = ProjectedInfluence.effects(curve["features"]["default"], engine.side_of(loss, terms))
        result[key] = fidelity(as_scores(loss, null, effects), projected, prompts)
    return result


def main() -> int:
    """Measure, print the tables and the JSON summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--exact-candidates", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 12, 16, 24, 32, 64])
    parser.add_argument("--seeds", type=int, default=3,
                        help="draws of the matrices at the default size and the next smaller one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-cache", default=str(ROOT / ".montessori" / "models"))
    parser.add_argument("--effect", type=int, nargs="*", default=[], help="effect experiment replicates to add")
    parser.add_argument("--effect-out", default=str(ROOT / "experiments" / "effect" / "work" / "influence_store"))
    parser.add_argument("--effect-only", action="store_true", help="only the --effect replicates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.effect_only:
        effect = [effect_fidelity(r, Path(args.effect_out), ProjectionSpec(DEFAULT_DIM)) for r in args.effect]
        print(json.dumps({"default_dim": DEFAULT_DIM, "effect": effect}))
        return 0
    started, load_start = time.perf_counter(), os.getloadavg()
    model, tokenizer = load_causal_lm(resolve_model_source("embedded:smollm2", args.model_cache))
    pad = tokenizer.pad_token_id

    def encode(table: pl.DataFrame) -> list:
        return encode_pairs(tokenizer, table["instruction"].to_list(), table["response"].to_list(), 256)

    heldout = pl.read_ndjson(ROOT / "data" / "heldout_set.jsonl")
    optimizer, _ = warmup_sft(model, encode(heldout[16:24]), pad, WARMUP)
    reference_a = encode(pl.read_ndjson(ROOT / "data" / "reference_set.jsonl"))
    reference_b = encode(pl.read_ndjson(ROOT / "data" / "reference_math.jsonl"))
    instructions, responses, prompts = candidate_pairs(args.candidates)
    candidates = encode_pairs(tokenizer, instructions, responses, 256)
    n, spec = len(candidates), ProjectionSpec(DEFAULT_DIM)
    summary: dict = {"candidates": n, "threads": args.threads, "load_avg_start": load_start, "default_dim": spec.dim,
                     "reference_a": len(reference_a), "reference_b": len(reference_b)}

    print(f"set-up: first-order against A ({len(reference_a)} pairs), projected builder at dim {spec.dim} ...",
          flush=True)
    first_order, _, fo_setup = timed(lambda: FirstOrderInfluence(model, optimizer, reference_a, pad, 8,
                                                                candidate_batch_size=BATCH))
    projected, _, projected_setup = timed(lambda: ProjectedInfluence(model, optimizer, None, pad, spec, 8,
                                                                    candidate_batch_size=BATCH))
    _, _, null_features = timed(projected.null_features)  # the null step's features, once per build
    print(f"build: {n} candidates, batches of {BATCH}, interleaved ...", flush=True)
    fo_scores, features, fo_cpu, build_cpu = interleaved_build(first_order, projected, candidates)
    summary["build"] = {
        "first_order_cpu_s_per_candidate": round(fo_cpu / n, 3),
        "projected_cpu_s_per_candidate": round(build_cpu / n, 3),
        "ratio": round(build_cpu / fo_cpu, 3), "first_order_setup_cpu_s": round(fo_setup, 2),
        "projected_setup_cpu_s": round(projected_setup + null_features, 2)}
    print(summary["build"], flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        store = FeatureStore(TableStore(scratch), "warm", {"projection": spec.versioned()})
        ids = [f"c{k}" for k in range(n)]
        for start in range(0, n, 8):
            store.save(ids[start : start + 8], [0.0] * len(ids[start : start + 8]), features[start : start + 8])
        stored_bytes = sum(path.stat().st_size for path in Path(store.folder.path).glob("*.parquet"))
        print("retarget to B ...", flush=True)
        (loss_b, terms_b), _, gradient_cpu = timed(lambda: first_order.reference_terms(reference_b))
        loaded, _, load_cpu = timed(lambda: store.load(ids))
        engine_b, _, engine_cpu = timed(lambda: ProjectedInfluence(model, optimizer, None, pad, spec, 8))
        side_b, _, side_cpu = timed(lambda: engine_b.side_of(loss_b, terms_b))
        retargeted, _, dot_cpu = timed(lambda: ProjectedInfluence.scores(loaded.features, side_b))
    overhead = load_cpu + engine_cpu + side_cpu + dot_cpu
    summary["storage"] = {"features_per_candidate": projected.projector.features,
                          "float32_bytes_per_candidate": projected.projector.features * 4,
                          "parquet_bytes_per_candidate": round(stored_bytes / n)}
    summary["retarget"] = {
        "reference_gradient_cpu_s": round(gradient_cpu, 2), "store_read_cpu_s": round(load_cpu, 3),
        "engine_cpu_s": round(engine_cpu, 3), "project_gradient_and_null_cpu_s": round(side_cpu, 3),
        "dots_cpu_s": round(dot_cpu, 4), "overhead_cpu_s": round(overhead, 3),
        "total_cpu_s": round(gradient_cpu + overhead, 2),
        "first_order_rescore_cpu_s": round(gradient_cpu + fo_cpu, 2),
        "speedup": round((gradient_cpu + fo_cpu) / (gradient_cpu + overhead), 1)}
    print(summary["retarget"], flush=True)

    engines = {f"dim {d}": ProjectedInfluence(model, optimizer, None, pad, ProjectionSpec(d), 8) for d in args.sizes}
    # more draws where the default is decided: the default size and the next smaller one measured
    decisive = [spec.dim, *[d for d in sorted(args.sizes, reverse=True) if d < spec.dim][:1]]
    engines |= {f"dim {d} seed {s}": ProjectedInfluence(model, optimizer, None, pad, ProjectionSpec(d, s), 8)
                for d in decisive for s in range(1, args.seeds)}
    print(f"fidelity pass: {len(engines)} projections, first-order against A and B ...", flush=True)
    curve = fidelity_pass(first_order, terms_b, engines, candidates)
    null_b = first_order.null_effect(terms_b)
    fo_a = as_scores(first_order.loss_before, first_order.null_effect_value, curve["effects_a"])
    fo_b = as_scores(loss_b, null_b, curve["effects_b"])
    summary["build_matches_fidelity_pass"] = max(abs(a.influence - b.influence) for a, b in zip(fo_scores, fo_a,
                                                                                                  strict=True))
    lr = first_order.moments[0].lr
    reference_norms = [sum(float(t.reference_grad.double().square().sum()) for t in terms) ** 0.5
                       for terms in (first_order.terms, terms_b)]
    cosines = {}
    for key, effects, null, norm in (("A", curve["effects_a"], first_order.null_effect_value, reference_norms[0]),
                                     ("B", curve["effects_b"], null_b, reference_norms[1])):
        cosines[key] = [(e - null) / (lr * u * norm) for e, u in zip(effects, curve["update_norms"], strict=True)]
    summary["cosine"] = {key: {"min": round(min(c), 4), "median": round(sorted(c)[n // 2], 4), "max": round(max(c), 4),
                               "sd": round(float(torch.tensor(c).std()), 4)} for key, c in cosines.items()}
    rows = []
    for name, engine in engines.items():
        row = {"projection": name, "features": engine.projector.features}
        for key, scores, terms, loss, norm in (("A", fo_a, first_order.terms, first_order.loss_before,
                                                reference_norms[0]), ("B", fo_b, terms_b, loss_b, reference_norms[1])):
            effects = ProjectedInfluence.effects(curve["features"][name], engine.side_of(loss, terms))
            row[key] = fidelity(scores, effects, prompts)
            errors = [(p + s.influence) / (lr * u * norm)
                      for p, s, u in zip(effects, scores, curve["update_norms"], strict=True)]
            row[key]["error_cosine_units"] = round(float(torch.tensor(errors).square().mean().sqrt()), 5)
        rows.append(row)
        print(row, flush=True)
    summary["curve"] = rows
    summary["retarget_matches_fidelity_pass"] = max(
        abs(a.influence + b) for a, b in zip(retargeted, ProjectedInfluence.effects(
            curve["features"][f"dim {spec.dim}"], side_b), strict=True))

    k = min(args.exact_candidates, n)
    print(f"exact on the first {k} candidates, A and B ...", flush=True)
    default = curve["features"][f"dim {spec.dim}"][:k]
    subset = {}
    for key, reference, terms, loss in (("A", reference_a, first_order.terms, first_order.loss_before),
                                        ("B", reference_b, terms_b, loss_b)):
        exact, _, exact_cpu = timed(lambda r=reference: ExactInfluence(model, optimizer, r, pad, 8).score_all(
            candidates[:k]))
        fo = [-s.influence for s in (fo_a if key == "A" else fo_b)[:k]]
        subset[key] = {"first_order": fidelity(exact, fo, prompts[:k]),
                       "projected": fidelity(exact, ProjectedInfluence.effects(default, projected.side_of(loss, terms)),
                                             prompts[:k]),
                       "exact_cpu_s": round(exact_cpu, 1)}
    summary["vs_exact"] = {"candidates": k, **subset}
    print(summary["vs_exact"], flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        save_training_state(model, tokenizer, optimizer, Path(scratch))
        summary["first_order_breakdown"] = breakdown(scratch, reference_a, candidates, pad, BATCH)
    summary["update_dot_variants"] = update_variants(first_order)
    print("first-order CPU s per candidate:", summary["first_order_breakdown"], summary["update_dot_variants"],
          flush=True)
    summary["seconds"] = round(time.perf_counter() - started)
    summary["cpu_seconds"] = round(time.process_time())
    summary["effect"] = [effect_fidelity(r, Path(args.effect_out), spec) for r in args.effect]
    for result in summary["effect"]:
        print(result, flush=True)
    summary["effect_seconds"] = round(time.perf_counter() - started) - summary["seconds"]
    summary["load_avg_end"] = os.getloadavg()
    print(f"\n{'projection':<22}{'features':>10}{'Spearman A':>12}{'pairs A':>9}{'Spearman B':>12}{'pairs B':>9}"
          f"{'err A (cos)':>13}{'err B (cos)':>13}")
    for row in rows:
        print(f"{row['projection']:<22}{row['features']:>10}{row['A']['spearman']:>12.4f}"
              f"{row['A']['pair_agreement']:>9.0%}{row['B']['spearman']:>12.4f}{row['B']['pair_agreement']:>9.0%}"
              f"{row['A']['error_cosine_units']:>13.5f}{row['B']['error_cosine_units']:>13.5f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
