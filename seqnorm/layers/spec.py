"""What each recurrent cell type is, written once: one frozen :class:`CellSpec` per mode.

Everything else (the parameters a module creates, the gate names the constraints, the
initialisations and the dashboards use, the kernels the paths call, the torch classes the
conversions use) reads it from :data:`SPECS`. Adding a cell type means one entry here and its
step function in :mod:`seqnorm.steps` (and, for a native kernel, one ``.cpp``, one ``.py`` and
one dispatch line in :mod:`seqnorm.native`: see ``docs/adding_a_cell.md``).

>>> SPECS["gru"].gate_names, SPECS["gru"].num_gates
(('r', 'z', 'n'), 3)
>>> spec_of("lstm").chrono
{'f': 1.0, 'i': -1.0}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import _VF, Tensor, nn

from ..steps import gru_step, lstm_step, modrelu_step, rnn_relu_step, rnn_tanh_step
from .modrelu import modrelu_rnn

__all__ = ["SPECS", "CellSpec", "Extra", "spec_of"]


@dataclass(frozen=True)
class Extra:
    """A per-unit tensor that a cell's step takes after ``b_hh``, beyond torch's four.

    Args:
        name: the parameter's name without its unit suffix (``weight_hr`` ->
            ``weight_hr_l0``, ``weight_hr_l0_reverse``; a cell's has no suffix).
        doc: what it is.
        init: for a parameter seqnorm adds (torch's module has none), how it is created:
            ``init(hidden_size, like) -> Tensor``, drawn after torch's parameters. ``None``
            for one of torch's own flat weights, which torch's layout creates.
        when: the module attribute that must be non-zero for the unit to have it
            (``proj_size``), or ``None`` when every unit has it.
    """

    name: str
    doc: str
    init: Callable[[int, Tensor], Tensor] | None = None
    when: str | None = None


def _modrelu_bias(hidden_size: int, like: Tensor) -> Tensor:
    return like.new_empty(hidden_size).uniform_(-0.01, 0.01)  # (H,) U(-0.01, 0.01)


@dataclass(frozen=True)
class CellSpec:
    """One recurrent cell type.

    Args:
        mode: its name (``rnn_tanh``, ``gru``, ...), torch's mode string where torch has one;
            the native kernels are found by it too (:data:`seqnorm.native.MODES`).
        gate_names: the gate blocks stacked in ``weight_hh``, in torch's order.
        step: the step equation ``step(gi, state, w_hh, b_hh, *extras) -> state`` in plain
            autograd ops (the cells, the unrolled path and the probes use it), ``gi = x_t @
            W_ih^T + b_ih`` precomputed.
        torch_kernel: torch's whole-sequence kernel (``_VF.gru``...), or ``None`` when torch
            has none (then there is no torch equivalent module either).
        sequence_kernel: seqnorm's own whole-sequence kernel for the torch path when torch
            has none: ``kernel(gi (T, B, G*H), h0, w_hh, b_hh, *extras) -> (T, B, H)``.
        native_by_default: where :mod:`seqnorm.native` has a kernel for ``mode``
            (``seqnorm.native.MODES``), whether the layers run it under
            ``SEQNORM_BACKEND=auto`` (``False``: only when the native backend is forced,
            because torch's own kernel measured as fast or faster; see
            ``experiments/results/speed.md``).
        extras: the tensors ``step`` takes after ``b_hh``, in order.
        chrono: gate name -> sign of the bias that chrono initialisation sets (Tallec &
            Ollivier 2018): ``+log(U(1, T_max - 1))`` on the gate, its negative for ``-1``.
        torch_layer: the torch layer class with the same arguments (``nn.GRU``).
        torch_cell: the torch cell class with the same arguments (``nn.GRUCell``).
        nonlinearity: for the Elman modes, the ``nonlinearity`` argument that selects it.
        cell_state: whether the state is a pair ``(h, c)`` (an LSTM) rather than ``h``.
    """

    mode: str
    gate_names: tuple[str, ...]
    step: Callable[..., Any]
    torch_kernel: Callable[..., Any] | None
    torch_layer: type[nn.Module]
    torch_cell: type[nn.Module]
    sequence_kernel: Callable[..., Tensor] | None = None
    native_by_default: bool = True
    extras: tuple[Extra, ...] = ()
    chrono: Mapping[str, float] = field(default_factory=dict)
    nonlinearity: str | None = None
    cell_state: bool = False

    @property
    def num_gates(self) -> int:
        """Gate blocks stacked in ``weight_hh`` (1, 3 or 4)."""
        return len(self.gate_names)

    @property
    def has_projection(self) -> bool:
        """Whether the cell takes ``proj_size`` (an extra that units have ``when="proj_size"``)."""
        return any(e.when == "proj_size" for e in self.extras)

    @property
    def has_torch_twin(self) -> bool:
        """Whether torch has a module computing the same (``to_torch`` can convert)."""
        return self.torch_kernel is not None


_HR = Extra("weight_hr", "LSTM projection (P, H): h = (o * tanh(c)) @ W_hr^T", when="proj_size")
_MODRELU = Extra("modrelu_bias", "modReLU bias (H,): h = sign(z) * relu(|z| + b)", _modrelu_bias)

#: One spec per mode, read everywhere else (a plain dict: torch.compile breaks its graph on a
#: read-only mappingproxy; the specs themselves are frozen).
SPECS: dict[str, CellSpec] = dict(
    {
        "rnn_tanh": CellSpec("rnn_tanh", ("h",), rnn_tanh_step, _VF.rnn_tanh, nn.RNN,
                             nn.RNNCell, nonlinearity="tanh"),
        "rnn_relu": CellSpec("rnn_relu", ("h",), rnn_relu_step, _VF.rnn_relu, nn.RNN,
                             nn.RNNCell, nonlinearity="relu"),
        "rnn_modrelu": CellSpec("rnn_modrelu", ("h",), modrelu_step, None, nn.RNN,
                                nn.RNNCell, sequence_kernel=modrelu_rnn, extras=(_MODRELU,),
                                nonlinearity="modrelu"),
        "lstm": CellSpec("lstm", ("i", "f", "g", "o"), lstm_step, _VF.lstm, nn.LSTM,
                         nn.LSTMCell, extras=(_HR,), chrono={"f": 1.0, "i": -1.0},
                         cell_state=True),
        "gru": CellSpec("gru", ("r", "z", "n"), gru_step, _VF.gru, nn.GRU, nn.GRUCell,
                        chrono={"z": 1.0}),
    }
)  # fmt: skip


def spec_of(mode: str) -> CellSpec:
    """The spec of ``mode``.

    Raises:
        ValueError: for an unknown mode.
    """
    try:
        return SPECS[mode]
    except KeyError:
        raise ValueError(f"mode must be one of {tuple(SPECS)}, got {mode!r}") from None
