"""Per-example gradients from one batched backward equal one autograd backward per example."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resources.influence.per_example_grads import PerExampleGradients, UnsupportedModelError
from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import IGNORE_INDEX, EncodedExample, collate, encode_pairs, per_example_loss

PAIRS = [("Name a fruit.", "Apple."), ("What is 3 plus 3?", "6"), ("xq zv", "zz zz zz zz"),
         ("Say goodbye to everyone you meet today.", "Goodbye!")]


@pytest.fixture
def tiny(model_cache: Path):  # noqa: ANN201
    model, tokenizer = load_causal_lm(resolve_model_source("tiny-random:grads", model_cache))
    examples = encode_pairs(tokenizer, [p[0] for p in PAIRS], [p[1] for p in PAIRS], 64)
    pad_id = tokenizer.pad_token_id
    # the padding token inside an example: nn.Embedding gives its row no gradient (SmolLM2 pads with eos)
    first = examples[0]
    examples.append(EncodedExample([first.input_ids[0], pad_id, *first.input_ids[1:]], [IGNORE_INDEX, *first.labels]))
    assert model.model.embed_tokens.padding_idx == pad_id
    return model, examples, pad_id


def autograd_gradient(model, examples, pad_id: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Plain autograd: the gradient of the summed per-example loss of ``examples`` (one padded batch)."""
    model.zero_grad(set_to_none=True)
    per_example_loss(model, collate(examples, pad_id)).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def captured(model, params, examples, pad_id: int, per_example: bool = True) -> dict[int, torch.Tensor]:  # noqa: ANN001
    got: dict[int, torch.Tensor] = {}
    with PerExampleGradients(model, params).capture(len(examples), got.__setitem__, per_example):
        per_example_loss(model, collate(examples, pad_id)).sum().backward()
    return got


def test_per_example_gradients_equal_one_backward_per_example(tiny) -> None:  # noqa: ANN001
    model, examples, pad_id = tiny
    names, params = zip(*model.named_parameters(), strict=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight, "the tiny model ties its embeddings"
    got = captured(model, list(params), examples, pad_id)
    assert sorted(got) == list(range(len(params)))
    for row, example in enumerate(examples):
        expected = autograd_gradient(model, [example], pad_id)
        for i, name in enumerate(names):
            assert got[i].shape == (len(examples), *params[i].shape)
            torch.testing.assert_close(got[i][row], expected[name], rtol=1e-5, atol=1e-7, msg=name)
    assert all(p.requires_grad and p.grad is None for p in params), "capture must leave the model as it was"


def test_summed_gradients_and_a_subset_of_parameters(tiny) -> None:  # noqa: ANN001
    model, examples, pad_id = tiny
    expected = autograd_gradient(model, examples, pad_id)
    named = [(n, p) for n, p in model.named_parameters() if "layers.1." in n]  # backward starts mid-model
    got = captured(model, [p for _, p in named], examples, pad_id, per_example=False)
    for i, (name, param) in enumerate(named):
        assert got[i].shape == (1, *param.shape)
        torch.testing.assert_close(got[i][0], expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_unsupported_parameters_are_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 2, 1))
    with pytest.raises(UnsupportedModelError, match="only Linear, Embedding and 1-D scales"):
        PerExampleGradients(model, list(model.parameters()))
