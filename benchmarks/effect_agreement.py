"""First-order vs exact influence in the effect experiment's own setting: do they form the same DPO pairs?

The effect profile scores candidates with first-order influence because a benchmark on the general reference
set found it ordering pairs as exact does. This checks it where the experiment uses it: replicates of the
``effect`` profile (the teacher's real candidates, the math reference set, the profile's warm-up), run twice
through the pipeline up to ``preference_pairs``, once with ``influence.method: first_order`` (the baseline
here, timed first) and once with ``exact``, sharing one generation cache so both score the same candidates
from the same (deterministically retrained) warm student. Reported: the influence step's seconds per
candidate (ratio exact / first-order), Spearman between the two methods' scores, the share of first-order
pairs whose direction exact keeps (the profile requires >= 90%), the share of identical pairs, and the share
of candidates whose null-step sign agrees.

Run: python benchmarks/effect_agreement.py [--replicates 2 3 4] [--out experiments/effect/work/agreement]; a rerun
reuses what a killed run finished (the caches under ``--out``; its timings then measure the cache, so time
on a fresh ``--out``). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import polars as pl
import yaml

from assets.config import resolve_path
from dagster_project.cli import ensure_dagster_home
from dagster_project.experiment import materialize_upstream
from dagster_project.settings import Settings, load_settings
from resources.experiment.diagnostics import spearman
from resources.preference.pairs import score_column
from resources.storage.tables import TableStore, publish_bytes

TARGET = "preference_pairs"


def run_method(document: dict, method: str, out: Path) -> dict[str, pl.DataFrame | float]:
    """Materialize the profile up to the preference pairs with influence ``method``; its scores, pairs and
    the influence step's seconds."""
    document = copy.deepcopy(document)
    document["name"] = f"{document['name']}-agreement-{method}"
    document["influence"]["method"] = method
    document["storage"].update(tables=str(out / method / "tables"), cache=str(out / "cache"),
                               checkpoints=str(out / method / "checkpoints"))
    profile = out / method / "profile.yaml"
    publish_bytes(profile, yaml.safe_dump(document, sort_keys=False).encode())
    _, summary = materialize_upstream(str(profile), [TARGET], {"montessori/benchmark": "effect_agreement"},
                                      f"with influence.method {method}")
    scores = TableStore.read(summary["influence_scores"]["path"])
    return {"scores": scores, "pairs": TableStore.read(summary[TARGET]["path"]),
            "seconds": summary["influence_scores"]["seconds"]}


def compare(fast: dict, exact: dict, baseline: str) -> dict[str, float]:
    """How far ``fast``'s scores and pairs agree with ``exact``'s (same candidates)."""
    joined = (score_column(fast["scores"], baseline).select("candidate_id", fast_score="score")
              .join(score_column(exact["scores"], baseline).select("candidate_id", exact_score="score"),
                    on="candidate_id"))
    exact_score = dict(zip(joined["candidate_id"], joined["exact_score"], strict=True))
    kept = [exact_score[c] > exact_score[r] for c, r in zip(fast["pairs"]["chosen_id"], fast["pairs"]["rejected_id"],
                                                           strict=True)]
    as_set = lambda pairs: set(zip(pairs["chosen_id"], pairs["rejected_id"], strict=True))  # noqa: E731
    fast_pairs, exact_pairs = as_set(fast["pairs"]), as_set(exact["pairs"])
    return {
        "candidates": joined.height,
        "spearman": round(spearman(joined["fast_score"].to_list(), joined["exact_score"].to_list()), 4),
        "pairs": len(kept),
        "pair_direction_agreement": round(sum(kept) / len(kept), 4) if kept else float("nan"),
        "identical_pairs": round(len(fast_pairs & exact_pairs) / len(fast_pairs | exact_pairs), 4),
        "sign_agreement": round(float(((joined["fast_score"] > 0) == (joined["exact_score"] > 0)).mean()), 4),
    }


def replicate_agreement(settings: Settings, document: dict, replicate: int, out: Path) -> dict[str, float]:
    """Both methods on one replicate (``runtime.seed`` + ``replicate``) and their comparison."""
    document = copy.deepcopy(document)
    document["runtime"]["seed"] = settings.runtime.seed + replicate
    runs = {method: run_method(document, method, out / f"r{replicate}") for method in ("first_order", "exact")}
    result = {"replicate": replicate, **compare(runs["first_order"], runs["exact"], settings.pairs.baseline),
              "exact_pairs": runs["exact"]["pairs"].height}
    per_candidate = {method: run["seconds"] / result["candidates"] for method, run in runs.items()}
    result |= {f"{method}_s_per_candidate": round(s, 3) for method, s in per_candidate.items()}
    result["exact_over_first_order"] = round(per_candidate["exact"] / per_candidate["first_order"], 2)
    print(f"replicate {replicate}: {result['candidates']} candidates, Spearman {result['spearman']}, "
          f"{result['pair_direction_agreement']:.0%} of {result['pairs']} first-order pairs kept by exact, identical "
          f"pair sets {result['identical_pairs']:.0%}, null-step signs {result['sign_agreement']:.0%}; influence step "
          f"{per_candidate['first_order']:.2f} vs {per_candidate['exact']:.2f} s per candidate (exact / first-order "
          f"{result['exact_over_first_order']}x)", flush=True)
    return result


def main() -> int:
    """Run both methods on the chosen replicates of the profile and print the comparison, pooled and each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="effect")
    parser.add_argument("--replicates", type=int, nargs="+", default=[2, 3, 4],
                        help="the experiment's replicates (runtime.seed + r) to check")
    parser.add_argument("--out", default="experiments/effect/work/agreement")
    args = parser.parse_args()
    ensure_dagster_home()
    settings = load_settings(args.profile)
    document, out = settings.document(), Path(resolve_path(args.out))
    results = [replicate_agreement(settings, document, replicate, out) for replicate in args.replicates]
    pairs = sum(r["pairs"] for r in results)
    kept = sum(r["pairs"] * r["pair_direction_agreement"] for r in results)
    pooled = {"profile": args.profile, "rule": settings.pairs.rule, "replicates": results, "pairs": pairs,
              "pair_direction_agreement": round(kept / pairs, 4) if pairs else float("nan"),
              "exact_over_first_order": round(sum(r["exact_s_per_candidate"] for r in results)
                                              / sum(r["first_order_s_per_candidate"] for r in results), 2)}
    print(f"pooled: {pooled['pair_direction_agreement']:.0%} of {pairs} first-order pairs kept by exact (>= 90% "
          f"required); exact / first-order time {pooled['exact_over_first_order']}x")
    print(json.dumps(pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
