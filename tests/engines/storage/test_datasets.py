"""Users' own data: every supported format (gzip and TSV included), with and without ids, column mapping, BOM,
unknown extensions and bad gzip refused, content versions, and S3 (moto)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from resources.storage.user_data import DataError, content_version, load_examples

COLUMNS = ["id", "instruction", "response"]
ROWS = [
    {"id": "r1", "instruction": "Say hi.", "response": "Hi."},
    {"id": "r2", "instruction": "Name a café drink.", "response": "Espresso."},
    {"id": "r3", "instruction": "Tell a long story.", "response": "word " * 3000},  # long: kept, never dropped
]
ALPACA = [
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Name a prime number.", "input": "", "output": "7"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame(rows).write_csv(path)
    return path


def write_tsv(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame(rows).write_csv(path, separator="\t")
    return path


def gzipped(writer: Callable[[Path, list[dict]], Path]) -> Callable[[Path, list[dict]], Path]:
    """``writer``'s file, gzip-compressed in place (the path keeps its name, e.g. ``data.jsonl.gz``)."""

    def write(path: Path, rows: list[dict]) -> Path:
        plain = writer(path.with_suffix(""), rows)
        path.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
        return path

    return write


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame(rows).write_parquet(path)
    return path


def write_hf(path: Path, rows: list[dict]) -> Path:
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))
    return path


WRITERS: dict[str, Callable[[Path, list[dict]], Path]] = {
    "data.jsonl": write_jsonl, "data.json": write_json, "data.csv": write_csv, "data.parquet": write_parquet,
    "hf_folder": write_hf, "data.tsv": write_tsv, "data.jsonl.gz": gzipped(write_jsonl),
    "data.json.gz": gzipped(write_json), "data.csv.gz": gzipped(write_csv), "data.tsv.gz": gzipped(write_tsv),
}


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("with_ids", [True, False])
def test_every_format_with_and_without_ids(tmp_path: Path, name: str, with_ids: bool) -> None:
    rows = ROWS if with_ids else [{k: v for k, v in r.items() if k != "id"} for r in ROWS]
    table = load_examples(str(WRITERS[name](tmp_path / name, rows)), COLUMNS, 2000)
    assert table.columns == COLUMNS
    assert table.select("instruction", "response").to_dicts() == [
        {"instruction": r["instruction"], "response": r["response"]} for r in ROWS]
    if with_ids:
        assert table["id"].to_list() == ["r1", "r2", "r3"]
    else:  # derived from content: the same whatever the format
        reference = load_examples(str(write_jsonl(tmp_path / "reference.jsonl", rows)), COLUMNS, 2000)
        assert table["id"].to_list() == reference["id"].to_list()
        assert table["id"].n_unique() == 3 and all(len(i) == 16 for i in table["id"])


def test_derived_ids_are_stable_and_repeats_stay_distinct(tmp_path: Path) -> None:
    rows = [{"instruction": "Say hi.", "response": "Hi."}] * 2 + [{"instruction": "Say bye.", "response": "Bye."}]
    ids = load_examples(str(write_jsonl(tmp_path / "a.jsonl", rows)), COLUMNS, 2000)["id"].to_list()
    assert ids[1] == f"{ids[0]}-2" and len(set(ids)) == 3
    changed = [rows[0], rows[1], {"instruction": "Say bye.", "response": "Goodbye."}]
    again = load_examples(str(write_jsonl(tmp_path / "b.jsonl", changed)), COLUMNS, 2000)["id"].to_list()
    assert again[:2] == ids[:2] and again[2] != ids[2]


@pytest.mark.parametrize("name", ["data.json", "data.csv", "hf_folder"])
def test_alpaca_column_mapping_appends_a_non_empty_input(tmp_path: Path, name: str) -> None:
    path = WRITERS[name](tmp_path / name, ALPACA)
    mapping = {"instruction": "instruction", "input": "input", "response": "output"}
    table = load_examples(str(path), COLUMNS, 2000, mapping)
    assert table["instruction"].to_list() == ["Translate to French. Good morning", "Name a prime number."]
    assert table["response"].to_list() == ["Bonjour", "7"]
    seeds = load_examples(str(path), ["id", "instruction"], 2000)  # seeds need no response; input still joined
    assert seeds["instruction"].to_list() == table["instruction"].to_list()


def test_mapping_errors_name_the_file_column(tmp_path: Path) -> None:
    path = write_json(tmp_path / "alpaca.json", [ALPACA[0], {**ALPACA[1], "output": " "}])
    with pytest.raises(DataError, match="row 2 has an empty 'output'"):
        load_examples(str(path), COLUMNS, 2000, {"response": "output"})
    with pytest.raises(DataError, match=r"missing column\(s\) \['answer'\]"):
        load_examples(str(path), COLUMNS, 2000, {"response": "answer"})
    with pytest.raises(DataError, match=r"unknown column\(s\) \['reply'\]"):
        load_examples(str(path), COLUMNS, 2000, {"reply": "output"})
    with pytest.raises(DataError, match="must hold a list of records"):
        load_examples(str(write_json(tmp_path / "object.json", {"rows": ALPACA})), COLUMNS, 2000)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["data.jsonl", "data.csv", "data.json"])
