"""The sequence layers ``SpectralRNN``, ``SpectralGRU`` and ``SpectralLSTM``.

Each takes torch's arguments in torch's order, then seqnorm's (see
:class:`~seqnorm.layers.layer.RecurrentLayer` for all of them), as ``torch.nn.GRU`` passes
its own to ``RNNBase("GRU", ...)``. ``proj_size`` is LSTM-only; ``SpectralRNN`` and
``SpectralGRU`` refuse a non-zero one (``ValueError``, as torch) and accept ``0``, so that
tools which pass every default (LightningCLI) can build them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .checks import mode_of
from .layer import RecurrentLayer
from .module import RecurrentModule

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
        *args: torch's further arguments in torch's order (``bias``, ``batch_first``,
            ``dropout``, ``bidirectional``).
        **kwargs: those, ``device``, ``dtype`` and seqnorm's ``constraint``,
            ``constraint_options``, ``init``, ``chrono_init``, ``constrained_gates``; see
            :class:`~seqnorm.layers.layer.RecurrentLayer`.

    >>> import torch
    >>> rnn = SpectralRNN(3, 8, constraint="spectral")
    >>> out, h = rnn(torch.randn(5, 2, 3))
    >>> out.shape, h.shape
    (torch.Size([5, 2, 8]), torch.Size([1, 2, 8]))
    """

    torch_class = nn.RNN
    torch_args = (*RecurrentLayer.torch_args, "nonlinearity")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(
            mode_of(nonlinearity), input_size, hidden_size, num_layers, *args, **kwargs
        )


class SpectralGRU(RecurrentLayer):
    """GRU (``torch.nn.GRU``) whose three ``H x H`` gate blocks of ``weight_hh_l{k}`` are
    each constrained. Arguments: torch's (``input_size, hidden_size, num_layers, bias,
    batch_first, dropout, bidirectional``, ``device``, ``dtype``) and seqnorm's; see
    :class:`~seqnorm.layers.layer.RecurrentLayer`.

    >>> import torch
    >>> gru = SpectralGRU(3, 8, num_layers=2, bidirectional=True)
    >>> out, h = gru(torch.randn(5, 2, 3))
    >>> out.shape, h.shape
    (torch.Size([5, 2, 16]), torch.Size([4, 2, 8]))
    """

    torch_class = nn.GRU

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("gru", *args, **kwargs)


class SpectralLSTM(RecurrentLayer):
    """LSTM (``torch.nn.LSTM``) whose four ``H x H`` gate blocks of ``weight_hh_l{k}`` are
    each constrained; ``forward`` returns ``(output, (h_n, c_n))``. Arguments: torch's
    (``input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
    proj_size``, ``device``, ``dtype``) and seqnorm's; see
    :class:`~seqnorm.layers.layer.RecurrentLayer`. With ``proj_size`` the constraint acts on
    each gate's recurrent map ``W_hh^g @ W_hr`` (:mod:`seqnorm.layers.projection`).

    >>> import torch
    >>> lstm = SpectralLSTM(3, 8, proj_size=4)
    >>> out, (h, c) = lstm(torch.randn(5, 2, 3))
    >>> out.shape, h.shape, c.shape
    (torch.Size([5, 2, 4]), torch.Size([1, 2, 4]), torch.Size([1, 2, 8]))
    """

    torch_class = nn.LSTM
    torch_args = (*RecurrentLayer.torch_args, "proj_size")
    seqnorm_args = RecurrentModule.seqnorm_args

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("lstm", *args, **kwargs)
