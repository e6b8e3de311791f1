"""The step equations of the recurrent cells, and torch's fused kernels for the same modes.

Each step takes the precomputed input projection ``gi = x_t @ W_ih^T + b_ih`` ``(B, G*H)``
and the state, and returns the next state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import _VF, Tensor
from torch.nn import functional as F

from .modrelu import modrelu_step

__all__ = ["FUSED", "GATES", "GATE_NAMES", "STEPS", "State"]

State = Tensor | tuple[Tensor, Tensor]

#: Gate blocks stacked in the recurrent matrix of each mode.
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "rnn_modrelu": 1, "gru": 3, "lstm": 4}
#: Names of the gate blocks, in torch's stacking order.
GATE_NAMES = {
    "rnn_tanh": ("h",),
    "rnn_relu": ("h",),
    "rnn_modrelu": ("h",),
    "gru": ("r", "z", "n"),
    "lstm": ("i", "f", "g", "o"),
}
# Each takes the precomputed input projection gi = x_t @ W_ih^T + b_ih (B, G*H) and the state.


def _rnn_tanh_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    return torch.tanh(gi + F.linear(h, w_hh, b_hh))  # (B, H)


def _rnn_relu_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    return torch.relu(gi + F.linear(h, w_hh, b_hh))  # (B, H)


def _gru_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    gh = F.linear(h, w_hh, b_hh)  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)  # (B, H) == (1 - z) * n + z * h


def _lstm_step(
    gi: Tensor,
    state: tuple[Tensor, Tensor],
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    h, c = state  # (B, R), (B, H); R = proj_size or H
    gates = gi + F.linear(h, w_hh, b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    h = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
    if w_hr is not None:  # LSTM with projections (proj_size > 0)
        h = F.linear(h, w_hr)  # (B, P)
    return h, c


STEPS: dict[str, Callable[..., Any]] = {
    "rnn_tanh": _rnn_tanh_step,
    "rnn_relu": _rnn_relu_step,
    "gru": _gru_step,
    "lstm": _lstm_step,  # takes the projection W_hr (or None) as a fifth argument
    "rnn_modrelu": modrelu_step,  # takes the modReLU bias as a fifth argument
}

FUSED = {"rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu, "gru": _VF.gru, "lstm": _VF.lstm}
