"""How much synthesis one new seed sends back to the teacher: the profile's seed file as it is vs with one seed
appended, the prompts built exactly as the pipeline builds them, and the prompts the generation cache must generate
again (a prompt is read back when every prompt of its sampling group, a transformers batch, is unchanged; vLLM
samples each prompt alone).

Run: python benchmarks/seed_change.py [--profile demo] [--backend transformers|vllm]. No model is loaded: prompts and
cache groups are deterministic. Instruction samples only; an answer is generated again when its instruction is new
or its answer group changed. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import polars as pl

from assets.synthesis import ROUND_SEED_STEP
from dagster_project.settings import load_settings
from resources.storage.user_data import load_examples
from resources.synthesis.synthesize import few_shot_prompts

NEW_SEED = "Describe three ways to reduce food waste at home."


def messages(style: str, seeds: pl.DataFrame, num_prompts: int, seed: int, shots: int | None) -> list[str]:
    """The prompts' texts (official prompts: those of the first chunk, before any generated example can differ)."""
    source = few_shot_prompts(style, seeds, num_prompts, seed, shots)
    return [prompt.message for prompt in source.build(0, len(source), [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    args = parser.parse_args()
    settings = load_settings(args.profile)
    seeds = load_examples(settings.data.source("seed_prompts").location,
                          ["id", "instruction"], settings.data.max_instruction_chars)
    grown = pl.concat([seeds, pl.DataFrame({"id": ["new-seed"], "instruction": [NEW_SEED]})])
    synthesis = settings.synthesis
    n = synthesis.samples_per_prompt
    group = 1 if args.backend == "vllm" else max(1, synthesis.instruction.batch_size // n)
    stages = {f"synthetic_instructions (round {r})": (synthesis.num_prompts, ROUND_SEED_STEP * (r - 1))
              for r in range(1, settings.rounds + 1)}
    stages["student_dataset / baseline_dataset"] = (settings.student_dataset.num_prompts,
                                                    settings.student_dataset.seed_offset)
    report = {"profile": args.profile, "seeds": seeds.height, "backend": args.backend, "group": group, "stages": {}}
    for stage, (count, offset) in stages.items():
        seed = settings.runtime.seed + offset
        before = messages(synthesis.style, seeds, count, seed, synthesis.shots)
        after = messages(synthesis.style, grown, count, seed, synthesis.shots)
        changed = [i for i in range(count) if before[i] != after[i]]
        chunks = [range(s, min(s + synthesis.chunk_size, count)) for s in range(0, count, synthesis.chunk_size)]
        groups = [range(g, min(g + group, c.stop)) for c in chunks for g in range(c.start, c.stop, group)]
        regenerated = sum(len(g) for g in groups if any(i in changed for i in g))
        whole_chunks = sum(len(c) for c in chunks if any(i in changed for i in c))
        report["stages"][stage] = {"prompts": count, "changed": len(changed), "first_changed": changed[:1],
                                   "regenerated": regenerated, "regenerated_with_chunk_keys": whole_chunks}
        print(f"{stage}: {len(changed)} of {count} prompts changed (first: {changed[:1]}); generated again: "
              f"{regenerated} (cache groups of {group}); with whole-chunk keys: {whole_chunks}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
