"""Argument checks shared by the layers and the cells."""

from __future__ import annotations

from collections.abc import Sequence

from ..constraints import check_constraint
from .init import INITS
from .steps import GATE_NAMES

#: Nonlinearities of the Elman layers and cells.
NONLINEARITIES = ("tanh", "relu", "modrelu")

__all__ = [
    "NONLINEARITIES",
    "check_common",
    "check_recurrent_init",
    "gate_indices",
    "mode_of",
]


def check_common(input_size: int, hidden_size: int, constraint: str, options: dict) -> None:
    for name, val in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    check_constraint(constraint, options)


def mode_of(nonlinearity: str) -> str:
    """The mode of an Elman layer or cell with this ``nonlinearity``."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    return f"rnn_{nonlinearity}"


def gate_indices(mode: str, constrained_gates: Sequence[str] | None) -> tuple[int, ...]:
    """Indices of the named gate blocks (``None``: all) of a layer of ``mode``."""
    names = GATE_NAMES[mode]
    if constrained_gates is None:
        return tuple(range(len(names)))
    if isinstance(constrained_gates, str) or not all(isinstance(g, str) for g in constrained_gates):
        raise ValueError(
            f"constrained_gates must be a list of gate names from {list(names)}, "
            f"got {constrained_gates!r}"
        )
    bad = [g for g in constrained_gates if g not in names]
    if bad or not constrained_gates:
        raise ValueError(
            f"constrained_gates must be a non-empty list of gate names from {list(names)}, "
            f"got {list(constrained_gates)!r}"
        )
    return tuple(sorted({names.index(g) for g in constrained_gates}))


def check_recurrent_init(mode: str, init: str, chrono_init: int | None) -> None:
    """Raise ``ValueError`` for an unknown ``init`` or a ``chrono_init`` the mode cannot take."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if chrono_init is None:
        return
    if mode not in ("gru", "lstm"):
        raise ValueError(f"chrono_init applies to GRU and LSTM gates only, not to mode {mode!r}")
    if not isinstance(chrono_init, int) or isinstance(chrono_init, bool) or chrono_init < 2:
        raise ValueError(f"chrono_init must be None or an int T_max >= 2, got {chrono_init!r}")
