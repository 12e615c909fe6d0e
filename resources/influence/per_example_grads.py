"""Per-example gradients from one batched backward pass, handed over one parameter tensor at a time.

The model runs an ordinary batched forward and backward with its weights frozen, so autograd computes
activation gradients only, and hooks build every parameter's gradient from what its layer saw:

- ``nn.Linear``: ``dW[b] = dY[b]ᵀ X[b]`` (one batched matmul) and ``db[b] = Σ_t dY[b, t]``;
- ``nn.Embedding``: ``dY[b]`` added into the rows of example ``b``'s token ids (none into
  ``padding_idx``, as ``nn.Embedding`` does);
- a 1-D parameter of any other module (an RMSNorm scale): swapped, during the pass, for a per-example
  copy of shape ``(batch, 1, size)`` that broadcasts over the sequence, so autograd itself gives its
  per-example gradient.

A parameter used by several modules (tied input and output embeddings) is handed over once every use
has contributed, so a consumer always sees a parameter's complete gradient. Gradients are float32
whatever the model's compute precision (under autocast the layers' inputs and output gradients are
upcast before the weight-gradient matmul). ``per_example=False`` gives the gradient summed over the
batch instead (leading dimension 1), with the same code path.

Rows must not interact (no batch statistics), which holds for causal LMs; a 1-D scale must meet
``(batch, sequence, features)`` activations (true of the Llama family's RMSNorm). ``torch.func.vmap``
over ``functional_call`` also gives per-example gradients, but returns all of them at once (batch ×
model in memory) and measured about 1.6× slower per example on CPU (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.utils.hooks import RemovableHandle

GradientSink = Callable[[int, torch.Tensor], None]
"""Receives ``(parameter index, gradient of shape (rows, *parameter.shape), float32)``."""


class UnsupportedModelError(TypeError):
    """The model or optimizer holds something the first-order engine cannot score (a layer type, an embedding
    option, an optimizer variant); the error names it."""


class PerExampleGradients:
    """Instruments ``model`` so that backward passes hand the gradients of ``params`` to a sink."""

    def __init__(self, model: torch.nn.Module, params: list[torch.nn.Parameter]) -> None:
        self.model, self.params = model, params
        index = {id(p): i for i, p in enumerate(params)}
        self.uses = [0] * len(params)
        self.linears: list[tuple[torch.nn.Linear, int | None, int | None]] = []
        self.embeddings: list[tuple[torch.nn.Embedding, int]] = []
        self.scales: list[tuple[torch.nn.Module, str, int]] = []
        for module in model.modules():
            owned = {name: index[id(p)] for name, p in module.named_parameters(recurse=False) if id(p) in index}
            if not owned:
                continue
            if isinstance(module, torch.nn.Linear):
                self.linears.append((module, owned.get("weight"), owned.get("bias")))
            elif isinstance(module, torch.nn.Embedding):
                if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
                    raise UnsupportedModelError(
                        f"per-example gradients of {module} (max_norm/scale_grad_by_freq/sparse)")
                self.embeddings.append((module, owned["weight"]))
            else:
                for name, i in owned.items():
                    if params[i].dim() != 1:
                        raise UnsupportedModelError(
                            f"per-example gradients of the {tuple(params[i].shape)} parameter {name!r} of "
                            f"{type(module).__name__}: only Linear, Embedding and 1-D scales are supported")
                    self.scales.append((module, name, i))
            for i in owned.values():
                self.uses[i] += 1
        if any(self.uses[i] > 1 for _, _, i in self.scales):
            raise UnsupportedModelError("per-example gradients of a 1-D parameter shared by several modules")

    @contextmanager
    def capture(self, rows: int, sink: GradientSink, per_example: bool = True) -> Iterator[None]:
        """While open, every backward pass through ``model`` (of a loss over batches of ``rows`` examples)
        hands each parameter's gradient to ``sink`` as soon as it is complete, per example or, when
        ``per_example`` is False, summed over the batch; parameters that no pass reached get zeros when
        the context closes. The model's own parameters are frozen meanwhile (no ``.grad`` is written)."""
        pass_ = _Pass(self, rows if per_example else 1, sink)
        flags = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            with pass_.installed():
                yield
            pass_.finish()
        finally:
            for p, flag in zip(self.model.parameters(), flags, strict=True):
                p.requires_grad_(flag)


