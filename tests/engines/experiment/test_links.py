"""Links 1 and 2 of the effect experiment and its task options, without running models: the design key (the 20
stored records keep theirs; a changed task file or setting gives a new one), the on-task rules, pre-registered
sections added beside frozen ones, the multi-study report, the teacher-shift measure and resumable study jobs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from assets.config import resolve_path
from dagster_project.settings import SettingsError, load_settings
from resources.experiment.design_key import DESIGN_2_FILES, design_key
from resources.experiment.effect_design import EFFECT_ARMS, effect_preregistration
from resources.experiment.links_design import (
    EFFECT_BUDGET,
    LINK1,
    LINK2,
    SELECTION_ARMS,
    TOP_INFLUENCE,
    link1_preregistration,
    link2_preregistration,
    shift_metrics,
)
from resources.experiment.on_task import is_on_task, on_task_rule, on_task_share
from resources.experiment.preregistration import Preregistration, ensure_preregistered, read_preregistration
from resources.experiment.results import Study, write_studies
from resources.experiment.runner import Job, plan_studies, run_jobs
from resources.storage.user_data import content_digest

EFFECT_KEY = "d715e7db0e6f"  # the key of the 20 records in experiments/effect/jobs
RESULTS_MD = Path(resolve_path("experiments/effect/RESULTS.md"))


def files_of(document: dict) -> dict[str, str]:
    data = document["data"]
    return {role: content_digest(resolve_path(path)) for role, path in (
        ("seed_prompts", data["seed_prompts"]), ("reference_set", data["reference_set"]),
        ("heldout_set", data["heldout_set"]), ("general_heldout", "data/heldout_set.jsonl"))}


def effect_document(tmp_path: Path, **blocks: dict) -> dict:
    """The effect profile's settings with ``blocks`` merged in (through a profile file, validated)."""
    document = load_settings("effect").document()
    for block, values in blocks.items():
        document[block] |= values
    path = tmp_path / f"profile_{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_settings(str(path)).document()


def test_the_stored_records_keep_their_design_key() -> None:
    document = load_settings("effect").document()
    assert files_of(document) == DESIGN_2_FILES
    assert design_key(document, files_of(document)) == EFFECT_KEY
    stored = {json.loads(p.read_text())["key"] for p in RESULTS_MD.parent.glob("jobs/*.json")}
    assert stored == {EFFECT_KEY}


