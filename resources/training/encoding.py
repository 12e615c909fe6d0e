"""Turn instruction/response pairs into token ids with loss only on the response, and measure losses.

Shared by warm-up SFT, influence scoring and evaluation so that "the loss of an example" means the
same thing everywhere: next-token cross-entropy over the labelled (response) tokens of the chat-
formatted example. Two encodings (``truncation``):

- ``left`` (the project's): prompt and response tokenized apart, labels on the response plus the
  end-of-sequence token; an over-long pair loses the start of its prompt, so the answer survives.
- ``right`` (the official code's): the chat-formatted conversation (user and assistant turns) is
  tokenized as one text; labels on every token from the assistant content's first character to the
  end of the text (so the end-of-turn token and anything the template appends after it); the first
  ``max_length`` tokens are kept, so an over-long answer loses its tail.

Two reference-loss definitions (:class:`MeanLoss`): ``example_mean`` (the mean over examples of each
example's mean token loss) and ``batch_token_mean`` (the official: the mean over consecutive batches,
in file order, of each batch's token-weighted mean loss).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
TRUNCATIONS = ("left", "right")
REFERENCE_LOSSES = ("example_mean", "batch_token_mean")


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one chat-formatted example; ``labels`` is IGNORE_INDEX outside the response."""

    input_ids: list[int]
    labels: list[int]

    @property
    def label_count(self) -> int:
        """How many tokens carry a loss (a next-token target; the first token never does)."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def chat_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str) -> str:
    """The chat-formatted user turn plus the assistant header, as text."""
    messages = [{"role": "user", "content": instruction}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Return ``value`` when it is one of ``allowed``; raise ValueError naming ``what`` otherwise."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {list(allowed)}")
    return value


def _encode_left(
    tokenizer: PreTrainedTokenizerBase, instruction: str, response: str, max_length: int
) -> EncodedExample:
    prompt_ids = tokenizer(chat_prompt(tokenizer, instruction), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    response_ids = response_ids[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)) :]
    return EncodedExample(
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
    )


def _find_after(text: str, content: str, start: int) -> int:
    """Where ``content`` (or, for templates that trim, its stripped form) begins in ``text`` from ``start``."""
    for needle in (content, content.strip()):
        found = text.find(needle, start)
        if found >= 0:
            return found
    raise ValueError(f"the chat template changed the response beyond trimming; cannot locate it: {content[:60]!r}")


def _encode_right(
    tokenizer: PreTrainedTokenizerBase, instruction: str, response: str, max_length: int
) -> EncodedExample:
    messages = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    # the answer is searched after the part the text shares with the prompt alone (user turn + assistant header)
    answer_at = _find_after(text, response, len(os.path.commonprefix([text, chat_prompt(tokenizer, instruction)])))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_length]
    offsets = encoded["offset_mapping"][:max_length]
    labels = [token if start >= answer_at else IGNORE_INDEX for token, (start, _) in zip(ids, offsets, strict=True)]
    return EncodedExample(input_ids=ids, labels=labels)


def encode_example(
    tokenizer: PreTrainedTokenizerBase, instruction: str, response: str, max_length: int, truncation: str = "left"
) -> EncodedExample:
    """Encode one pair with the ``truncation`` encoding (``left`` or ``right``, see the module doc)."""
    encode = {"left": _encode_left, "right": _encode_right}[check_choice(truncation, TRUNCATIONS, "truncation")]
    return encode(tokenizer, instruction, response, max_length)


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[str],
    responses: list[str],
    max_length: int,
    truncation: str = "left",
) -> list[EncodedExample]:
    """Encode parallel lists of instructions and responses."""
    return [
        encode_example(tokenizer, i, r, max_length, truncation)
        for i, r in zip(instructions, responses, strict=True)
    ]


def collate(examples: list[EncodedExample], pad_id: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest member (or to ``pad_to``); returns input_ids, attention_mask, labels."""
    width = pad_to or max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_loss_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example of a batch: the summed cross-entropy of its labelled tokens and how many there are."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted_logits = logits[:, :-1, :].to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> f32, f64 kept
    targets = batch["labels"][:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        shifted_logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    return token_loss.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


def per_example_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean response-token cross-entropy of each example in a batch (shape: batch)."""
    sums, counts = token_loss_sums(model, batch)
    return sums / counts.clamp(min=1)


class MeanLoss:
    """A model's loss over a fixed set of examples under ``definition``, with the batches built once
    (dynamically padded) and summed in float64.

    ``example_mean``: the mean over examples of each one's mean token loss (batches length-sorted, which
    changes nothing but speed). ``batch_token_mean``: the mean over batches of ``batch_size`` consecutive
    examples, in the given order, of the batch's token-weighted mean (the official reference loss)."""

    def __init__(
        self,
        examples: list[EncodedExample],
        pad_id: int,
        batch_size: int,
        name: str,
        definition: str = "example_mean",
    ) -> None:
        if not examples:
            raise ValueError(f"{name} is empty")
        self.definition = check_choice(definition, REFERENCE_LOSSES, "reference loss")
        ordered = sorted(examples, key=lambda e: len(e.input_ids)) if definition == "example_mean" else examples
        self.batches = [collate(ordered[i : i + batch_size], pad_id) for i in range(0, len(ordered), batch_size)]
        self.normalizer = len(examples) if definition == "example_mean" else len(self.batches)

    def terms(self, model: torch.nn.Module) -> Iterator[torch.Tensor]:
        """Each batch's share of the loss under ``definition``: differentiable float64 scalars that sum to the
        loss. Evaluation (:meth:`__call__`) and the first-order engine's reference gradient (backpropagated one
        share at a time) both go through these, so every consumer follows the same definition."""
        for batch in self.batches:
            sums, counts = token_loss_sums(model, batch)
            if self.definition == "example_mean":
                value = (sums / counts.clamp(min=1)).double().sum()
            else:
                value = sums.double().sum() / counts.sum().clamp(min=1)
            yield value / self.normalizer

    def __call__(self, model: torch.nn.Module) -> float:
        """The loss of ``model`` over the examples."""
        total = torch.zeros((), dtype=torch.float64)
        with torch.inference_mode():
            for share in self.terms(model):
                total += share.cpu()
        return float(total)
