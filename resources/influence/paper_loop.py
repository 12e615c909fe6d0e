"""The paper's own influence loop, kept as the fidelity and speed baseline for the fast engines.

Per candidate it reloads the warm student's weights and optimizer state from disk, takes one step,
and evaluates the reference set padded to a fixed length in fixed-size batches; nothing is reused.
"""

from __future__ import annotations

import torch

from resources.influence.engines import InfluenceScore
from resources.training.encoding import EncodedExample, collate, per_example_loss
from resources.training.warmup import load_training_state


def padded_reference_loss(
    model: torch.nn.Module, reference: list[EncodedExample], pad_id: int, pad_to: int, batch_size: int
) -> float:
    """Mean per-example reference loss with every batch padded to ``pad_to`` tokens."""
    losses = []
    with torch.no_grad():
        for start in range(0, len(reference), batch_size):
            batch = collate(reference[start : start + batch_size], pad_id, pad_to=pad_to)
            losses.extend(per_example_loss(model, batch).double().tolist())
    return sum(losses) / len(losses)


def paper_loop_influence(
    warm_folder: str,
    reference: list[EncodedExample],
    candidates: list[EncodedExample],
    pad_id: int,
    pad_to: int = 1024,
    batch_size: int = 8,
) -> list[InfluenceScore]:
    """Score ``candidates`` the paper's way, reloading the warm state from ``warm_folder`` every time."""

    def after_step(candidate: EncodedExample | None) -> float:
        model, _, optimizer = load_training_state(warm_folder)
        if candidate is None:
            for param in model.parameters():
                param.grad = torch.zeros_like(param)
        else:
            per_example_loss(model, collate([candidate], pad_id)).mean().backward()
        optimizer.step()
        return padded_reference_loss(model, reference, pad_id, pad_to, batch_size)

    model, _, _ = load_training_state(warm_folder)
    before = padded_reference_loss(model, reference, pad_id, pad_to, batch_size)
    null_step = after_step(None)
    return [InfluenceScore(before, after, null_step, before - after) for after in map(after_step, candidates)]
