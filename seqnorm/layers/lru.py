"""The linear recurrent unit (LRU, Orvieto et al. 2023, "Resurrecting Recurrent Neural
Networks for Long Sequences"): a diagonal complex linear recurrence.

    h_t = lambda * h_{t-1} + gamma * (B x_t)        lambda, gamma in C^P / R^P, elementwise
    y_t = Re(C h_t) + D * x_t                       B: P x I, C: I x P complex, D: I real

``lambda = exp(-exp(nu) + i exp(theta))``, so ``|lambda| = exp(-exp(nu)) < 1`` whatever
``nu``; ``gamma = exp(gamma_log)`` starts at ``sqrt(1 - |lambda|^2)`` (the state's scale then
does not grow as ``|lambda| -> 1``) and trains freely. The recurrent matrix is
``diag(lambda)``: its spectral norm is ``max|lambda|``, which the ``bound`` constraint caps
(:class:`~seqnorm.constraints.modulus.ModulusBound`). :class:`DiagonalRecurrentLayer` is what
the probes ask such a layer: its eigenvalues and its recorded states.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from .. import native
from ..constraints import CONSTRAINTS
from ..constraints.modulus import ModulusBound
from ..native import lru as native_lru
from .checks import InputError, autocast_enabled, check_flag, check_size
from .recordable import Recordable
from .scan import chunked_scan

__all__ = [
    "LRU",
    "LRU_CONSTRAINTS",
    "DiagonalRecurrentLayer",
    "check_input",
    "check_lru_constraint",
    "check_ring",
    "check_state",
]

#: The constraints a diagonal recurrence takes (see :func:`check_lru_constraint`).
LRU_CONSTRAINTS = ("none", "bound")


def check_ring(r_min: float, r_max: float, max_phase: float) -> None:
    """``ValueError`` unless ``0 <= r_min <= r_max <= 1``, ``r_min < 1``, ``r_max > 0`` and
    ``0 < max_phase <= 2 pi`` (radians)."""
    for name, v in (("r_min", r_min), ("r_max", r_max), ("max_phase", max_phase)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not (0 <= r_min <= r_max <= 1 and r_min < 1 and r_max > 0):
        raise ValueError(
            f"r_min and r_max must satisfy 0 <= r_min <= r_max <= 1 with r_min < 1 and "
            f"r_max > 0 (the ring |lambda| is drawn from), got r_min={r_min}, r_max={r_max}"
        )
    if not 0 < max_phase <= 2 * math.pi:
        raise ValueError(
            f"max_phase must be in (0, 2*pi] (radians; the phases are drawn from "
            f"[0, max_phase]), got {max_phase!r}"
        )


def check_lru_constraint(constraint: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The options of ``constraint`` for a diagonal recurrence, or ``ValueError``.

    ``none`` and ``bound`` (``gamma``: ``max|lambda| <= gamma``) fit. ``spectral``,
    ``orthogonal`` and ``band`` put moduli at (or around) 1, where ``gamma = sqrt(1 -
    |lambda|^2)`` is 0 and a linear recurrence never forgets; ``scaled`` lets them above 1:
    they are refused, by name.
    """
    options = dict(options or {})
    if constraint not in LRU_CONSTRAINTS:
        if constraint in CONSTRAINTS:
            raise ValueError(
                f"constraint {constraint!r} does not fit the LRU: its |lambda| < 1 by "
                f"construction, and {constraint!r} would set the spectral norm max|lambda| "
                f"to 1 (or let it exceed 1), where gamma = sqrt(1 - |lambda|^2) vanishes and "
                f"the linear recurrence never forgets; use one of {LRU_CONSTRAINTS} "
                f"('bound' with gamma < 1 caps |lambda|)"
            )
        raise ValueError(f"constraint must be one of {LRU_CONSTRAINTS}, got {constraint!r}")
    allowed = ("gamma",) if constraint == "bound" else ()
    if bad := sorted(set(options) - set(allowed)):
        raise ValueError(
            f"unknown option(s) {bad} for constraint {constraint!r} of the LRU; allowed: "
            f"{', '.join(allowed) or 'none'}"
        )
    return options


