"""Exact influence on a tiny model: scores match an independent computation, the state is untouched."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import polars as pl
import pytest
import torch

from resources.influence.engines import ExactInfluence, make_influence_engine
from resources.influence.score_cache import InfluenceCache
from resources.influence.scoring import first_order_influences, score_influence, score_with_cache
from resources.models import load_causal_lm, resolve_model_source
from resources.storage.tables import TableStore
from resources.training.encoding import collate, encode_pairs, per_example_loss
from resources.training.warm_start import train_warm_student
from resources.training.warmup import warmup_sft
from tests.helpers import influence_params, warmup_params

REFERENCE = [("What is 2 plus 2?", "4"), ("Name a color.", "Blue."), ("Say hello.", "Hello there!"),
             ("What do bees make?", "Honey."), ("Give a synonym for big.", "Large.")]
CANDIDATES = [("Name a fruit.", "Apple."), ("What is 3 plus 3?", "6"), ("xq zv", "zz zz zz zz"),
              ("Say goodbye.", "Goodbye!"), ("Count to three.", "1 2 3")]


@pytest.fixture
def warm(model_cache: Path):  # noqa: ANN201
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:influence", model_cache))
    encode = lambda pairs: encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], 64)  # noqa: E731
    optimizer, _ = warmup_sft(model, encode(REFERENCE[:3] + CANDIDATES[:2]), tokenizer.pad_token_id,
                              warmup_params(learning_rate=1e-3, batch_size=2))
    return model, optimizer, encode(REFERENCE), encode(CANDIDATES), tokenizer.pad_token_id


def mean_loss(model, examples, pad_id: int, batch_size: int = 1) -> float:  # noqa: ANN001
    """Reference loss computed independently of the engines: one unpadded example at a time."""
    with torch.no_grad():
        losses = [float(per_example_loss(model, collate([e], pad_id))[0]) for e in examples]
    return sum(losses) / len(losses)


def independent_after(model, optimizer, reference, candidate, pad_id) -> float:  # noqa: ANN001
    """L_ref after one AdamW step on ``candidate`` alone, on deep copies (nothing shared)."""
    model_copy = copy.deepcopy(model)
    optimizer_copy = torch.optim.AdamW(model_copy.parameters(), **{
        k: optimizer.param_groups[0][k] for k in ("lr", "betas", "eps", "weight_decay")})
    for p, q in zip(model.parameters(), model_copy.parameters(), strict=True):
        optimizer_copy.state[q] = {k: v.clone() for k, v in optimizer.state[p].items()}
    if candidate is None:
        for q in model_copy.parameters():
            q.grad = torch.zeros_like(q)
    else:
        per_example_loss(model_copy, collate([candidate], pad_id)).mean().backward()
    optimizer_copy.step()
    return mean_loss(model_copy, reference, pad_id, batch_size=2)


def test_scores_equal_independent_one_step_losses(warm) -> None:  # noqa: ANN001
    model, optimizer, reference, candidates, pad_id = warm
    before = mean_loss(model, reference, pad_id, batch_size=1)
    engine = make_influence_engine("exact", model, optimizer, reference, pad_id, batch_size=3)
    scores = engine.score_all(candidates)
    null_step = independent_after(model, optimizer, reference, None, pad_id)
    for candidate, score in zip(candidates, scores, strict=True):
        after = independent_after(model, optimizer, reference, candidate, pad_id)
        assert score.loss_before == pytest.approx(before, abs=1e-6)
        assert score.loss_after == pytest.approx(after, abs=1e-6)
        assert score.influence == pytest.approx(before - after, abs=1e-6)
        assert score.loss_null_step == pytest.approx(null_step, abs=1e-6)
    assert len({round(s.influence, 9) for s in scores}) == len(scores), "candidates must differ"


def test_state_is_bit_identical_after_scoring(warm) -> None:  # noqa: ANN001
    model, optimizer, reference, candidates, pad_id = warm
    params = [p.detach().clone() for p in model.parameters()]
    states = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
    ExactInfluence(model, optimizer, reference, pad_id, batch_size=2).score_all(candidates)
    for p, saved, state in zip(model.parameters(), params, states, strict=True):
        assert torch.equal(p, saved)
        assert p.grad is None
        for key, value in state.items():
            assert torch.equal(optimizer.state[p][key], value), key


def test_unknown_method_and_empty_reference(warm) -> None:  # noqa: ANN001
    model, optimizer, reference, _, pad_id = warm
    with pytest.raises(ValueError, match="unknown influence method 'magic'"):
        make_influence_engine("magic", model, optimizer, reference, pad_id, 2)
    with pytest.raises(ValueError, match="reference set is empty"):
        ExactInfluence(model, optimizer, [], pad_id)


def spearman(a: list[float], b: list[float]) -> float:
    ranks = lambda xs: torch.tensor(xs).argsort().argsort().double()  # noqa: E731
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def test_first_order_tracks_exact(warm) -> None:  # noqa: ANN001
    model, optimizer, reference, candidates, pad_id = warm
    exact = ExactInfluence(model, optimizer, reference, pad_id, 2).score_all(candidates)
    approx = make_influence_engine("first_order", model, optimizer, reference, pad_id, 2).score_all(candidates)
    assert spearman([s.influence for s in exact], [s.influence for s in approx]) >= 0.8
    exact_null = [s.loss_null_step - s.loss_after for s in exact]
    approx_null = [s.loss_null_step - s.loss_after for s in approx]
    assert sum((x > 0) == (y > 0) for x, y in zip(exact_null, approx_null, strict=True)) >= 4
    exact_shift = exact[0].loss_null_step - exact[0].loss_before
    approx_shift = approx[0].loss_null_step - approx[0].loss_before
    assert approx_shift == pytest.approx(exact_shift, rel=0.5)
    assert all(p.requires_grad for p in model.parameters())


def first_order_effect(model, optimizer, reference, candidate, pad_id) -> float:  # noqa: ANN001
    """``∇L_ref · Δθ`` computed independently of the engine, in float64: autograd gradients of a float64
    copy and the change torch's own AdamW step makes on it (``candidate`` None: the null step)."""
    model64 = copy.deepcopy(model).double()
    sum(per_example_loss(model64, collate([e], pad_id))[0] for e in reference).div(len(reference)).backward()
    reference_grad = [p.grad.clone() for p in model64.parameters()]
    model64.zero_grad(set_to_none=True)
    if candidate is None:
        for p in model64.parameters():
            p.grad = torch.zeros_like(p)
    else:
        per_example_loss(model64, collate([candidate], pad_id)).mean().backward()
    optimizer64 = torch.optim.AdamW(model64.parameters(), **{
        k: optimizer.param_groups[0][k] for k in ("lr", "betas", "eps", "weight_decay")})
    for p, q in zip(model.parameters(), model64.parameters(), strict=True):
        optimizer64.state[q] = {k: v.clone() if k == "step" else v.double() for k, v in optimizer.state[p].items()}
    before = [p.detach().clone() for p in model64.parameters()]
    optimizer64.step()
    return float(sum((g * (p.detach() - b)).sum() for g, p, b in zip(reference_grad, model64.parameters(), before,
                                                                    strict=True)))


