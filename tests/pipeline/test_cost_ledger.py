"""The cost ledger on the tiny pipeline: token counts against the tokenizer, reuse on a cached rerun, money from
the price table recorded at run time (a later price change leaves an old run's cost alone), and the run summary's
per-stage table and overhead ratio."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from dagster_project.cli import main
from resources.cost.ledger import CostLedger
from resources.cost.prices import PriceTable
from resources.cost.usage import Usage
from resources.models import load_causal_lm
from resources.storage.tables import TableStore
from resources.training.encoding import chat_prompt
from tests.helpers import write_profile

PRICES = {"currency": "EUR", "per_cpu_hour": 0.5, "per_gpu_hour": 3.0, "per_million_input_tokens": 10.0,
          "per_million_output_tokens": 40.0}
MONTESSORI_AND_BASELINE = "+key:student_dataset or key:baseline_dataset"
CACHED = ("key:synthetic_instructions or key:warm_student or key:influence_scores or key:baseline_dataset or "
          "key:student_dataset")


def _run(capsys, profile: Path, selection: str) -> tuple[dict, str]:  # noqa: ANN001 - pytest's capsys
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--select", selection, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]), out


@pytest.fixture
def priced_profile(tmp_path: Path, model_cache: Path) -> Path:
    path = write_profile(tmp_path, model_cache)
    raw = yaml.safe_load(path.read_text())
    raw["prices"] = PRICES
    path.write_text(yaml.safe_dump(raw))
    return path


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return CostLedger(TableStore(str(tmp_path / "tables")), "profile").read(run_id)


def test_ledger_counts_reuse_and_prices(
    priced_profile: Path, tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    first, out = _run(capsys, priced_profile, MONTESSORI_AND_BASELINE)
    stages = first["cost"]["stages"]
    assert set(stages) >= {"synthetic_instructions", "warm_student", "influence_scores", "preference_pairs",
                           "teacher_checkpoint", "student_dataset", "baseline_dataset"}
    # the summary ends with the per-stage table, its total and Montessori's overhead
    tail = out.strip().splitlines()[-14:]
    assert any(line.startswith("total") for line in tail)
    assert any(line.startswith("Montessori overhead over Self-Instruct:") for line in tail)
    assert first["cost"]["overhead"] > 0

    # tokens in: exactly what the tokenizer counts for the prompts the teacher was sent (each few-shot prompt
    # once, then one answer prompt per kept instruction); tokens out: what the generator counted
    instance = DagsterInstance.get()
    metadata = instance.get_latest_materialization_event(
        AssetKey("synthetic_instructions")).asset_materialization.metadata
    synthetic = pl.read_parquet(first["assets"]["synthetic_instructions"]["path"])
    _, tokenizer = load_causal_lm(str(model_cache / "tiny-random-teacher"), "cpu")
    prompts = synthetic.unique("prompt_id")["teacher_prompt"].to_list()
    answers = [chat_prompt(tokenizer, text) for text in synthetic.filter(pl.col("kept"))["instruction"]]
    counted = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in prompts + answers)
    synthesis = stages["synthetic_instructions"]
    assert synthesis["tokens_in"] == counted == metadata["cost/tokens_in"].value
    generated = metadata["generation"].value
    assert synthesis["tokens_out"] == generated["generated_tokens"] > 0
    completions = synthetic.height + len(answers)
    assert completions == generated["completions"]
    assert completions <= synthesis["tokens_out"] <= synthetic.height * 24 + len(answers) * 16  # max_new_tokens
    assert synthesis["examples"] == synthetic.height and synthesis["reused_examples"] == 0
    assert stages["warm_student"]["tokens_trained"] > 0 and stages["teacher_checkpoint"]["tokens_trained"] > 0
    assert stages["influence_scores"]["examples"] == first["assets"]["influence_scores"]["rows"]  # shards summed

    # money = the prices times the recorded usage, stored with the price table's content
    ledger = _ledger(tmp_path, first["run_id"])
    table = PriceTable(**PRICES)
    assert set(ledger["price_table"]) == {table.content()}
    for row in ledger.iter_rows(named=True):
        assert row["money"] == pytest.approx(table.money(Usage.from_dict(row)))
    synthesis_money = ledger.filter(pl.col("stage") == "synthetic_instructions")["money"].sum()
    assert synthesis_money >= (synthesis["tokens_in"] * 10.0 + synthesis["tokens_out"] * 40.0) / 1e6 > 0
    assert metadata["cost/money"].value == pytest.approx(synthesis_money, abs=1e-6)

    # a fully cached rerun: every stage reuses its work and generates, trains and counts no new token
    cached, _ = _run(capsys, priced_profile, CACHED)
    for name, usage in cached["cost"]["stages"].items():
        assert usage["reused_examples"] > 0, name
        assert usage["tokens_in"] == usage["tokens_out"] == usage["tokens_trained"] == 0, name
    reuse = instance.get_latest_materialization_event(AssetKey("warm_student")).asset_materialization.metadata
    assert reuse["cost/reused"].value is True and reuse["cost/tokens_trained"].value == 0

    # new prices: a new run is charged at them, the first run's ledger stays as it was
    raw = yaml.safe_load(priced_profile.read_text())
    raw["prices"]["per_cpu_hour"] = 50.0
    priced_profile.write_text(yaml.safe_dump(raw))
    later, _ = _run(capsys, priced_profile, "key:preference_pairs")
    assert _ledger(tmp_path, first["run_id"]).equals(ledger)
    repriced = _ledger(tmp_path, later["run_id"]).row(0, named=True)
    assert json.loads(repriced["price_table"])["per_cpu_hour"] == 50.0
    assert repriced["money"] == pytest.approx(repriced["cpu_seconds"] / 3600 * 50.0)
