"""The machinery shared by the sequence layers: parameters, input checks, both code paths."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import _VF, Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..constraints import constrain
from .args import check_common, check_recurrent_init, gate_indices
from .init import chrono_init_, init_recurrent_
from .modrelu import modrelu_rnn
from .steps import FUSED, GATE_NAMES, GATES, STEPS, State

__all__ = ["RecurrentLayer"]


class RecurrentLayer(nn.Module):
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
        self.init = init
        self.chrono_init = chrono_init
        self.constrained_gates = None if constrained_gates is None else list(constrained_gates)
        #: Use the unrolled (per-step) path instead of torch's fused kernel.
        self.unroll = False
        # Set by seqnorm.probes while recording hidden states; None otherwise.
        self._state_recorder: list[list[list[Tensor]]] | None = None
        gates = GATES[mode]
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
            if mode == "rnn_modrelu":  # modReLU's bias, one per unit: U(-0.01, 0.01)
                b = torch.empty(hidden_size, **kw).uniform_(-0.01, 0.01)
                self.register_parameter(f"modrelu_bias_l{k}", nn.Parameter(b))
            init_recurrent_(getattr(self, f"weight_hh_l{k}"), init, blocks=gates)
            if chrono_init is not None:
                chrono_init_(
                    getattr(self, f"bias_ih_l{k}"),
                    getattr(self, f"bias_hh_l{k}"),
                    mode,
                    chrono_init,
                )
            constrain(self, f"weight_hh_l{k}", constraint, blocks=gates, gates=gate_idx, **options)

    @torch.no_grad()
    def _reset_raw(self) -> None:
        # torch.nn.RNN's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every weight.
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.uniform_(-stdv, stdv)

    @property
    def gates(self) -> int:
        """Number of gate blocks stacked in each ``weight_hh_l{k}`` (1, 3 or 4)."""
        return GATES[self.mode]

    @property
    def gate_names(self) -> tuple[str, ...]:
        """Names of the gate blocks of ``weight_hh_l{k}`` in torch's order (``("r", "z", "n")``)."""
        return GATE_NAMES[self.mode]

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
        if self.mode == "rnn_modrelu":
            return self._fused_modrelu(x, state, weights)
        args = (weights, self.bias, self.num_layers, self.dropout, self.training, False, False)
        if self.mode == "lstm":
            out, h, c = _VF.lstm(x, state, *args)
            return out, (h, c)
        out, h = FUSED[self.mode](x, state, *args)
        return out, h

    def _fused_modrelu(
        self, x: Tensor, state: Tensor, weights: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """modReLU has no torch kernel: one whole-sequence autograd Function per layer."""
        per = 4 if self.bias else 2
        layer_in, h_last = x, []  # (T, B, I)
        for k in range(self.num_layers):
            w_ih, w_hh, *b = weights[k * per : (k + 1) * per]
            b_ih, b_hh = (b[0], b[1]) if b else (None, None)
            gi = F.linear(layer_in, w_ih, b_ih)  # (T, B, H): one matmul for all t
            out = modrelu_rnn(gi, state[k], w_hh, b_hh, getattr(self, f"modrelu_bias_l{k}"))
            h_last.append(out[-1] if out.shape[0] else state[k])
            layer_in = out  # (T, B, H)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        return layer_in, torch.stack(h_last)  # (T, B, H), (L, B, H)

    def _unrolled(
        self, x: Tensor, state: State, weights: list[Tensor]
    ) -> tuple[Tensor, State, list[list[Tensor]]]:
        """Step the cell equations; returns output (T, B, H), final state, and per layer
        the list of hidden states h_1..h_T, each its own autograd node."""
        per = 4 if self.bias else 2
        lstm = self.mode == "lstm"
        layer_in = x  # (T, B, I)
        all_states: list[list[Tensor]] = []
        h_last, c_last = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, *b = weights[k * per : (k + 1) * per]
            b_ih, b_hh = (b[0], b[1]) if b else (None, None)
            gi = F.linear(layer_in, w_ih, b_ih).unbind(0)  # T x (B, G*H): one matmul for all t
            step = STEPS[self.mode]
            if self.mode == "rnn_modrelu":
                step = partial(step, bias=getattr(self, f"modrelu_bias_l{k}"))
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
        s += f", constraint={self.constraint!r}"
        if self.init != "torch":
            s += f", init={self.init!r}"
        if self.chrono_init is not None:
            s += f", chrono_init={self.chrono_init}"
        if self.constrained_gates is not None:
            s += f", constrained_gates={self.constrained_gates}"
        return s
