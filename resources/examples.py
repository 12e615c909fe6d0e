"""Turn instruction/response pairs into token ids with loss only on the response.

Shared by warm-up SFT, influence scoring and evaluation so that "the loss of an example" means the
same thing everywhere: the mean next-token cross-entropy over the response tokens of the chat-
formatted example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one chat-formatted example; ``labels`` is IGNORE_INDEX outside the response."""

    input_ids: list[int]
    labels: list[int]


def chat_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str) -> str:
    """The chat-formatted user turn plus the assistant header, as text."""
    messages = [{"role": "user", "content": instruction}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_example(
    tokenizer: PreTrainedTokenizerBase, instruction: str, response: str, max_length: int
) -> EncodedExample:
    """Encode one pair; the prompt is truncated from the left when the pair exceeds ``max_length``."""
    prompt_ids = tokenizer(chat_prompt(tokenizer, instruction), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    response_ids = response_ids[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)) :]
    return EncodedExample(
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
    )


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, instructions: list[str], responses: list[str], max_length: int
) -> list[EncodedExample]:
    """Encode parallel lists of instructions and responses."""
    return [encode_example(tokenizer, i, r, max_length) for i, r in zip(instructions, responses, strict=True)]


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


def per_example_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean response-token cross-entropy of each example in a batch (shape: batch)."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted_logits = logits[:, :-1, :].float()
    targets = batch["labels"][:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        shifted_logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return token_loss.sum(dim=1) / counts


class MeanLoss:
    """Mean per-example loss of a model over a fixed set of examples, with the batches built once
    (length-sorted, dynamically padded) and summed in float64 under ``torch.inference_mode``."""

    def __init__(self, examples: list[EncodedExample], pad_id: int, batch_size: int, name: str) -> None:
        if not examples:
            raise ValueError(f"{name} is empty")
        ordered = sorted(examples, key=lambda e: len(e.input_ids))
        self.batches = [collate(ordered[i : i + batch_size], pad_id) for i in range(0, len(ordered), batch_size)]
        self.count = len(examples)

    def __call__(self, model: torch.nn.Module) -> float:
        """The mean loss of ``model`` over the examples."""
        total = torch.zeros((), dtype=torch.float64)
        with torch.inference_mode():
            for batch in self.batches:
                total += per_example_loss(model, batch).double().sum().cpu()
        return float(total / self.count)
