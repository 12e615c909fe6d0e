"""Local data influence: how one optimizer step on a candidate changes the student's reference loss.

From the warm student (parameters θ0 and its AdamW state), take ONE optimizer step on candidate c
alone, measure the mean reference loss, restore θ0 and the optimizer state:
``influence(c) = L_ref(θ0) − L_ref(θ0 after a step on c)`` (positive: c helps the student).
Also measured once: ``L_ref`` after a *null step* (every gradient zero: momentum and weight decay
only), the part of the update that every candidate shares.

Unlike the paper's loop, nothing goes through disk: parameters and optimizer state are snapshot in
memory once and restored in place (bit-identical), the reference set is tokenized and collated
once into length-sorted, dynamically padded batches, and ``L_ref(θ0)`` is computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from resources.examples import EncodedExample, collate, per_example_loss
from resources.training import check_finite

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class InfluenceScore:
    """Reference losses around one candidate's step; ``influence = loss_before − loss_after``."""

    loss_before: float
    loss_after: float
    loss_null_step: float
    influence: float


class ReferenceLoss:
    """Mean per-example reference loss, with batches built once (length-sorted, dynamic padding)."""

    def __init__(self, reference: list[EncodedExample], pad_id: int, batch_size: int) -> None:
        if not reference:
            raise ValueError("the reference set is empty")
        ordered = sorted(reference, key=lambda e: len(e.input_ids))
        self.batches = [collate(ordered[i : i + batch_size], pad_id) for i in range(0, len(ordered), batch_size)]
        self.count = len(reference)

    def __call__(self, model: torch.nn.Module) -> float:
        total = torch.zeros((), dtype=torch.float64)
        with torch.inference_mode():
            for batch in self.batches:
                total += per_example_loss(model, batch).double().sum().cpu()
        return float(total / self.count)


class ExactInfluence:
    """The exact one-step influence of each candidate, restoring the warm state in memory."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        reference: list[EncodedExample],
        pad_id: int,
        batch_size: int = 8,
    ) -> None:
        self.model, self.optimizer, self.pad_id = model, optimizer, pad_id
        self.reference_loss = ReferenceLoss(reference, pad_id, batch_size)
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.saved_params = [p.detach().clone() for p in self.params]
        self.saved_state = [
            {key: value.clone() for key, value in optimizer.state[p].items()} if p in optimizer.state else None
            for p in self.params
        ]
        self.model.eval()
        self.loss_before = check_finite(self.reference_loss(model), "reference loss before any step")
        self.loss_null_step = check_finite(self._step_and_measure(None), "reference loss after the null step")

    def _restore(self) -> None:
        with torch.no_grad():
            for param, saved, state in zip(self.params, self.saved_params, self.saved_state, strict=True):
                param.copy_(saved)
                param.grad = None
                if state is None:
                    self.optimizer.state.pop(param, None)
                else:
                    for key, value in state.items():
                        self.optimizer.state[param][key].copy_(value)

    def _step_and_measure(self, candidate: EncodedExample | None) -> float:
        """Reference loss after one step on ``candidate`` (None: all gradients zero), then restore."""
        try:
            if candidate is None:
                for param in self.params:
                    param.grad = torch.zeros_like(param)
            else:
                with torch.enable_grad():
                    per_example_loss(self.model, collate([candidate], self.pad_id)).mean().backward()
            self.optimizer.step()
            return self.reference_loss(self.model)
        finally:
            self._restore()

    def score(self, candidate: EncodedExample, index: int = 0) -> InfluenceScore:
        """Score one candidate; raises FloatingPointError naming ``index`` on a NaN/inf loss."""
        after = check_finite(self._step_and_measure(candidate), f"reference loss after candidate {index}")
        return InfluenceScore(self.loss_before, after, self.loss_null_step, self.loss_before - after)

    def score_all(self, candidates: list[EncodedExample], progress: Progress | None = None) -> list[InfluenceScore]:
        """Score every candidate in order, reporting progress after each."""
        scores = []
        for index, candidate in enumerate(candidates):
            scores.append(self.score(candidate, index))
            if progress:
                progress(index + 1, len(candidates))
        return scores


ENGINES = {"exact": ExactInfluence}


def make_influence_engine(
    method: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    reference: list[EncodedExample],
    pad_id: int,
    batch_size: int,
) -> ExactInfluence:
    """The influence engine named by ``method`` (settings ``influence.method``)."""
    if method not in ENGINES:
        raise ValueError(f"unknown influence method {method!r}; choose one of {sorted(ENGINES)}")
    return ENGINES[method](model, optimizer, reference, pad_id, batch_size)