def test_utf8_byte_order_mark_is_accepted(tmp_path: Path, name: str) -> None:
    path = WRITERS[name](tmp_path / name, ROWS)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_examples(str(path), COLUMNS, 2000)["id"].to_list() == ["r1", "r2", "r3"]


def test_datasets_folders(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    shuffled = Dataset.from_list(ROWS).shuffle(seed=1).select([2, 0])
    shuffled.save_to_disk(str(tmp_path / "picked"))
    assert load_examples(str(tmp_path / "picked"), COLUMNS, 2000)["id"].to_list() == shuffled["id"]
    DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "one"))
    assert load_examples(str(tmp_path / "one"), COLUMNS, 2000).height == 3
    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match=r"splits \['train', 'test'\]; point at one split's folder"):
        load_examples(str(tmp_path / "two"), COLUMNS, 2000)
    assert load_examples(str(tmp_path / "two" / "test"), COLUMNS, 2000).height == 3
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a Hugging Face datasets folder"):
        load_examples(str(tmp_path / "plain"), COLUMNS, 2000)


@pytest.mark.parametrize("name", ["data.xlsx", "data.txt", "data", "data.parquet.gz", "data.gz"])
def test_unknown_extension_is_refused_listing_the_supported_formats(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, ROWS)
    with pytest.raises(DataError) as caught:
        load_examples(str(path), COLUMNS, 2000)
    message = str(caught.value)
    assert message.startswith(f"{path}: unsupported file type ")
    assert all(kind in message for kind in (".jsonl", ".json", ".csv", ".tsv", ".jsonl.gz", ".parquet", "datasets"))


def test_bad_gzip_content_names_the_file(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl.gz", ROWS)  # named .gz but not compressed
    with pytest.raises(DataError, match=f"^{plain}: not a valid gzip file"):
        load_examples(str(plain), COLUMNS, 2000)
    latin1 = tmp_path / "latin1.jsonl.gz"
    latin1.write_bytes(gzip.compress('{"id": "a", "instruction": "caf\u00e9", "response": "x"}\n'.encode("latin-1")))
    with pytest.raises(DataError, match=f"^{latin1}: line 1 is not valid UTF-8"):
        load_examples(str(latin1), COLUMNS, 2000)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"id,instruction\n")[:-6])  # truncated stream
    with pytest.raises(DataError, match=f"^{broken}: not a valid gzip file"):
        load_examples(str(broken), COLUMNS, 2000)


def test_non_english_rows_load_in_every_text_format(tmp_path: Path) -> None:
    rows = [
        {"id": "ko", "instruction": "한국의 전통 음식을 세 가지 소개해 주세요.", "response": "김치, 불고기."},
        {"id": "de", "instruction": "Erklären Sie den Unterschied zwischen Straße und Gasse.", "response": "Größe."},
    ]
    for name in ("data.jsonl", "data.csv", "data.tsv", "data.json.gz"):
        assert load_examples(str(WRITERS[name](tmp_path / name, rows)), COLUMNS, 2000).to_dicts() == rows


def test_content_version_follows_the_bytes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "seeds.jsonl", ROWS)
    first = content_version(str(path))
    assert content_version(str(path)) == first and len(first) == 16
    write_jsonl(path, [*ROWS, {"id": "r4", "instruction": "Count to three.", "response": "1 2 3"}])
    assert content_version(str(path)) != first
    write_jsonl(path, ROWS)
    assert content_version(str(path)) == first  # same bytes, same version, whatever the file's time
    folder = write_hf(tmp_path / "hf", ROWS)
    assert content_version(str(folder)) == content_version(str(folder))
    with pytest.raises(DataError, match="file does not exist"):
        content_version(str(tmp_path / "nope.jsonl"))


def test_files_and_folders_on_s3(tmp_path: Path, s3_server) -> None:  # noqa: ANN001
    local = write_hf(tmp_path / "hf", ROWS)
    for file in local.iterdir():
        s3_server.upload_file(str(file), "montessori", f"data/hf/{file.name}")
    s3_server.upload_file(str(write_parquet(tmp_path / "rows.parquet", ROWS)), "montessori", "data/rows.parquet")
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    s3_server.upload_file(str(alpaca), "montessori", "data/alpaca.jsonl")
    for key in ("data/hf", "data/rows.parquet"):
        assert load_examples(f"s3://montessori/{key}", COLUMNS, 2000).to_dicts() == ROWS
    mapped = load_examples("s3://montessori/data/alpaca.jsonl", COLUMNS, 2000, {"response": "output"})
    assert mapped["response"].to_list() == ["Bonjour", "7"]
    with pytest.raises(DataError, match="s3://montessori/data/nope.jsonl: file does not exist"):
        load_examples("s3://montessori/data/nope.jsonl", COLUMNS, 2000)
    s3_server.put_object(Bucket="montessori", Key="data/rows.jsonl.gz", Body=gzip.compress(alpaca.read_bytes()))
    assert load_examples("s3://montessori/data/rows.jsonl.gz", COLUMNS, 2000, {"response": "output"}).height == 2
    assert content_version("s3://montessori/data/alpaca.jsonl") == content_version(str(alpaca))