def check_input(
    name: str, x: Any, packed: bool, input_size: int, dtype: torch.dtype, batch_first: bool
) -> None:
    """torch's input checks of a recurrent layer, for the LRU layers (``name`` in messages):
    a tensor of 2 or 3 dimensions (packed data: 2), of the layer's float dtype (any under
    autocast), ``input_size`` features, at least one step. Raises ``TypeError`` or
    :class:`~seqnorm.layers.InputError`."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(x).__name__}")
    shape = tuple(x.shape)
    if packed and x.dim() != 2:
        raise InputError(
            f"input must have 2 dimensions, got {x.dim()} (the data of a PackedSequence "
            f"is (N, input_size), got shape {shape})"
        )
    if not packed and x.dim() not in (2, 3):
        raise InputError(
            f"{name}: Expected input to be 2D or 3D, got {x.dim()}D instead ({name} takes "
            f"(T, B, input_size), (B, T, input_size) with batch_first, or unbatched "
            f"(T, input_size); got shape {shape})"
        )
    if not x.is_floating_point() or (x.dtype != dtype and not autocast_enabled(x)):
        raise InputError(
            f"input dtype ({x.dtype}) does not match the {name}'s dtype ({dtype}): convert "
            f"the input, input.to({dtype}), or the layer"
        )
    if x.shape[-1] != input_size:
        raise InputError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, "
            f"got {x.shape[-1]} (input shape {shape})"
        )
    if not packed and x.shape[0 if x.dim() == 2 or not batch_first else 1] == 0:
        raise InputError(f"Expected sequence length to be larger than 0 in {name}")


def check_state(
    hx: Any, num_layers: int, B: int, P: int, dtype: torch.dtype, batched: bool
) -> Tensor:
    """A complex initial state ``(num_layers, B, P)`` (unbatched ``(num_layers, P)``) checked,
    returned as ``(num_layers, B, P)``. Raises ``TypeError`` or
    :class:`~seqnorm.layers.InputError`."""
    if not isinstance(hx, Tensor):
        raise TypeError(f"hx must be a Tensor, got {type(hx).__name__}")
    want = (num_layers, B, P) if batched else (num_layers, P)
    complex_dtype = dtype.to_complex()
    if not hx.is_complex() or hx.dtype != complex_dtype:
        raise InputError(
            f"hx must be a {complex_dtype} tensor (the LRU's state is complex), got {hx.dtype}"
        )
    if tuple(hx.shape) != want:
        raise InputError(
            f"Expected hidden size {want}, got {list(hx.shape)} (hx must have shape "
            f"(num_layers={num_layers}, {'B, ' if batched else ''}state_size={P}))"
        )
    return hx.reshape(num_layers, -1, P)


class DiagonalRecurrentLayer(Recordable, nn.Module):
    """A layer whose recurrent matrices are diagonal: what the probes ask of it.

    One *unit* per recurrence (``unit_names``: ``l0``, ``l1``, ...), each ``diag(lambda)``
    with ``P`` complex eigenvalues (:meth:`recurrent_eigenvalues`); for a diagonal (normal)
    matrix the singular values are the moduli ``|lambda|``, so the spectrum probes report them
    where they report a gate block's singular values (one "gate", ``lambda``).
    :meth:`recording` hands out every state, as :meth:`RecurrentLayer.recording
    <seqnorm.layers.RecurrentLayer.recording>` does, with each complex state as real planes
    ``[Re h | Im h]`` ``(B, 2P)`` (its norm is the complex norm).
    """

    #: The probes' name of the one recurrent map of each unit.
    gate_names: tuple[str, ...] = ("lambda",)
    #: No reverse direction.
    num_directions: int = 1

    @property
    def unit_names(self) -> list[str]:
        """One name per unit, in ``h_n``'s order."""
        raise NotImplementedError

    def recurrent_eigenvalues(self) -> Tensor:
        """The eigenvalues ``lambda`` of every unit's recurrent matrix, ``(units, P)``
        complex, as the layer uses them (constrained), differentiable."""
        raise NotImplementedError


