"""How a sequence layer computes its forward: the compute paths it chooses between.

* :func:`fused`: torch's fused kernels (:func:`fused_sequence`: the spec's own
  whole-sequence kernel, for a cell type torch has none for);
* :func:`unrolled`: the step equations, one time step at a time;
* :func:`native`: seqnorm's native CPU kernels.

Each takes the weights of every (layer, direction) *unit* in torch's flat order
(``weight_ih, weight_hh[, bias_ih, bias_hh][, weight_hr]`` for ``l0``, ``l0_reverse``,
``l1``, ...) and the initial state ``(num_layers * num_directions, B, ·)``, and returns the
output and the final state in torch's layout.

The unrolled and native paths work on *packed* data: ``data`` ``(N, I)`` holds the sequences' time
steps one after the other, ``batch_sizes[t]`` of them at step ``t`` (the longest sequences
first, as :class:`torch.nn.utils.rnn.PackedSequence` stores them); a padded batch
``(T, B, I)`` is the case ``batch_sizes = [B] * T``. At step ``t`` only the first
``batch_sizes[t]`` sequences step, so each sequence's final state is taken at its own last
step (its first, for the reverse direction), as torch's kernels do.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from ..steps import State, Unit
from .spec import CellSpec

__all__ = ["Layout", "fused", "fused_sequence", "native", "unrolled"]


class Layout(NamedTuple):
    """What the paths need to know of a layer."""

    spec: CellSpec
    num_layers: int
    directions: int
    bias: bool
    proj: bool
    dropout: float
    training: bool


def _eager_when_compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Keep ``fn`` out of ``torch.compile``'s graph: it runs eagerly, as torch runs its own
    RNN modules (dynamo's ``allow_rnn=False``), so a compiled layer computes exactly what the
    eager one does (inductor's CPU lowering of ``aten.lstm`` fails, its GRU rounds apart).
    ``torch._dynamo`` is imported only once something compiles (it costs seconds)."""
    disabled: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        if not torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return fn(*args)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args)

    return wrapper


#: cuDNN's warning when a call's weights are not one flat buffer (it copies them into one).
_NOT_FLAT = "RNN module weights are not part of single contiguous chunk of memory"


@_eager_when_compiled
def fused(
    layout: Layout, x: Tensor, batch_sizes: Tensor | None, hx: State, flat: list[Tensor]
) -> tuple[Tensor, State]:
    """torch's own kernel: ``x`` ``(T, B, I)``, or packed data ``(N, I)`` with ``batch_sizes``."""
    args = (flat, layout.bias, layout.num_layers, layout.dropout, layout.training)
    bidirectional = layout.directions == 2
    kernel = layout.spec.torch_kernel
    if batch_sizes is None:
        call = functools.partial(kernel, x, hx, *args, bidirectional, False)  # time-major
    else:
        call = functools.partial(kernel, x, batch_sizes, hx, *args, bidirectional)
    if x.device.type == "cuda":
        # The layers pass the constrained matrices, computed anew each call, so cuDNN copies
        # them into its flat buffer every call whatever the user does, and its warning's
        # advice (flatten_parameters(), a no-op here) cannot help. The copy is small: at the
        # psMNIST shape a training step took what torch.nn.GRU's took, 6.2 ms, on an H100
        # (experiments/results/speed_cuda.md).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NOT_FLAT, category=UserWarning)
            res = call()
    else:
        res = call()
    if layout.spec.cell_state:
        return res[0], (res[1], res[2])
    return res[0], res[1]


@_eager_when_compiled
def fused_sequence(
    layout: Layout, x: Tensor, hx: Tensor, weights: list[Unit]
) -> tuple[Tensor, Tensor]:
    """A mode torch has no kernel for (modReLU): the spec's own whole-sequence kernel, one
    call per unit over equal-length sequences.

    ``x``: ``(T, B, I)``; returns ``(T, B, D*H)`` and ``h_n`` ``(L*D, B, H)``.
    """
    kernel = layout.spec.sequence_kernel
    layer_in, finals = x, []  # (T, B, I)
    for k in range(layout.num_layers):
        outs = []
        for d in range(layout.directions):
            u = weights[k * layout.directions + d]
            gi = F.linear(layer_in, u.w_ih, u.b_ih)  # (T, B, H): one matmul for all t
            out = kernel(gi.flip(0) if d else gi, hx[k * layout.directions + d], u.w_hh, u.b_hh,
                         *u.extras)  # fmt: skip
            finals.append(out[-1])  # (B, H): the reverse direction ends at t = 0
            outs.append(out.flip(0) if d else out)
        layer_in = torch.cat(outs, dim=-1)  # (T, B, D*H)
        if layout.dropout and layout.training and k < layout.num_layers - 1:
            layer_in = F.dropout(layer_in, layout.dropout, training=True)
    return layer_in, torch.stack(finals)


def _rows(s: State) -> int:
    return (s[0] if isinstance(s, tuple) else s).shape[0]


def _take(s: State, start: int, stop: int) -> State:
    return tuple(t[start:stop] for t in s) if isinstance(s, tuple) else s[start:stop]


