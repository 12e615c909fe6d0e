"""Local data influence: how one optimizer step on a candidate changes the student's reference loss.

From the warm student (parameters θ0 and its AdamW state), take ONE optimizer step on candidate c
alone, measure the mean reference loss, restore θ0 and the optimizer state:
``influence(c) = L_ref(θ0) − L_ref(θ0 after a step on c)`` (positive: c helps the student).
Also measured once: ``L_ref`` after a *null step* (every gradient zero: momentum and weight decay
only), the part of the update that every candidate shares.

Unlike the paper's loop, nothing goes through disk: parameters and optimizer state are snapshot in
memory once and restored in place (bit-identical), the reference set is tokenized and collated
once into length-sorted, dynamically padded batches, and ``L_ref(θ0)`` is computed once.

Precision: one AdamW step at the paper's learning rate is far below bfloat16's resolution (at lr 5e-6
a bf16 step changed 0.5% of SmolLM2's parameters), so both engines hold float32 master weights and
optimizer moments whatever precision the model was loaded in (they convert it in place). The exact
engine also evaluates in float32; the first-order engine may run its forward/backward matmuls in
bfloat16 (``compute_dtype``) while gradients, the update and the dot product stay float32.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from resources.influence.per_example_grads import PerExampleGradients, UnsupportedModelError
from resources.training.encoding import EncodedExample, MeanLoss, collate, per_example_loss
from resources.training.warmup import check_finite

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


def use_float32_master(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Convert ``model``'s parameters and ``optimizer``'s moments to float32 in place; the parameters stay
    the same objects, so the optimizer still maps them to their state."""
    model.float()
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                state[key] = value.float()


class ExactInfluence(InfluenceEngine):
    """The exact one-step influence of each candidate, restoring the warm state in memory; float32
    weights, step and reference losses whatever precision ``model`` was loaded in."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        reference: list[EncodedExample],
        pad_id: int,
        batch_size: int = 8,
        reference_loss: str = "example_mean",
    ) -> None:
        self.model, self.optimizer, self.pad_id = model, optimizer, pad_id
        use_float32_master(model, optimizer)
        self.reference_loss = MeanLoss(reference, pad_id, batch_size, "the reference set", reference_loss)
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


@dataclass(frozen=True)
class AdamWTerms:
    """What one parameter's AdamW update needs, as flat float32 views, plus its reference gradient."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    reference_grad: torch.Tensor
    beta1: float
    beta2: float
    eps: float
    bias2: float  # bias correction 2
    step_scale: float  # −lr / bias correction 1
    decay_effect: float  # reference_grad · (−lr · weight_decay · θ), the same for every candidate

    @classmethod
    def of(cls, param: torch.Tensor, state: dict, group: dict, reference_grad: torch.Tensor) -> AdamWTerms:
        """The terms of ``param`` with its optimizer ``state`` and param ``group``."""
        if group.get("amsgrad") or group.get("maximize"):
            raise UnsupportedModelError("first-order influence supports plain AdamW (no amsgrad, no maximize)")
        lr, (beta1, beta2), step = float(group["lr"]), group["betas"], float(state["step"]) + 1
        decay = -lr * group["weight_decay"] * float(reference_grad.double() @ param.detach().reshape(-1).double())
        return cls(state["exp_avg"].reshape(-1), state["exp_avg_sq"].reshape(-1), reference_grad, beta1, beta2,
                   group["eps"], 1 - beta2**step, -lr / (1 - beta1**step), decay)

    def effect(self, grads: torch.Tensor, block: int) -> torch.Tensor:
        """``reference_grad · Δθ(g)`` for each row ``g`` of ``grads`` (rows × numel), float64, where Δθ is
        the change one AdamW step with gradient ``g`` makes. The update is never materialized: it is
        built and dotted ``block`` elements at a time (in cache on CPU), partial sums in float64.
        ``sqrt(v) / sqrt(bias2)`` is computed as ``sqrt(v / bias2)``, one pass less."""
        total = grads.new_zeros(grads.shape[0], dtype=torch.float64)
        for start in range(0, grads.shape[1], block):
            end = start + block
            grad = grads[:, start:end]
            exp_avg = torch.lerp(self.exp_avg[start:end], grad, 1 - self.beta1)
            denom = torch.addcmul(self.exp_avg_sq[start:end] * (self.beta2 / self.bias2), grad, grad,
                                  value=(1 - self.beta2) / self.bias2)
            denom.sqrt_().add_(self.eps)
            total += (exp_avg.div_(denom) @ self.reference_grad[start:end]).double()
        return total * self.step_scale + self.decay_effect


