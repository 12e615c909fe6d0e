"""The warm student's own loss on each candidate (the student_loss signal), on a tiny model."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from resources.influence.score_cache import InfluenceCache
from resources.influence.scoring import example_losses, score_with_cache
from resources.models import resolve_model_source
from resources.preference.pairs import build_pairs
from resources.storage.tables import TableStore
from resources.training.encoding import collate, encode_pairs, per_example_loss
from resources.training.warm_start import train_warm_student
from resources.training.warmup import load_training_state
from tests.helpers import influence_params, warmup_params

WARMUP = [("Name a color.", "Blue."), ("Say hello.", "Hello there!"), ("What do bees make?", "Honey.")]
CANDIDATES = [("Name a fruit.", "Apple."), ("What is 3 plus 3?", "6"), ("xq zv", "zz zz zz zz qq qq"),
              ("Say goodbye.", "Goodbye!"), ("Count to three.", "1 2 3"), ("Describe rain.", "Water falls.")]


@pytest.fixture
def warm_folder(model_cache: Path, tmp_path: Path) -> str:
    rows = pl.DataFrame({"instruction": [p[0] for p in WARMUP], "response": [p[1] for p in WARMUP]})
    folder = tmp_path / "warm"
    folder.mkdir()
    train_warm_student(resolve_model_source("tiny-random:candidate-loss", model_cache), rows, warmup_params(1e-3), 64,
                       folder, torch.device("cpu"), torch.float32, print)
    return str(folder)


def one_at_a_time(warm_folder: str) -> list[float]:
    """Each candidate's loss computed alone (no padding, no batching) from a freshly loaded warm state."""
    model, tokenizer, _ = load_training_state(warm_folder)
    examples = encode_pairs(tokenizer, [c[0] for c in CANDIDATES], [c[1] for c in CANDIDATES], 64)
    with torch.no_grad():
        return [float(per_example_loss(model, collate([e], tokenizer.pad_token_id))[0]) for e in examples]


def test_batched_losses_equal_one_at_a_time(warm_folder: str) -> None:
    model, tokenizer, _ = load_training_state(warm_folder)
    examples = encode_pairs(tokenizer, [c[0] for c in CANDIDATES], [c[1] for c in CANDIDATES], 64)
    expected = one_at_a_time(warm_folder)
    assert example_losses(model, examples, tokenizer.pad_token_id, batch_size=4) == pytest.approx(expected, abs=1e-5)
    assert len(set(expected)) == len(expected)


def test_scoring_adds_candidate_loss_at_the_warm_state_and_caches_it(warm_folder: str, tmp_path: Path) -> None:
    candidates = pl.DataFrame({
        "candidate_id": [f"c{i}" for i in range(len(CANDIDATES))], "prompt_id": ["a", "a", "a", "b", "b", "b"],
        "prompt": ["pa", "pa", "pa", "pb", "pb", "pb"],
        "instruction": [c[0] for c in CANDIDATES], "response": [c[1] for c in CANDIDATES],
    })
    reference = pl.DataFrame({"instruction": [p[0] for p in WARMUP], "response": [p[1] for p in WARMUP]})
    scoring = {"warm_folder": warm_folder, "reference": reference, "device": torch.device("cpu"),
               "dtype": torch.float32,
               "params": influence_params(method="exact", reference_batch_size=4, max_length=64, chunk_size=2)}
    cache = InfluenceCache(TableStore(str(tmp_path / "tables")), "s", "r", {"method": "exact"})
    scored = score_with_cache(cache, candidates=candidates.head(4), log=print, **scoring)
    # every chunk, also those scored after influence steps were taken and undone, gets the warm state's loss
    assert scored["candidate_loss"].to_list() == pytest.approx(one_at_a_time(warm_folder)[:4], abs=1e-5)
    messages: list[str] = []
    everything = score_with_cache(cache, candidates=candidates, log=messages.append, **scoring)
    assert "reused 4 scores, scoring 2 new" in messages[0]
    assert everything["candidate_loss"].to_list() == pytest.approx(one_at_a_time(warm_folder), abs=1e-5)
    pairs = build_pairs(everything, "null_step", "rank", signal="student_loss")
    loss = dict(zip(everything["candidate_id"], everything["candidate_loss"], strict=True))
    assert pairs.height == 2 and all(loss[c] > loss[r] for c, r in pairs.select("chosen_id", "rejected_id").iter_rows())
