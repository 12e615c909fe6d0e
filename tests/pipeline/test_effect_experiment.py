"""The effect experiment end to end on tiny models, on a task given by the command's options: every arm is a real
pipeline run (plus the student's SFT), the links' selection arms and teacher shift are measured from the same
replicates, the report holds every arm and replicate of every study, and a run killed after its first link-1 job
resumes without redoing anything."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from assets.config import PROJECT_ROOT, resolve_path
from dagster_project.cli import main
from dagster_project.experiment import ArmDataset, EffectExperiment, run_experiment, with_task
from dagster_project.settings import SettingsError, load_settings
from resources.experiment.effect_design import MONTESSORI, SELF_INSTRUCT, SIGNALS
from resources.experiment.links_design import LINK1, LINK2, SELECTION_ARMS
from resources.experiment.on_task import on_task_rule, on_task_share
from resources.experiment.runner import Job
from resources.preference.pairs import score_column
from resources.preference.selection import selected_count
from resources.storage.tables import TableStore
from tests.conftest import write_profile

ARMS = (SELF_INSTRUCT, *SIGNALS)
ON_TASK = "keywords: how many, total, percent"


def tiny_profile(folder: Path, model_cache: Path) -> Path:
    """The test profile on the math reference and held-out sets, raw-output pairs, plain final datasets, first-order
    influence."""
    return write_profile(
        folder, model_cache,
        data={"reference_set": "data/reference_math.jsonl", "heldout_set": "data/heldout_math.jsonl"},
        pairs={"target": "raw_output"}, student_dataset={"order": "generated", "sample_weights": False},
        influence={"method": "first_order"},  # as the effect profile
    )


def task_files(folder: Path) -> tuple[str, str]:
    """The math reference and held-out sets copied into ``folder`` (a user's task files outside the project)."""
    folder.mkdir()
    for name in ("reference_math.jsonl", "heldout_math.jsonl"):
        (folder / name).write_bytes(Path(resolve_path(f"data/{name}")).read_bytes())
    return str(folder / "reference_math.jsonl"), str(folder / "heldout_math.jsonl")


def test_experiment_reports_every_arm_and_replicate_and_resumes_after_a_kill(
    tmp_path: Path, model_cache: Path, dagster_home: Path
) -> None:
    profile, out = str(tiny_profile(tmp_path, model_cache)), tmp_path / "effect"
    reference, heldout = task_files(tmp_path / "task")
    task = {"reference": reference, "heldout": heldout, "on_task": ON_TASK}

    def killed_after_first_link_job(line: str) -> None:
        if " done in " in line and LINK1 in line:
            raise KeyboardInterrupt  # the process dies right after the first selection arm's job is stored

    with pytest.raises(KeyboardInterrupt):
        run_experiment(profile, 2, out, killed_after_first_link_job, **task)
    instance = DagsterInstance.get()
    stored = sorted(str(p.relative_to(out / "jobs")) for p in (out / "jobs").rglob("*.json"))
    assert stored == sorted([*(f"{arm}-r0.json" for arm in ARMS), f"{LINK1}/select_random-r0.json"])
    assert len(instance.get_run_records()) == 4, "replicate 0: three DPO arms and the baseline, one run each"
    first_job = (out / "jobs" / "self_instruct-r0.json").read_text()

    lines: list[str] = []
    analysis = run_experiment(profile, 2, out, lines.append, **task)
    assert len(instance.get_run_records()) == 8, "only replicate 1's four runs are new"
    assert (out / "jobs" / "self_instruct-r0.json").read_text() == first_job
    assert any(re.match(r"\[1/24\] self_instruct replicate 0: finished earlier, skipped", line) for line in lines)
    assert any(re.match(r"\[5/24\] link1 select_random replicate 0: finished earlier", line) for line in lines)
    assert sum(" done in " in line for line in lines) == 24 - 5
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
        for arm in ARMS:  # the task reaches every arm's pipeline run, and its measures
            arm_profile = yaml.safe_load(next((out / "work").glob(f"*/r{replicate}/{arm}/profile.yaml")).read_text())
            assert (arm_profile["data"]["reference_set"], arm_profile["data"]["heldout_set"]) == (reference, heldout)
            assert arm_profile["experiment"]["on_task"] == ON_TASK
            rows = pl.read_parquet(next((out / "work").glob(f"*/r{replicate}/{arm}/dataset.parquet")))
            assert records[arm, replicate]["on_task_share"] == on_task_share(rows["instruction"],
                                                                             on_task_rule(ON_TASK))
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
    check_links(out, document, records)


def check_links(out: Path, document: dict, effect: dict) -> None:
    """Links 1 and 2 measured from each replicate's own candidates and datasets, reported with their criteria."""
    link1 = {(r["arm"], r["replicate"]): r for r in document["studies"][LINK1]["records"]}
    link2 = {(r["arm"], r["replicate"]): r for r in document["studies"][LINK2]["records"]}
    assert set(link1) == {(arm, r) for arm in SELECTION_ARMS for r in (0, 1)}
    assert set(link2) == {(arm, r) for arm in ARMS for r in (0, 1)}
    results_md = (out / "RESULTS.md").read_text()
    assert "<!-- preregistered:link1:begin -->" in results_md and "## Results: link 2" in results_md
    assert (out / "link1.png").is_file() and (out / "link2.png").is_file()
    for replicate in (0, 1):
        folder = next((out / "work").glob(f"*/r{replicate}"))
        tables = json.loads((folder / "montessori" / "round.json").read_text())
        pool = score_column(TableStore.read(tables["influence_scores"]), "null_step")
        size = selected_count(pool.height, 0.5)
        for arm, rule in SELECTION_ARMS.items():
            record = link1[arm, replicate]
            assert (record["rule"], record["pool_rows"], record["train_rows"]) == (rule, pool.height, size)
            assert record["task_loss"] > 0 and record["general_loss"] > 0
        top = pool.sort(["score", "candidate_id"], descending=[True, False]).head(size)["score"].mean()
        assert link1["select_top_influence", replicate]["selected_mean_influence"] == pytest.approx(top)
        assert top >= link1["select_bottom_influence", replicate]["selected_mean_influence"]
        shift = pl.read_parquet(folder / "shift.parquet")
        for arm in ARMS:
            record, scores = link2[arm, replicate], shift.filter(pl.col("arm") == arm)["score"]
            assert record["shift_rows"] == effect[arm, replicate]["dataset_rows"] == scores.len()
            assert record["shift_mean_influence"] == pytest.approx(scores.mean())
            assert record["shift_positive_share"] == pytest.approx((scores > 0).mean())
            assert record["same_data_as_effect_record"] is True and record["same_facts_as_effect_record"] is True


def test_task_options_replace_the_profiles_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings("effect")
    monkeypatch.chdir(PROJECT_ROOT)
    same = with_task(settings, "data/reference_math.jsonl", "data/heldout_math.jsonl", "arithmetic")
    assert same == settings, "the profile's own task files, given on the command line, are the same design"
    reference, heldout = task_files(tmp_path / "task")
    monkeypatch.chdir(tmp_path)
    other = with_task(settings, "task/reference_math.jsonl", heldout, ON_TASK)
    assert (other.data.reference_set, other.data.heldout_set) == (reference, heldout), "from the working directory"
    assert other.experiment.on_task == ON_TASK and other.data.seed_prompts == settings.data.seed_prompts
    with pytest.raises(SettingsError, match="task/missing.jsonl does not exist"):
        with_task(settings, "task/missing.jsonl")
    with pytest.raises(SettingsError, match="experiment.on_task: .*unknown on-task rule 'vibes'"):
        with_task(settings, on_task="vibes")
    assert main(["experiment", "--on-task", "regex: (", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists(), "nothing is written for a bad option"


def test_link2_tells_changed_versions_from_changed_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    experiment = EffectExperiment(load_settings("effect"), tmp_path)
    rows = pl.DataFrame({"instruction": ["What is 2 plus 3?", "Write a poem about rain."], "response": ["5", "Rain."]})
    facts = {"teacher_version": "v2", "warm_student": "w", "pairs": 3, "dpo_last_epoch_margin": 1.5,
             "teacher_logprob_shift": -0.01}
    job = Job(MONTESSORI, 0)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / job.file_name).write_text(json.dumps({
        **facts, "key": experiment.key, "arm": MONTESSORI, "replicate": 0, "teacher_version": "v1",
        "dataset_rows": 2, "on_task_share": 0.5}))
    assert experiment.compare_with_effect_record(job, ArmDataset(rows, facts)) == {
        "same_data_as_effect_record": False, "same_facts_as_effect_record": True}  # only a version hash moved
    retrained = ArmDataset(rows, {**facts, "teacher_logprob_shift": -0.02})
    assert experiment.compare_with_effect_record(job, retrained)["same_facts_as_effect_record"] is False
    other_rows = ArmDataset(rows.with_columns(pl.lit("Write a haiku.").alias("instruction")), facts)
    assert experiment.compare_with_effect_record(job, other_rows)["same_facts_as_effect_record"] is False
    assert set(experiment.compare_with_effect_record(Job(MONTESSORI, 1), retrained).values()) == {None}
