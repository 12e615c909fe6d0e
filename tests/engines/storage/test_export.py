"""Dataset export: each format loads back with the datasets library, and the card carries the provenance."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from datasets import load_dataset, load_from_disk
from huggingface_hub import DatasetCard

import resources.storage.export as export_module
from resources.storage.export import CardInfo, Provenance, export_dataset, read_card_provenance, size_category
from resources.storage.tables import content_version

DATASET = pl.DataFrame({
    "instruction": ["Name a color.", "Add 2 and 3.", "Say hi."],
    "response": ["Red", "5", "Hi!"],
    "teacher_version": ["abc123", "abc123", "abc123"],
    "influence": [0.5, -0.25, 0.125],
})
SETTINGS = yaml.safe_dump({"dpo": {"beta": 0.1, "learning_rate": 1e-6}, "runtime": {"seed": 7}})
PROVENANCE: Provenance = {
    "teacher_version": "abc123",
    "base_models": {"teacher": "embedded:smollm2", "student": "tiny-random:student"},
    "settings_yaml": SETTINGS,
    "settings_path": "/tables/exp/_settings/0123.yaml",
    "run_id": "run-42",
    "upstream_data_versions": {"teacher_checkpoint": "abc123", "synthetic_instructions": "def456"},
    "verdict": "montessori: heldout loss 1.20 vs self_instruct 1.31 (better, p=0.04)",
    "review": {"teacher_checkpoint": {"review": "5e7f00aa11bb22cc", "reviewer": "ada", "pairs_kept": 9,
                                      "pairs_dropped": 1, "pairs_swapped": 1}},
    "decontamination": {"action": "drop", "ngram": 13, "min_ngram": 8, "rouge_threshold": 0.7, "rows": 1,
                        "by_set": {"heldout_set": 1}},
}
CARD = CardInfo(pretty_name="Montessori tiny", license="apache-2.0")


def load(folder: Path, format: str, cache: Path) -> pl.DataFrame:
    """Load an export the way its card says, as a polars table."""
    if format == "hf":
        return load_from_disk(str(folder)).to_polars()
    builder = "json" if format == "jsonl" else "parquet"
    data_files = str(folder / "data" / f"train-00000-of-00001.{format}")
    return load_dataset(builder, data_files=data_files, split="train", cache_dir=str(cache)).to_polars()


@pytest.mark.parametrize("format", ["hf", "parquet", "jsonl"])
def test_export_loads_back_and_its_card_carries_the_provenance(tmp_path: Path, format: str) -> None:
    folder = export_dataset(DATASET, tmp_path / "export", PROVENANCE, CARD, format=format)
    assert load(folder, format, tmp_path / "cache").equals(DATASET)

    card = DatasetCard.load(folder / "README.md")
    front = card.data.to_dict()
    assert front["license"] == "apache-2.0" and front["pretty_name"] == "Montessori tiny"
    assert front["task_categories"] == ["text-generation"] and front["size_categories"] == ["n<1K"]
    assert [f["name"] for f in front["dataset_info"]["features"]] == DATASET.columns
    assert front["dataset_info"]["splits"][0]["num_examples"] == DATASET.height
    assert read_card_provenance(folder) == {**PROVENANCE, "settings_version": content_version(SETTINGS)}
    assert yaml.safe_load(read_card_provenance(folder)["settings_yaml"]) == yaml.safe_load(SETTINGS)
    for text in ("abc123", "run-42", "embedded:smollm2", "def456", "better, p=0.04",
                 "review sheet `5e7f00aa11bb22cc` by ada: 9 pairs kept, 1 dropped, 1 swapped",
                 "shared 13-gram, whole texts down to 8 words, or ROUGE-L F1 > 0.7); action `drop`: 1 row(s) "
                 "matching heldout_set"):
        assert text in card.text
    if format != "hf":  # the card's configs let load_dataset find the file from the folder alone
        rows = load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache2")).to_polars()
        assert rows.equals(DATASET)


def test_existing_exports_are_refused_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()  # an empty folder is fine
    export_dataset(DATASET, target, PROVENANCE, CARD, format="parquet")
    with pytest.raises(FileExistsError, match="not empty"):
        export_dataset(DATASET.head(1), target, PROVENANCE, CARD, format="parquet")
    assert load(target, "parquet", tmp_path / "cache").equals(DATASET)
    export_dataset(DATASET.head(1), target, PROVENANCE, CARD, format="jsonl", overwrite=True)
    assert load(target, "jsonl", tmp_path / "cache").equals(DATASET.head(1))
    assert not (target / "data" / "train-00000-of-00001.parquet").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_export_leaves_the_previous_one_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "export"
    export_dataset(DATASET, target, PROVENANCE, CARD, format="hf")
    before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))

    def broken_card(*args: object) -> str:
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(export_module, "dataset_card", broken_card)
    with pytest.raises(RuntimeError, match="injected"):
        export_dataset(DATASET.head(1), target, PROVENANCE, CARD, format="hf", overwrite=True)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before
    assert load_from_disk(str(target)).num_rows == DATASET.height
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_a_tampered_settings_block_is_detected(tmp_path: Path) -> None:
    folder = export_dataset(DATASET, tmp_path / "export", PROVENANCE, CARD, format="parquet")
    card = folder / "README.md"
    card.write_text(card.read_text().replace("beta: 0.1", "beta: 0.5"))
    with pytest.raises(ValueError, match="settings_version"):
        read_card_provenance(folder)


def test_size_categories_follow_the_hub_buckets() -> None:
    assert [size_category(n) for n in (0, 999, 1_000, 99_999, 100_000, 10**9)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "n>1B"]
