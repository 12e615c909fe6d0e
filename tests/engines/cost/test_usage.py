"""The cost engines alone: a stage's meter, the tally generators count into, prices, and the ledger's per-stage
sums and overhead."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import torch

from resources.cost.ledger import CostLedger, StageCost, cost_table, overhead, stage_costs
from resources.cost.prices import PriceTable
from resources.cost.usage import TALLY, Meter, Usage, running_cost
from resources.generation.interface import SamplingParams
from resources.generation.transformers_backend import TransformersGenerator
from resources.models import load_causal_lm, resolve_model_source
from resources.storage.tables import TableStore

PRICES = PriceTable("EUR", per_cpu_hour=0.5, per_gpu_hour=3.0, per_million_input_tokens=2.0,
                    per_million_output_tokens=8.0)


def test_meter_measures_time_memory_and_counts() -> None:
    resident = psutil.Process().memory_info().rss / 2**20
    with Meter() as meter:
        assert Meter.active is meter
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # busy until this process has used 0.3 s of CPU
            pass
        block = bytearray(200 * 2**20)  # 200 MiB resident
        block[:: 4096] = b"x" * len(block[:: 4096])
        time.sleep(0.5)  # the sampler sees it
        TALLY.add(tokens_in=7, tokens_out=5, reused_examples=2)
        meter.count(3)
        assert "stage" in running_cost() and "12 tokens" in running_cost()
        usage = meter.usage()
        del block
    assert Meter.active is None and running_cost() == ""
    assert usage.wall_seconds >= 0.8 and usage.cpu_seconds >= 0.3
    assert usage.peak_rss_mb >= resident + 190
    assert (usage.tokens_in, usage.tokens_out, usage.tokens_trained) == (7, 5, 0)
    assert usage.examples == 3 and usage.reused_examples == 2 and usage.reused
    assert usage.accelerator_seconds == 0 and usage.peak_accelerator_mb == 0  # no CUDA device given
    with pytest.raises(ValueError, match="unknown usage counts"):
        TALLY.add(tokens=1)


def test_generator_tokens_reach_the_tally(model_cache: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:teacher", model_cache), "cpu", torch.float32)
    generator = TransformersGenerator(model, tokenizer, batch_size=4)
    prompts = ["<|im_start|>user\nWrite a task.<|im_end|>\n", "<|im_start|>user\nList three tips.<|im_end|>\n"]
    with Meter() as meter:
        generator.generate(prompts, SamplingParams(max_new_tokens=6, n=2, seed=1))
        usage = meter.usage()
    assert usage.tokens_in == generator.stats.prompt_tokens == sum(
        len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    assert usage.tokens_out == generator.stats.generated_tokens
    assert 4 <= usage.tokens_out <= 4 * 6


def test_prices_turn_usage_into_money() -> None:
    usage = Usage(cpu_seconds=7200, accelerator_seconds=1800, tokens_in=500_000, tokens_out=250_000)
    assert PRICES.money(usage) == pytest.approx(2 * 0.5 + 0.5 * 3.0 + 0.5 * 2.0 + 0.25 * 8.0)
    assert PriceTable("USD", None, None, None, None).charges is False
    assert PRICES.version != PriceTable("EUR", 0.6, 3.0, 2.0, 8.0).version


def test_ledger_sums_steps_per_stage_and_keeps_recorded_money(tmp_path: Path) -> None:
    ledger = CostLedger(TableStore(str(tmp_path)), "ns")
    shard = Usage(wall_seconds=10, cpu_seconds=9, peak_rss_mb=500, examples=4)
    ledger.record("run1", "influence_scores.score_influence_shard[shard_0]", None, shard, PRICES)
    ledger.record("run1", "influence_scores.score_influence_shard[shard_1]", None,
                  Usage(wall_seconds=20, cpu_seconds=18, peak_rss_mb=700, examples=6), PRICES)
    ledger.record("run1", "influence_scores.merge_influence_shards", "influence_scores", Usage(wall_seconds=1), PRICES)
    ledger.record("run1", "baseline_dataset", "baseline_dataset", Usage(wall_seconds=5, cpu_seconds=5), PRICES)
    ledger.record("run1", "student_dataset", "student_dataset", Usage(wall_seconds=6, cpu_seconds=6), PRICES)
    ledger.record("run1", "influence_scores.merge_influence_shards", "influence_scores", Usage(wall_seconds=2), PRICES)

    table = ledger.read("run1")
    assert table.height == 5  # the retried merge replaced its row
    costs = {cost.stage: cost for cost in stage_costs(table)}
    influence = costs["influence_scores"]
    assert influence.asset == "influence_scores"
    assert influence.usage.wall_seconds == 32 and influence.usage.examples == 10 and influence.usage.peak_rss_mb == 700
    assert influence.money == pytest.approx(27 / 3600 * 0.5) and influence.currency == "EUR"
    assert ledger.stage("run1", "influence_scores") == influence

    ratio = overhead(costs.values())
    assert ratio.ratio == pytest.approx(32 / 5) and ratio.money_ratio == pytest.approx(27 / 5)
    assert "6.4x" in ratio.sentence()
    text = cost_table(list(costs.values()))
    assert text.splitlines()[-2].startswith("total") and "money in EUR" in text
    observed = StageCost("seed_prompts", "seed_prompts", Usage(wall_seconds=1e-5, examples=40), None, None)
    rows = cost_table([*costs.values(), observed]).splitlines()[1:-1]  # less the money line
    assert {len(row.split()) for row in rows} == {12}  # every column apart, a zero-second stage's rate included
    assert overhead([costs["student_dataset"]]) is None  # no Montessori-only stage, no baseline: no ratio

    before = ledger.read("run1")
    CostLedger(TableStore(str(tmp_path)), "ns").record("run2", "baseline_dataset", "baseline_dataset",
                                                       Usage(cpu_seconds=5), PriceTable("EUR", 99.0, None, None, None))
    assert ledger.read("run1").equals(before)  # another run's prices never touch this run's rows
    assert ledger.read("missing").height == 0
    assert isinstance(ledger.read("run2")["price_table"][0], str)
    assert pl.Series(ledger.read("run2")["money"]).to_list() == [pytest.approx(5 / 3600 * 99.0)]
