"""The cells ``SpectralRNNCell``, ``SpectralGRUCell`` and ``SpectralLSTMCell``: one time step."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from .args import InputError, mode_of
from .module import RecurrentModule
from .steps import STEPS, State

__all__ = ["RecurrentCell", "SpectralGRUCell", "SpectralLSTMCell", "SpectralRNNCell"]


class RecurrentCell(RecurrentModule):
    """Shared implementation of the cells: one time step, torch's cell conventions.

    Arguments as :class:`~seqnorm.layers.module.RecurrentModule`; as torch's cells, a cell
    may have ``hidden_size=0`` or ``input_size=0``.

    Called once per time step in a user's loop, the constraint would be recomputed at every
    call; wrap the loop in ``with seqnorm.cached():`` to compute it once per sequence.
    """

    min_size = 0

    def _units(self) -> list[tuple[str, int]]:
        return [("", self.input_size)]

    def _check(self, x: Any, hx: State | None) -> tuple[Tensor, State, bool]:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a Tensor, got {type(x).__name__}")
        if x.dim() not in (1, 2):
            raise InputError(
                f"input must be 1-D (unbatched: input_size) or 2-D (batch, input_size), "
                f"got {x.dim()}-D with shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise InputError(
                f"input.size(-1) must equal input_size={self.input_size}, "
                f"got shape {tuple(x.shape)}"
            )
        if x.dtype != self.weight_ih.dtype:
            raise InputError(
                f"input dtype ({x.dtype}) does not match the cell's weight dtype "
                f"({self.weight_ih.dtype}). Convert input: input.to({self.weight_ih.dtype}), "
                f"or convert model: model.to({x.dtype})"
            )
        batched = x.dim() == 2
        x = x if batched else x.unsqueeze(0)  # (B, I)
        want = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)

        def fix(t: Any, what: str) -> Tensor:
            if t is None:
                return x.new_zeros(x.shape[0], self.hidden_size)
            if not isinstance(t, Tensor):
                raise TypeError(f"{what} must be a Tensor, got {type(t).__name__}")
            if tuple(t.shape) != want:
                raise InputError(f"{what} must have shape {want}, got {tuple(t.shape)}")
            if t.dtype != x.dtype:
                raise InputError(f"{what} dtype ({t.dtype}) must match the input's ({x.dtype})")
            return t if batched else t.unsqueeze(0)

        if self.mode == "lstm":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(
                    f"hx must be a tuple (h, c) for an LSTM cell, got {type(hx).__name__}"
                )
            h, c = (None, None) if hx is None else hx
            return x, (fix(h, "h"), fix(c, "c")), batched
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
        extra = (self.modrelu_bias,) if self.mode == "rnn_modrelu" else ()
        w_hh = self._flat_weights[1]  # weight_hh; a constant when traced or exported
        out = STEPS[self.mode](gi, state, w_hh, self.bias_hh, *extra)
        if batched:
            return out
        return tuple(o.squeeze(0) for o in out) if self.mode == "lstm" else out.squeeze(0)

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
