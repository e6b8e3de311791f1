"""The constrained weights as constants of a traced or exported graph.

Under ``torch.jit.trace`` (and the TorchScript-based ``torch.onnx.export(dynamo=False)``)
and ``torch.export.export`` (and ``torch.onnx.export(dynamo=True)``, which uses it), a
seqnorm module computes its constrained matrices once, outside the graph being recorded,
and hands them to the graph as constants: the graph holds torch's plain recurrent ops and
none of the constraint's (no ``eigh``, ``matrix_exp``, ``svd``), which ONNX has no ops for.
The exported model computes what the eager module computes in the same mode (export it in
eval mode); it is a snapshot: training the module afterwards does not change it.

How the constants are computed outside the graph:

* ``torch.jit.trace``: the parameters are real tensors; tracing is paused while the
  constraint runs.
* ``torch.export``: the module's tensors are replaced by fake tensors while it is traced.
  The module keeps references to its real tensors (:func:`remember`, called by
  ``module.eval()`` and by every eager forward in eval mode), and the constraint runs on
  them with the tracing modes switched off; the result enters the graph as a lifted
  constant; ``load_state_dict`` refreshes the references too. Export in eval mode: a
  module that was never put in eval mode refuses to export, with a message saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["after_load", "capturing", "constant_weights", "remember"]

_REFS = "_seqnorm_real_tensors"


def capturing() -> bool:
    """Whether a graph is being recorded by ``torch.jit.trace`` or ``torch.export``."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def remember(module: nn.Module) -> None:
    """Keep references to ``module``'s real tensors for a later ``torch.export``."""
    if not (capturing() or torch.compiler.is_compiling()):
        object.__setattr__(module, _REFS, _tensors(module))


def after_load(module: nn.Module, incompatible_keys: object) -> None:
    """A ``load_state_dict`` post-hook: ``assign=True`` replaces the module's tensors."""
    remember(module)


class _Reader(nn.Module):
    """Reads the named (constrained) weights of ``inner``; run with the real tensors."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self) -> list[Tensor]:
        with parametrize.cached():
            return [getattr(self.inner, n) for n in self.names]


@contextmanager
def _outside_graph() -> Iterator[None]:
    """Run torch ops eagerly, unrecorded by the tracer or exporter around them."""
    if torch.jit.is_tracing():
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            yield
        finally:
            torch._C._set_tracing_state(state)
        return
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        yield


def constant_weights(module: nn.Module, names: list[str]) -> list[Tensor]:
    """``[module.<name> for name in names]`` computed outside the graph being recorded.

    Raises:
        RuntimeError: under ``torch.export`` when the module's real tensors are unknown or
            no longer match it (see the module's docs).
    """
    if torch.jit.is_tracing():
        with _outside_graph():
            with torch.no_grad(), parametrize.cached():
                return [getattr(module, n).detach() for n in names]
    refs = getattr(module, _REFS, None)
    now = _tensors(module)
    same = refs is not None and refs.keys() == now.keys() and all(
        refs[k].shape == now[k].shape and refs[k].dtype == now[k].dtype for k in now
    )  # fmt: skip
    if not same:
        raise RuntimeError(
            f"{type(module).__name__} cannot be exported: its tensors changed since it last "
            f"ran; call model.eval() (or run the model once) right before exporting"
        )
    with _outside_graph():
        reader = _Reader(module, names)
        real = {f"inner.{k}": v for k, v in refs.items()}
        out = torch.func.functional_call(reader, real, (), strict=True)
        return [w.detach().clone() for w in out]
