"""The sequence layers' shared machinery: torch's layer arguments, input checks, forward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from .. import native
from ..steps import State
from . import compute, export
from .checks import InputError, autocast_enabled, check_dropout, check_flag, check_size
from .module import RecurrentModule
from .recordable import Recordable
from .spec import CellSpec

__all__ = ["RecurrentLayer"]

#: The hidden states of one forward call: per unit (``h_n``'s order), ``T`` tensors.


class RecurrentLayer(Recordable, RecurrentModule):
    """A sequence layer: torch's ``nn.RNN/GRU/LSTM`` arguments, inputs and outputs.

    Two paths compute the same thing: the fused path (default) calls torch's own kernels
    (cuDNN on a GPU; seqnorm's own whole-sequence kernel for modReLU) with the constrained
    matrices computed once per call; the unrolled path (``layer.unroll = True``) steps the
    cell equations, so that every hidden state is its own autograd node.

    Args:
        mode: ``rnn_tanh``, ``rnn_relu``, ``rnn_modrelu``, ``gru`` or ``lstm``.
        input_size: features per time step of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        bias: whether the layer has ``bias_ih``/``bias_hh``.
        batch_first: input and output are ``(B, T, F)`` instead of ``(T, B, F)``.
        dropout: dropout on the outputs of every layer but the last (training only).
        bidirectional: a second, reverse-time direction per layer (torch's ``..._reverse``
            parameters, constrained like the forward ones); outputs are concatenated.
        proj_size: LSTM only: project the hidden state to this many features
            (``weight_hr_l{k}``); the constraint then acts on the recurrent map
            ``W_hh @ W_hr`` of every gate (see :mod:`seqnorm.layers.projection`).
        **kwargs: seqnorm's arguments (``constraint``, ``constraint_options``, ``init``,
            ``chrono_init``, ``constrained_gates``) and ``device``, ``dtype``: see
            :class:`~seqnorm.layers.module.RecurrentModule`.
    """

    torch_args = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                  "bidirectional")  # fmt: skip
    #: ``proj_size`` is seqnorm's for an RNN or a GRU (torch's refuse it; seqnorm's accept 0,
    #: so that tools which pass every default can build them), torch's for an LSTM.
    seqnorm_args = ("proj_size", *RecurrentModule.seqnorm_args)

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        **kwargs: Any,
    ) -> None:
        check_size("num_layers", num_layers)
        check_flag("batch_first", batch_first)
        check_flag("bidirectional", bidirectional)
        check_dropout(dropout, num_layers)
        # Plain attributes, set before nn.Module.__init__ because the parameters depend on them.
        self.num_layers, self.batch_first, self.dropout = num_layers, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        super().__init__(mode, input_size, hidden_size, bias, **kwargs)
        #: Use the unrolled (per-step) path instead of torch's fused kernel.
        self.unroll = False

    @property
    def num_directions(self) -> int:
        """2 for a bidirectional layer, 1 otherwise."""
        return 2 if self.bidirectional else 1

    def _units(self) -> list[tuple[str, int]]:
        width = self.num_directions * (self.proj_size or self.hidden_size)
        return [
            (f"_l{k}{'_reverse' if d else ''}", self.input_size if k == 0 else width)
            for k in range(self.num_layers)
            for d in range(self.num_directions)
        ]

    @property
    def unit_names(self) -> list[str]:
        """One name per unit in ``h_n``'s order: ``l0``, ``l0_reverse``, ``l1``, ..."""
        return [suffix[1:] for suffix, _ in self._units()]

    def flatten_parameters(self) -> None:
        """No-op, so code written for ``torch.nn.RNN/GRU/LSTM`` (which compacts weights for
        cuDNN here) runs unchanged: the constrained weights are recomputed every call."""

    # -- input checking -------------------------------------------------------------------
    # torch's checks with torch's messages (nn.RNN/GRU/LSTM.forward and
    # RNNBase.check_forward_args), each followed by seqnorm's guidance in parentheses.
    def _check_input(self, x: Any, packed: bool) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(x).__name__}")
        name, shape = self.torch_class.__name__, tuple(x.shape)
        ours = parametrize.type_before_parametrizations(self).__name__
        if packed and x.dim() != 2:
            raise InputError(
                f"input must have 2 dimensions, got {x.dim()} (the data of a PackedSequence "
                f"is (N, input_size), got shape {shape})"
            )
        if not packed and x.dim() not in (2, 3):
            tensor = " tensor" if name == "RNN" else ""  # torch's RNN says "4D tensor instead"
            raise InputError(
                f"{name}: Expected input to be 2D or 3D, got {x.dim()}D{tensor} instead "
                f"({ours} takes (T, B, input_size), (B, T, input_size) with batch_first, or "
                f"unbatched (T, input_size); got shape {shape})"
            )
        dtype = self.weight_ih_l0.dtype
        if not x.is_floating_point():
            raise InputError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({dtype}). Convert "
                f"input: input.to({dtype}) (a recurrent layer takes floating-point input)"
            )
        if x.dtype != dtype and not autocast_enabled(x):  # torch: autocast casts, it is no error
            raise InputError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({dtype}). "
                f"Convert input: input.to({dtype}), or convert model: model.to({x.dtype})"
            )
        if x.shape[-1] != self.input_size:
            raise InputError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {x.shape[-1]} (input shape {shape})"
            )
        if not packed and x.shape[0 if x.dim() == 2 or not self.batch_first else 1] == 0:
            raise InputError("Expected sequence length to be larger than 0 in RNN")

    def _initial_state(self, hx: Any, x: Tensor, B: int, batched: bool) -> State:
        """``hx`` checked and batched ``(L*D, B, ·)``, or zeros.

        ``x`` is the input as the layer runs it, ``(T, B, I)``, or packed data ``(N, I)``
        (``batched`` is then True); ``batched`` says whether the caller's input was.
        """
        LD, H, R = self.num_layers * self.num_directions, self.hidden_size, self.proj_size
        shapes = {"h_0": (LD, B, R or H), "c_0": (LD, B, H)}
        lstm = self.spec.cell_state
        if hx is None:
            zeros = {k: x.new_zeros(s) for k, s in shapes.items()}
            return (zeros["h_0"], zeros["c_0"]) if lstm else zeros["h_0"]
        if lstm and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"hx must be a tuple (h_0, c_0) for an LSTM, got {type(hx).__name__}")
        if not lstm and isinstance(hx, (tuple, list)):
            raise TypeError("hx must be a Tensor h_0 (a tuple is only for an LSTM)")
        parts = {"h_0": hx[0], "c_0": hx[1]} if lstm else {"hx": hx}
        for what, t in parts.items():
            if not isinstance(t, Tensor):
                raise TypeError(f"{what} must be a Tensor, got {type(t).__name__}")
        want_dim = 3 if batched else 2
        packed = x.dim() == 2
        if not packed and any(t.dim() != want_dim for t in parts.values()):
            kind = "batched 3-D" if batched else "unbatched 2-D"
            dims = ", ".join(f"{t.dim()}-D" for t in parts.values())
            got = f"({dims}) tensors" if lstm else f"{dims} tensor"
            shown = ", ".join(f"{k} {tuple(t.shape)}" for k, t in parts.items())
            raise InputError(
                f"For {kind} input, hx {'and cx ' if lstm else ''}should also be "
                f"{want_dim}-D but got {got} (got {shown})"
            )

        def fix(t: Tensor, what: str, index: str) -> Tensor:
            want = shapes["c_0" if what == "c_0" else "h_0"]
            tb = t if batched else t.unsqueeze(1)  # torch compares the batched shapes
            if tuple(tb.shape) != want:
                feat = "hidden_size" if what == "c_0" or not R else "proj_size"
                dims = f"num_layers * num_directions, {'batch, ' if batched else ''}{feat}"
                of = "" if batched else " of unbatched input"
                guide = f"{what}{of} must have shape {want if batched else want[::2]} ({dims})"
                raise InputError(
                    f"Expected hidden{index} size {want}, got {list(tb.shape)} ({guide}, got "
                    f"{tuple(t.shape)})"
                )
            if t.dtype != x.dtype and not autocast_enabled(x):
                raise InputError(f"{what} dtype ({t.dtype}) must match the input's ({x.dtype})")
            return tb

        if lstm:
            return fix(parts["h_0"], "h_0", "[0]"), fix(parts["c_0"], "c_0", "[1]")
        return fix(parts["hx"], "hx", "")

    # -- forward --------------------------------------------------------------------------
    def forward(
        self, input: Tensor | PackedSequence, hx: State | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the layer over a sequence, as torch's layer does.

        Args:
            input: ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``),
                unbatched ``(T, input_size)``, or a :class:`~torch.nn.utils.rnn.PackedSequence`
                (sorted or not).
            hx: initial state ``(num_layers * num_directions, B, R)`` with ``R = proj_size
                or hidden_size`` (unbatched: no ``B``); for an LSTM a pair ``(h_0, c_0)``,
                ``c_0`` with ``hidden_size`` features. Zeros when omitted. For packed input,
                in the batch's original order.

        Returns:
            ``(output, h_n)``, or ``(output, (h_n, c_n))`` for an LSTM, shaped like torch's:
            output ``(T, B, D*R)`` (a ``PackedSequence`` for packed input), ``h_n`` the state
            of every unit at each sequence's own last step.
        """
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_idx, unsorted_idx = input  # data (N, I)
            self._check_input(data, packed=True)
            state = self._initial_state(hx, data, int(batch_sizes[0]), batched=True)
            if sorted_idx is not None and hx is not None:  # hx is in the batch's own order
                state = _permute(state, sorted_idx)
            x, batched = data, True
        else:
            batch_sizes = unsorted_idx = None
            self._check_input(input, packed=False)
            batched = input.dim() == 3
            x = input.transpose(0, 1) if batched and self.batch_first else input
            x = x if batched else x.unsqueeze(1)  # (T, B, I)
            state = self._initial_state(hx, x, x.shape[1], batched)
        out, state = self._run(x, batch_sizes, state)
        if packed:
            out = PackedSequence(out, batch_sizes, sorted_idx, unsorted_idx)
            return out, state if unsorted_idx is None else _permute(state, unsorted_idx)
        if not batched:
            out = out.squeeze(1)  # (T, D*R)
            state = tuple(s.squeeze(1) for s in state) if self.spec.cell_state else state.squeeze(1)
            return out, state
        return (out.transpose(0, 1) if self.batch_first else out), state

    def _run(self, x: Tensor, batch_sizes: Tensor | None, state: State) -> tuple[Tensor, State]:
        """``x``: ``(T, B, I)``, or packed data ``(N, I)`` with ``batch_sizes``."""
        spec = self.spec
        layout = compute.Layout(spec, self.num_layers, self.num_directions, self.bias,
                              self.proj_size > 0, self.dropout, self.training)  # fmt: skip
        # A mode torch has no kernel for runs the spec's own, which takes equal lengths only:
        # packed input of such a mode runs unrolled; traced or exported, it runs its step ops
        # (an autograd Function does not export), as does an LSTM with projections for ONNX
        # (whose LSTM op has no projection). Exporters get torch's ops, never native ones.
        own = spec.torch_kernel is None
        stepped = self.unroll or self.is_recording
        capturing = export.capturing()
        step_ops = own or (self.proj_size > 0 and torch.onnx.is_in_onnx_export())
        fused = not (stepped or (own and batch_sizes is not None) or (step_ops and capturing))
        if not self.training:
            export.remember(self)  # the real tensors a later torch.export computes from
        with parametrize.cached():  # constrained matrices computed once for this call
            if not (stepped or capturing) and _native_ok(spec, x):
                units = self.units()
                if batch_sizes is None:  # a padded batch is packed data of equal batch sizes
                    T, B = x.shape[:2]
                    sizes = torch.full((T,), B, dtype=torch.long)
                    out, state = compute.native(
                        layout, x.reshape(T * B, x.shape[-1]), sizes, state, units
                    )
                    return out.reshape(T, B, out.shape[-1]), state  # (T, B, D*R)
                return compute.native(layout, x, batch_sizes, state, units)
            if fused and not own:
                return compute.fused(layout, x, batch_sizes, state, self._flat_weights)
            units = self.units()
            if fused:
                return compute.fused_sequence(layout, x, state, units)
            if batch_sizes is None:  # a padded batch is packed data of equal batch sizes
                T, B = x.shape[:2]
                sizes, data = [B] * T, x.reshape(T * B, x.shape[-1])  # (T*B, I)
            else:
                sizes, data = batch_sizes.tolist(), x
            out, state, rows = compute.unrolled(layout, data, sizes, state, units)  # (N, D*R)
        if self._records is not None:
            self._records.append(rows)
        if batch_sizes is None:
            out = out.reshape(*x.shape[:2], out.shape[-1])  # (T, B, D*R)
        return out, state

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + super().extra_repr()


def _native_ok(spec: CellSpec, x: Tensor) -> bool:
    """Whether this call runs seqnorm's native CPU kernels (see :mod:`seqnorm.native`)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or not x.numel():
        return False
    if autocast_enabled(x):  # mixed precision: torch's kernels, which autocast knows
        return False
    if spec.mode not in native.MODES:
        return False
    chosen = native.backend()
    return chosen.name == "native" and (spec.native_by_default or chosen.forced)


def _permute(state: State, index: Tensor) -> State:
    """Reorder the batch dimension of a state (torch's ``permute_hidden``)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)
