"""Seeded random projections of per-parameter vectors (a candidate's AdamW update, a reference gradient) to a few
numbers per tensor, such that dot products are preserved in expectation.

Each parameter tensor is projected on its own, never the whole model's vector at once (LoGra / Bergson style):

- a 2-D weight ``W`` (``d_out x d_in``; more dimensions are flattened to ``shape[0] x rest``) becomes
  ``Lᵀ W R / sqrt(k_out k_in)``, ``L`` a ``d_out x k_out`` and ``R`` a ``d_in x k_in`` matrix of random signs
  (±1), ``k = min(dim, d)`` per side; a side no longer than ``dim`` is kept as it is (identity), so a ``dim``
  as large as the model's widest dimension reproduces every tensor exactly;
- a 1-D tensor (a norm scale, a bias) is kept exact: it is small.

For sign matrices ``E[Lᵀ A R · Lᵀ B R] = k_out k_in (A · B)``, so the scaled projections' dot product is an
unbiased estimate of ``A · B``; its error shrinks as ``1 / sqrt(k_out k_in)`` relative to ``|A| |B|``.
The matrices are drawn on the CPU from a seed derived from the projection's seed, the tensor's name and the
side, so every process, device and run draws the same ones, then moved to the model's device. ``W R`` is taken a
few rows at a time (``block`` elements), so the values being projected can themselves be computed blockwise (the
AdamW update is never materialized whole).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

DEFAULT_DIM = 32  # the smallest measured size meeting the fidelity targets (benchmarks/influence_store.py)
SCHEME = "two-sided-sign-v1"  # bump when the draw or the layout of the features changes: stored features differ

Values = Callable[[int, int], torch.Tensor]
"""``values(start, end)``: elements ``start:end`` of the flat (row-major) vector of every row, ``(rows, end-start)``."""


@dataclass(frozen=True)
class ProjectionSpec:
    """How vectors are projected: ``dim`` sign columns per side of each 2-D tensor (``dim²`` numbers per tensor),
    matrices drawn from ``seed``."""

    dim: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"projection dim must be >= 1, got {self.dim}")

    def versioned(self) -> dict[str, object]:
        """What identifies the projection (stored features are keyed by it)."""
        return {**asdict(self), "scheme": SCHEME}


def _signs(rows: int, cols: int, seed: int, name: str, side: str) -> torch.Tensor:
    """A ``rows x cols`` float32 matrix of ±1 on the CPU, the same for the same (seed, name, side) everywhere."""
    digest = hashlib.sha256(f"{SCHEME}:{seed}:{name}:{side}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return torch.randint(0, 2, (rows, cols), generator=generator, dtype=torch.int8).float().mul_(2).sub_(1)


class TensorProjection:
    """The projection of one parameter tensor, named ``name`` (the seed of its matrices) with ``shape``."""

    def __init__(self, name: str, shape: torch.Size | tuple[int, ...], spec: ProjectionSpec,
                 device: torch.device | str = "cpu") -> None:
        self.name = name
        numel = 1
        for size in shape:
            numel *= size
        self.d_out, self.d_in = (shape[0], numel // shape[0]) if len(shape) >= 2 else (1, numel)
        exact = len(shape) < 2
        self.left = None if exact or self.d_out <= spec.dim else _signs(self.d_out, spec.dim, spec.seed, name,
                                                                          "left").to(device)
        self.right = None if exact or self.d_in <= spec.dim else _signs(self.d_in, spec.dim, spec.seed, name,
                                                                         "right").to(device)
        self.k_out = self.d_out if self.left is None else spec.dim
        self.k_in = self.d_in if self.right is None else spec.dim
        self.features = self.k_out * self.k_in
        projected = (self.k_out if self.left is not None else 1) * (self.k_in if self.right is not None else 1)
        self.scale = projected**-0.5

    def project(self, values: Values, rows: int, block: int) -> torch.Tensor:
        """The projection of each of ``rows`` flat vectors given blockwise by ``values`` (see :data:`Values`), as
        ``(rows, features)`` float32: ``W R`` a whole number of the tensor's rows (about ``block`` elements) at a
        time, then ``Lᵀ (W R)`` in one product."""
        step = max(1, block // self.d_in)
        right = None
        for first in range(0, self.d_out, step):
            last = min(first + step, self.d_out)
            part = values(first * self.d_in, last * self.d_in).reshape(rows, last - first, self.d_in)
            if self.right is not None:
                part = part @ self.right  # (rows, r, k_in)
            if right is None:
                right = part.new_empty(rows, self.d_out, self.k_in)
            right[:, first:last] = part
        out = right if self.left is None else self.left.T @ right  # (rows, k_out, k_in)
        return out.reshape(rows, self.features).mul_(self.scale)


class Projector:
    """The projections of a list of named parameter tensors; a vector's features are its tensors' projections
    concatenated in that order (``features`` numbers in all)."""

    def __init__(self, named_shapes: list[tuple[str, torch.Size]], spec: ProjectionSpec,
                 device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.tensors = [TensorProjection(name, shape, spec, device) for name, shape in named_shapes]
        self.offsets = [0]
        for tensor in self.tensors:
            self.offsets.append(self.offsets[-1] + tensor.features)
        self.features = self.offsets[-1]

    def slice(self, index: int) -> slice:
        """Where tensor ``index``'s features lie in the concatenated vector."""
        return slice(self.offsets[index], self.offsets[index + 1])

    def project_tensors(self, tensors: list[torch.Tensor], block: int) -> torch.Tensor:
        """The features of one vector given as its tensors (each any shape with the tensor's numel), float32."""
        parts = []
        for projection, tensor in zip(self.tensors, tensors, strict=True):
            flat = tensor.reshape(1, -1).float()
            parts.append(projection.project(lambda start, end, f=flat: f[:, start:end], 1, block)[0])
        return torch.cat(parts)
