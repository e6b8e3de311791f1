"""The cells ``SpectralRNNCell``, ``SpectralGRUCell`` and ``SpectralLSTMCell``: one time step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..constraints import constrain
from .args import check_common, check_recurrent_init, gate_indices, mode_of
from .init import chrono_init_, init_recurrent_
from .steps import GATES, STEPS, State

__all__ = ["SpectralGRUCell", "SpectralLSTMCell", "SpectralRNNCell"]


class RecurrentCell(nn.Module):
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
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        options = dict(constraint_options or {})
        check_common(input_size, hidden_size, constraint, options)
        check_recurrent_init(mode, init, chrono_init)
        gate_idx = gate_indices(mode, constrained_gates)
        if chrono_init is not None and not bias:
            raise ValueError("chrono_init sets gate biases: it needs bias=True")
        self.mode, self.input_size, self.hidden_size, self.bias = (
            mode,
            input_size,
            hidden_size,
            bias,
        )
        self.constraint, self.constraint_options = constraint, options
        self.init, self.chrono_init = init, chrono_init
        self.constrained_gates = None if constrained_gates is None else list(constrained_gates)
        G = GATES[mode] * hidden_size
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
        if mode == "rnn_modrelu":  # modReLU's bias, one per unit: U(-0.01, 0.01)
            self.modrelu_bias = nn.Parameter(torch.empty(hidden_size, **kw).uniform_(-0.01, 0.01))
        init_recurrent_(self.weight_hh, init, blocks=GATES[mode])
        if chrono_init is not None:
            chrono_init_(self.bias_ih, self.bias_hh, mode, chrono_init)
        constrain(self, "weight_hh", constraint, blocks=GATES[mode], gates=gate_idx, **options)

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
        extra = (self.modrelu_bias,) if self.mode == "rnn_modrelu" else ()
        out = STEPS[self.mode](gi, state, self.weight_hh, self.bias_hh, *extra)
        if batched:
            return out
        return tuple(o.squeeze(0) for o in out) if self.mode == "lstm" else out.squeeze(0)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        s += f", constraint={self.constraint!r}"
        if self.init != "torch":
            s += f", init={self.init!r}"
        if self.chrono_init is not None:
            s += f", chrono_init={self.chrono_init}"
        if self.constrained_gates is not None:
            s += f", constrained_gates={self.constrained_gates}"
        return s


class SpectralRNNCell(RecurrentCell):
    """``torch.nn.RNNCell`` with a constrained ``weight_hh``.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        bias: whether the cell has biases.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"modrelu"`` (``sign(z) * relu(|z| + b)``
            with a learnable bias ``modrelu_bias`` per unit, initialised U(-0.01, 0.01)).
        constraint: name of the constraint (see :func:`seqnorm.constrain`).
        constraint_options: its options.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.
        init: initialisation of the recurrent gate blocks, applied before the constraint:
            ``torch`` (default), ``identity``, ``orthogonal``, ``henaff`` or ``cayley``.
        chrono_init: ``T_max`` of the chrono initialisation of the gate biases (GRU, LSTM).
        constrained_gates: names of the gate blocks the constraint applies to (``None``:
            all), e.g. ``["n"]`` for a GRU's candidate block only.

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
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(
            mode_of(nonlinearity),
            input_size,
            hidden_size,
            bias,
            constraint,
            constraint_options,
            device,
            dtype,
            init,
            chrono_init,
            constrained_gates,
        )


class SpectralGRUCell(RecurrentCell):
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
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            "gru",
            input_size,
            hidden_size,
            bias,
            constraint,
            constraint_options,
            device,
            dtype,
            init,
            chrono_init,
            constrained_gates,
        )


class SpectralLSTMCell(RecurrentCell):
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
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            "lstm",
            input_size,
            hidden_size,
            bias,
            constraint,
            constraint_options,
            device,
            dtype,
            init,
            chrono_init,
            constrained_gates,
        )
