"""Spectrally constrained recurrent layers and cells with ``torch.nn`` call conventions.

``SpectralRNN/GRU/LSTM`` take the constructor arguments and inputs of ``torch.nn.RNN/GRU/
LSTM`` (parameters are named the same, so their ``state_dict`` keys match when
``constraint="none"``), plus ``constraint`` and ``constraint_options``. The constraint is a
parametrization of every ``weight_hh_l{k}``, applied per gate block.

Two paths compute the same thing:

* the fused path (default) calls torch's own RNN kernels (cuDNN on a GPU) with the
  constrained matrices computed once per call;
* the unrolled path (``layer.unroll = True``) steps the cell equations one time step at a
  time, so that every hidden state is its own autograd node (the gradient probes need
  ``dL/dh_t`` for every ``t``). The cells ``Spectral*Cell`` use the same step functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import _VF, Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .constraints import check_constraint, constrain

__all__ = [
    "SpectralGRU",
    "SpectralGRUCell",
    "SpectralLSTM",
    "SpectralLSTMCell",
    "SpectralRNN",
    "SpectralRNNCell",
]

State = Tensor | tuple[Tensor, Tensor]

_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


# ----------------------------------------------------------------------------- step functions
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
    gi: Tensor, state: tuple[Tensor, Tensor], w_hh: Tensor, b_hh: Tensor | None
) -> tuple[Tensor, Tensor]:
    h, c = state
    gates = gi + F.linear(h, w_hh, b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    h = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
    return h, c


_STEPS: dict[str, Callable[..., Any]] = {
    "rnn_tanh": _rnn_tanh_step,
    "rnn_relu": _rnn_relu_step,
    "gru": _gru_step,
    "lstm": _lstm_step,
}

_FUSED = {"rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu, "gru": _VF.gru, "lstm": _VF.lstm}


def _check_common(input_size: int, hidden_size: int, constraint: str, options: dict) -> None:
    for name, val in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    check_constraint(constraint, options)


def _mode(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return f"rnn_{nonlinearity}"


# ------------------------------------------------------------------------------------- layers


class _SpectralRNNBase(nn.Module):
    """Shared implementation of the sequence layers (see the module docstring)."""

    def __init__(
        self,
        mode: str,
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
        super().__init__()
        options = dict(constraint_options or {})
        _check_common(input_size, hidden_size, constraint, options)
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.constraint = constraint
        self.constraint_options = options
        #: Use the unrolled (per-step) path instead of torch's fused kernel.
        self.unroll = False
        # Set by seqnorm.probes while recording hidden states; None otherwise.
        self._state_recorder: list[list[list[Tensor]]] | None = None
        gates = _GATES[mode]
        kw = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{k}", nn.Parameter(torch.empty(gates * hidden_size, in_k, **kw))
            )
            self.register_parameter(
                f"weight_hh_l{k}",
                nn.Parameter(torch.empty(gates * hidden_size, hidden_size, **kw)),
            )
            if bias:
                for n in ("ih", "hh"):
                    self.register_parameter(
                        f"bias_{n}_l{k}", nn.Parameter(torch.empty(gates * hidden_size, **kw))
                    )
        self._reset_raw()
        for k in range(num_layers):
            constrain(self, f"weight_hh_l{k}", constraint, blocks=gates, **options)

    @torch.no_grad()
    def _reset_raw(self) -> None:
        # torch.nn.RNN's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every weight.
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.uniform_(-stdv, stdv)

    @property
    def gates(self) -> int:
        """Number of gate blocks stacked in each ``weight_hh_l{k}`` (1, 3 or 4)."""
        return _GATES[self.mode]

    def _weights(self) -> list[Tensor]:
        names = ["weight_ih_l{}", "weight_hh_l{}"] + (
            ["bias_ih_l{}", "bias_hh_l{}"] if self.bias else []
        )
        return [getattr(self, n.format(k)) for k in range(self.num_layers) for n in names]

    def flatten_parameters(self) -> None:
        """No-op, so code written for ``torch.nn.RNN/GRU/LSTM`` (which compacts weights for
        cuDNN here) runs unchanged: the constrained weights are recomputed every call."""

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Per layer ``[weight_ih, weight_hh, bias_ih, bias_hh]`` as ``torch.nn.RNN`` lists
        them; ``weight_hh`` is the constrained matrix."""
        w, per = self._weights(), 4 if self.bias else 2
        return [w[k * per : (k + 1) * per] for k in range(self.num_layers)]

    # -- input checking -----------------------------------------------------------------
    def _check_input(self, x: Tensor, hx: State | None) -> tuple[Tensor, State, bool]:
        """Return time-major batched input (T, B, I), initial state, and whether batched."""
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3):
            raise ValueError(
                f"input must be 2-D (unbatched: T, input_size) or 3-D (batched), "
                f"got {x.dim()}-D with shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input.size(-1) must equal input_size={self.input_size}, "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)  # (T, 1, I)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I)
        B = x.shape[1]
        expect = (self.num_layers, B, self.hidden_size)
        if hx is None:
            h0 = x.new_zeros(expect)
            state: State = (h0, h0.clone()) if self.mode == "lstm" else h0
            return x, state, batched

        def fix(t: Tensor, what: str) -> Tensor:
            if not isinstance(t, Tensor):
                raise TypeError(f"{what} must be a Tensor, got {type(t).__name__}")
            want = expect if batched else expect[::2]
            if tuple(t.shape) != want:
                raise ValueError(
                    f"{what} must have shape {want} (num_layers, "
                    f"{'batch, ' if batched else ''}hidden_size), got {tuple(t.shape)}"
                )
            return t if batched else t.unsqueeze(1)

        if self.mode == "lstm":
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError("hx must be a tuple (h_0, c_0) for an LSTM")
            state = (fix(hx[0], "h_0"), fix(hx[1], "c_0"))
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError("hx must be a Tensor h_0 (a tuple is only for an LSTM)")
            state = fix(hx, "hx")
        return x, state, batched

    # -- forward ----------------------------------------------------------------------------
    def forward(self, input: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        """Run the layer over a sequence.

        Args:
            input: ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``) or
                unbatched ``(T, input_size)``.
            hx: initial state ``(num_layers, B, hidden_size)`` (``(num_layers, hidden_size)``
                unbatched), a pair ``(h_0, c_0)`` for an LSTM; zeros when omitted.

        Returns:
            ``(output, h_n)``, or ``(output, (h_n, c_n))`` for an LSTM, shaped like torch's.
        """
        x, state, batched = self._check_input(input, hx)
        with parametrize.cached():  # constrained matrices computed once for this call
            weights = self._weights()
            if self.unroll or self._state_recorder is not None:
                out, state, states = self._unrolled(x, state, weights)
                if self._state_recorder is not None:
                    self._state_recorder.append(states)
            else:
                out, state = self._fused(x, state, weights)
        if not batched:
            out = out.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if self.mode == "lstm" else state.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, state

    def _fused(self, x: Tensor, state: State, weights: list[Tensor]) -> tuple[Tensor, State]:
        args = (weights, self.bias, self.num_layers, self.dropout, self.training, False, False)
        if self.mode == "lstm":
            out, h, c = _VF.lstm(x, state, *args)
            return out, (h, c)
        out, h = _FUSED[self.mode](x, state, *args)
        return out, h

    def _unrolled(
        self, x: Tensor, state: State, weights: list[Tensor]
    ) -> tuple[Tensor, State, list[list[Tensor]]]:
        """Step the cell equations; returns output (T, B, H), final state, and per layer
        the list of hidden states h_1..h_T, each its own autograd node."""
        step = _STEPS[self.mode]
        per = 4 if self.bias else 2
        lstm = self.mode == "lstm"
        layer_in = x  # (T, B, I)
        all_states: list[list[Tensor]] = []
        h_last, c_last = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, *b = weights[k * per : (k + 1) * per]
            b_ih, b_hh = (b[0], b[1]) if b else (None, None)
            gi = F.linear(layer_in, w_ih, b_ih).unbind(0)  # T x (B, G*H): one matmul for all t
            s: State = (state[0][k], state[1][k]) if lstm else state[k]
            hs: list[Tensor] = []
            for gi_t in gi:
                s = step(gi_t, s, w_hh, b_hh)
                hs.append(s[0] if lstm else s)
            all_states.append(hs)
            h_last.append(s[0] if lstm else s)
            if lstm:
                c_last.append(s[1])
            layer_in = torch.stack(hs)  # (T, B, H)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        h_n = torch.stack(h_last)  # (L, B, H)
        final: State = (h_n, torch.stack(c_last)) if lstm else h_n
        return layer_in, final, all_states

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s + f", constraint={self.constraint!r}"


class SpectralRNN(_SpectralRNNBase):
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
            _mode(nonlinearity),
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


class SpectralGRU(_SpectralRNNBase):
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


class SpectralLSTM(_SpectralRNNBase):
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


# -------------------------------------------------------------------------------------- cells


class _SpectralCellBase(nn.Module):
    """Shared implementation of the cells: one time step, torch cell conventions.

    Called once per time step in a user's loop, the constraint would be recomputed at every
    call; wrap the loop in ``with seqnorm.cached():`` to compute it once per sequence.
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        options = dict(constraint_options or {})
        _check_common(input_size, hidden_size, constraint, options)
        self.mode, self.input_size, self.hidden_size, self.bias = (
            mode,
            input_size,
            hidden_size,
            bias,
        )
        self.constraint, self.constraint_options = constraint, options
        G = _GATES[mode] * hidden_size
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G, **kw))
            self.bias_hh = nn.Parameter(torch.empty(G, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        stdv = 1.0 / math.sqrt(hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-stdv, stdv)
        constrain(self, "weight_hh", constraint, blocks=_GATES[mode], **options)

    def _check(self, x: Tensor, hx: State | None) -> tuple[Tensor, State, bool]:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a Tensor, got {type(x).__name__}")
        if x.dim() not in (1, 2):
            raise ValueError(
                f"input must be 1-D (unbatched: input_size) or 2-D (batch, input_size), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input.size(-1) must equal input_size={self.input_size}, "
                f"got shape {tuple(x.shape)}"
            )
        batched = x.dim() == 2
        if not batched:
            x = x.unsqueeze(0)
        want = (x.shape[0], self.hidden_size)

        def fix(t: Tensor | None, what: str) -> Tensor:
            if t is None:
                return x.new_zeros(want)
            if not isinstance(t, Tensor):
                raise TypeError(f"{what} must be a Tensor, got {type(t).__name__}")
            shape = want if batched else want[1:]
            if tuple(t.shape) != shape:
                raise ValueError(f"{what} must have shape {shape}, got {tuple(t.shape)}")
            return t if batched else t.unsqueeze(0)

        if self.mode == "lstm":
            if hx is None:
                return x, (fix(None, "h"), fix(None, "c")), batched
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError("hx must be a tuple (h, c) for an LSTM cell")
            return x, (fix(hx[0], "h"), fix(hx[1], "c")), batched
        if isinstance(hx, (tuple, list)):
            raise TypeError("hx must be a Tensor (a tuple is only for an LSTM cell)")
        return x, fix(hx, "hx"), batched

    def forward(self, input: Tensor, hx: State | None = None) -> State:
        """One time step.

        Args:
            input: ``(B, input_size)`` or unbatched ``(input_size,)``.
            hx: state ``(B, hidden_size)`` (a pair ``(h, c)`` for an LSTM); zeros if omitted.

        Returns:
            The next state, shaped like ``hx``.
        """
        x, state, batched = self._check(input, hx)
        gi = F.linear(x, self.weight_ih, self.bias_ih)  # (B, G*H)
        out = _STEPS[self.mode](gi, state, self.weight_hh, self.bias_hh)
        if batched:
            return out
        return tuple(o.squeeze(0) for o in out) if self.mode == "lstm" else out.squeeze(0)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s + f", constraint={self.constraint!r}"


class SpectralRNNCell(_SpectralCellBase):
    """``torch.nn.RNNCell`` with a constrained ``weight_hh``.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        bias: whether the cell has biases.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        constraint: name of the constraint (see :func:`seqnorm.constrain`).
        constraint_options: its options.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    >>> import seqnorm
    >>> cell = SpectralRNNCell(3, 8)
    >>> x = torch.randn(10, 2, 3)
    >>> h = None
    >>> with seqnorm.cached():  # the constraint is computed once, not once per step
    ...     for x_t in x.unbind(0):
    ...         h = cell(x_t, h)
    >>> h.shape
    torch.Size([2, 8])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(
            _mode(nonlinearity),
            input_size,
            hidden_size,
            bias,
            constraint,
            constraint_options,
            device,
            dtype,
        )


class SpectralGRUCell(_SpectralCellBase):
    """``torch.nn.GRUCell`` with each of the 3 gate blocks of ``weight_hh`` constrained.
    Arguments as :class:`SpectralRNNCell` (without ``nonlinearity``)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "gru", input_size, hidden_size, bias, constraint, constraint_options, device, dtype
        )


class SpectralLSTMCell(_SpectralCellBase):
    """``torch.nn.LSTMCell`` with each of the 4 gate blocks of ``weight_hh`` constrained;
    returns ``(h, c)``. Arguments as :class:`SpectralRNNCell` (without ``nonlinearity``)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "lstm", input_size, hidden_size, bias, constraint, constraint_options, device, dtype
        )
