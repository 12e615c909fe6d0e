"""Experiment engine: statistics against scipy, criteria, pre-registration, the report, the resumable runner,
the on-task measure and the math data sets."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from assets.config import resolve_path
from resources.evaluation.report import PNG_SIGNATURE
from resources.experiment.effect_design import EFFECT_ARMS, effect_preregistration
from resources.experiment.on_task import is_on_task, on_task_share
from resources.experiment.preregistration import Criterion, read_preregistration
from resources.experiment.results import READING_BEGIN, READING_END, Study, write_studies
from resources.experiment.runner import Job, plan_studies, run_jobs, time_left
from resources.experiment.statistics import Metric, PairedDifference, detectable_effect, paired_difference, summarize
from resources.storage.user_data import load_examples
from resources.synthesis.text_filters import pairwise_rouge_l


def test_summary_and_paired_difference_match_scipy() -> None:
    rng = np.random.default_rng(1)
    control = rng.normal(2.0, 0.05, 6)
    treatment = control - 0.03 + rng.normal(0, 0.02, 6)
    summary = summarize(treatment.tolist())
    assert (summary.n, summary.mean, summary.sd) == (6, pytest.approx(treatment.mean()),
                                                     pytest.approx(treatment.std(ddof=1)))
    diff = paired_difference(dict(enumerate(treatment)), dict(enumerate(control)))
    reference = stats.ttest_rel(treatment, control)
    interval = reference.confidence_interval(0.95)
    assert diff.t == pytest.approx(reference.statistic) and diff.p_value == pytest.approx(reference.pvalue)
    assert (diff.ci_low, diff.ci_high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    differences = treatment - control
    assert diff.d_z == pytest.approx(differences.mean() / differences.std(ddof=1))
    assert diff.differences == pytest.approx(differences.tolist())
    ninety = paired_difference(dict(enumerate(treatment)), dict(enumerate(control)), confidence=0.9)
    assert ninety.ci_high - ninety.ci_low < diff.ci_high - diff.ci_low


def test_pairing_uses_shared_replicates_and_degenerate_cases() -> None:
    diff = paired_difference({0: 1.0, 1: 2.0, 3: 4.0}, {0: 0.5, 1: 1.0, 2: 9.0})
    assert diff.replicates == (0, 1) and diff.differences == (0.5, 1.0)
    single = paired_difference({0: 1.0}, {0: 0.5})
    assert single.mean == 0.5 and single.ci_low is None and single.p_value is None and single.d_z is None
    flat = paired_difference({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5})
    assert (flat.ci_low, flat.ci_high, flat.p_value) == (0.5, 0.5, None)
    with pytest.raises(ValueError, match="no replicate"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_detectable_effect_has_the_stated_power_by_simulation() -> None:
    d = detectable_effect(5)
    samples = np.random.default_rng(0).normal(d, 1.0, size=(20_000, 5))
    rejections = stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    assert rejections.mean() == pytest.approx(0.8, abs=0.015)
    assert detectable_effect(10) < d < detectable_effect(4)


def difference(low: float | None, high: float | None) -> PairedDifference:
    return PairedDifference((0, 1), (0.0, 0.0), 0.0, 1.0, low, high, None, None, None, 0.95)


def test_criteria_read_the_interval_in_the_metric_direction() -> None:
    loss, share = Metric("loss", "a loss", "lower"), Metric("share", "a share", "higher")
    better, not_worse = Criterion("loss", "c"), Criterion("loss", "c", "not_worse", 0.05)
    assert better.holds(difference(-0.3, -0.1), loss) is True
    assert better.holds(difference(-0.3, 0.01), loss) is False
    assert better.holds(difference(0.1, 0.3), share) is True and better.holds(difference(-0.1, 0.3), share) is False
    assert not_worse.holds(difference(-0.2, 0.04), loss) is True
    assert not_worse.holds(difference(-0.2, 0.06), loss) is False
    assert not_worse.holds(difference(-0.04, 0.2), share) is True
    assert better.holds(difference(None, None), loss) is None
    with pytest.raises(ValueError, match="kind"):
        Criterion("loss", "c", "maybe")


def fake_result(job: Job) -> dict[str, float]:
    rng = np.random.default_rng([job.replicate, EFFECT_ARMS.index(job.arm)])
    effect = -0.08 if job.arm == "montessori" else 0.0
    return {"task_loss": 2.0 + effect + 0.01 * job.replicate + float(rng.normal(0, 0.01)),
            "general_loss": 2.5 + float(rng.normal(0, 0.02)), "on_task_share": float(rng.uniform(0, 1)), "pairs": 7}


def test_runner_resumes_after_a_kill_without_rerunning_finished_jobs(tmp_path: Path) -> None:
    jobs = plan_studies({"": ["a", "b"]}, 3)
    assert [(j.arm, j.replicate) for j in jobs[:3]] == [("a", 0), ("b", 0), ("a", 1)]
    calls: list[Job] = []

    def killed_after_two(job: Job) -> dict[str, float]:
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is killed while the third job runs
        calls.append(job)
        return {"value": float(len(calls))}

    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, killed_after_two, tmp_path, key="design-1", log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-r0.json", "b-r0.json"]
    rerun: list[Job] = []
    lines: list[str] = []
    records = run_jobs(jobs, lambda job: rerun.append(job) or {"value": 10.0}, tmp_path, key="design-1",
                       log=lines.append)
    assert rerun == jobs[2:]
    assert [(r["arm"], r["replicate"], r["value"]) for r in records[:3]] == [("a", 0, 1.0), ("b", 0, 2.0),
                                                                              ("a", 1, 10.0)]
    assert sum("skipped" in line for line in lines) == 2 and sum(" done in " in line for line in lines) == 4
    assert all(re.match(r"\[\d/6\] [ab] replicate \d: ", line) for line in lines)
    again: list[Job] = []
    run_jobs(jobs, lambda job: again.append(job) or {"value": 0.0}, tmp_path, key="design-2", log=lambda _: None)
    assert again == jobs, "results stored under another design key are recomputed"
    with pytest.raises(ValueError, match="reserved"):
        run_jobs([Job("c", 0)], lambda job: {"seconds": 1.0}, tmp_path, log=lambda _: None)


def test_time_left_prices_each_pending_job_at_its_arms_mean() -> None:
    pending = [Job("a", 1), Job("b", 1), Job("c", 1)]
    # "a" made every arm's data (slow), "b" only measured: each pending job costs its own arm's mean
    assert time_left({"a": [100.0, 200.0], "b": [10.0]}, pending) == 150.0 + 10.0 + (100 + 200 + 10) / 3
    assert time_left({}, pending) == 0.0
    assert time_left({"a": [5.0]}, []) == 0.0


def test_report_holds_every_arm_and_replicate_and_keeps_the_preregistration(tmp_path: Path) -> None:
    prereg = effect_preregistration(replicates=5)
    records = run_jobs(plan_studies({"": EFFECT_ARMS}, 5), fake_result, tmp_path / "jobs", log=lambda _: None)
    analysis = write_studies(tmp_path, "Effect", {"replicates": 5}, [Study(prereg, records)])[0]
    text = (tmp_path / "RESULTS.md").read_text()
    for arm in EFFECT_ARMS:
        for replicate in range(5):
            row = next(r for r in records if r["arm"] == arm and r["replicate"] == replicate)
            assert re.search(rf"\| {arm}\s+\| {replicate}\s+\| {row['task_loss']:.4f}", text)
    document = json.loads((tmp_path / "results.json").read_text())
    assert len(document["records"]) == 20 and document["complete"] is True
    assert set(document["arms"]) == set(EFFECT_ARMS)
    assert {(c["metric"], c["control"]) for c in document["comparisons"]} == {
        (m.name, c) for m in prereg.metrics for c in prereg.controls}
    task = next(c for c in document["comparisons"] if c["metric"] == "task_loss" and c["control"] == "self_instruct")
    montessori = [r["task_loss"] for r in sorted(records, key=lambda r: r["replicate"]) if r["arm"] == "montessori"]
    untuned = [r["task_loss"] for r in sorted(records, key=lambda r: r["replicate"]) if r["arm"] == "self_instruct"]
    assert task["p_value"] == pytest.approx(stats.ttest_rel(montessori, untuned).pvalue)
    assert analysis["hypotheses"][0]["verdict"] == "supported"  # an 0.08 effect against 0.014 noise
    assert (tmp_path / "effect.png").read_bytes().startswith(PNG_SIGNATURE)
    section, stored = read_preregistration(text)
    assert stored == prereg and "before any result" in section

    changed = effect_preregistration(replicates=9)
    write_studies(tmp_path, "Effect", {}, [Study(changed, records[:10])])
    text = (tmp_path / "RESULTS.md").read_text()
    assert read_preregistration(text) == (section, prereg), "criteria written before the results are kept"
    assert "INCOMPLETE (10 of 20 jobs)" in text and "provisional" in text

    reading = f"{READING_BEGIN}\n## Reading\n\nWhat the numbers say.\n{READING_END}"
    (tmp_path / "RESULTS.md").write_text(text.replace(section, f"{reading}\n\n{section}"))
    write_studies(tmp_path, "Effect", {}, [Study(changed, records)])
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count(reading) == 1 and text.index(reading) < text.index(section), "a written reading is kept"
    assert "INCOMPLETE" not in text and read_preregistration(text) == (section, prereg)


def test_preregistration_round_trips_through_json() -> None:
    prereg = effect_preregistration(replicates=5)
    assert type(prereg).from_json(prereg.to_json()) == prereg
    assert prereg.arms == EFFECT_ARMS and prereg.treatment == "montessori"


ON_TASK = [
    "Jenny bakes 5 trays of muffins with 12 muffins on each tray. How many muffins does she bake?",
    "A pool is 20 meters long. How many lengths make 500 meters?",
    "Calculate 18 percent of 350.",
    "If a bike costs 120 dollars and a helmet 35 dollars, what is the total cost?",
    "What is 144 divided by 12?",
    "Solve 7x - 4 = 24 for x.",
    "A recipe for four people needs 300 grams of pasta. How much pasta is needed for ten people?",
    "The school day starts at 8:30 and lasts 6 hours. At what time does it end?",
]
OFF_TASK = [
    "Write a haiku about autumn leaves.",
    "Summarize the plot of Romeo and Juliet in 3 sentences.",
    "List 5 tips for a good night's sleep.",
    "Explain how long 2 eggs should boil for a soft yolk.",
    "Translate 'good morning' into Spanish and French.",
    "Describe the water cycle for a 10-year-old.",
    "Name three famous painters from the 19th century.",
    "Write one sentence that uses the word serendipity.",
]


def test_on_task_rule_on_hand_written_cases() -> None:
    assert [t for t in ON_TASK if not is_on_task(t)] == []
    assert [t for t in OFF_TASK if is_on_task(t)] == []
    assert on_task_share(ON_TASK + OFF_TASK) == 0.5 and on_task_share([]) == 0.0


def test_math_sets_are_valid_separate_and_on_task() -> None:
    columns = ["id", "instruction", "response"]
    reference = load_examples(str(resolve_path("data/reference_math.jsonl")), columns, 2000)
    heldout = load_examples(str(resolve_path("data/heldout_math.jsonl")), columns, 2000)
    assert reference.height >= 24 and heldout.height >= 48
    assert not set(reference["instruction"]) & set(heldout["instruction"])
    assert not set(reference["id"]) & set(heldout["id"])
    closest = pairwise_rouge_l([*reference["instruction"], *heldout["instruction"]])[: reference.height,
                                                                                      reference.height :]
    assert closest.max() < 0.7, "a held-out problem is a near-duplicate of a reference problem"
    assert on_task_share(heldout["instruction"]) == 1.0 and on_task_share(reference["instruction"]) > 0.9
    assert all(re.search(r"\d", answer) for answer in heldout["response"]), "every worked answer ends in a number"
    assert math.isclose(on_task_share(load_examples(str(resolve_path("data/seed_prompts.jsonl")),
                                                    ["id", "instruction"], 2000)["instruction"]), 3 / 40)
