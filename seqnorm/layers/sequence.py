"""The sequence layers ``SpectralRNN``, ``SpectralGRU`` and ``SpectralLSTM``."""

from __future__ import annotations

from typing import Any

import torch

from .args import mode_of
from .base import RecurrentLayer

__all__ = ["SpectralGRU", "SpectralLSTM", "SpectralRNN"]


class SpectralRNN(RecurrentLayer):
    """Elman RNN (``torch.nn.RNN``) with a spectrally constrained ``weight_hh_l{k}``.

    Args:
        input_size: features per time step of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: whether the layer has ``bias_ih``/``bias_hh``.
        batch_first: input and output are ``(B, T, F)`` instead of ``(T, B, F)``.
        dropout: dropout on the outputs of every layer but the last (training only).
        constraint: ``none``, ``spectral``, ``scaled``, ``bound``, ``band``, ``orthogonal``.
        constraint_options: options of the constraint, e.g. ``{"gamma": 0.9}``.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    >>> rnn = SpectralRNN(3, 8, constraint="spectral")
    >>> out, h = rnn(torch.randn(5, 2, 3))
    >>> out.shape, h.shape
    (torch.Size([5, 2, 8]), torch.Size([1, 2, 8]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(
            mode_of(nonlinearity),
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            constraint,
            constraint_options,
            device,
            dtype,
        )


class SpectralGRU(RecurrentLayer):
    """GRU (``torch.nn.GRU``) whose three ``H x H`` gate blocks of ``weight_hh_l{k}`` are
    each constrained. Arguments as :class:`SpectralRNN` (without ``nonlinearity``)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "gru",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            constraint,
            constraint_options,
            device,
            dtype,
        )


class SpectralLSTM(RecurrentLayer):
    """LSTM (``torch.nn.LSTM``) whose four ``H x H`` gate blocks of ``weight_hh_l{k}`` are
    each constrained. ``forward`` returns ``(output, (h_n, c_n))``. Arguments as
    :class:`SpectralRNN` (without ``nonlinearity``)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "lstm",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            constraint,
            constraint_options,
            device,
            dtype,
        )
