"""The official reference loss (right truncation, batch token mean in file order): the influence engines
against an independent implementation of the official code's definition, written here from its steps.

The tiny model runs in float64 so that the comparison is not blurred by float32 rounding (about 5e-7 on
losses near 6, whatever the padding); the definitions compared are the same in any precision."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from resources.influence.engines import ExactInfluence, FirstOrderInfluence
from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import MeanLoss, encode_pairs
from resources.training.warmup import warmup_sft
from tests.helpers import influence_params, warmup_params

MAX_LENGTH = 48
BATCH = 4
LONG = " and then the story goes on with many more words about the river, the hill and the town"
REFERENCE = [
    ("Name a color.", "Blue."),
    ("Tell a story about a river.", "Once upon a time" + LONG * 3),  # the answer's tail is cut
    ("What is 2 plus 2?", "4"),
    ("Summarize:" + LONG * 4, "A town by a river."),  # the prompt alone fills max_length: no label left
    ("Say hello.", "Hello there!"),
    ("Describe a hill.", "A hill is a raised piece of land" + LONG * 2),
    ("Give a synonym for big.", "Large."),
    ("What do bees make?", "Honey."),
    ("Count to three.", "1 2 3"),
    ("List two fruits.", "Apple and pear."),
    ("Describe a town.", "A town" + LONG),
]  # 11 pairs: batches of 4, 4 and 3
CANDIDATES = [("Name a fruit.", "Apple."), ("Write about a river.", "The river" + LONG * 2), ("xq zv", "zz zz")]
WARM = [("Say hi.", "Hi!"), ("Add 1 and 2.", "3"), ("Name an animal.", "A cat."), ("Describe rain.", "Wet" + LONG)]


def official_encoding(tokenizer, instruction: str, response: str) -> dict[str, list[int]]:  # noqa: ANN001
    """As the official code: format the conversation, find each message's content in order, tokenize the
    whole text padded and truncated to max_length, label tokens lying inside the assistant content's span
    through the end of the text."""
    messages = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    starts, cursor = [], 0
    for message in messages:
        found = text[cursor:].find(message["content"])
        starts.append(cursor + found)
        cursor += found + len(message["content"])
    tokens = tokenizer(text, return_offsets_mapping=True, padding="max_length", max_length=MAX_LENGTH,
                       truncation=True, add_special_tokens=False)
    labels = [t if s >= starts[1] and e <= len(text) else -100
              for t, (s, e) in zip(tokens["input_ids"], tokens["offset_mapping"], strict=True)]
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"], "labels": labels}


def official_batches(tokenizer, pairs: list[tuple[str, str]], size: int) -> list[dict[str, torch.Tensor]]:  # noqa: ANN001
    encoded = [official_encoding(tokenizer, *pair) for pair in pairs]
    return [{key: torch.tensor([e[key] for e in encoded[i : i + size]]) for key in encoded[0]}
            for i in range(0, len(encoded), size)]


def hf_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # noqa: ANN001
    """HF's causal-LM loss (next-token cross-entropy, mean over the batch's labelled tokens), in the
    model's precision (HF's own ``.loss`` casts logits to float32)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100)


def official_reference_loss(model, batches) -> float:  # noqa: ANN001
    """The mean over batches of the token-weighted batch loss."""
    with torch.no_grad():
        return sum(float(hf_loss(model, batch)) for batch in batches) / len(batches)


def official_after(model, optimizer, batches, candidate) -> float:  # noqa: ANN001
    """One AdamW step on the candidate (batch 1, HF loss) from copies of the warm state, then L_ref."""
    probe = copy.deepcopy(model)
    probe_optimizer = torch.optim.AdamW(probe.parameters(), **{
        k: optimizer.param_groups[0][k] for k in ("lr", "betas", "eps", "weight_decay")})
    for p, q in zip(model.parameters(), probe.parameters(), strict=True):
        probe_optimizer.state[q] = {k: v.clone() for k, v in optimizer.state[p].items()}
    hf_loss(probe, candidate).backward()
    probe_optimizer.step()
    return official_reference_loss(probe, batches)


def warm_state(model_cache: Path, dtype: torch.dtype):  # noqa: ANN201
    """The tiny student after a short warm-up (lr 1e-3, so a probe step moves the reference loss clearly)."""
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:refloss", model_cache), dtype=dtype)
    examples = encode_pairs(tokenizer, [w[0] for w in WARM], [w[1] for w in WARM], MAX_LENGTH, "right")
    optimizer, _ = warmup_sft(model, examples, tokenizer.pad_token_id, warmup_params(1e-3, batch_size=2))
    return model, tokenizer, optimizer


@pytest.fixture
def warm(model_cache: Path):  # noqa: ANN201
    return warm_state(model_cache, torch.float64)


def encode(tokenizer, pairs: list[tuple[str, str]]) -> list:  # noqa: ANN001
    return encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], MAX_LENGTH, "right")


