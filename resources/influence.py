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

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from resources.examples import EncodedExample, MeanLoss, collate, per_example_loss
from resources.training import check_finite

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class InfluenceScore:
    """Reference losses around one candidate's step; ``influence = loss_before − loss_after``."""

    loss_before: float
    loss_after: float
    loss_null_step: float
    influence: float


class InfluenceEngine(ABC):
    """What every engine offers: ``score`` one candidate, ``score_all`` with progress."""

    @abstractmethod
    def score(self, candidate: EncodedExample, index: int = 0) -> InfluenceScore:
        """Score one candidate (``index`` names it in errors)."""

    def score_all(self, candidates: list[EncodedExample], progress: Progress | None = None) -> list[InfluenceScore]:
        """Score every candidate in order, reporting progress after each."""
        scores = []
        for index, candidate in enumerate(candidates):
            scores.append(self.score(candidate, index))
            if progress:
                progress(index + 1, len(candidates))
        return scores


class ExactInfluence(InfluenceEngine):
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
        self.reference_loss = MeanLoss(reference, pad_id, batch_size, "the reference set")
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


class FirstOrderInfluence(InfluenceEngine):
    """First-order approximation: ``influence(c) ≈ −∇L_ref(θ0) · Δ(g_c)``, where ``Δ(g)`` is the exact
    AdamW update (decoupled weight decay, moments, bias correction) the optimizer would apply for
    gradient ``g``. One forward/backward per candidate and no reference pass; the reference gradient
    is computed once. Work happens on flat float32 buffers so the update and dot product are a few
    vector operations.

    ``param_pattern`` (a regex on parameter names, e.g. ``layers\\.(2[6-9])\\.``) restricts the
    approximation to matching parameters: the others get no gradient, which cuts backward cost."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        reference: list[EncodedExample],
        pad_id: int,
        batch_size: int = 8,
        param_pattern: str | None = None,
    ) -> None:
        self.model, self.pad_id = model, pad_id
        pattern = re.compile(param_pattern) if param_pattern else None
        named = [(n, p) for n, p in model.named_parameters() if p in optimizer.state]
        self.params = [p for n, p in named if pattern is None or pattern.search(n)]
        if not self.params:
            raise ValueError(f"no optimizer parameter matches influence pattern {param_pattern!r}")
        chosen = {id(p) for p in self.params}
        self._requires_grad = {p: p.requires_grad for _, p in model.named_parameters()}
        group = optimizer.param_groups[0]
        self.lr, self.weight_decay, self.eps = group["lr"], group["weight_decay"], group["eps"]
        self.beta1, self.beta2 = group["betas"]
        step = float(optimizer.state[self.params[0]]["step"]) + 1
        self.bias1, self.sqrt_bias2 = 1 - self.beta1**step, math.sqrt(1 - self.beta2**step)
        flat = lambda tensors: torch.cat([t.detach().reshape(-1).float() for t in tensors])  # noqa: E731
        self.theta = flat(self.params)
        self.exp_avg = flat(optimizer.state[p]["exp_avg"] for p in self.params)
        self.exp_avg_sq = flat(optimizer.state[p]["exp_avg_sq"] for p in self.params)
        for _, param in model.named_parameters():
            param.requires_grad_(id(param) in chosen)
        self.grad_buffer = torch.zeros_like(self.theta)
        self.decay_term = self.lr * self.weight_decay * self.theta
        self.model.eval()
        self.loss_before = check_finite(
            MeanLoss(reference, pad_id, batch_size, "the reference set")(model), "reference loss"
        )
        self.reference_grad = self._gradient(reference, batch_size).clone()
        self.null_effect = float(self.reference_grad @ self.update(torch.zeros_like(self.theta)))

    def _gradient(self, examples: list[EncodedExample], batch_size: int) -> torch.Tensor:
        """Flat gradient of the mean per-example loss over ``examples``, accumulated by autograd straight
        into one flat buffer (each parameter's ``.grad`` is a view of it), so nothing is concatenated."""
        self.grad_buffer.zero_()
        offset = 0
        for param in self.params:
            param.grad = self.grad_buffer[offset : offset + param.numel()].view_as(param)
            offset += param.numel()
        with torch.enable_grad():
            for start in range(0, len(examples), batch_size):
                batch = collate(examples[start : start + batch_size], self.pad_id)
                (per_example_loss(self.model, batch).sum() / len(examples)).backward()
        for param in self.params:
            param.grad = None
        return self.grad_buffer

    def update(self, grad: torch.Tensor) -> torch.Tensor:
        """The parameter change one AdamW step with gradient ``grad`` would make."""
        exp_avg = torch.lerp(self.exp_avg, grad, 1 - self.beta1)
        denom = torch.addcmul(self.exp_avg_sq, grad, grad, value=(1 - self.beta2) / self.beta2)
        denom.mul_(self.beta2).sqrt_().div_(self.sqrt_bias2).add_(self.eps)
        return exp_avg.div_(denom).mul_(-self.lr / self.bias1).sub_(self.decay_term)

    def score(self, candidate: EncodedExample, index: int = 0) -> InfluenceScore:
        """Approximate one candidate's scores (``loss_after`` and ``loss_null_step`` are first-order too)."""
        effect = float(self.reference_grad @ self.update(self._gradient([candidate], 1)))
        after = check_finite(self.loss_before + effect, f"approximate loss after candidate {index}")
        return InfluenceScore(self.loss_before, after, self.loss_before + self.null_effect, -effect)

    def score_all(self, candidates: list[EncodedExample], progress: Progress | None = None) -> list[InfluenceScore]:
        """Score every candidate, then give parameters back their original ``requires_grad``."""
        try:
            return super().score_all(candidates, progress)
        finally:
            for param, flag in self._requires_grad.items():
                param.requires_grad_(flag)


METHODS = ("exact", "first_order")


def make_influence_engine(
    method: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    reference: list[EncodedExample],
    pad_id: int,
    batch_size: int,
    param_pattern: str | None = None,
) -> InfluenceEngine:
    """The influence engine named by ``method`` (settings ``influence.method``)."""
    if method == "exact":
        return ExactInfluence(model, optimizer, reference, pad_id, batch_size)
    if method == "first_order":
        return FirstOrderInfluence(model, optimizer, reference, pad_id, batch_size, param_pattern)
    raise ValueError(f"unknown influence method {method!r}; choose one of {list(METHODS)}")