class FirstOrderInfluence(InfluenceEngine):
    """First-order approximation: ``influence(c) ≈ −∇L_ref(θ0) · Δθ(g_c)``, where ``Δθ(g)`` is the exact
    AdamW update (decoupled weight decay, moments, bias correction) the optimizer would apply for
    gradient ``g``. No reference pass per candidate: the reference gradient (and ``L_ref(θ0)``) come
    from one backward pass through the reference loss at set-up.

    Candidates are scored ``candidate_batch_size`` at a time (sorted by length, right-padded): one
    batched forward/backward gives every candidate's own gradient (:class:`PerExampleGradients`), and
    each parameter tensor's gradients are turned into the AdamW update and dotted with the reference
    gradient as soon as backward produces them, then dropped. Peak extra memory is about
    ``candidate_batch_size`` × (largest parameter tensor, or the tied embedding) in float32, plus the
    batch's activations; ``candidate_batch_size=1`` is the sequential method.

    ``compute_dtype`` bfloat16 runs the model's matmuls under autocast; per-example gradients, the
    update and the dot product stay float32. float16 (too little range for unscaled gradients) is
    computed in float32. ``param_pattern`` (a regex on parameter names, e.g. ``layers\\.(2[6-9])\\.``)
    restricts the approximation to matching parameters, which also stops backward early. The reference
    gradient is that of the ``reference_loss`` definition, through :meth:`MeanLoss.terms` (the same shares
    the exact method evaluates)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        reference: list[EncodedExample],
        pad_id: int,
        batch_size: int = 8,
        param_pattern: str | None = None,
        reference_loss: str = "example_mean",
        candidate_batch_size: int = 1,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        if candidate_batch_size < 1:
            raise ValueError(f"candidate_batch_size must be >= 1, got {candidate_batch_size}")
        self.model, self.pad_id, self.candidate_batch_size = model, pad_id, candidate_batch_size
        use_float32_master(model, optimizer)
        pattern = re.compile(param_pattern) if param_pattern else None
        named = [(n, p) for n, p in model.named_parameters() if p in optimizer.state]
        self.params = [p for n, p in named if pattern is None or pattern.search(n)]
        if not self.params:
            raise ValueError(f"no optimizer parameter matches influence pattern {param_pattern!r}")
        self.gradients = PerExampleGradients(model, self.params)
        device = self.params[0].device
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute_dtype == torch.bfloat16)
        self.block = 1 << (16 if device.type == "cpu" else 26)
        self.model.eval()
        self.optimizer, self.batch_size, self.reference_loss = optimizer, batch_size, reference_loss
        self.loss_before, self.terms = self.reference_terms(reference)
        self.null_effect = float(sum(t.effect(torch.zeros_like(t.exp_avg)[None], self.block) for t in self.terms))

    def reference_terms(self, reference: list[EncodedExample]) -> tuple[float, list[AdamWTerms]]:
        """The reference loss of ``reference`` at the warm state and, per scored parameter, its AdamW terms with
        that reference set's gradient (one backward pass; the engine's own set is the one it was built with)."""
        device = self.params[0].device
        reference_grads = [torch.zeros(p.numel(), dtype=torch.float32, device=device) for p in self.params]
        loss = torch.zeros((), dtype=torch.float64)
        sink = lambda i, grad: reference_grads[i].add_(grad.reshape(-1))  # noqa: E731
        mean_loss = MeanLoss(reference, self.pad_id, self.batch_size, "the reference set", self.reference_loss)
        with torch.enable_grad(), self.autocast, self.gradients.capture(1, sink, per_example=False):
            for share in mean_loss.terms(self.model):
                share.backward()
                loss += share.detach().double().cpu()
        groups = {p: group for group in self.optimizer.param_groups for p in group["params"]}
        terms = [AdamWTerms.of(p, self.optimizer.state[p], groups[p], g)
                 for p, g in zip(self.params, reference_grads, strict=True)]
        return check_finite(float(loss), "reference loss"), terms

    def _effects(self, candidates: list[EncodedExample], term_sets: list[list[AdamWTerms]] | None = None
                 ) -> list[list[float]]:
        """``reference_grad · Δθ`` for each candidate against each set of terms (default: the engine's own), from
        one batched backward pass."""
        term_sets = term_sets or [self.terms]
        device, block = self.params[0].device, max(1, self.block // len(candidates))
        effects = [torch.zeros(len(candidates), dtype=torch.float64, device=device) for _ in term_sets]

        def sink(i: int, grads: torch.Tensor) -> None:
            for total, terms in zip(effects, term_sets, strict=True):
                total.add_(terms[i].effect(grads.reshape(len(candidates), -1), block))

        with torch.enable_grad(), self.autocast, self.gradients.capture(len(candidates), sink):
            per_example_loss(self.model, collate(candidates, self.pad_id)).sum().backward()
        return [total.tolist() for total in effects]

    def _score(self, effect: float, index: int) -> InfluenceScore:
        after = check_finite(self.loss_before + effect, f"approximate loss after candidate {index}")
        return InfluenceScore(self.loss_before, after, self.loss_before + self.null_effect, -effect)

    def score(self, candidate: EncodedExample, index: int = 0) -> InfluenceScore:
        """Approximate one candidate's scores (``loss_after`` and ``loss_null_step`` are first-order too)."""
        return self._score(self._effects([candidate])[0][0], index)

    def score_all(self, candidates: list[EncodedExample], progress: Progress | None = None) -> list[InfluenceScore]:
        """Score candidates ``candidate_batch_size`` at a time, batched by length; results in input order."""
        effects = self.effects_against([self.terms], candidates, progress)[0]
        return [self._score(effect, k) for k, effect in enumerate(effects)]

    def effects_against(
        self, term_sets: list[list[AdamWTerms]], candidates: list[EncodedExample], progress: Progress | None = None
    ) -> list[list[float]]:
        """Each candidate's ``reference_grad · Δθ`` (minus its influence) against every set of
        :meth:`reference_terms`, from one pass over the candidates (``candidate_batch_size`` at a time, batched by
        length, as :meth:`score_all`): against several reference sets at the cost of one, the same numbers as
        separate engines. Results in input order, one list per term set."""
        order = sorted(range(len(candidates)), key=lambda k: len(candidates[k].input_ids))
        effects = [[0.0] * len(candidates) for _ in term_sets]
        for start in range(0, len(order), self.candidate_batch_size):
            batch = order[start : start + self.candidate_batch_size]
            for per_set, values in zip(effects, self._effects([candidates[k] for k in batch], term_sets), strict=True):
                for k, value in zip(batch, values, strict=True):
                    per_set[k] = value
            if progress:
                progress(min(start + len(batch), len(order)), len(candidates))
        return effects


METHODS = ("exact", "first_order")


def make_influence_engine(
    method: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    reference: list[EncodedExample],
    pad_id: int,
    batch_size: int,
    param_pattern: str | None = None,
    reference_loss: str = "example_mean",
    candidate_batch_size: int = 1,
    compute_dtype: torch.dtype = torch.float32,
) -> InfluenceEngine:
    """The influence engine named by ``method`` (settings ``influence.method``), scoring against the
    ``reference_loss`` definition (``example_mean`` or ``batch_token_mean``, see :class:`MeanLoss`).
    ``candidate_batch_size`` and ``compute_dtype`` apply to first-order only; exact always computes in float32."""
    if method == "exact":
        return ExactInfluence(model, optimizer, reference, pad_id, batch_size, reference_loss)
    if method == "first_order":
        return FirstOrderInfluence(model, optimizer, reference, pad_id, batch_size, param_pattern, reference_loss,
                                   candidate_batch_size, compute_dtype)
    raise ValueError(f"unknown influence method {method!r}; choose one of {list(METHODS)}")
