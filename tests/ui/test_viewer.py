"""The data viewer in a real browser (Chromium through Playwright): pages of the tiny pipeline's synthesis
samples, influence scores, preference pairs and student dataset load, filtering works, and the pairs page shows
both sides of every pair. A screenshot of the pairs page goes to ``.test-artifacts/``."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from dagster_project.cli import main
from tests.helpers import write_profile
from tests.ui.test_ui import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

TABLES = ("synthetic_instructions", "influence_scores", "preference_pairs", "student_dataset")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):  # noqa: ANN201
    """The tiny pipeline up to the student dataset in a fresh DAGSTER_HOME, and a page per table type."""
    folder = tmp_path_factory.mktemp("viewer")
    profile = write_profile(folder, model_cache)
    home = folder / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        assert main(["run", "--profile", str(profile), "--select", "+key:student_dataset"]) == 0
        written = {}
        for name in TABLES:
            written[name] = folder / "pages" / f"{name}.html"
            assert main(["view", name, "--to", str(written[name])]) == 0
        yield written, folder, home


def _tables(folder: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(next((folder / "tables" / "profile" / name).glob("*.parquet"))) for name in TABLES}


def _score(heading: str) -> float:
    """The score in a pair side's heading, e.g. ``chosen  (score 1.234e-5)``."""
    return float(heading.split("score")[1].strip(" )"))


def test_every_page_loads_filters_and_shows_pairs_side_by_side(pages) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    written, folder, _ = pages
    tables = _tables(folder)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        # synthesis: filter by verdict; the raw teacher output on demand
        synthetic = tables["synthetic_instructions"]
        page.goto(written["synthetic_instructions"].as_uri())
        assert page.locator("tr.row").count() == synthetic.height
        verdict = synthetic["verdict"].value_counts().sort("count")["verdict"][0]  # the rarest verdict
        page.select_option("#verdict-filter", verdict)
        shown = page.locator('tr.row td[data-column="verdict"]').all_inner_texts()
        assert shown == [verdict] * synthetic.filter(pl.col("verdict") == verdict).height
        assert page.locator("pre.raw").count() == 0
        page.locator("button.show-raw").first.click()
        raw = synthetic.filter(pl.col("verdict") == verdict)["raw_output"][0]
        assert page.locator("pre.raw").first.inner_text().strip() == raw.strip()
        page.select_option("#verdict-filter", "")
        page.fill("#search", synthetic["instruction"].drop_nulls()[0][:12])
        assert 1 <= page.locator("tr.row").count() < synthetic.height

        # influence: grouped by prompt, sortable
        scores = tables["influence_scores"]
        page.goto(written["influence_scores"].as_uri())
        assert page.locator("tr.group").count() == scores["prompt_id"].n_unique()
        assert page.locator("tr.row").count() == scores.height
        page.locator('th[data-column="influence"]').click()  # descending -> ascending
        first_group = scores["prompt_id"].unique().sort()[0]
        expected = sorted(scores.filter(pl.col("prompt_id") == first_group)["influence"].to_list())
        values = [float(v) for v in page.locator('tr.row td[data-column="influence"]').all_inner_texts()]
        assert values[: len(expected)] == pytest.approx(expected, rel=1e-3, abs=1e-9)

        # pairs: chosen and rejected side by side with both scores
        pairs = tables["preference_pairs"]
        page.goto(written["preference_pairs"].as_uri())
        assert page.locator(".pair").count() == pairs.height
        first = page.locator(".pair").first
        chosen, rejected = first.locator(".side.chosen"), first.locator(".side.rejected")
        assert chosen.is_visible() and rejected.is_visible()
        left, right = chosen.bounding_box(), rejected.bounding_box()
        assert left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 2  # side by side
        row = pairs.sort("margin", descending=True).row(0, named=True)
        assert chosen.locator(".text").inner_text().strip() == row["chosen"].strip()
        assert rejected.locator(".text").inner_text().strip() == row["rejected"].strip()
        assert _score(chosen.locator("h3").inner_text()) == pytest.approx(row["chosen_score"], rel=1e-3, abs=1e-9)
        assert _score(rejected.locator("h3").inner_text()) == pytest.approx(row["rejected_score"], rel=1e-3, abs=1e-9)
        page.screenshot(path=str(ARTIFACTS / "viewer-preference-pairs.png"), full_page=True)
        prompt = pairs["prompt_id"][0]
        page.select_option("#prompt-filter", prompt)
        assert page.locator(".pair").count() == pairs.filter(pl.col("prompt_id") == prompt).height

        # student dataset: each row's teacher_version and source run
        dataset = tables["student_dataset"]
        page.goto(written["student_dataset"].as_uri())
        assert page.locator("tr.row").count() == dataset.height
        teachers = set(page.locator('tr.row td[data-column="teacher_version"]').all_inner_texts())
        assert teachers == set(dataset["teacher_version"])
        runs = set(page.locator('tr.row td[data-column="source_run"]').all_inner_texts())
        assert len(runs) == 1 and len(runs.pop()) == 36  # the run that wrote it
        assert not errors, errors
        browser.close()


def test_view_serves_the_page_on_loopback(pages, capsys, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    _, _, home = pages
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    capsys.readouterr()
    threading.Thread(target=main, args=(["view", "preference_pairs"],), daemon=True).start()
    deadline = time.monotonic() + 60
    while "http://127.0.0.1:" not in (out := capsys.readouterr().out) and time.monotonic() < deadline:
        time.sleep(0.2)
    address = out[out.index("http://127.0.0.1:"):].split()[0]
    with urllib.request.urlopen(address, timeout=10) as response:
        html = response.read().decode()
    assert 'id="data"' in html and "preference_pairs" in html
