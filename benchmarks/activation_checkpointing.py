"""Activation checkpointing on vs off for teacher DPO and student SFT on the embedded model, at the effect profile's
sizes (DPO: 15 pairs with few-shot-length prompts, 2 epochs, batch 2; SFT: 32 rows, 1 epoch, batch 4).

TRL turns activation checkpointing on by default; the profiles turn it off (``dpo.activation_checkpointing``,
``evaluation.activation_checkpointing``). This measures what that buys and checks that the trained weights are
the same bit for bit. Run: python benchmarks/activation_checkpointing.py [--repeats 1]. On and off alternate
(on first); each run's wall and process CPU seconds are printed; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from dagster_project.settings import load_settings
from resources.evaluation.student_sft import sft_student
from resources.models import load_causal_lm, resolve_model_source
from resources.training.trl_trainers import train_dpo

ROOT = Path(__file__).resolve().parent.parent


def weights_hash(model: torch.nn.Module) -> str:
    """Hash of every parameter's bytes, in state-dict order."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def dpo_pairs(count: int) -> pl.DataFrame:
    """``count`` pairs shaped like the effect experiment's: a few-shot prompt showing three seed instructions,
    two other seed instructions as chosen and rejected."""
    seeds = pl.read_ndjson(ROOT / "data" / "seed_prompts.jsonl")["instruction"].to_list()
    rows = []
    for k in range(count):
        shown = [seeds[(5 * k + j) % len(seeds)] for j in range(3)]
        prompt = "Here are three example tasks:\n" + "\n".join(f"{j + 1}. {text}" for j, text in enumerate(shown))
        rows.append({"prompt": prompt + "\nWrite one new task in the same spirit.",
                     "chosen": seeds[(5 * k + 3) % len(seeds)], "rejected": seeds[(5 * k + 4) % len(seeds)]})
    return pl.DataFrame(rows)


def timed(train: Callable[[bool], str], checkpointing: bool) -> dict[str, object]:
    """Run ``train(checkpointing)``; its weights hash and wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    digest = train(checkpointing)
    return {"checkpointing": checkpointing, "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1), "weights": digest}


def main() -> int:
    """Time DPO and SFT with activation checkpointing on and off; print the ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1, help="on/off pairs per engine")
    args = parser.parse_args()
    settings = load_settings("effect")
    torch.set_num_threads(settings.runtime.torch_threads)
    model = resolve_model_source("embedded:smollm2", ROOT / ".montessori" / "models")
    pairs = dpo_pairs(15).with_columns(target=pl.lit("instruction"))
    rows = pl.read_ndjson(ROOT / "data" / "reference_set.jsonl")

    def dpo(checkpointing: bool) -> str:
        params = dataclasses.replace(settings.dpo.params(seed=settings.runtime.seed),
                                     activation_checkpointing=checkpointing)
        with tempfile.TemporaryDirectory() as scratch:
            train_dpo(model, pairs, params, Path(scratch))
            return weights_hash(load_causal_lm(scratch)[0])

    def sft(checkpointing: bool) -> str:
        params = dataclasses.replace(settings.evaluation.sft_params(), activation_checkpointing=checkpointing)
        return weights_hash(sft_student(model, rows, params, 0, torch.device("cpu"), torch.float32)[0])

    summary: dict[str, object] = {"repeats": args.repeats}
    for name, train in (("dpo", dpo), ("sft", sft)):
        runs = [timed(train, checkpointing) for _ in range(args.repeats) for checkpointing in (True, False)]
        for run in runs:
            print(f"{name} checkpointing {'on ' if run['checkpointing'] else 'off'}: {run['wall_s']} s wall, "
                  f"{run['cpu_s']} CPU s, weights {run['weights']}")
        mean = {on: {key: statistics.mean(r[key] for r in runs if r["checkpointing"] is on)
                     for key in ("wall_s", "cpu_s")} for on in (True, False)}
        same = len({run["weights"] for run in runs}) == 1
        speedup = mean[True]["wall_s"] / mean[False]["wall_s"]
        cpu_speedup = mean[True]["cpu_s"] / mean[False]["cpu_s"]
        print(f"{name}: off is {speedup:.2f}x as fast as on (wall; CPU {cpu_speedup:.2f}x), same weights: {same}")
        summary[name] = {"on_wall_s": round(mean[True]["wall_s"], 1), "off_wall_s": round(mean[False]["wall_s"], 1),
                         "speedup_wall": round(speedup, 3), "same_weights": same}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
