"""The ``paper`` profile end to end on tiny models: the bundled profile with the models and sizes swapped.

A tiny random teacher never writes a closed ``<instruction>`` pair, which the official parser requires (it rejects
everything, as the 135M model does too). So the tiny teacher is first taught to answer official prompts with a
tagged instruction by a real SFT run (TRL, the project's student SFT engine); what it writes is still noisy, so the
official parser and filters have real work. The paper's before-step pairing rule scores every candidate of a tiny
warm student positive (as measured on the 135M model, see README), which leaves no pairs: the run up to influence
uses the profile as it is, and the run to the final dataset swaps only the pairing rule."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
import yaml

from dagster_project.settings import PROFILE_DIR
from resources.evaluation.student_sft import sft_student
from resources.models import resolve_model_source
from resources.storage.user_data import load_examples
from resources.synthesis.synthesize import few_shot_prompts
from tests.helpers import run_json, sft_params

TASKS = ["Name three fruits that are red.", "Explain why the sky looks blue.", "Write a haiku about snow.",
         "List two uses of copper."]
SIZES = {"synthesis": {"num_prompts": 8, "chunk_size": 4}, "student_dataset": {"num_prompts": 3},
         "warmup": {"max_length": 256}, "influence": {"max_length": 256}, "dpo": {"max_length": 1024}}


def official_teacher(model_cache: Path, folder: Path) -> Path:
    """A tiny teacher that answers official synthesis prompts with a closed ``<instruction>`` pair."""
    seeds = load_examples(str(PROFILE_DIR.parent.parent / "data" / "seed_prompts.jsonl"), ["id", "instruction"], 2000)
    prompts = [prompt.message for prompt in few_shot_prompts("official", seeds, 16, 5).build(0, 16, [])]
    rows = pl.DataFrame({"instruction": prompts,
                         "response": [f"<instruction>{TASKS[i % len(TASKS)]}</instruction>" for i in range(16)]})
    base = resolve_model_source("tiny-random:paper-teacher", model_cache)
    params = sft_params(learning_rate=5e-3, epochs=24.0, batch_size=4, max_length=1024)
    sft_student(base, rows, params, 0, torch.device("cpu"), torch.float32, folder)
    return folder


def _profile(tmp_path: Path, model_cache: Path, teacher: Path, **blocks: dict) -> Path:
    raw = yaml.safe_load((PROFILE_DIR / "paper.yaml").read_text())
    raw["runtime"] = {**raw["runtime"], "device": "cpu", "precision": "float32", "torch_threads": 2}
    raw["models"] = {"teacher": str(teacher), "student": "tiny-random:student", "cache_dir": str(model_cache)}
    raw["storage"] = {"tables": str(tmp_path / "tables"), "checkpoints": str(tmp_path / "checkpoints")}
    for block, values in {**SIZES, **blocks}.items():
        raw.setdefault(block, {}).update(values)
    for block in ("instruction", "response"):
        raw["synthesis"][block] = {**raw["synthesis"][block], "max_new_tokens": 40}
    path = tmp_path / f"paper-{len(blocks)}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_paper_profile_runs_end_to_end_on_tiny_models(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    teacher = official_teacher(model_cache, tmp_path / "teacher")
    as_is = run_json(capsys, "run", "--profile", str(_profile(tmp_path, model_cache, teacher)),
                     "--select", "*influence_scores", "--json")
    synthetic = pl.read_parquet(as_is["assets"]["synthetic_instructions"]["path"])
    assert set(synthetic["style"]) == {"official"} and set(synthetic["filters"]) == {"official"}
    assert synthetic["kept"].sum() >= 8
    scores = pl.read_parquet(as_is["assets"]["influence_scores"]["path"])
    assert scores["influence"].is_finite().all()

    swapped = _profile(tmp_path, model_cache, teacher, pairs={"baseline": "null_step", "rule": "rank"})
    summary = run_json(capsys, "run", "--profile", str(swapped), "--select", "*student_dataset", "--json")
    pairs = pl.read_parquet(summary["assets"]["preference_pairs"]["path"])
    assert set(pairs["target"]) == {"raw_output"} and pairs["chosen"].str.contains("</instruction>").all()
    teacher_row = pl.read_parquet(summary["assets"]["teacher_checkpoint"]["path"])
    assert teacher_row["signal"][0] == "influence"
    assert pl.read_parquet(summary["assets"]["student_dataset"]["path"]).height > 0
