"""The step equations of the recurrent cells, in plain autograd ops: the ground floor.

Each step takes the precomputed input projection ``gi = x_t @ W_ih^T + b_ih`` ``(B, G*H)``,
the state, ``W_hh``, ``b_hh`` and the cell's extra tensors (:attr:`CellSpec.extras
<seqnorm.layers.spec.CellSpec.extras>`), and returns the next state. They compute what
torch's kernels and seqnorm's native kernels compute: the layers step them (the cells, the
unrolled path), and the native kernels differentiate them for a double backward
(:mod:`seqnorm.native.reference`). :data:`seqnorm.layers.spec.SPECS` says which step is
whose. Nothing here imports the rest of seqnorm.

modReLU (Arjovsky, Shah & Bengio 2016, used by scoRNN and expRNN) shrinks or grows the
magnitude of each unit by a learnt bias ``b`` and keeps its sign::

    modrelu(z, b) = sign(z) * relu(|z| + b)

>>> modrelu(torch.tensor([-2.0, 0.5, 0.5, 2.0]), torch.tensor([-1.0, -1.0, 1.0, 1.0])).tolist()
[-1.0, 0.0, 1.5, 3.0]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "State",
    "Unit",
    "gru_step",
    "lstm_step",
    "modrelu",
    "modrelu_step",
    "rnn_relu_step",
    "rnn_tanh_step",
]

#: A cell's state: ``h`` ``(B, R)``, or ``(h, c)`` for an LSTM.
State = Tensor | tuple[Tensor, Tensor]


class Unit(NamedTuple):
    """The weights a step reads, of one (layer, direction) unit or of a cell (``weight_hh``
    constrained); ``extras`` are the tensors the cell's spec lists, those the unit has."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None
    extras: tuple[Tensor, ...] = ()


def rnn_tanh_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """Elman step, ``tanh(gi + h @ W_hh^T + b_hh)``."""
    return torch.tanh(gi + F.linear(h, w_hh, b_hh))  # (B, H)


def rnn_relu_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """Elman step, ``relu(gi + h @ W_hh^T + b_hh)``."""
    return torch.relu(gi + F.linear(h, w_hh, b_hh))  # (B, H)


def gru_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """GRU step, torch's equations (``b_hn`` inside ``r * (W_hn h + b_hn)``)."""
    gh = F.linear(h, w_hh, b_hh)  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)  # (B, H) == (1 - z) * n + z * h


def lstm_step(
    gi: Tensor,
    state: tuple[Tensor, Tensor],
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """LSTM step; with ``w_hr`` (``proj_size > 0``) the new ``h`` is projected."""
    h, c = state  # (B, R), (B, H); R = proj_size or H
    gates = gi + F.linear(h, w_hh, b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    h = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
    if w_hr is not None:  # LSTM with projections (proj_size > 0)
        h = F.linear(h, w_hr)  # (B, P)
    return h, c


def modrelu(z: Tensor, bias: Tensor) -> Tensor:
    """``sign(z) * relu(|z| + bias)``, elementwise; ``bias`` broadcasts over the last dim.

    Plain autograd ops, so it is differentiable (twice: the second derivative is zero where
    it exists). Its derivative is ``1`` in ``z`` and ``sign(z)`` in ``bias`` where
    ``|z| + bias > 0`` and ``z != 0``, and ``0`` elsewhere.

    Args:
        z: pre-activations ``(..., H)``.
        bias: one bias per unit ``(H,)``.

    Returns:
        ``(..., H)``, the same shape as ``z``.

    Raises:
        ValueError: if ``bias`` is not ``(H,)``.
    """
    if bias.dim() != 1 or bias.shape[0] != z.shape[-1]:
        raise ValueError(
            f"bias must have shape ({z.shape[-1]},) (one per hidden unit), got {tuple(bias.shape)}"
        )
    return torch.sign(z) * torch.relu(torch.abs(z) + bias)  # (..., H)


def modrelu_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, bias: Tensor) -> Tensor:
    """One modReLU RNN step: ``modrelu(gi + h @ w_hh^T + b_hh, bias)``.

    The additions are done in the order :func:`seqnorm.layers.modrelu.modrelu_rnn` does
    them, so a loop of this step and that whole-sequence kernel agree to rounding.

    Args:
        gi: the input projection of this step ``(B, H)``.
        h: the previous hidden state ``(B, H)``.
        w_hh: the recurrent matrix ``(H, H)``.
        b_hh: the recurrent bias ``(H,)`` or ``None``.
        bias: modReLU's bias ``(H,)``.

    Returns:
        The next hidden state ``(B, H)``.
    """
    z = torch.addmm(gi if b_hh is None else gi + b_hh, h, w_hh.t())  # (B, H)
    return modrelu(z, bias)  # (B, H)