def test_a_changed_task_file_or_setting_is_a_new_design(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    reference = task / "reference.jsonl"
    reference.write_bytes(Path(resolve_path("data/reference_math.jsonl")).read_bytes())
    moved = effect_document(tmp_path, data={"reference_set": str(reference)})
    first = design_key(moved, files_of(moved))
    assert first != EFFECT_KEY, "another reference file"
    original = reference.read_text()
    reference.write_text(original.replace("7 is 84.", "7 is 85."))
    assert reference.read_text() != original
    edited = design_key(moved, files_of(moved))
    assert edited != first, "the same path with other content is another design: old records are never reused"
    assert design_key(moved, files_of(moved)) == edited, "deterministic"

    def key(**blocks: dict) -> str:
        document = effect_document(tmp_path, **blocks)
        return design_key(document, files_of(document))

    assert key(student_dataset={"select": "none", "select_share": 0.5}) == EFFECT_KEY, "added settings, neutral"
    assert key(dpo={"activation_checkpointing": True}) == EFFECT_KEY, "speed only"
    assert key(experiment={"on_task": "keywords: sum, total"}) != EFFECT_KEY
    assert key(student_dataset={"select_share": 0.25}) != EFFECT_KEY
    assert key(student_dataset={"select": "top_influence"}) != EFFECT_KEY
    assert key(pairs={"baseline": "before_step"}) != EFFECT_KEY


def test_on_task_rules_keywords_regex_and_errors(tmp_path: Path) -> None:
    assert on_task_rule("arithmetic") is is_on_task
    keywords = on_task_rule("keywords: photosynthesis, cell wall, C++")
    assert [bool(keywords(t)) for t in ("What does the Cell Wall do?", "Explain photosynthesis.", "Write C++ code",
                                        "cell walls grow", "a photosynthesisX")] == [True, True, True, False, False]
    regex = on_task_rule(r"regex: \bselect\b.*\bfrom\b")
    assert on_task_share(["SELECT name FROM users", "select a dress", "Write a poem"], regex) == pytest.approx(1 / 3)
    for bad, message in (("keywords:", "at least one keyword"), ("regex: (", "regular expression"),
                         ("vibes", "unknown on-task rule")):
        with pytest.raises(ValueError, match=message):
            on_task_rule(bad)
    profile = tmp_path / "bad.yaml"
    profile.write_text("experiment:\n  on_task: 'regex: ['\n")
    with pytest.raises(SettingsError, match="experiment.on_task"):
        load_settings(str(profile))


def test_a_new_section_is_added_beside_the_frozen_one(tmp_path: Path) -> None:
    results_md = tmp_path / "RESULTS.md"
    effect = effect_preregistration(5)
    ensure_preregistered(results_md, effect, "Title")
    results_md.write_text(results_md.read_text().replace("Not run yet.", "Old results stay below the sections."))
    frozen = read_preregistration(results_md.read_text())[0]
    link1 = link1_preregistration(5)
    assert ensure_preregistered(results_md, link1, "Title", LINK1, "link 1") == link1
    changed = link1_preregistration(9)
    assert ensure_preregistered(results_md, changed, "Title", LINK1, "link 1") == link1, "written first, kept"
    text = results_md.read_text()
    assert read_preregistration(text) == (frozen, effect), "H1-H4 byte for byte"
    section, stored = read_preregistration(text, LINK1)
    assert stored == link1 and "## Pre-registered criteria: link 1 (written" in section
    assert text.index(frozen) < text.index(section) < text.index("Old results stay below the sections.")
    assert read_preregistration(text, LINK2) is None
    with pytest.raises(ValueError, match="name"):
        read_preregistration(text, "link 2")


def test_link_preregistrations_state_their_arms_criteria_and_power() -> None:
    link1, link2 = link1_preregistration(5), link2_preregistration(5, "null_step")
    for prereg in (link1, link2):
        assert Preregistration.from_json(prereg.to_json()) == prereg
    assert link1.treatment == TOP_INFLUENCE and set(link1.arms) == set(SELECTION_ARMS)
    assert set(link2.arms) == set(EFFECT_ARMS) and link2.treatment == "montessori"
    assert [h.name for h in link1.hypotheses] == ["L1", "L1b", "L1c", "L1d"]
    assert [h.name for h in link2.hypotheses] == ["L2", "L2b", "L2c"]
    assert {c.control for h in link1.hypotheses for c in h.criteria} == set(link1.controls)
    assert EFFECT_BUDGET in link1_preregistration(5, budget=EFFECT_BUDGET).notes


def test_the_repository_preregisters_links_1_and_2_before_any_of_their_results() -> None:
    text = RESULTS_MD.read_text()
    assert read_preregistration(text)[1] == effect_preregistration(5)
    assert read_preregistration(text, LINK1)[1] == link1_preregistration(5, budget=EFFECT_BUDGET)
    assert read_preregistration(text, LINK2)[1] == link2_preregistration(5, "null_step", EFFECT_BUDGET)
    assert "detects d_z ≥ 1.68 with 80% power" in read_preregistration(text, LINK1)[0]
    for study in (LINK1, LINK2):
        written = re.search(r"\(written (\S+ \S+) UTC, before any result\)", read_preregistration(text, study)[0])
        heading = "link 1" if study == LINK1 else "link 2"
        generated = re.search(rf"## Results: {heading}, .*\(complete; generated (\S+ \S+) UTC\)", text)
        assert written and generated and written[1] < generated[1], f"{study}: criteria written before its results"
        assert len(list(RESULTS_MD.parent.glob(f"jobs/{study}/*.json"))) == 20, "every arm and replicate reported"


def test_shift_metrics_on_hand_made_scores() -> None:
    assert shift_metrics([0.02, -0.01, 0.05, 0.0]) == {
        "shift_mean_influence": pytest.approx(0.015), "shift_positive_share": 0.5, "shift_rows": 4}
    with pytest.raises(ValueError, match="at least one"):
        shift_metrics([])
    with pytest.raises(ValueError, match="NaN"):
        shift_metrics([float("nan")])


def fake(job: Job) -> dict[str, float]:
    rng = np.random.default_rng([job.replicate, len(job.arm), len(job.study)])
    if job.study == LINK2:
        bump = 0.01 if job.arm == "montessori" else 0.0
        return {"shift_mean_influence": bump + float(rng.normal(0, 0.001)),
                "shift_positive_share": 0.5 + float(rng.uniform(0, 0.1))}
    effect = -0.08 if job.arm in ("montessori", TOP_INFLUENCE) else 0.0
    return {"task_loss": 2.0 + effect + float(rng.normal(0, 0.01)), "general_loss": 2.5 + float(rng.normal(0, 0.01)),
            "on_task_share": float(rng.uniform(0, 1))}


def test_studies_run_resumably_and_report_together(tmp_path: Path) -> None:
    preregs = {"": effect_preregistration(3), LINK1: link1_preregistration(3), LINK2: link2_preregistration(3)}
    jobs = plan_studies({name: p.arms for name, p in preregs.items()}, 3)
    assert len(jobs) == 36 and [j.replicate for j in jobs[:12]] == [0] * 12, "replicate by replicate"
    assert Job("montessori", 0, LINK2).file_name == "link2/montessori-r0.json"
    calls: list[Job] = []

    def killed(job: Job) -> dict[str, float]:
        if len(calls) == 14:
            raise KeyboardInterrupt
        calls.append(job)
        return fake(job)

    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, killed, tmp_path / "jobs", "k", lambda _: None)
    lines: list[str] = []
    rerun: list[Job] = []
    records = run_jobs(jobs, lambda job: rerun.append(job) or fake(job), tmp_path / "jobs", "k", lines.append)
    assert rerun == jobs[14:] and sum("skipped" in line for line in lines) == 14
    assert any(re.match(r"\[9/36\] link2 self_instruct replicate 0: finished earlier", line) for line in lines)
    by_study: dict[str, list[dict]] = {name: [] for name in preregs}
    for job, record in zip(jobs, records, strict=True):
        by_study[job.study].append(record)
    studies = [Study(p, by_study[name], name, name, figure=f"{name or 'effect'}.png") for name, p in preregs.items()]
    analyses = write_studies(tmp_path, "Title", {"replicates": 3}, studies)
    assert [a["hypotheses"][0]["verdict"] for a in analyses] == ["supported"] * 3
    text = (tmp_path / "RESULTS.md").read_text()
    for name, prereg in preregs.items():
        assert read_preregistration(text, name)[1] == prereg
    assert text.count("## Results") == 3 and "## Results: link2 (complete" in text
    document = json.loads((tmp_path / "results.json").read_text())
    assert set(document["studies"]) == {LINK1, LINK2} and len(document["records"]) == 12
    assert all((tmp_path / f"{name}.png").is_file() for name in ("effect", LINK1, LINK2))
