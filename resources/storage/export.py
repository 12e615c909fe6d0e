"""Dataset export: a table leaves the pipeline as a Hugging Face dataset folder with a dataset card.

Formats (``format``):

- ``hf``: ``Dataset.save_to_disk`` (Arrow files); load with ``datasets.load_from_disk(folder)``.
- ``parquet``: ``data/train-00000-of-00001.parquet``; load with ``load_dataset("parquet", data_files=...)`` or
  ``load_dataset(folder)`` (the card's ``configs`` names the file).
- ``jsonl``: ``data/train-00000-of-00001.jsonl``, one JSON object per row; load with ``load_dataset("json", ...)``
  or ``load_dataset(folder)``.

Every format writes ``README.md``: YAML front matter (license, pretty_name, task_categories, size_categories,
tags, features and split size, and the machine-readable provenance) and a body with the provenance in words:
teacher version, base models, run id, upstream data versions, the Montessori vs Self-Instruct verdict and the
resolved settings. The folder is built beside the target and renamed into place, so a reader never sees a
partial export. :func:`push_to_hub` uploads a finished folder to the Hugging Face Hub.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import polars as pl

from resources.storage.tables import content_version

ExportFormat = Literal["hf", "parquet", "jsonl"]
FORMATS: tuple[str, ...] = ("hf", "parquet", "jsonl")
CARD_FILE = "README.md"
DATA_FILE = "data/train-00000-of-00001.{extension}"
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
SETTINGS_HEADING = "## Resolved settings"


class Provenance(TypedDict, total=False):
    """Where an exported dataset came from, as the caller knows it."""

    teacher_version: str
    base_models: dict[str, str]
    settings_yaml: str
    settings_path: str
    run_id: str
    upstream_data_versions: dict[str, str | None]
    verdict: str
    review: dict[str, dict[str, Any]]
    decontamination: dict[str, Any]


@dataclass(frozen=True)
class CardInfo:
    """Dataset card fields chosen by the user (``license``: a Hub license id such as ``apache-2.0``)."""

    pretty_name: str
    license: str = "unknown"
    task_categories: tuple[str, ...] = ("text-generation",)
    tags: tuple[str, ...] = ("synthetic", "montessori-instruct")


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for ``rows`` rows."""
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>1B")


def export_dataset(
    df: pl.DataFrame, target: str | Path, provenance: Provenance, card: CardInfo, format: ExportFormat = "hf",
    overwrite: bool = False,
) -> Path:
    """Write ``df`` to the folder ``target`` in ``format`` with a dataset card; return the folder. A non-empty
    ``target`` is refused unless ``overwrite`` (then it is replaced whole, after the new folder is complete)."""
    if format not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {format!r}")
    target = Path(target)
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        built = scratch / "export"
        _write_data(df, built, format)
        (built / CARD_FILE).write_text(dataset_card(df, provenance, card, format))
        _publish_folder(built, target, overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"export target {target} is a file")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"export target {target} is not empty; choose another folder or pass overwrite")


def _write_data(df: pl.DataFrame, folder: Path, format: ExportFormat) -> None:
    if format == "hf":
        from datasets import Dataset

        Dataset.from_polars(df).save_to_disk(str(folder))
        return
    path = folder / DATA_FILE.format(extension=format)
    path.parent.mkdir(parents=True)
    if format == "parquet":
        df.write_parquet(path)
    else:
        df.write_ndjson(path)


def _publish_folder(built: Path, target: Path, overwrite: bool) -> None:
    """Rename ``built`` to ``target``; an existing target is moved aside first and removed after."""
    _check_target(target, overwrite)
    if target.exists() and not any(target.iterdir()):
        target.rmdir()
    aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    if target.exists():
        os.replace(target, aside)
    os.replace(built, target)
    shutil.rmtree(aside, ignore_errors=True)


def dataset_card(df: pl.DataFrame, provenance: Provenance, card: CardInfo, format: ExportFormat) -> str:
    """The README.md text of an export: front matter and a provenance body."""
    from datasets import Dataset, DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        license=card.license, pretty_name=card.pretty_name, task_categories=list(card.task_categories),
        size_categories=[size_category(df.height)], tags=list(card.tags),
        provenance=_front_matter_provenance(provenance),
    )
    if format != "hf":
        data.configs = [{"config_name": "default", "data_files": [
            {"split": "train", "path": DATA_FILE.format(extension=format)}]}]
    dataset = Dataset.from_polars(df)
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_examples=df.height, num_bytes=dataset.data.nbytes))
    info = DatasetInfo(features=dataset.features, splits=splits)
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{_card_body(df, provenance, card, format)}"))


def _front_matter_provenance(provenance: Provenance) -> dict[str, Any]:
    """The provenance for the front matter: everything but the settings text, which is named by its content
    version (the name :meth:`~resources.storage.tables.TableStore.store_settings` gives the same text)."""
    fields: dict[str, Any] = {k: v for k, v in provenance.items() if k != "settings_yaml"}
    if "settings_yaml" in provenance:
        fields["settings_version"] = content_version(_settings_text(provenance))
    return fields


