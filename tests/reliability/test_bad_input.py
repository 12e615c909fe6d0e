"""Bad input gets a clear message naming the file, row or setting, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_project.cli import main
from resources.models import ModelSourceError, load_causal_lm, resolve_model_source
from resources.storage.user_data import DataError, load_examples
from resources.training.warmup import warmup_sft
from tests.helpers import warmup_params, write_profile

COLUMNS = ["id", "instruction", "response"]
GOOD = '{"id": "a", "instruction": "Say hi.", "response": "Hi."}\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"{not json\n", "not valid JSONL"),
        (b'{"id": "a", "prompt": "Say hi.", "response": "Hi."}\n', r"missing column\(s\) \['instruction'\]"),
        (GOOD.encode() + b'{"id": "b", "instruction": "caf\xe9", "response": "x"}\n', "line 2 is not valid UTF-8"),
        (GOOD.encode() + b'{"id": "b", "instruction": "   ", "response": "x"}\n', "row 2 has an empty 'instruction'"),
        (GOOD.encode() + b'{"id": "b", "instruction": "' + b"word " * 500 + b'", "response": "x"}\n',
         "row 2 instruction is longer than the limit of 2000"),
        ((GOOD * 2).encode(), r"duplicate id\(s\) \['a'\]"),
        (b'{"id": 1, "instruction": "Say hi.", "response": "Hi."}\n', "column 'id' must hold strings"),
    ],
)
def test_bad_data_file_names_file_and_row(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "reference.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as caught:
        load_examples(str(path), COLUMNS, 2000)
    assert str(path) in str(caught.value)


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_examples(str(tmp_path / "nope.jsonl"), COLUMNS, 2000)


def test_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_source(str(tmp_path / "no-model"), tmp_path)
    with pytest.raises(ModelSourceError, match="unknown embedded model"):
        resolve_model_source("embedded:gpt5", tmp_path)


def test_folder_without_a_model_names_setting_path_and_what_is_missing(tmp_path: Path, model_cache: Path) -> None:
    folder = tmp_path / "teacher"
    folder.mkdir()
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(str(folder), tmp_path, setting="models.teacher")
    message = str(caught.value)
    assert message.startswith(f"models.teacher: {folder} is not a model folder: missing config.json, a tokenizer")
    assert "weights (*.safetensors" in message
    complete = Path(resolve_model_source("tiny-random:folder", model_cache))
    (folder / "config.json").write_text((complete / "config.json").read_text())
    (folder / "tokenizer.json").write_text((complete / "tokenizer.json").read_text())
    with pytest.raises(ModelSourceError, match=r"missing weights \(") as caught:
        resolve_model_source(str(folder), tmp_path, setting="models.student")
    assert "config.json" not in str(caught.value).split("missing")[1]
    assert resolve_model_source(str(complete), tmp_path, setting="models.student") == str(complete)
    with pytest.raises(ModelSourceError, match="^models.judge: model path .* does not exist"):
        resolve_model_source(str(tmp_path / "no-model"), tmp_path, setting="models.judge")


def test_diverging_warmup_is_named(model_cache: Path) -> None:
    from resources.training.encoding import encode_pairs

    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:nan", model_cache))
    examples = encode_pairs(tokenizer, ["Say hi."] * 4, ["Hi."] * 4, 32)
    with pytest.raises(FloatingPointError, match="warm-up loss at step"):
        warmup_sft(model, examples, tokenizer.pad_token_id, warmup_params(learning_rate=1e30, batch_size=1))


def run_failing(capsys, profile: Path) -> str:  # noqa: ANN001
    capsys.readouterr()
    assert main(["run", "--profile", str(profile)]) == 1
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_empty_reference_set_fails_and_writes_nothing(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    profile = write_profile(tmp_path, model_cache, data={"reference_set": str(empty)})
    output = run_failing(capsys, profile)
    assert f"{empty}: file is empty" in output
    assert not (tmp_path / "tables" / "profile" / "reference_set").exists()
    assert not (tmp_path / "tables" / "profile" / "influence_scores").exists()


def test_every_candidate_filtered_out(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    profile = write_profile(tmp_path, model_cache, synthesis={"min_words": 300})
    output = run_failing(capsys, profile)
    assert "every synthetic instruction was filtered out" in output and "too_short" in output
    assert not (tmp_path / "tables" / "profile" / "synthetic_instructions").exists()


def test_zero_preference_pairs(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    profile = write_profile(tmp_path, model_cache, pairs={"min_margin": 1000.0})
    output = run_failing(capsys, profile)
    assert "no preference pairs" in output
    assert not (tmp_path / "tables" / "profile" / "preference_pairs").exists()
    assert not (tmp_path / "tables" / "profile" / "teacher_checkpoint").exists()


def last_line(capsys, *args: str) -> str:  # noqa: ANN001
    """Run the CLI (it must fail) and return the last line it printed."""
    capsys.readouterr()
    assert main(list(args)) == 1
    captured = capsys.readouterr()
    return (captured.out + captured.err).strip().splitlines()[-1]


def test_failed_data_step_ends_with_the_step_and_its_cause(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    seeds = tmp_path / "seeds.jsonl.gz"
    seeds.write_bytes(b'{"id": "a", "instruction": "not compressed"}\n')
    profile = write_profile(tmp_path, model_cache, data={"seed_prompts": str(seeds)})
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--select", "seed_prompts"]) == 1
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert lines[-1] == f"  seed_prompts: DataError: {seeds}: not a valid gzip file (Not a gzipped file (b'{{\"'))"
    assert "FAILED (stack traces in the run's event log (Dagster UI) or with --verbose); failed steps:" in lines[-2]
    assert "Stack Trace" not in captured.err and "DagsterExecutionStepExecutionError" not in captured.err
    assert main(["run", "--profile", str(profile), "--select", "seed_prompts", "--verbose"]) == 1
    verbose = capsys.readouterr().err
    assert "Stack Trace" in verbose and verbose.strip().splitlines()[-1].startswith("  seed_prompts: DataError: ")


def test_unwritable_tables_path_names_the_setting(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    tables = tmp_path / "a_file" / "tables"
    profile = write_profile(tmp_path, model_cache, storage={"tables": str(tables)})
    line = last_line(capsys, "run", "--profile", str(profile))
    assert line.startswith(f"error: storage.tables: {tables} is not writable: writing {tables}/")
    assert "NotADirectoryError" in line or "FileExistsError" in line


def test_failed_s3_write_ends_with_the_path_and_the_reason(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys, s3_server, monkeypatch  # noqa: ANN001
) -> None:
    import s3fs

    from tests.conftest import free_port

    profile = write_profile(tmp_path, model_cache, storage={"tables": "s3://montessori/tables", "retry_attempts": 2,
                                                            "retry_backoff_seconds": 0.0})
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    line = last_line(capsys, "run", "--profile", str(profile))
    assert line.startswith("error: storage.tables: s3://montessori/tables is not writable: writing "
                           "s3://montessori/tables/.montessori-write-check-")
    assert "failed 2 times with transient errors, last: " in line and "connect" in line.lower()
