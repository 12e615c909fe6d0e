"""Influence survives a bfloat16 setting: the one-step update is not rounded away, scores keep their order."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from resources.influence.engines import ExactInfluence, make_influence_engine
from resources.influence.scoring import score_influence
from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import collate, encode_pairs, per_example_loss
from resources.training.warmup import load_training_state, save_training_state, warmup_sft
from tests.helpers import influence_params, warmup_params

REFERENCE = [("What is 2 plus 2?", "4"), ("Name a color.", "Blue."), ("Say hello.", "Hello there!"),
             ("What do bees make?", "Honey."), ("Give a synonym for big.", "Large.")]
CANDIDATES = [("Name a fruit.", "Apple."), ("What is 3 plus 3?", "6"), ("xq zv", "zz zz zz zz"),
              ("Say goodbye.", "Goodbye!"), ("Count to three.", "1 2 3"), ("Name an animal.", "A cat."),
              ("What is 5 minus 1?", "4"), ("Spell dog.", "d o g")]


@pytest.fixture(scope="module")
def warm_folder(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A float32 warm student trained at the paper's learning rate (5e-6), saved with its AdamW state."""
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:influence", model_cache))
    warm = encode(tokenizer, REFERENCE[:3] + CANDIDATES[:2])
    optimizer, _ = warmup_sft(model, warm, tokenizer.pad_token_id, warmup_params(learning_rate=5e-6, batch_size=2))
    folder = tmp_path_factory.mktemp("warm")
    save_training_state(model, tokenizer, optimizer, folder)
    return str(folder)


def encode(tokenizer, pairs: list[tuple[str, str]]) -> list:  # noqa: ANN001
    return encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], 64)


def spearman(a: list[float], b: list[float]) -> float:
    ranks = lambda xs: torch.tensor(xs).argsort().argsort().double()  # noqa: E731
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def changed_share(after: list[torch.Tensor], before: list[torch.Tensor]) -> float:
    """Share of parameter elements that differ."""
    return sum(int((a != b).sum()) for a, b in zip(after, before, strict=True)) / sum(b.numel() for b in before)


def exact_step_share(folder: str, dtype: torch.dtype) -> tuple[float, list[float]]:
    """Share of parameters the exact engine's step on the first candidate changes, with the warm state
    loaded in ``dtype``, and every candidate's exact influence."""
    model, tokenizer, optimizer = load_training_state(folder, "cpu", dtype)
    engine = ExactInfluence(model, optimizer, encode(tokenizer, REFERENCE), tokenizer.pad_token_id, 2)
    shares: list[float] = []
    measure = engine.reference_loss

    def record_then_measure(stepped: torch.nn.Module) -> float:
        shares.append(changed_share([p.detach() for p in engine.params], engine.saved_params))
        return measure(stepped)

    engine.reference_loss = record_then_measure
    scores = engine.score_all(encode(tokenizer, CANDIDATES))
    return shares[0], [s.influence for s in scores]


def test_one_step_survives_bfloat16(warm_folder: str) -> None:
    float32_share, float32_scores = exact_step_share(warm_folder, torch.float32)
    bfloat16_share, bfloat16_scores = exact_step_share(warm_folder, torch.bfloat16)
    assert float32_share > 0.9
    assert bfloat16_share >= 0.99 * float32_share
    assert spearman(float32_scores, bfloat16_scores) >= 0.99


def test_a_plain_bfloat16_step_rounds_the_update_away(warm_folder: str) -> None:
    """What the engines guard against: the same AdamW step taken in bfloat16 changes few parameters."""
    model, tokenizer, optimizer = load_training_state(warm_folder, "cpu", torch.bfloat16)
    plain = torch.optim.AdamW(model.parameters(), **{k: optimizer.param_groups[0][k]
                                                    for k in ("lr", "betas", "eps", "weight_decay")})
    for p in model.parameters():
        plain.state[p] = {k: v.clone() if k == "step" else v.to(torch.bfloat16) for k, v in optimizer.state[p].items()}
    before = [p.detach().clone() for p in model.parameters()]
    per_example_loss(model, collate(encode(tokenizer, CANDIDATES[:1]), tokenizer.pad_token_id)).mean().backward()
    plain.step()
    assert changed_share([p.detach() for p in model.parameters()], before) < 0.2


def test_first_order_in_bfloat16_compute_keeps_the_float32_ranking(warm_folder: str) -> None:
    scores = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, tokenizer, optimizer = load_training_state(warm_folder)
        engine = make_influence_engine("first_order", model, optimizer, encode(tokenizer, REFERENCE),
                                       tokenizer.pad_token_id, 2, candidate_batch_size=3, compute_dtype=dtype)
        scores[dtype] = [s.influence for s in engine.score_all(encode(tokenizer, CANDIDATES))]
    assert scores[torch.float32] != scores[torch.bfloat16], "bfloat16 compute must actually be used"
    assert spearman(scores[torch.float32], scores[torch.bfloat16]) >= 0.99


def test_engines_hold_float32_master_weights_and_moments(warm_folder: str) -> None:
    model, tokenizer, optimizer = load_training_state(warm_folder, "cpu", torch.bfloat16)
    params = list(model.parameters())
    for p in params:  # as a bfloat16 warm-up leaves them
        optimizer.state[p] = {k: v if k == "step" else v.to(torch.bfloat16) for k, v in optimizer.state[p].items()}
    make_influence_engine("first_order", model, optimizer, encode(tokenizer, REFERENCE), tokenizer.pad_token_id, 2)
    assert list(model.parameters()) == params, "the same parameter objects, so the optimizer still maps them"
    assert all(p.dtype == torch.float32 for p in params)
    assert all(optimizer.state[p][k].dtype == torch.float32 for p in params for k in ("exp_avg", "exp_avg_sq"))


def test_pipeline_scores_do_not_depend_on_the_profile_precision(warm_folder: str) -> None:
    """``score_influence`` loads the warm state in float32: exact scores are the same under bfloat16."""
    table = lambda pairs: pl.DataFrame({"instruction": [p[0] for p in pairs],  # noqa: E731
                                        "response": [p[1] for p in pairs]})
    scored = {
        dtype: score_influence(warm_folder, table(REFERENCE), table(CANDIDATES[:3]),
                               influence_params(method="exact", reference_batch_size=2, max_length=64),
                               torch.device("cpu"), dtype, print)["influence"].to_list()
        for dtype in (torch.float32, torch.bfloat16)
    }
    assert scored[torch.float32] == scored[torch.bfloat16]