def _settings_text(provenance: Provenance) -> str:
    """The settings YAML ending in exactly one newline (as ``yaml.safe_dump`` writes it)."""
    return provenance["settings_yaml"].rstrip("\n") + "\n"


def _card_body(df: pl.DataFrame, provenance: Provenance, card: CardInfo, format: ExportFormat) -> str:
    models = provenance.get("base_models", {})
    upstream = provenance.get("upstream_data_versions", {})
    lines = [
        f"# {card.pretty_name}",
        "",
        f"{df.height} rows, columns: {', '.join(f'`{c}`' for c in df.columns)}. Synthesized by a Montessori-Instruct "
        "teacher (influence-guided DPO of a data-synthesis teacher).",
        "",
        "## Loading",
        "",
        "```python",
        _loading_snippet(format),
        "```",
        "",
        "## Provenance",
        "",
        f"- teacher version: `{provenance.get('teacher_version', 'unknown')}`",
        f"- run id: `{provenance.get('run_id', 'unknown')}`",
        *([f"- settings file: `{provenance['settings_path']}`"] if "settings_path" in provenance else []),
        *(f"- {role} model: `{source}`" for role, source in models.items()),
        "",
        "### Montessori vs Self-Instruct",
        "",
        provenance.get("verdict", "no evaluation recorded"),
        "",
        "### Review of the preference pairs",
        "",
        *_review_lines(provenance.get("review", {})),
        "",
        "### Decontamination",
        "",
        _decontamination_line(provenance.get("decontamination", {})),
        "",
        "### Upstream data versions",
        "",
        "| asset | data version |",
        "|---|---|",
        *(f"| {asset} | `{version or 'not recorded'}` |" for asset, version in upstream.items()),
        "",
    ]
    if "settings_yaml" in provenance:
        lines += [SETTINGS_HEADING, "", "```yaml", _settings_text(provenance) + "```", ""]
    return "\n".join(lines)


def _review_lines(reviews: dict[str, dict[str, Any]]) -> list[str]:
    """One line per tuned teacher: which review its pairs had (or none)."""
    if not reviews:
        return ["no tuned teacher in this dataset's lineage (the untuned teacher wrote it)"]
    lines = []
    for teacher, review in reviews.items():
        if review.get("review", "off") == "off":
            lines.append(f"- {teacher}: pairs not reviewed (pairs.review: off); DPO on every pair")
        else:
            lines.append(f"- {teacher}: review sheet `{review['review']}` by {review.get('reviewer', 'unnamed')}: "
                         f"{review.get('pairs_kept', 0)} pairs kept, {review.get('pairs_dropped', 0)} dropped, "
                         f"{review.get('pairs_swapped', 0)} swapped")
    return lines


def _decontamination_line(settings: dict[str, Any]) -> str:
    """The decontamination settings and what they flagged in this table."""
    if not settings:
        return "not recorded"
    flagged = settings.get("by_set") or {}
    counts = ", ".join(f"{n} row(s) matching {name}" for name, n in flagged.items()) or "no row flagged"
    return (f"Checked against the reference and held-out sets (shared {settings.get('ngram')}-gram, whole texts down "
            f"to {settings.get('min_ngram')} words, or ROUGE-L F1 > {settings.get('rouge_threshold')}); action "
            f"`{settings.get('action')}`: {counts}.")


def _loading_snippet(format: ExportFormat) -> str:
    if format == "hf":
        return 'from datasets import load_from_disk\n\ndataset = load_from_disk("THIS_FOLDER")'
    builder = "json" if format == "jsonl" else "parquet"
    path = DATA_FILE.format(extension=format)
    return f'from datasets import load_dataset\n\ndataset = load_dataset("{builder}", data_files="THIS_FOLDER/{path}")'


def read_card_provenance(folder: str | Path) -> dict[str, Any]:
    """The provenance of an export, read back from its card: the front matter's fields plus ``settings_yaml``
    from the body (checked against the front matter's ``settings_version``)."""
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(Path(folder) / CARD_FILE)
    provenance = dict(card.data.to_dict().get("provenance", {}))
    match = re.search(rf"^{SETTINGS_HEADING}\n\n```yaml\n(.*?\n)```$", card.text, re.MULTILINE | re.DOTALL)
    if match:
        if content_version(match.group(1)) != provenance.get("settings_version"):
            raise ValueError(f"the settings in {folder}'s card do not match its settings_version")
        provenance["settings_yaml"] = match.group(1)
    return provenance


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = True) -> str:
    """Upload an exported folder to the Hub dataset repository ``repo_id`` (created if missing, ``private`` by
    default); return the commit URL. The token is ``token``, else the one huggingface_hub finds (``HF_TOKEN`` or
    ``hf auth login``). The Hub's viewer and ``load_dataset(repo_id)`` read the ``parquet`` and ``jsonl``
    formats; an ``hf`` folder is for ``load_from_disk`` after a download."""
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise PermissionError("no Hugging Face token: set HF_TOKEN or run `hf auth login` before pushing")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                               commit_message="Montessori-Instruct dataset export")
    return commit.commit_url
