"""Decontamination cost: :func:`resources.synthesis.decontamination.decontaminate` against every bundled reference and
held-out set, timed beside the ROUGE-L dedup every synthesis step already runs on the same rows.

Run from the repository root: ``python benchmarks/decontamination.py [--n 2000]``. Rows are the dedup benchmark's
seeded template instructions with two more as the answer; every 50th row gets a bundled item planted (its
instruction copied whole, or its response inside a longer answer). Exit status 1 unless exactly the planted rows
are flagged, each with its item. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl

from assets.config import DecontaminationSettings
from benchmarks.dedup import make_instructions
from resources.synthesis.decontamination import decontaminate
from resources.synthesis.text_filters import dedup_rouge_l

DATA = Path(__file__).resolve().parents[1] / "data"
SETS = ("reference_set", "heldout_set", "reference_math", "heldout_math")
EVERY = 50


def rows(n: int, sets: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, dict[int, str]]:
    """``n`` synthesis rows and, by row, the item planted in it."""
    instructions, answers = make_instructions(n, seed=0), make_instructions(2 * n, seed=1)
    responses = [f"{answers[2 * i]} {answers[2 * i + 1]}" for i in range(n)]
    items = [(name, item) for name, table in sets.items() for item in table.iter_rows(named=True)]
    planted = {}
    for k, row in enumerate(range(0, n, EVERY)):
        name, item = items[k % len(items)]
        if k % 2:
            responses[row] = f"Briefly: {item['response']} That is all."
        else:
            instructions[row] = item["instruction"]
        planted[row] = item["id"]
    table = pl.DataFrame({"instruction": instructions, "response": responses, "verdict": "ok", "kept": True})
    return table, planted


def main() -> int:
    """Time decontamination and dedup on the same rows, check the planted rows, print a summary and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    sets = {name: pl.read_ndjson(DATA / f"{name}.jsonl") for name in SETS}
    table, planted = rows(args.n, sets)
    settings = DecontaminationSettings()
    started = time.perf_counter()
    dedup_rouge_l(table["instruction"].to_list(), 0.7)
    dedup_s = time.perf_counter() - started
    started = time.perf_counter()
    marked = decontaminate(table, sets, settings.params(), "drop")
    decontamination_s = time.perf_counter() - started
    found = dict(marked.with_row_index("row").filter(pl.col("contaminated")).select("row", "contamination_item")
                 .iter_rows())
    exact = found == planted
    items = sum(t.height for t in sets.values())
    ratio = decontamination_s / dedup_s
    print(f"{args.n} rows (instruction and answer) against {items} items of {len(sets)} sets; "
          f"{len(planted)} planted, {len(found)} flagged, exactly the planted ones: {exact}")
    print(f"synthesis dedup (ROUGE-L, instructions): {dedup_s:.3f} s; decontamination: {decontamination_s:.3f} s "
          f"({1000 * decontamination_s / args.n:.2f} ms per row, {ratio:.2f}x the dedup)")
    print(json.dumps({"n": args.n, "items": items, "dedup_s": round(dedup_s, 3),
                      "decontamination_s": round(decontamination_s, 3), "ratio": round(ratio, 2),
                      "planted": len(planted), "flagged": len(found), "exact": exact}))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