class LRU(DiagonalRecurrentLayer):
    """The linear recurrent unit: ``torch.nn.RNN``'s call, a complex diagonal recurrence.

    ``out, h_n = lru(x, h0)`` as with torch's layers: ``x`` is ``(T, B, input_size)``
    (``(B, T, input_size)`` with ``batch_first``), unbatched ``(T, input_size)`` or a
    :class:`~torch.nn.utils.rnn.PackedSequence`; ``out`` has ``input_size`` features (``y =
    Re(C h) + D x`` maps back to the input's width, as in the paper). The state is complex:
    ``h0`` and ``h_n`` are ``(1, B, state_size)`` complex tensors (``complex64`` for a
    float32 layer; unbatched ``(1, state_size)``), torch's ``(num_layers * num_directions, B,
    H)`` with one layer and one direction; ``h_n.abs()`` and ``h_n.angle()`` read it.

    Parameters (the paper's names): ``nu_log``, ``theta_log``, ``gamma_log`` ``(P,)``,
    ``B_re``, ``B_im`` ``(P, I)``, ``C_re``, ``C_im`` ``(I, P)``, ``D`` ``(I,)``.
    Initialisation (the paper's): ``|lambda|^2`` uniform on ``[r_min^2, r_max^2]`` (uniform on
    the ring's area), phases uniform on ``[0, max_phase]``, ``gamma = sqrt(1 - |lambda|^2)``,
    ``B ~ N(0, 1 / (2 I))`` and ``C ~ N(0, 1 / P)`` per real and imaginary part (Glorot-style:
    the complex entries have variance ``1 / I`` and ``2 / P``), ``D ~ N(0, 1)``.

    On CPU (float32, float64) the scan is seqnorm's native kernel (:mod:`seqnorm.native.lru`,
    the input projection inside it); on other devices over equal-length sequences, a chunked
    parallel scan in torch ops (:mod:`seqnorm.layers.scan`); elsewhere (packed sequences of
    different lengths off the CPU, ``SEQNORM_BACKEND=torch``, ``unroll = True``, while
    :meth:`recording`) the same scan steps in autograd ops, one step at a time.

    Args:
        input_size: features of the input (and of the output).
        state_size: ``P``, complex entries of the state.
        r_min: smallest initial ``|lambda|``.
        r_max: largest initial ``|lambda|`` (an initialisation, not a constraint: training
            may move ``|lambda|`` above it; ``constraint="bound"`` caps it).
        max_phase: largest initial phase, radians, in ``(0, 2 pi]``.
        batch_first: input and output are ``(B, T, F)``.
        constraint: ``none`` or ``bound`` (``max|lambda| <= gamma`` at every forward; the
            other names of :data:`seqnorm.CONSTRAINTS` do not fit a diagonal recurrence and
            raise ``ValueError``, see :func:`check_lru_constraint`).
        constraint_options: ``{"gamma": 0.99}`` for ``bound``.
        device: where to allocate the parameters.
        dtype: float dtype of the parameters (the state is the matching complex dtype).

    >>> lru = LRU(4, 8, r_min=0.9, r_max=0.999, batch_first=True)
    >>> out, h_n = lru(torch.randn(2, 5, 4))
    >>> tuple(out.shape), tuple(h_n.shape), h_n.dtype
    ((2, 5, 4), (1, 2, 8), torch.complex64)
    >>> bool(((lru.eigenvalues().abs() >= 0.9) & (lru.eigenvalues().abs() <= 0.999)).all())
    True
    """

    def __init__(
        self,
        input_size: int,
        state_size: int,
        *,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
        batch_first: bool = False,
        constraint: str = "none",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_size("input_size", input_size)
        check_size("state_size", state_size)
        check_ring(r_min, r_max, max_phase)
        check_flag("batch_first", batch_first)
        options = check_lru_constraint(constraint, constraint_options)
        super().__init__()
        self.input_size, self.state_size = input_size, state_size
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        self.batch_first = batch_first
        self.constraint, self.constraint_options = constraint, options
        #: Step the scan in autograd ops (the probes' path) instead of the native kernel.
        self.unroll = False
        like = torch.empty(0, device=device, dtype=dtype)
        if not like.is_floating_point():
            raise ValueError(f"dtype must be a floating-point dtype, got {like.dtype}")
        P, I = state_size, input_size
        for name, shape in (("nu_log", (P,)), ("theta_log", (P,)), ("gamma_log", (P,)),
                            ("B_re", (P, I)), ("B_im", (P, I)), ("C_re", (I, P)),
                            ("C_im", (I, P)), ("D", (I,))):  # fmt: skip
            self.register_parameter(name, nn.Parameter(like.new_empty(shape)))
        self.reset_parameters()
        if constraint == "bound":
            parametrize.register_parametrization(self, "nu_log", ModulusBound(**options))

    def reset_parameters(self) -> None:
        """The paper's initialisation (class docstring), drawn from torch's global RNG in
        float64 and rounded to the parameters' dtype."""
        P, I = self.state_size, self.input_size
        f64 = {"dtype": torch.float64}
        tiny = 1e-12  # keeps log() finite when a uniform draw is 0
        u1, u2 = torch.rand(P, **f64).clamp_min(tiny), torch.rand(P, **f64).clamp_min(tiny)
        r2 = self.r_min**2 + u1 * (self.r_max**2 - self.r_min**2)  # |lambda|^2 (P,)
        values = {
            "nu_log": torch.log(-0.5 * torch.log(r2)),
            "theta_log": torch.log(self.max_phase * u2),
            "gamma_log": 0.5 * torch.log1p(-r2),
            "B_re": torch.randn(P, I, **f64) / math.sqrt(2 * I),
            "B_im": torch.randn(P, I, **f64) / math.sqrt(2 * I),
            "C_re": torch.randn(I, P, **f64) / math.sqrt(P),
            "C_im": torch.randn(I, P, **f64) / math.sqrt(P),
            "D": torch.randn(I, **f64),
        }
        with torch.no_grad():
            for name, value in values.items():
                target = self._stored(name)
                target.copy_(value.to(target.dtype))

    def _stored(self, name: str) -> Tensor:
        """The stored tensor behind ``name`` (the raw ``nu_log`` under a constraint)."""
        if parametrize.is_parametrized(self, name):
            return getattr(self.parametrizations, name).original
        return getattr(self, name)

    # -- what the layer computes with ---------------------------------------------------------
    def eigenvalues(self) -> Tensor:
        """``lambda`` ``(P,)``, complex, as the layer uses it (constrained), differentiable."""
        modulus = torch.exp(-torch.exp(self.nu_log))  # (P,)
        return torch.polar(modulus, torch.exp(self.theta_log))

    def recurrent_eigenvalues(self) -> Tensor:
        """:meth:`eigenvalues` as the probes take them, ``(1, P)``."""
        return self.eigenvalues()[None]

    def lambda_planes(self) -> Tensor:
        """``lambda`` as the scan takes it: ``[Re | Im]`` ``(2P,)``."""
        modulus = torch.exp(-torch.exp(self.nu_log))  # (P,)
        phase = torch.exp(self.theta_log)
        return torch.cat([modulus * torch.cos(phase), modulus * torch.sin(phase)])

    def input_map(self) -> Tensor:
        """``gamma * B`` as real planes ``(2P, I)``: ``u = x @ input_map().T``."""
        g = torch.exp(self.gamma_log)[:, None]  # (P, 1)
        return torch.cat([self.B_re * g, self.B_im * g])  # (2P, I)

    def output_map(self) -> Tensor:
        """``Re(C h) = output_map() @ [Re h | Im h]``: ``[C_re, -C_im]`` ``(I, 2P)``."""
        return torch.cat([self.C_re, -self.C_im], dim=1)

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self, input: Tensor | PackedSequence, hx: Tensor | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """Run the LRU over a sequence.

        Args:
            input: ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``),
                unbatched ``(T, input_size)``, or a ``PackedSequence`` (sorted or not).
            hx: initial state ``(1, B, state_size)`` complex (unbatched ``(1, state_size)``),
                in the batch's own order for packed input; zeros when omitted.

        Returns:
            ``(output, h_n)``: ``output`` like the input with ``input_size`` features (a
            ``PackedSequence`` for packed input), ``h_n`` ``(1, B, state_size)`` complex, each
            sequence's state after its own last step.
        """
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_idx, unsorted_idx = input
            check_input("LRU", data, True, self.input_size, self.D.dtype, self.batch_first)
            B, batched = int(batch_sizes[0]), True
        else:
            check_input("LRU", input, False, self.input_size, self.D.dtype, self.batch_first)
            batched = input.dim() == 3
            x = input.transpose(0, 1) if batched and self.batch_first else input
            x = x if batched else x.unsqueeze(1)  # (T, B, I)
            T, B = x.shape[:2]
            data = x.reshape(T * B, self.input_size)  # time-major rows (T*B, I)
            batch_sizes, sorted_idx, unsorted_idx = torch.full((T,), B), None, None
        h0 = self._initial_state(hx, data, B, batched)  # (B, 2P)
        if sorted_idx is not None and hx is not None:  # hx is in the batch's own order
            h0 = h0.index_select(0, sorted_idx)
        y, h_n = self._run(data, batch_sizes, h0)  # (N, I), (B, 2P)
        P = self.state_size
        h_n = torch.complex(h_n[:, :P], h_n[:, P:])  # (B, P)
        if packed:
            if unsorted_idx is not None:
                h_n = h_n.index_select(0, unsorted_idx)
            return PackedSequence(y, batch_sizes, sorted_idx, unsorted_idx), h_n[None]
        y = y.reshape(T, B, self.input_size)
        if not batched:
            return y.squeeze(1), h_n  # (T, I), (1, P)
        return (y.transpose(0, 1) if self.batch_first else y), h_n[None]

    def _native_ok(self, data: Tensor) -> bool:
        if self.unroll or self.is_recording or data.device.type != "cpu" or not data.numel():
            return False
        if data.dtype not in (torch.float32, torch.float64):
            return False
        return native.backend().name == "native"

    def _chunked_ok(self, data: Tensor, batch_sizes: Tensor) -> bool:
        """Off the CPU, equal lengths, not unrolled or recorded: the chunked parallel scan
        (:mod:`seqnorm.layers.scan`). On a CPU the step loop is faster than its extra
        arithmetic and copies (measured at the psMNIST shape)."""
        if self.unroll or self.is_recording or data.device.type == "cpu" or not len(batch_sizes):
            return False
        return bool((batch_sizes == batch_sizes[0]).all())

    def _run(self, data: Tensor, batch_sizes: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        """The scan and the output map over packed rows ``data`` ``(N, I)``."""
        dtype = self.D.dtype
        with torch.autocast(data.device.type, enabled=False):  # computes in its own dtype
            data = data.to(dtype)
            lam, w_in, w_out = self.lambda_planes(), self.input_map(), self.output_map()
            if self._native_ok(data):
                h, h_n = native_lru.scan(data, lam, h0, batch_sizes, w_in)  # (N, 2P), (B, 2P)
            else:
                u = F.linear(data, w_in)  # (N, 2P)
                if self._chunked_ok(data, batch_sizes):
                    h, h_n = chunked_scan(u, lam, h0, len(batch_sizes))  # (N, 2P), (B, 2P)
                else:
                    h, h_n, states = native_lru.reference(u, lam, h0, batch_sizes)
                    if self._records is not None:
                        self._records.append([states])
            y = F.linear(h, w_out) + data * self.D  # (N, I)
        return y, h_n

    def _initial_state(self, hx: Tensor | None, data: Tensor, B: int, batched: bool) -> Tensor:
        """``hx`` checked, as planes ``(B, 2P)``; zeros when ``None``."""
        if hx is None:
            return data.new_zeros(B, 2 * self.state_size, dtype=self.D.dtype)
        h = check_state(hx, 1, B, self.state_size, self.D.dtype, batched)[0]  # (B, P)
        return torch.cat([h.real, h.imag], dim=1)  # (B, 2P)

    @property
    def unit_names(self) -> list[str]:
        """``["l0"]``: one recurrence."""
        return ["l0"]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.state_size}, r_min={self.r_min}, r_max={self.r_max}"
        s += f", max_phase={self.max_phase:.4g}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.constraint != "none":
            s += f", constraint={self.constraint!r}"
            if self.constraint_options:
                s += f", constraint_options={self.constraint_options}"
        return s
