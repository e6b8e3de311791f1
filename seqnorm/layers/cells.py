"""The cells ``SpectralRNNCell``, ``SpectralGRUCell`` and ``SpectralLSTMCell``: one time step."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..steps import State
from .checks import InputError, autocast_enabled, mode_of
from .module import RecurrentModule

__all__ = ["RecurrentCell", "SpectralGRUCell", "SpectralLSTMCell", "SpectralRNNCell"]


class RecurrentCell(RecurrentModule):
    """Shared implementation of the cells: one time step, torch's cell conventions.

    Arguments as :class:`~seqnorm.layers.module.RecurrentModule`; as torch's cells, a cell
    may have ``hidden_size=0`` or ``input_size=0``.

    Called once per time step in a user's loop, the constraint would be recomputed at every
    call; wrap the loop in ``with seqnorm.cached():`` to compute it once per sequence.
    """

    min_size = 0
    torch_args = ("input_size", "hidden_size", "bias")

    def _units(self) -> list[tuple[str, int]]:
        return [("", self.input_size)]

    def _check(self, x: Any, hx: State | None) -> tuple[Tensor, State, bool]:
        """torch's checks, in torch's order and with torch's messages (``nn.RNNCell/GRUCell/
        LSTMCell.forward`` and the kernels' ``check_rnn_cell_forward_*``), each followed by
        seqnorm's guidance in parentheses."""
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a Tensor, got {type(x).__name__}")
        name, lstm = self.torch_class.__name__, self.spec.cell_state
        ours = parametrize.type_before_parametrizations(self).__name__
        if x.dim() not in (1, 2):
            raise InputError(
                f"{name}: Expected input to be 1D or 2D, got {x.dim()}D instead "
                f"({ours} takes (batch, input_size) or unbatched (input_size,); got shape "
                f"{tuple(x.shape)})"
            )
        if lstm and hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"hx must be a tuple (h, c) for an LSTM cell, got {type(hx).__name__}")
        if not lstm and isinstance(hx, (tuple, list)):
            raise TypeError("hx must be a Tensor (a tuple is only for an LSTM cell)")
        parts = [] if hx is None else (list(hx) if lstm else [hx])
        for idx, t in enumerate(parts):
            what = f"hx[{idx}]" if lstm else "hidden"
            if not isinstance(t, Tensor):
                raise TypeError(f"{what} must be a Tensor, got {type(t).__name__}")
            if t.dim() not in (1, 2):
                raise InputError(
                    f"{name}: Expected {what} to be 1D or 2D, got {t.dim()}D instead (the "
                    f"state is (batch, hidden_size), unbatched (hidden_size,); got shape "
                    f"{tuple(t.shape)})"
                )
        dtype = self.weight_ih.dtype
        if not x.is_floating_point():
            raise InputError(
                f"input dtype ({x.dtype}) does not match weight dtype ({dtype}). Convert "
                f"input: input.to({dtype}) (a recurrent cell takes floating-point input)"
            )
        if x.dtype != dtype and not autocast_enabled(x):
            raise InputError(
                f"input dtype ({x.dtype}) does not match weight dtype ({dtype}). Convert "
                f"input: input.to({dtype}), or convert model: model.to({x.dtype})"
            )
        batched = x.dim() == 2
        x = x if batched else x.unsqueeze(0)  # (B, I)
        if x.shape[1] != self.input_size:
            raise InputError(
                f"input has inconsistent input_size: got {x.shape[1]} expected "
                f"{self.input_size} (input shape {tuple(x.shape) if batched else x.shape[1:]})"
            )
        if not parts:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)  # (B, H)
            return x, ((zeros, zeros) if lstm else zeros), batched
        want = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        states = []
        for idx, t in enumerate(parts):
            tb = t if batched else t.unsqueeze(0)  # torch compares batched
            shape = f"{'h' if idx == 0 else 'c'} must have shape {want}" if lstm else (
                f"hx must have shape {want}")  # fmt: skip
            if tb.shape[0] != x.shape[0]:
                raise InputError(
                    f"Input batch size {x.shape[0]} doesn't match hidden{idx} batch size "
                    f"{tb.shape[0]} ({shape}, got {tuple(t.shape)})"
                )
            if tb.dim() > 1 and tb.shape[1] != self.hidden_size:
                raise InputError(
                    f"hidden{idx} has inconsistent hidden_size: got {tb.shape[1]}, expected "
                    f"{self.hidden_size} ({shape}, got {tuple(t.shape)})"
                )
            if tuple(t.shape) != want:  # passes torch's two checks, but 1-D/2-D mixed up
                raise InputError(f"{shape}, got {tuple(t.shape)}")
            if t.dtype != x.dtype and not autocast_enabled(x):
                raise InputError(f"hx dtype ({t.dtype}) must match the input's ({x.dtype})")
            states.append(tb)
        return x, (tuple(states) if lstm else states[0]), batched

    def forward(self, input: Tensor, hx: State | None = None) -> State:
        """One time step.

        Args:
            input: ``(B, input_size)`` or unbatched ``(input_size,)``.
            hx: state ``(B, hidden_size)`` (a pair ``(h, c)`` for an LSTM); zeros if omitted.

        Returns:
            The next state, shaped like ``hx``.
        """
        x, state, batched = self._check(input, hx)
        (u,) = self.units()
        gi = F.linear(x, u.w_ih, u.b_ih)  # (B, G*H)
        out = self.spec.step(gi, state, u.w_hh, u.b_hh, *u.extras)
        if batched:
            return out
        return tuple(o.squeeze(0) for o in out) if self.spec.cell_state else out.squeeze(0)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s + super().extra_repr()


class SpectralRNNCell(RecurrentCell):
    """``torch.nn.RNNCell`` with a constrained ``weight_hh``.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        bias: whether the cell has biases.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"modrelu"`` (``sign(z) * relu(|z| + b)``
            with a learnable bias ``modrelu_bias`` per unit, initialised U(-0.01, 0.01)).
        **kwargs: ``device``, ``dtype`` and seqnorm's ``constraint``, ``constraint_options``,
            ``init``, ``chrono_init``, ``constrained_gates``; see
            :class:`~seqnorm.layers.module.RecurrentModule`.

    >>> import torch, seqnorm
    >>> cell = SpectralRNNCell(3, 8)
    >>> x = torch.randn(10, 2, 3)
    >>> h = None
    >>> with seqnorm.cached():  # the constraint is computed once, not once per step
    ...     for x_t in x.unbind(0):
    ...         h = cell(x_t, h)
    >>> h.shape
    torch.Size([2, 8])
    """

    torch_class = nn.RNNCell
    torch_args = (*RecurrentCell.torch_args, "nonlinearity")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        **kwargs: Any,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(mode_of(nonlinearity), input_size, hidden_size, bias, **kwargs)


class SpectralGRUCell(RecurrentCell):
    """``torch.nn.GRUCell`` with each of the 3 gate blocks of ``weight_hh`` constrained.
    Arguments: ``input_size, hidden_size, bias`` as torch's, then as
    :class:`~seqnorm.layers.module.RecurrentModule`."""

    torch_class = nn.GRUCell

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("gru", *args, **kwargs)


class SpectralLSTMCell(RecurrentCell):
    """``torch.nn.LSTMCell`` with each of the 4 gate blocks of ``weight_hh`` constrained;
    returns ``(h, c)``. Arguments: ``input_size, hidden_size, bias`` as torch's, then as
    :class:`~seqnorm.layers.module.RecurrentModule`."""

    torch_class = nn.LSTMCell

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("lstm", *args, **kwargs)