def _cat(parts: list[State]) -> State:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p, dim=0) for p in zip(*parts, strict=True))
    return torch.cat(parts, dim=0)


def _direction(
    step: Callable[[Tensor, State], State],
    gi: Sequence[Tensor],
    s0: State,
    sizes: list[int],
    reverse: bool,
) -> tuple[list[Tensor], State]:
    """Run one direction: ``gi[t]`` ``(sizes[t], G*H)``. Returns the hidden states in time
    order (each its own autograd node) and every sequence's final state ``(B, ·)``."""
    T = len(gi)
    hs: list[Tensor] = [gi[0]] * T
    if not reverse:
        s, ended = s0, []  # states of the sequences that ended, latest-ending last
        for t in range(T):
            if sizes[t] < _rows(s):
                ended.append(_take(s, sizes[t], _rows(s)))
                s = _take(s, 0, sizes[t])
            s = step(gi[t], s)
            hs[t] = s[0] if isinstance(s, tuple) else s
        return hs, _cat([s, *reversed(ended)])
    s = _take(s0, 0, sizes[-1]) if sizes[-1] < _rows(s0) else s0
    for t in range(T - 1, -1, -1):
        if sizes[t] > _rows(s):  # sequences whose last step is t join with their h_0
            s = _cat([s, _take(s0, _rows(s), sizes[t])])
        s = step(gi[t], s)
        hs[t] = s[0] if isinstance(s, tuple) else s
    return hs, s


def _stepper(spec: CellSpec, u: Unit) -> Callable[[Tensor, State], State]:
    return lambda gi, s: spec.step(gi, s, u.w_hh, u.b_hh, *u.extras)


def unrolled(
    layout: Layout, data: Tensor, sizes: list[int], hx: State, weights: list[Unit]
) -> tuple[Tensor, State, list[list[Tensor]]]:
    """Step the cell equations over packed ``data`` ``(N, I)``.

    Returns the output ``(N, D*R)`` (``R = proj_size or hidden_size``), the final state
    ``(L*D, B, ·)``, and per unit (``h_n``'s order) the hidden states ``h[0..T-1]`` in time
    order, ``(sizes[t], R)`` each.
    """
    lstm = layout.spec.cell_state
    layer_in, rows, finals = data, [], []  # (N, I)
    for k in range(layout.num_layers):
        outs = []
        for d in range(layout.directions):
            j = k * layout.directions + d
            u = weights[j]
            gi = F.linear(layer_in, u.w_ih, u.b_ih).split(sizes)  # T x (sizes[t], G*H)
            s0: State = (hx[0][j], hx[1][j]) if lstm else hx[j]
            hs, final = _direction(_stepper(layout.spec, u), gi, s0, sizes, reverse=d == 1)
            rows.append(hs)
            finals.append(final)
            outs.append(torch.cat(hs, dim=0))  # (N, R)
        layer_in = torch.cat(outs, dim=-1)  # (N, D*R)
        if layout.dropout and layout.training and k < layout.num_layers - 1:
            layer_in = F.dropout(layer_in, layout.dropout, training=True)
    if lstm:
        return (
            layer_in,
            (torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals])),
            rows,
        )
    return layer_in, torch.stack(finals), rows


def native(
    layout: Layout, data: Tensor, batch_sizes: Tensor, hx: State, weights: list[Unit]
) -> tuple[Tensor, State]:
    """seqnorm's native CPU kernels (:func:`seqnorm.native.sequence`), one call per unit.

    ``data`` ``(N, I)`` packed with ``batch_sizes`` (a padded batch: ``[B] * T``); the input
    projection of every step is one GEMM per unit, inside the op. Returns the output ``(N, D*R)``
    and the final state ``(L*D, B, ·)``.
    """
    from seqnorm.native import sequence  # the layers work without the kernels

    lstm = layout.spec.cell_state
    layer_in, finals = data, []  # (N, I)
    for k in range(layout.num_layers):
        outs = []
        for d in range(layout.directions):
            j = k * layout.directions + d
            u = weights[j]
            s0: State = (hx[0][j], hx[1][j]) if lstm else hx[j]
            extra = u.extras[0] if u.extras else None  # modReLU's bias or W_hr
            # the input projection of all steps is one GEMM inside the op
            out, final = sequence(layout.spec.mode, layer_in, u.w_ih, u.b_ih, s0, u.w_hh,
                                  u.b_hh, extra, batch_sizes, d == 1)  # fmt: skip
            outs.append(out)  # (N, R)
            finals.append(final)  # (B, R), or ((B, R), (B, H))
        layer_in = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]  # (N, D*R)
        if layout.dropout and layout.training and k < layout.num_layers - 1:
            layer_in = F.dropout(layer_in, layout.dropout, training=True)
    if lstm:
        h_n = torch.stack([f[0] for f in finals])  # (L*D, B, R)
        return layer_in, (h_n, torch.stack([f[1] for f in finals]))
    return layer_in, torch.stack(finals)