def test_right_truncation_encodes_as_the_official_code(warm) -> None:  # noqa: ANN001
    _, tokenizer, _ = warm
    for pair, ours in zip(REFERENCE, encode(tokenizer, REFERENCE), strict=True):
        official = official_encoding(tokenizer, *pair)
        length = sum(official["attention_mask"])
        assert ours.input_ids == official["input_ids"][:length]
        assert ours.labels == official["labels"][:length]
    full = [len(tokenizer(tokenizer.apply_chat_template(
        [{"role": "user", "content": i}, {"role": "assistant", "content": r}], tokenize=False))["input_ids"])
        for i, r in REFERENCE]
    assert sum(n > MAX_LENGTH for n in full) >= 3, "the test needs pairs longer than max_length"
    assert encode(tokenizer, REFERENCE)[3].label_count == 0


def test_exact_influence_equals_the_official_definition(warm) -> None:  # noqa: ANN001
    model, tokenizer, optimizer = warm
    batches = official_batches(tokenizer, REFERENCE, BATCH)
    before = official_reference_loss(model, batches)
    engine = ExactInfluence(model, optimizer, encode(tokenizer, REFERENCE), tokenizer.pad_token_id, BATCH,
                            "batch_token_mean")
    scores = engine.score_all(encode(tokenizer, CANDIDATES))
    for pair, score in zip(CANDIDATES, scores, strict=True):
        after = official_after(model, optimizer, batches, official_batches(tokenizer, [pair], 1)[0])
        assert score.loss_before == pytest.approx(before, abs=1e-6)
        assert score.loss_after == pytest.approx(after, abs=1e-6)
        assert score.influence == pytest.approx(before - after, abs=1e-6)
    example_mean = MeanLoss(encode(tokenizer, REFERENCE), tokenizer.pad_token_id, BATCH, "ref")(model)
    assert abs(example_mean - before) > 1e-3, "the two definitions must differ on this set"


def test_first_order_uses_the_gradient_of_the_same_loss(model_cache: Path) -> None:
    model, tokenizer, optimizer = warm_state(model_cache, torch.float32)  # first-order works in float32
    engine = FirstOrderInfluence(model, optimizer, encode(tokenizer, REFERENCE), tokenizer.pad_token_id, BATCH,
                                 reference_loss="batch_token_mean")
    copy_ = copy.deepcopy(model)
    batches = official_batches(tokenizer, REFERENCE, BATCH)
    (sum(hf_loss(copy_, batch) for batch in batches) / len(batches)).backward()
    official_grad = torch.cat([p.grad.reshape(-1) for p in copy_.parameters()])
    reference_grad = torch.cat([terms.reference_grad for terms in engine.terms])
    torch.testing.assert_close(reference_grad, official_grad, atol=1e-6, rtol=1e-4)
    assert engine.loss_before == pytest.approx(official_reference_loss(model, batches), abs=1e-6)


def test_unknown_definition_is_named(warm) -> None:  # noqa: ANN001
    model, tokenizer, optimizer = warm
    with pytest.raises(ValueError, match="unknown reference loss 'median'"):
        ExactInfluence(model, optimizer, encode(tokenizer, REFERENCE), tokenizer.pad_token_id, BATCH, "median")
    with pytest.raises(ValueError, match="unknown truncation 'middle'"):
        encode_pairs(tokenizer, ["a"], ["b"], MAX_LENGTH, "middle")


def test_stage_engines_thread_the_options(model_cache: Path, tmp_path: Path) -> None:
    """train_warm_student and score_influence pass truncation and the definition to the engines."""
    import polars as pl

    from resources.influence.scoring import score_influence
    from resources.training.warm_start import train_warm_student
    from resources.training.warmup import load_training_state

    table = lambda pairs: pl.DataFrame({"instruction": [p[0] for p in pairs], "response": [p[1] for p in pairs]})  # noqa: E731
    config = warmup_params(1e-3, batch_size=2, gradient_accumulation=2, schedule="ramp_then_hold", loss="token_mean")
    cpu = torch.device("cpu")
    train_warm_student(resolve_model_source("tiny-random:refloss", model_cache), table(WARM), config, MAX_LENGTH,
                       tmp_path, cpu, torch.float32, print, truncation="right")
    params = influence_params(method="exact", reference_batch_size=BATCH, max_length=MAX_LENGTH,
                              reference_loss="batch_token_mean", truncation="right")
    scored = score_influence(str(tmp_path), table(REFERENCE), table(CANDIDATES), params, cpu, torch.float32, print)
    model, tokenizer, optimizer = load_training_state(str(tmp_path))
    assert optimizer.param_groups[0]["lr"] == 1e-3 and int(next(iter(optimizer.state.values()))["step"]) == 1
    direct = ExactInfluence(model, optimizer, encode(tokenizer, REFERENCE), tokenizer.pad_token_id, BATCH,
                            "batch_token_mean").score_all(encode(tokenizer, CANDIDATES))
    assert scored["influence"].to_list() == pytest.approx([s.influence for s in direct], abs=1e-9)
