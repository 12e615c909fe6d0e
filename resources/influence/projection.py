"""Seeded random projections of per-parameter vectors (a candidate's AdamW update, a reference gradient) to a few
numbers per tensor, such that dot products are preserved in expectation.

Each parameter tensor is projected on its own, never the whole model's vector at once (LoGra / Bergson style): a
2-D weight ``W`` (``d_out x d_in``; more dimensions are flattened to ``shape[0] x rest``) becomes ``Sᵀ W R``, two
seeded random sign matrices, one per side:

- ``R`` (``d_in x k_in``, ``k_in = dim``) is dense, every entry ±1 (scaled by ``1 / sqrt(k_in)``): ``W R`` is the
  one product whose cost grows with the model (``2 k_in`` flops per parameter);
- ``S`` (``d_out x k_out``) has one ±1 per row (a count sketch: each row of ``W R`` is added, with its sign, into
  one of ``k_out`` buckets), which costs next to nothing on the ``k_in`` times narrower ``W R``, so the rows can
  keep the matrix's aspect ratio: ``k_out = dim x ceil(d_out / d_in)``. Measured on SmolLM2-135M, the tied
  49152 x 576 embedding is where the error comes from: candidates' updates and reference gradients concentrate in
  the rows of the tokens they contain, and a sketch of its rows to 2,048 buckets cut its error about ten-fold
  against 32 (benchmarks/RESULTS.md);
- a side no longer than its ``k`` is kept as it is (identity), so a ``dim`` as large as the model's widest
  dimension reproduces every tensor exactly; a 1-D tensor (a norm scale, a bias) is kept exact: it is small.

``E[Sᵀ A R · Sᵀ B R] = A · B`` over the signs, so the dot product of two projections is an unbiased estimate of the
dot product of the vectors. The matrices are drawn on the CPU from a seed derived from the projection's seed, the
tensor's name and the side, so every process, device and run draws the same ones, then moved to the model's
device. ``W R`` is taken a few rows at a time (``block`` elements), so the values being projected can themselves be
computed blockwise (the AdamW update is never materialized whole).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

DEFAULT_DIM = 16  # the smallest measured size meeting the fidelity targets (benchmarks/influence_store.py)
SCHEME = "sign-x-count-sketch-v1"  # bump when the draw or the layout of the features changes: stored features differ

Values = Callable[[int, int], torch.Tensor]
"""``values(start, end)``: elements ``start:end`` of the flat (row-major) vector of every row, ``(rows, end-start)``."""


@dataclass(frozen=True)
class ProjectionSpec:
    """How vectors are projected: ``dim`` dense sign columns on the right of each 2-D tensor, ``dim x ceil(d_out /
    d_in)`` sketch buckets on the left (``dim²`` numbers for a square matrix), matrices drawn from ``seed``."""

    dim: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"projection dim must be >= 1, got {self.dim}")

    def versioned(self) -> dict[str, object]:
        """What identifies the projection (stored features are keyed by it)."""
        return {**asdict(self), "scheme": SCHEME}


def _generator(seed: int, name: str, side: str) -> torch.Generator:
    """A CPU generator seeded by (seed, tensor name, side): the same draw in every process and on every device."""
    digest = hashlib.sha256(f"{SCHEME}:{seed}:{name}:{side}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _signs(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A float32 tensor of random ±1."""
    return torch.randint(0, 2, shape, generator=generator, dtype=torch.int8).float().mul_(2).sub_(1)


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
        self.k_in = self.d_in if exact or self.d_in <= spec.dim else spec.dim
        rows = spec.dim * -(-self.d_out // self.d_in)
        self.k_out = self.d_out if exact or self.d_out <= rows else rows
        self.right = None if self.k_in == self.d_in else _signs((self.d_in, self.k_in), _generator(
            spec.seed, name, "right")).div_(self.k_in**0.5).to(device)
        self.buckets = self.signs = None
        if self.k_out < self.d_out:
            generator = _generator(spec.seed, name, "left")
            self.buckets = torch.randint(0, self.k_out, (self.d_out,), generator=generator).to(device)
            self.signs = _signs((self.d_out, 1), generator).to(device)
        self.features = self.k_out * self.k_in

    def project(self, values: Values, rows: int, block: int) -> torch.Tensor:
        """The projection of each of ``rows`` flat vectors given blockwise by ``values`` (see :data:`Values`), as
        ``(rows, features)`` float32: ``W R`` a whole number of the tensor's rows (about ``block`` elements) at a
        time, then the rows' sketch."""
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
        if self.buckets is None:
            return right.reshape(rows, self.features)
        out = right.new_zeros(rows, self.k_out, self.k_in)
        for row in range(rows):
            out[row].index_add_(0, self.buckets, right[row].mul_(self.signs))
        return out.reshape(rows, self.features)


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
