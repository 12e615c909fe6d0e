"""Evaluation engines on tiny models: students, comparison with spread, judge, diversity, weights, report."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from matplotlib import image as mpimg
from scipy.stats import ttest_rel

from assets.config import resolve_path
from resources.evaluation.diversity import (
    distinct_n,
    diversity_drop,
    diversity_stats,
    mean_pairwise_rouge_l,
)
from resources.evaluation.judge import PairwiseJudge
from resources.evaluation.report import PNG_SIGNATURE, ReportPage, comparison_png, curve_png, histogram_png
from resources.evaluation.student_sft import compare, equal_size, evaluate_students
from resources.models import load_causal_lm, resolve_model_source
from resources.preference.weighting import curriculum, sample_weights
from resources.storage.tables import frame_hash
from resources.storage.user_data import load_examples
from tests.helpers import sft_params

HELDOUT = pl.DataFrame({
    "instruction": ["Name a primary color.", "What is 2 plus 3?", "Say hi politely."],
    "response": ["Red is a primary color.", "2 plus 3 is 5.", "Hello, it is nice to meet you."],
})


def dataset(word: str, rows: int = 6) -> pl.DataFrame:
    """A small SFT dataset whose answers all repeat ``word``."""
    return pl.DataFrame({
        "instruction": [f"Question number {i} about {word}?" for i in range(rows)],
        "response": [f"{word} {word} {word} is the answer {i}." for i in range(rows)],
    })


@pytest.fixture(scope="module")
def student(model_cache: Path) -> str:
    return resolve_model_source("tiny-random:eval-student", model_cache)


def run(student: str, datasets: dict[str, pl.DataFrame], seeds: list[int]) -> pl.DataFrame:
    params = sft_params(learning_rate=5e-3, epochs=2.0, batch_size=2, max_length=64)
    results, _ = evaluate_students(student, datasets, HELDOUT, params, seeds, torch.device("cpu"), torch.float32,
                                   lambda _: None)
    return results


def test_students_differ_exactly_when_their_data_differ(student: str) -> None:
    results = run(student, {"a": dataset("apple"), "b": dataset("zebra"), "a_again": dataset("apple")}, [0])
    loss = dict(results.select("dataset", "heldout_loss").iter_rows())
    assert loss["a"] == loss["a_again"]  # same data, same seed: the same student
    assert loss["a"] != loss["b"]
    assert loss["untuned"] not in (loss["a"], loss["b"])  # training moved the student
    assert results["perplexity"].to_list() == pytest.approx([math.exp(x) for x in results["heldout_loss"]])


def test_seeds_give_a_spread_and_datasets_are_cut_to_equal_size(student: str) -> None:
    results = run(student, {"long": dataset("apple", 8), "short": dataset("zebra", 5)}, [0, 1])
    assert results.filter(pl.col("dataset") != "untuned")["train_rows"].unique().to_list() == [5]
    comparison = compare(results, "long", "short")
    assert comparison.seeds == 2
    assert len(set(comparison.treatment_losses)) == 2  # the seed changes the data order, hence the student
    with pytest.raises(ValueError, match="no rows"):
        equal_size({"x": dataset("a"), "empty": dataset("a").head(0)})


def test_comparison_is_paired_by_seed() -> None:
    results = pl.DataFrame({"dataset": ["t"] * 3 + ["c"] * 3, "seed": [0, 1, 2] * 2,
                            "heldout_loss": [1.0, 2.0, 3.0, 1.1, 2.12, 3.09]})
    comparison = compare(results, "t", "c")
    assert comparison.seeds == 3
    assert comparison.difference == pytest.approx(-0.1033333, abs=1e-6)
    assert comparison.standard_error == pytest.approx(statistics.stdev([-0.1, -0.12, -0.09]) / math.sqrt(3))
    # the seeds' spread (sd 1.0) dwarfs the difference, but pairing sees it consistently: p < 0.05
    assert comparison.p_value == pytest.approx(ttest_rel([1.0, 2.0, 3.0], [1.1, 2.12, 3.09]).pvalue)
    assert comparison.verdict.startswith("t is better (paired t-test p=")
    noisy = results.with_columns(heldout_loss=pl.Series([1.0, 2.0, 3.0, 0.9, 2.12, 3.01]))
    assert compare(noisy, "t", "c").verdict.startswith("within noise")
    assert compare(results.filter(pl.col("seed") == 0), "t", "c").verdict.startswith("not testable")
    with pytest.raises(ValueError, match="no seed"):
        compare(results, "t", "missing")


def test_judge_is_symmetric_and_a_probability(model_cache: Path) -> None:
    judge = PairwiseJudge(*load_causal_lm(resolve_model_source("tiny-random:judge", model_cache)))
    same = judge.preference(["Say hi."], ["Hello there."], ["Hello there."])
    assert same == [pytest.approx(0.5, abs=1e-6)]  # both orders averaged: no position bias
    forward = judge.preference(["Say hi."], ["Hello there."], ["Go away now."])
    backward = judge.preference(["Say hi."], ["Go away now."], ["Hello there."])
    assert 0.0 <= forward[0] <= 1.0
    assert forward[0] + backward[0] == pytest.approx(1.0, abs=1e-6)


def test_diversity_measures() -> None:
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert mean_pairwise_rouge_l(["the cat sat", "the cat sat", "dogs bark loudly"]) == pytest.approx(1 / 3)
    varied = diversity_stats([f"write a poem about {w} in spring" for w in ("rain", "cats", "rivers", "tea")])
    collapsed = diversity_stats(["write a poem about rain in spring"] * 4)
    assert collapsed["distinct_2"] < varied["distinct_2"]
    assert collapsed["mean_pairwise_rouge_l"] == 1.0
    assert diversity_drop(varied, collapsed) == pytest.approx(0.5)  # distinct-2 halved: 0.5 -> 0.25
    assert diversity_drop(collapsed, varied) == 0.0


def test_sample_weights_and_curriculum() -> None:
    frame = pl.DataFrame({"id": [0, 1, 2, 3], "influence": [0.1, -0.2, 0.3, 0.0]})
    weights = sample_weights(frame["influence"])
    assert weights.mean() == pytest.approx(1.0)
    assert np.argsort(weights.to_numpy()).tolist() == np.argsort(frame["influence"].to_numpy()).tolist()
    assert sample_weights(pl.Series([0.5, 0.5])).to_list() == [1.0, 1.0]
    assert curriculum(frame)["id"].to_list() == [2, 0, 3, 1]


def test_report_plots_are_valid_pngs(tmp_path: Path) -> None:
    results = pl.DataFrame({"dataset": ["m", "m", "s", "s"], "heldout_loss": [1.0, 1.1, 1.2, 1.15]})
    plots = {
        "hist.png": histogram_png({"round 1": [0.1, -0.2, 0.05]}, "influence", "x"),
        "curve.png": curve_png([{"loss": 0.7}, {"loss": 0.6, "rewards/margins": 0.1}], ["loss", "rewards/margins"],
                               "DPO"),
        "loss.png": comparison_png(results, "held-out"),
    }
    files = ReportPage(["# title"], plots).publish(tmp_path / "report")
    for name in plots:
        data = Path(files[name].path).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert mpimg.imread(Path(files[name].path)).shape[2] in (3, 4)
    page = Path(files["report.md"].path).read_text()
    assert "![loss.png](loss.png)" in page and page.startswith("# title")
    assert "data:image/png;base64," in ReportPage(["# t"], plots).render(inline=True)


def test_task_specific_reference_set_is_a_valid_reference_set() -> None:
    math = load_examples(str(resolve_path("data/reference_math.jsonl")), ["id", "instruction", "response"], 2000)
    general = load_examples(str(resolve_path("data/reference_set.jsonl")), ["id", "instruction", "response"], 2000)
    assert math.height >= 24 and frame_hash(math) != frame_hash(general)  # another influence cache key