class _Pass:
    """The hooks and partial sums of one capture."""

    def __init__(self, owner: PerExampleGradients, rows: int, sink: GradientSink) -> None:
        self.owner, self.rows, self.sink = owner, rows, sink
        self.partial: dict[int, torch.Tensor] = {}
        self.seen = [0] * len(owner.params)

    def add(self, i: int, grad: torch.Tensor) -> None:
        """Add one use's contribution to parameter ``i``; hand the sum over once every use has given one."""
        if i in self.partial:
            self.partial[i] += grad
        else:
            self.partial[i] = grad
        self.seen[i] += 1
        if self.seen[i] % self.owner.uses[i] == 0:
            self.sink(i, self.partial.pop(i))

    def finish(self) -> None:
        """Hand over what the last backward pass left incomplete, and zeros for what no pass reached."""
        for i, param in enumerate(self.owner.params):
            if i in self.partial:
                self.sink(i, self.partial.pop(i))
            elif not self.seen[i]:
                self.sink(i, param.new_zeros((self.rows, *param.shape), dtype=torch.float32))

    def _rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(batch, ..., features)`` as float32 ``(rows, tokens, features)``; with one row (summed
        gradients) every token of the batch lands in it."""
        return tensor.reshape(self.rows, -1, tensor.shape[-1]).float()

    @contextmanager
    def installed(self) -> Iterator[None]:
        handles: list[RemovableHandle] = []
        swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
        try:
            for module, weight, bias in self.owner.linears:
                handles.append(module.register_forward_pre_hook(_inputs_require_grad))
                handles.append(module.register_forward_hook(self._linear_hook(weight, bias)))
            for module, weight in self.owner.embeddings:
                handles.append(module.register_forward_hook(self._embedding_hook(module, weight)))
            for module, name, i in self.owner.scales:
                param = module._parameters[name]
                leaf = param.detach().expand(self.rows, 1, param.numel()).clone().requires_grad_()
                handles.append(leaf.register_post_accumulate_grad_hook(self._scale_hook(i)))
                module._parameters[name] = leaf  # read back by Module.__getattr__; restored below
                swapped.append((module, name, param))
            yield
        finally:
            for module, name, param in swapped:
                module._parameters[name] = param
            for handle in handles:
                handle.remove()

    def _linear_hook(self, weight: int | None, bias: int | None) -> Callable:
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs = args[0].detach()

            def on_grad(grad_output: torch.Tensor) -> None:
                with _float32(grad_output):
                    dy = self._rows(grad_output)
                    if weight is not None:
                        self.add(weight, torch.bmm(dy.transpose(1, 2), self._rows(inputs)))
                    if bias is not None:
                        self.add(bias, dy.sum(1))

            output.register_hook(on_grad)

        return hook

    def _embedding_hook(self, module: torch.nn.Embedding, weight: int) -> Callable:
        def hook(_: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            ids = args[0].reshape(self.rows, -1)
            output = output.detach().requires_grad_()

            def on_grad(grad_output: torch.Tensor) -> None:
                with _float32(grad_output):
                    dy = self._rows(grad_output).reshape(-1, module.embedding_dim)
                    rows = ids + torch.arange(self.rows, device=ids.device)[:, None] * module.num_embeddings
                    if module.padding_idx is not None:
                        dy = dy * (ids.reshape(-1, 1) != module.padding_idx)
                    grad = dy.new_zeros(self.rows * module.num_embeddings, module.embedding_dim)
                    grad.index_add_(0, rows.reshape(-1), dy)
                    self.add(weight, grad.view(self.rows, *module.weight.shape))

            output.register_hook(on_grad)
            return output

        return hook

    def _scale_hook(self, i: int) -> Callable:
        def hook(leaf: torch.Tensor) -> None:
            with _float32(leaf):
                self.add(i, leaf.grad.reshape(-1, *self.owner.params[i].shape).float())
            leaf.grad = None

        return hook


def _float32(tensor: torch.Tensor) -> torch.autocast:
    """No autocast in the hooks (backward may run inside the caller's autocast): their matmuls and the
    sink's work stay float32."""
    return torch.autocast(tensor.device.type, enabled=False)


def _inputs_require_grad(_: torch.nn.Module, args: tuple) -> None:
    """Let the backward pass reach a layer whose input comes from frozen layers only (a leaf tensor)."""
    if args and args[0].is_floating_point() and not args[0].requires_grad:
        args[0].requires_grad_()
