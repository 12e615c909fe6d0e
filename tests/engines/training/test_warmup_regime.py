"""The warm-up regime options on a tiny model: the official schedule's learning rates and step count,
token-weighted accumulation, and an optimizer state that continues at the held learning rate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import collate, encode_pairs, per_example_loss
from resources.training.warmup import WarmupParams, load_training_state, save_training_state, warmup_sft
from tests.helpers import warmup_params

PEAK = 5e-6
OFFICIAL = {"learning_rate": PEAK, "batch_size": 2, "gradient_accumulation": 16, "schedule": "ramp_then_hold",
            "loss": "token_mean"}


def rows(tokenizer, count: int) -> list:  # noqa: ANN001
    """``count`` short pairs of varied lengths."""
    instructions = [f"Add {i} and {i * 7 % 13}." + " Explain." * (i % 3) for i in range(count)]
    responses = [f"The sum is {i + i * 7 % 13}." + " Because adding works." * (i % 4) for i in range(count)]
    return encode_pairs(tokenizer, instructions, responses, 64)


@pytest.fixture
def tiny(model_cache: Path):  # noqa: ANN201
    return load_causal_lm(resolve_model_source("tiny-random:regime", model_cache))


def recorded_warmup(model, examples, pad_id: int, config: WarmupParams):  # noqa: ANN001, ANN201
    """Run the warm-up, recording the learning rate of every optimizer step as the optimizer applies it."""
    rates: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
    try:
        optimizer, losses = warmup_sft(model, examples, pad_id, config)
    finally:
        handle.remove()
    return optimizer, losses, rates


# Hand-computed from the official run (transformers 4.44.2, warmup_stable_decay, warmup_ratio 1, stable 0,
# decay 0, min_lr_ratio 1): ramp = rows // 32 steps, lr(k) = peak * k / ramp, then held at the peak; steps =
# max(1, ceil(rows / 2) // 16) (the HF Trainer steps only on full accumulation windows).
@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (100, [0.0, PEAK / 3, PEAK * 2 / 3]),  # 50 passes -> 3 steps; ramp 3: the peak is never reached
        (64, [0.0, PEAK / 2]),  # 32 passes -> 2 steps; ramp 2
        (40, [0.0]),  # 20 passes -> 1 step; ramp 1: a zero-rate step (moments only)
        (20, [PEAK]),  # 10 passes, fewer than 16 -> 1 step on all; ramp 0: the peak at once
    ],
)
def test_ramp_then_hold_matches_the_official_schedule(tiny, count: int, expected: list[float]) -> None:  # noqa: ANN001
    model, tokenizer = tiny
    before = [p.detach().clone() for p in model.parameters()]
    optimizer, losses, rates = recorded_warmup(model, rows(tokenizer, count), tokenizer.pad_token_id,
                                               warmup_params(**OFFICIAL))
    assert rates == pytest.approx(expected, abs=1e-18)
    assert len(losses) == len(expected)
    assert {int(optimizer.state[p]["step"]) for p in model.parameters()} == {len(expected)}
    assert optimizer.param_groups[0]["lr"] == PEAK, "influence must continue at the held learning rate"
    moved = any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert moved == any(rate > 0 for rate in expected)


def test_constant_schedule_and_today_defaults(tiny) -> None:  # noqa: ANN001
    model, tokenizer = tiny
    _, losses, rates = recorded_warmup(model, rows(tokenizer, 5), tokenizer.pad_token_id, warmup_params(PEAK))
    assert rates == [PEAK] * 3 and len(losses) == 3  # batch 2, no accumulation: ceil(5 / 2) steps


def test_token_mean_is_the_token_weighted_loss_of_the_whole_accumulated_batch(tiny) -> None:  # noqa: ANN001
    model, tokenizer = tiny
    examples = rows(tokenizer, 4)
    assert len({e.label_count for e in examples}) > 1, "lengths must differ for the two losses to differ"
    initial = copy.deepcopy(model)
    with torch.no_grad():
        hf_loss = float(initial(**collate(examples, tokenizer.pad_token_id)).loss)  # HF: token mean of the batch
        example_mean = float(per_example_loss(initial, collate(examples, tokenizer.pad_token_id)).mean())
    accumulated = copy.deepcopy(initial)
    _, losses = warmup_sft(accumulated, examples, tokenizer.pad_token_id,
                           warmup_params(1e-3, batch_size=1, gradient_accumulation=4, loss="token_mean"))
    assert losses == [pytest.approx(hf_loss, abs=1e-6)]
    assert abs(hf_loss - example_mean) > 1e-4
    whole = copy.deepcopy(initial)
    warmup_sft(whole, examples, tokenizer.pad_token_id, warmup_params(1e-3, batch_size=4, loss="token_mean"))
    for p, q in zip(accumulated.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    _, losses = warmup_sft(copy.deepcopy(initial), examples, tokenizer.pad_token_id,
                           warmup_params(1e-3, batch_size=1, gradient_accumulation=4))
    assert losses == [pytest.approx(example_mean, abs=1e-6)]


def test_saved_state_continues_at_the_held_rate(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    model, tokenizer = tiny
    optimizer, _ = warmup_sft(model, rows(tokenizer, 64), tokenizer.pad_token_id, warmup_params(**OFFICIAL))
    save_training_state(model, tokenizer, optimizer, tmp_path)
    loaded, _, loaded_optimizer = load_training_state(str(tmp_path))
    assert loaded_optimizer.param_groups[0]["lr"] == PEAK
    assert {int(s["step"]) for s in loaded_optimizer.state.values()} == {2}
    probe = collate(rows(tokenizer, 1), tokenizer.pad_token_id)

    # independent: a fresh AdamW at the peak rate given the warm moments
    manual = copy.deepcopy(model)
    manual_optimizer = torch.optim.AdamW(manual.parameters(), lr=PEAK, weight_decay=0.0)
    for p, q in zip(model.parameters(), manual.parameters(), strict=True):
        manual_optimizer.state[q] = {k: v.clone() for k, v in optimizer.state[p].items()}
    for net, opt in ((loaded, loaded_optimizer), (manual, manual_optimizer)):
        per_example_loss(net, probe).mean().backward()
        opt.step()
    for p, q in zip(loaded.parameters(), manual.parameters(), strict=True):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(loaded.parameters(), model.parameters(), strict=True))


def test_bad_regime_values_are_named() -> None:
    with pytest.raises(ValueError, match="unknown warm-up schedule 'cosine'"):
        warmup_params(schedule="cosine")
    with pytest.raises(ValueError, match="unknown warm-up loss 'sum'"):
        warmup_params(loss="sum")
    with pytest.raises(ValueError, match="gradient_accumulation must be at least 1"):
        warmup_params(gradient_accumulation=0)
