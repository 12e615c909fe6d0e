"""Temporary lead version (helper replaces): exact influence with in-memory restore."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from resources.examples import collate, mean_loss, per_example_loss


@dataclass(frozen=True)
class InfluenceScore:
    loss_before: float
    loss_after: float
    loss_null_step: float
    influence: float


class ExactInfluence:
    def __init__(self, model, optimizer, reference, pad_id, batch_size=8):
        self.model, self.optimizer, self.reference, self.pad_id, self.batch_size = model, optimizer, reference, pad_id, batch_size
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.saved_params = [p.detach().clone() for p in self.params]
        self.saved_state = {id(p): {k: v.clone() for k, v in optimizer.state[p].items()} for p in self.params if p in optimizer.state}
        self.loss_before = self._ref()
        self.loss_null = self._step(None)

    def _ref(self):
        return mean_loss(self.model, self.reference, self.pad_id, self.batch_size)

    def _restore(self):
        with torch.no_grad():
            for p, s in zip(self.params, self.saved_params):
                p.copy_(s)
                if id(p) in self.saved_state:
                    for k, v in self.saved_state[id(p)].items():
                        self.optimizer.state[p][k].copy_(v)

    def _step(self, candidate):
        self.optimizer.zero_grad(set_to_none=False)
        if candidate is None:
            for p in self.params:
                p.grad = torch.zeros_like(p)
        else:
            per_example_loss(self.model, collate([candidate], self.pad_id)).mean().backward()
        self.optimizer.step()
        loss = self._ref()
        self._restore()
        return loss

    def score(self, candidate):
        after = self._step(candidate)
        return InfluenceScore(self.loss_before, after, self.loss_null, self.loss_before - after)

    def score_all(self, candidates, progress=None):
        out = []
        for c in candidates:
            out.append(self.score(c))
            if progress:
                progress(len(out), len(candidates))
        return out


def make_influence_engine(method, model, optimizer, reference, pad_id, batch_size, **params):
    if method != "exact":
        raise ValueError(method)
    return ExactInfluence(model, optimizer, reference, pad_id, batch_size)
