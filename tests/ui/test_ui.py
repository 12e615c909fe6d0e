"""The Dagster UI for real: `dagster dev` on the test profile, driven by headless Chromium.

Opens the asset graph, launches "Materialize all", waits for the run to succeed, opens the student
dataset's asset page and finds its teacher_version, its column schema, the typed table of its first rows and the
plots of its cost metadata there, then opens the evaluation report's markdown and checks that its plots render.
Screenshots go to ``.test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from dagster_project.runs import INSTANCE_DEFAULTS
from tests.helpers import write_profile

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def webserver(tmp_path: Path, model_cache: Path):  # noqa: ANN201
    profile = write_profile(tmp_path, model_cache)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_DEFAULTS, home / "dagster.yaml")  # what the CLI and make ui give a new home
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MONTESSORI_PROFILE": str(profile)}
    log = (tmp_path / "dagster-dev.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
         "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/server_info", 180)
        yield f"http://127.0.0.1:{port}", home, tmp_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # seen once: the daemon stopped but `dagster dev` did not exit
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


def test_materialize_all_from_the_ui(webserver) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    url, home, tmp_path = webserver
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/asset-groups", wait_until="networkidle")
        page.get_by_text("Global asset lineage").first.wait_for(timeout=120_000)
        for group in ("data", "synthesis", "influence", "teacher", "student"):
            page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
        page.wait_for_timeout(3_000)  # the first-visit sign-up dialog would be up by now
        assert page.get_by_role("button", name="Skip").count() == 0, "the sign-up dialog appeared (nux setting)"
        page.get_by_role("button", name="Materialize all").first.click(timeout=30_000)
        page.wait_for_timeout(3_000)
        page.screenshot(path=str(ARTIFACTS / "ui-asset-graph.png"))

        os.environ["DAGSTER_HOME"] = str(home)
        instance = DagsterInstance.get()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # the materialization run (the daemon may also observe the data files)
            runs = [run for run in instance.get_runs()
                    if run.asset_selection is None or AssetKey("student_dataset") in run.asset_selection]
            if runs and runs[0].status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE):
                break
            time.sleep(3)
        assert runs and runs[0].status == DagsterRunStatus.SUCCESS, [r.status for r in runs]

        (manifest,) = (tmp_path / "tables" / "profile" / "teacher_checkpoint").glob("*.parquet")
        teacher_version = pl.read_parquet(manifest)["teacher_version"][0]
        page.goto(f"{url}/assets/student_dataset", wait_until="networkidle")
        page.get_by_text(teacher_version).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui-student-dataset.png"), full_page=True)

        # the catalog shows the table's column schema and a typed table of its first rows (Dagster's table
        # metadata), and plots the stage's cost across materializations
        page.get_by_text("candidate_id", exact=True).first.wait_for(timeout=30_000)  # the Columns section
        preview = page.get_by_text("preview", exact=True).first
        preview.scroll_into_view_if_needed()
        row = preview.locator("xpath=ancestor::tr[1]")
        row.get_by_text("Show schema").wait_for(timeout=30_000)
        assert row.locator("table").first.locator("tr").count() >= 2  # a header and at least one row
        page.wait_for_timeout(1_000)
        page.screenshot(path=str(ARTIFACTS / "ui-table-metadata.png"))
        page.get_by_role("button", name="Plots").click()
        plot = page.get_by_text("cost/wall_seconds", exact=True).first
        plot.wait_for(timeout=30_000)
        plot.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "ui-cost-plots.png"))

        page.goto(f"{url}/assets/evaluation_report", wait_until="networkidle")
        page.get_by_text("Show Markdown").first.click(timeout=60_000)  # the report metadata entry
        plot = page.locator('img[src^="data:image/png;base64,"]').first
        plot.wait_for(timeout=60_000)
        assert plot.evaluate("img => img.naturalWidth") > 100  # the PNG decoded in the browser
        page.get_by_text("Montessori vs Self-Instruct").first.wait_for(timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "ui-evaluation-report.png"), full_page=True)
        browser.close()
