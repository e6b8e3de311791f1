"""The step equations of the recurrent cells, in plain autograd ops.

Each step takes the precomputed input projection ``gi = x_t @ W_ih^T + b_ih`` ``(B, G*H)``,
the state, ``W_hh``, ``b_hh`` and the cell's extra tensors (:attr:`CellSpec.extras
<seqnorm.layers.spec.CellSpec.extras>`), and returns the next state. They compute what
torch's kernels compute; :data:`seqnorm.layers.spec.SPECS` says which step is whose. modReLU's
step lives with the nonlinearity in :mod:`seqnorm.layers.modrelu`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["State", "Unit", "gru_step", "lstm_step", "rnn_relu_step", "rnn_tanh_step"]

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
