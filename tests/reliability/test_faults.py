"""Injected faults: transient storage errors are retried, persistent ones fail clearly and leave the
previous version intact; out-of-memory batches are halved."""

from __future__ import annotations

from pathlib import Path

import fsspec
import polars as pl
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem

from resources.generation.interface import SamplingParams
from resources.generation.transformers_backend import TransformersGenerator, halving_on_oom
from resources.models import load_causal_lm, resolve_model_source
from resources.storage.retry import RetryPolicy, StorageError, is_transient
from resources.storage.tables import CheckpointStore, TableStore

FAST = RetryPolicy(attempts=3, backoff_seconds=0.01)


class FaultyFileSystem(LocalFileSystem):
    """The local filesystem under ``faulty://``, raising the queued errors on the next opens for writing."""

    protocol = ("faulty",)
    write_faults: list[BaseException] = []
    write_opens = 0

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(str(path).removeprefix("faulty://"))

    def open(self, path: str, mode: str = "rb", **kwargs):  # noqa: ANN003, ANN201 - fsspec signature
        if "w" in mode:
            FaultyFileSystem.write_opens += 1
            if FaultyFileSystem.write_faults:
                raise FaultyFileSystem.write_faults.pop(0)
        return super().open(path, mode, **kwargs)


@pytest.fixture
def faulty_store(tmp_path: Path) -> TableStore:
    fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
    FaultyFileSystem.write_faults, FaultyFileSystem.write_opens = [], 0
    return TableStore(f"faulty://{tmp_path}/tables", FAST)


def test_transient_write_errors_are_retried_and_succeed(faulty_store: TableStore) -> None:
    path = faulty_store.location("scores")
    FaultyFileSystem.write_faults = [ConnectionError("connection reset"), TimeoutError("read timed out")]
    faulty_store.write(pl.DataFrame({"x": [1, 2]}), path)
    assert FaultyFileSystem.write_opens == 3
    assert TableStore.read(path)["x"].to_list() == [1, 2]


@pytest.mark.parametrize("fault, message", [
    (PermissionError("access denied"), "not retried"),
    (ConnectionError("still down"), "failed 3 times"),
])
def test_persistent_errors_fail_clearly_and_keep_the_previous_version(
    faulty_store: TableStore, fault: BaseException, message: str
) -> None:
    path = faulty_store.location("scores")
    faulty_store.write(pl.DataFrame({"x": [1]}), path)
    FaultyFileSystem.write_faults = [fault] * FAST.attempts
    with pytest.raises(StorageError, match=message) as caught:
        faulty_store.write(pl.DataFrame({"x": [2]}), path)
    assert str(path) in str(caught.value)
    assert TableStore.read(path)["x"].to_list() == [1]


def test_checkpoint_upload_retries_each_file(faulty_store: TableStore, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    store = CheckpointStore(f"faulty://{tmp_path}/checkpoints", str(tmp_path / "cache"), FAST)
    FaultyFileSystem.write_faults = [ConnectionError("reset")]
    published = store.publish(folder, "teacher")
    local = Path(store.local_folder(published.uri))
    assert (local / "model.safetensors").read_bytes() == b"weights"


def test_transient_classification() -> None:
    assert is_transient(ConnectionResetError())
    assert is_transient(OSError(5, "Input/output error"))
    assert not is_transient(FileNotFoundError("no such bucket"))
    assert not is_transient(ValueError("bad"))
    try:
        try:
            raise TimeoutError("socket")
        except TimeoutError as inner:
            raise OSError("wrapped") from inner
    except OSError as outer:
        assert is_transient(outer)


def test_out_of_memory_halves_the_batch_and_keeps_order() -> None:
    tried: list[int] = []

    def run(batch: list[int], start: int) -> list[int]:
        tried.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return [item * 10 for item in batch]

    assert halving_on_oom(list(range(7)), 8, run) == [i * 10 for i in range(7)]
    assert tried[:3] == [7, 3, 1]  # the failing batch of 7 is halved to 3 (fails), then to 1
    with pytest.raises(torch.OutOfMemoryError):
        halving_on_oom([1], 1, lambda batch, start: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))


def test_generator_survives_an_injected_oom(model_cache: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:oom", model_cache))
    real_generate = model.generate
    sizes: list[int] = []

    def generate_or_oom(**kwargs):  # noqa: ANN003, ANN202
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_generate(**kwargs)

    model.generate = generate_or_oom
    prompts = [f"Say number {i}." for i in range(5)]
    outputs = TransformersGenerator(model, tokenizer, batch_size=8).generate(
        prompts, SamplingParams(temperature=0.0, max_new_tokens=4)
    )
    assert len(outputs) == 5 and all(len(o) == 1 for o in outputs)
    assert sizes[0] == 5 and max(sizes[1:]) <= 2
