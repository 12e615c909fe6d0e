"""Training engines on a tiny model: warm-up state round trip, DPO moves the preference margin, activation
checkpointing leaves the weights as they are."""

from __future__ import annotations

from pathlib import Path

import torch

from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import encode_pairs
from resources.training.trl_trainers import train_dpo
from resources.training.warmup import load_training_state, save_training_state, warmup_sft
from tests.helpers import PAIRS, dpo_params, lora_params, warmup_params


def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:  # noqa: ANN001
    """Sum of the log-probabilities of ``completion``'s tokens after the chat-formatted prompt."""
    messages = [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    tail_ids = tokenizer(f"<instruction>{completion}</instruction>", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head_ids + tail_ids])
    with torch.no_grad():
        logprobs = model(ids).logits[0, :-1].log_softmax(-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(1, targets[:, None])[:, 0]
    return float(picked[len(head_ids) - 1 :].sum())


def margin(folder: str) -> float:
    model, tokenizer = load_causal_lm(folder)
    rows = PAIRS.iter_rows(named=True)
    return sum(completion_logprob(model, tokenizer, r["prompt"], r["chosen"])
               - completion_logprob(model, tokenizer, r["prompt"], r["rejected"]) for r in rows)


def test_dpo_grows_the_chosen_over_rejected_margin(model_cache: Path, tmp_path: Path) -> None:
    base = resolve_model_source("tiny-random:dpo", model_cache)
    params = dpo_params(beta=0.1, learning_rate=5e-4, epochs=3.0, batch_size=2, max_length=128)
    history = train_dpo(base, PAIRS, params, tmp_path / "tuned")
    assert history, "DPO logged no step"
    assert margin(str(tmp_path / "tuned")) > margin(base) + 1.0


def test_warmup_state_round_trips_bit_identical(model_cache: Path, tmp_path: Path) -> None:
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:warm", model_cache))
    examples = encode_pairs(tokenizer, ["Say hi.", "Add 2 and 3.", "Name a color."], ["Hi!", "5", "Red"], 64)
    optimizer, losses = warmup_sft(model, examples, tokenizer.pad_token_id, warmup_params(1e-3, 2, 2))
    assert len(losses) == 4 and losses[-1] < losses[0]
    save_training_state(model, tokenizer, optimizer, tmp_path)
    loaded, _, loaded_optimizer = load_training_state(str(tmp_path))
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(p, q), name
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[p][key], loaded_optimizer.state[q][key]), (name, key)
    assert loaded_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_lora_dpo_saves_a_merged_full_model(model_cache: Path, tmp_path: Path) -> None:
    base = resolve_model_source("tiny-random:dpo", model_cache)
    lora = lora_params(r=8, alpha=16, dropout=0.0)
    params = dpo_params(beta=0.1, learning_rate=5e-3, epochs=3.0, batch_size=2, max_length=128, lora=lora)
    history = train_dpo(base, PAIRS, params, tmp_path / "tuned")
    assert history, "DPO logged no step"
    files = {p.name for p in (tmp_path / "tuned").iterdir()}
    assert "model.safetensors" in files and not files & {"adapter_config.json", "adapter_model.safetensors"}
    tuned, _ = load_causal_lm(str(tmp_path / "tuned"))
    original, _ = load_causal_lm(base)
    assert type(tuned) is type(original)
    tuned_weights, original_weights = tuned.state_dict(), original.state_dict()
    assert tuned_weights.keys() == original_weights.keys()
    assert any(not torch.equal(tuned_weights[k], original_weights[k]) for k in original_weights)
    assert margin(str(tmp_path / "tuned")) > margin(base) + 1.0


def test_activation_checkpointing_changes_speed_not_weights(model_cache: Path, tmp_path: Path) -> None:
    """TRL turns activation checkpointing on by default; the profiles turn it off for speed, which is safe only
    because the tuned weights are the same bit for bit (the effect experiment's design key relies on this)."""
    base = resolve_model_source("tiny-random:dpo", model_cache)
    weights = {}
    for checkpointing in (True, False):
        params = dpo_params(beta=0.1, learning_rate=5e-4, epochs=1.0, batch_size=2, max_length=128,
                            activation_checkpointing=checkpointing)
        train_dpo(base, PAIRS, params, tmp_path / str(checkpointing))
        weights[checkpointing] = load_causal_lm(str(tmp_path / str(checkpointing)))[0].state_dict()
    assert weights[True].keys() == weights[False].keys()
    assert all(torch.equal(weights[True][name], weights[False][name]) for name in weights[True])
    untuned = load_causal_lm(base)[0].state_dict()
    assert any(not torch.equal(weights[True][name], value) for name, value in untuned.items())