@pytest.mark.parametrize("candidate_batch_size", [1, 3])
def test_batched_first_order_equals_the_first_order_formula(warm, candidate_batch_size: int) -> None:  # noqa: ANN001
    model, optimizer, reference, candidates, pad_id = warm
    optimizer.param_groups[0]["weight_decay"] = 0.1  # exercise the decoupled weight decay term too
    expected = [-first_order_effect(model, optimizer, reference, c, pad_id) for c in candidates]
    null_effect = first_order_effect(model, optimizer, reference, None, pad_id)
    engine = make_influence_engine("first_order", model, optimizer, reference, pad_id, 2,
                                   candidate_batch_size=candidate_batch_size)
    progress: list[tuple[int, int]] = []
    scores = engine.score_all(candidates, lambda done, total: progress.append((done, total)))
    assert progress[-1] == (len(candidates), len(candidates))
    assert len(progress) == -(-len(candidates) // candidate_batch_size)
    for score, influence in zip(scores, expected, strict=True):
        assert score.influence == pytest.approx(influence, abs=1e-6)
        assert score.loss_null_step - score.loss_before == pytest.approx(null_effect, abs=1e-6)
    assert len({round(s.influence, 7) for s in scores}) == len(scores), "candidates must differ"
    assert engine.score(candidates[2], 2).influence == pytest.approx(scores[2].influence, abs=1e-9)


def test_exact_equals_the_paper_loop(warm, tmp_path: Path, model_cache: Path) -> None:  # noqa: ANN001
    from resources.influence.paper_loop import paper_loop_influence
    from resources.training.warmup import save_training_state

    model, optimizer, reference, candidates, pad_id = warm
    _, tokenizer = load_causal_lm(resolve_model_source("tiny-random:influence", model_cache))
    save_training_state(model, tokenizer, optimizer, tmp_path)
    baseline = paper_loop_influence(str(tmp_path), reference, candidates[:3], pad_id, pad_to=128, batch_size=8)
    fast = ExactInfluence(model, optimizer, reference, pad_id, 3).score_all(candidates[:3])
    for slow, quick in zip(baseline, fast, strict=True):
        assert quick.influence == pytest.approx(slow.influence, abs=1e-5)
        assert quick.loss_null_step == pytest.approx(slow.loss_null_step, abs=1e-5)


@pytest.fixture
def stage_inputs(model_cache: Path, tmp_path: Path) -> tuple[pl.DataFrame, dict]:
    """Candidates and the scoring arguments of a warm student saved by the warm-up stage engine."""
    rows = pl.DataFrame({"instruction": [p[0] for p in REFERENCE], "response": [p[1] for p in REFERENCE]})
    warm_folder = tmp_path / "warm"
    warm_folder.mkdir()
    train_warm_student(resolve_model_source("tiny-random:cache", model_cache), rows, warmup_params(1e-3), 64,
                       warm_folder, torch.device("cpu"), torch.float32, print)
    candidates = pl.DataFrame({"candidate_id": [f"c{i}" for i in range(len(CANDIDATES))],
                               "instruction": [p[0] for p in CANDIDATES], "response": [p[1] for p in CANDIDATES]})
    params = influence_params(method="exact", reference_batch_size=4, max_length=64)
    scoring = {"warm_folder": str(warm_folder), "reference": rows, "device": torch.device("cpu"),
               "dtype": torch.float32, "params": params}
    return candidates, scoring


def test_cache_scores_only_new_candidates(stage_inputs, tmp_path: Path) -> None:  # noqa: ANN001
    candidates, scoring = stage_inputs
    cache = InfluenceCache(TableStore(str(tmp_path / "tables")), "student-v1", "reference-v1", {"method": "exact"})
    messages: list[str] = []
    first = score_with_cache(cache, candidates=candidates.head(3), log=messages.append, **scoring)
    second = score_with_cache(cache, candidates=candidates, log=messages.append, **scoring)
    assert "reused 0 scores, scoring 3 new" in messages[0]
    assert any("reused 3 scores, scoring 2 new" in m for m in messages)
    assert second["candidate_id"].to_list() == candidates["candidate_id"].to_list()
    assert second.head(3)["influence"].to_list() == first["influence"].to_list()
    assert second["influence"].null_count() == 0
    assert second["scored_from"].to_list() == ["score_cache"] * 3 + ["computed"] * 2
    other = InfluenceCache(TableStore(str(tmp_path / "tables")), "student-v2", "reference-v1", {"method": "exact"})
    assert other.load().height == 0, "a new student version must not reuse scores"


def test_crash_mid_scoring_resumes_from_last_chunk(stage_inputs, tmp_path: Path) -> None:  # noqa: ANN001
    candidates, scoring = stage_inputs
    scoring["params"] = dataclasses.replace(scoring["params"], chunk_size=2)
    cache = InfluenceCache(TableStore(str(tmp_path / "tables")), "s", "r", {"method": "exact"})

    class Crash(RuntimeError):
        pass

    saved = cache.save

    def save_then_crash(chunk: pl.DataFrame) -> None:
        saved(chunk)
        if chunk["candidate_id"][0] == "c2":  # dies after the second chunk is persisted
            raise Crash

    cache.save = save_then_crash
    with pytest.raises(Crash):
        score_with_cache(cache, candidates=candidates, log=print, **scoring)
    cache.save = saved
    messages: list[str] = []
    resumed = score_with_cache(cache, candidates=candidates, log=messages.append, **scoring)
    assert "reused 4 scores, scoring 1 new" in messages[0]
    other_cache = InfluenceCache(TableStore(str(tmp_path / "other")), "s", "r", {})
    uninterrupted = score_with_cache(other_cache, candidates=candidates, log=print, **scoring)
    assert resumed.drop("scored_from").equals(uninterrupted.drop("scored_from"))


@pytest.mark.parametrize("candidate_batch_size", [1, 2])
def test_one_pass_against_several_reference_sets_equals_one_scoring_per_set(
    stage_inputs, candidate_batch_size: int  # noqa: ANN001
) -> None:
    """The split-half diagnostic scores both halves in one pass; its numbers must be those of two scorings."""
    candidates, scoring = stage_inputs
    reference = scoring.pop("reference")
    halves = [reference.head(2), reference.tail(3)]
    scoring["params"] = dataclasses.replace(scoring["params"], method="first_order", chunk_size=3,
                                            candidate_batch_size=candidate_batch_size)
    separate = [score_influence(reference=half, candidates=candidates, log=print, **scoring)["influence"].to_list()
                for half in halves]
    together = first_order_influences(references=halves, candidates=candidates, log=print, **scoring)
    assert together == separate
    assert separate[0] != separate[1], "the halves give different scores: the test can tell them apart"
