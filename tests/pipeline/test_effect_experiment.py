"""The effect experiment end to end on tiny models: every arm is a real pipeline run (plus the student's SFT), the
report holds every arm and replicate, and a run killed after its first job resumes without redoing it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from dagster_project.experiment import run_experiment
from resources.experiment.effect_design import SELF_INSTRUCT, SIGNALS
from tests.conftest import write_profile

ARMS = (SELF_INSTRUCT, *SIGNALS)


def tiny_profile(folder: Path, model_cache: Path) -> Path:
    """The test profile on the math reference and held-out sets, raw-output pairs, plain final datasets, first-order
    influence."""
    return write_profile(
        folder, model_cache,
        data={"reference_set": "data/reference_math.jsonl", "heldout_set": "data/heldout_math.jsonl"},
        pairs={"target": "raw_output"}, student_dataset={"order": "generated", "sample_weights": False},
        influence={"method": "first_order"},  # as the effect profile
    )


def test_experiment_reports_every_arm_and_replicate_and_resumes_after_a_kill(
    tmp_path: Path, model_cache: Path, dagster_home: Path
) -> None:
    profile, out = str(tiny_profile(tmp_path, model_cache)), tmp_path / "effect"
    first_lines: list[str] = []

    def killed_after_first_job(line: str) -> None:
        first_lines.append(line)
        if " done in " in line:
            raise KeyboardInterrupt  # the process dies right after the first job is stored

    with pytest.raises(KeyboardInterrupt):
        run_experiment(profile, 2, out, killed_after_first_job)
    instance = DagsterInstance.get()
    assert [p.name for p in (out / "jobs").iterdir()] == ["self_instruct-r0.json"]
    assert len(instance.get_run_records()) == 4, "replicate 0: three DPO arms and the baseline, one run each"
    first_job = (out / "jobs" / "self_instruct-r0.json").read_text()

    lines: list[str] = []
    analysis = run_experiment(profile, 2, out, lines.append)
    assert len(instance.get_run_records()) == 8, "only replicate 1's four runs are new"
    assert (out / "jobs" / "self_instruct-r0.json").read_text() == first_job
    assert any(re.match(r"\[1/8\] self_instruct replicate 0: finished earlier, skipped", line) for line in lines)
    assert sum(" done in " in line for line in lines) == 7
    assert any("replicate 1, montessori: pipeline run up to student_dataset" in line for line in lines)
    assert not any("replicate 0" in line and "pipeline run" in line for line in lines)

    document = json.loads((out / "results.json").read_text())
    records = {(r["arm"], r["replicate"]): r for r in document["records"]}
    assert set(records) == {(arm, r) for arm in ARMS for r in (0, 1)} and document["complete"] is True
    assert analysis["jobs"] == {"expected": 8, "finished": 8}
    results_md = (out / "RESULTS.md").read_text()
    for (arm, replicate), record in records.items():
        assert re.search(rf"\| {arm}\s+\| {replicate}\s+\| {record['task_loss']:.4f}\s+\| {record['general_loss']:.4f}",
                         results_md)
        assert record["task_loss"] > 0 and record["general_loss"] > 0 and 0 <= record["on_task_share"] <= 1
    assert "before any result" in results_md and (out / "effect.png").is_file()

    for replicate in (0, 1):
        rows = {records[arm, replicate]["train_rows"] for arm in ARMS}
        assert len(rows) == 1, "every arm of a replicate trains on the same number of rows"
        assert records[SELF_INSTRUCT, replicate]["identical_to_untuned"] == 1.0
        dpo = [records[arm, replicate] for arm in SIGNALS]
        assert [r["signal"] for r in dpo] == list(SIGNALS.values()) and {r["target"] for r in dpo} == {"raw_output"}
        assert len({r["pairs"] for r in dpo}) == 1 and dpo[0]["pairs"] > 0, "rank rule: the same dose per arm"
        assert len({r["warm_student"] for r in dpo}) == 1, "the three runs share the warm student"
        seed = yaml.safe_load((out / "work").glob(f"*/r{replicate}/montessori/profile.yaml").__next__().read_text())
        assert seed["runtime"]["seed"] == 3 + replicate and seed["pairs"]["signal"] == "influence"
    assert records["montessori", 0]["warm_student"] != records["montessori", 1]["warm_student"]
    warm_ups = instance.fetch_materializations(AssetKey("warm_student"), limit=100).records
    reused = sorted(record.asset_materialization.metadata["reused"].value for record in warm_ups)
    assert reused == [False, False, True, True, True, True], "one warm-up per replicate, reused by its other two runs"
    for (arm, _), record in records.items():  # diagnostics, measured while the checkpoints existed
        if arm in SIGNALS:
            assert record["teacher_logprob_shift"] != 0.0, "DPO moved the teacher"
            assert math.isfinite(record["dpo_last_epoch_margin"]) and 0 <= record["dpo_last_epoch_accuracy"] <= 1
        signal = {"split_half_reliability", "influence_vs_response_tokens", "influence_vs_own_loss"}
        assert signal <= set(record) if arm == "montessori" else not signal & set(record)
    assert "### Diagnostics per arm" in results_md
    influence_caches = list((out / "work" / "cache" / "influence_cache").iterdir())
    assert len(influence_caches) == 2, "per replicate: the whole reference set, scored once and read back by the " \
        "other arms (the split-half diagnostic scores both halves in one pass, uncached)"
    assert not list((out / "work").glob("*/r*/checkpoints")), "checkpoints are removed once a replicate's data exist"
