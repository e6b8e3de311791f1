"""The sequence layers ``SpectralRNN``, ``SpectralGRU`` and ``SpectralLSTM``."""

from __future__ import annotations

from collections.abc import Sequence
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
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"modrelu"`` (``sign(z) * relu(|z| + b)``
            with a learnable bias ``modrelu_bias_l{k}`` per unit, initialised U(-0.01, 0.01);
            its fused path is seqnorm's own whole-sequence kernel).
        bias: whether the layer has ``bias_ih``/``bias_hh``.
        batch_first: input and output are ``(B, T, F)`` instead of ``(T, B, F)``.
        dropout: dropout on the outputs of every layer but the last (training only).
        constraint: ``none``, ``spectral``, ``scaled``, ``bound``, ``band``, ``orthogonal``.
        constraint_options: options of the constraint, e.g. ``{"gamma": 0.9}``.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.
        init: initialisation of the recurrent gate blocks, applied before the constraint
            (so ``orthogonal`` starts exactly there): ``torch`` (default, torch's uniform),
            ``identity`` (IRNN), ``orthogonal`` (random), ``henaff`` or ``cayley``.
        chrono_init: ``T_max`` of the chrono initialisation of the gate biases (Tallec &
            Ollivier 2018; GRU and LSTM only), ``None`` for torch's.
        constrained_gates: names of the gate blocks the constraint applies to (``None``:
            all): GRU ``r, z, n``, LSTM ``i, f, g, o``; e.g. ``["n"]``.

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
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
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
            init,
            chrono_init,
            constrained_gates,
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
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
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
            init,
            chrono_init,
            constrained_gates,
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
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
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
            init,
            chrono_init,
            constrained_gates,
        )
