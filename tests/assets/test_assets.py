"""Asset functions run directly with small resources (no profile, no CLI): each layer tested on its own."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from dagster import AssetKey, AssetsDefinition, IOManager, SourceAsset, io_manager, materialize

from assets.config import ExampleSource, PairSettings, Runtime
from assets.data import reference_set, seed_prompts
from assets.rounds import build_round


def test_data_assets_load_and_version_their_files(tmp_path: Path) -> None:
    source = tmp_path / "seeds.jsonl"
    source.write_text('{"id": "a", "instruction": "Name a fruit."}\n{"id": "b", "instruction": "Name a color."}\n')
    result = materialize(
        [seed_prompts, reference_set],
        resources={"seed_source": ExampleSource(path=str(source), max_instruction_chars=100, columns={}),
                   "reference_source": ExampleSource(path="data/reference_set.jsonl", max_instruction_chars=2000,
                                                     columns={})},
    )
    seeds = result.output_for_node("seed_prompts")
    assert seeds["instruction"].to_list() == ["Name a fruit.", "Name a color."]
    assert result.output_for_node("reference_set").height == 32
    events = result.get_asset_materialization_events()
    materializations = [event.event_specific_data.materialization for event in events]
    versions = {m.asset_key.to_user_string(): m.tags["dagster/data_version"] for m in materializations}
    assert len(set(versions.values())) == 2


def test_preference_pairs_asset_with_its_settings_only() -> None:
    pairs_asset = next(stage for stage in build_round(1) if stage.key.to_user_string() == "preference_pairs")
    scores = pl.DataFrame({
        "candidate_id": ["c1", "c2", "c3"], "prompt_id": ["p", "p", "p"], "prompt": ["write"] * 3,
        "instruction": ["good one", "bad one", "middle"], "response": ["r"] * 3,
        "loss_before": [1.0, 1.0, 1.0], "loss_after": [0.9, 1.1, 1.0], "loss_null_step": [1.0, 1.0, 1.0],
        "influence": [0.1, -0.1, 0.0],
    })
    table = _materialize_pairs(pairs_asset, scores)
    assert table.select("chosen", "rejected").rows() == [("good one", "bad one")]


def _materialize_pairs(pairs_asset: AssetsDefinition, scores: pl.DataFrame) -> pl.DataFrame:
    """Materialize ``pairs_asset`` alone, its input served from memory."""
    upstream = SourceAsset(AssetKey("influence_scores"), io_manager_key="scores_io")

    class Scores(IOManager):
        def handle_output(self, context, obj) -> None:  # noqa: ANN001
            raise AssertionError("source assets are never written")

        def load_input(self, context) -> pl.DataFrame:  # noqa: ANN001
            return scores

    result = materialize([pairs_asset, upstream], resources={
        "pairs": PairSettings(baseline="before_step", rule="sign"), "scores_io": io_manager(lambda _: Scores()),
        "runtime": Runtime(device="cpu", precision="float32", torch_threads=0, seed=0),
    }, selection=[pairs_asset.key])
    return result.output_for_node("preference_pairs")
