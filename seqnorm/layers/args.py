"""Argument checks shared by the layers and the cells, with torch's exception contract.

torch's recurrent layers raise ``TypeError`` for a wrongly typed flag or size, ``ValueError``
for a bad value, and ``RuntimeError`` for an input or state of the wrong shape (the cells: a
``ValueError`` for the wrong number of dimensions). seqnorm raises :class:`InputError` for
every bad input: it is both a ``ValueError`` and a ``RuntimeError``, so code written against
torch's layers catches it whichever of the two it expects, and the message can say more.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

from ..constraints import check_constraint
from .init import INITS
from .spec import spec_of

#: Nonlinearities of the Elman layers and cells.
NONLINEARITIES = ("tanh", "relu", "modrelu")

__all__ = [
    "NONLINEARITIES",
    "InputError",
    "check_dropout",
    "check_flag",
    "check_proj_size",
    "check_recurrent_init",
    "check_size",
    "gate_indices",
    "mode_of",
]


class InputError(ValueError, RuntimeError):
    """A bad input or state for a seqnorm layer or cell (a shape, a dtype, a length), or a
    size argument out of range.

    Both a ``ValueError`` and a ``RuntimeError``: torch's layers raise one or the other for
    the same mistakes, and ``except`` clauses written for either keep working.
    """


def check_flag(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a ``bool`` (torch: ``bias=0`` is an error)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_size(name: str, value: object, minimum: int = 1) -> None:
    """Raise ``TypeError`` unless ``value`` is an ``int``, :class:`InputError` if below
    ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:  # torch: ValueError for a layer, RuntimeError (from torch.empty) for a cell
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise InputError(f"{name} must be {what}, got {value}")


def check_dropout(dropout: object, num_layers: int) -> None:
    """torch's rules: a number in ``[0, 1]``; a warning when there is no layer to drop after."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            f"dropout acts between stacked layers only, so dropout={dropout} with "
            f"num_layers=1 has no effect",
            UserWarning,
            stacklevel=4,
        )


def check_proj_size(mode: str, proj_size: object, hidden_size: int) -> None:
    """``proj_size``: an int in ``[0, hidden_size)``, non-zero for an LSTM only."""
    check_size("proj_size", proj_size, minimum=0)
    if proj_size and mode != "lstm":
        raise ValueError(
            f"proj_size is only supported by SpectralLSTM (as by torch.nn.LSTM), "
            f"got proj_size={proj_size} for mode {mode!r}"
        )
    if proj_size and proj_size >= hidden_size:
        raise ValueError(
            f"proj_size must be smaller than hidden_size={hidden_size}, got {proj_size}"
        )


def mode_of(nonlinearity: str) -> str:
    """The mode of an Elman layer or cell with this ``nonlinearity``."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    return f"rnn_{nonlinearity}"


def gate_indices(mode: str, constrained_gates: Sequence[str] | None) -> tuple[int, ...]:
    """Indices of the named gate blocks (``None``: all) of a layer of ``mode``."""
    names = spec_of(mode).gate_names
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


def check_recurrent_init(
    mode: str, init: str, chrono_init: int | None, bias: bool, constraint: str, options: dict
) -> None:
    """Raise ``ValueError`` for an unknown ``init``, constraint or option, or a
    ``chrono_init`` the layer cannot take."""
    check_constraint(constraint, options)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if chrono_init is None:
        return
    if not spec_of(mode).chrono:
        raise ValueError(f"chrono_init applies to GRU and LSTM gates only, not to mode {mode!r}")
    if not isinstance(chrono_init, int) or isinstance(chrono_init, bool) or chrono_init < 2:
        raise ValueError(f"chrono_init must be None or an int T_max >= 2, got {chrono_init!r}")
    if not bias:
        raise ValueError("chrono_init sets gate biases: it needs bias=True")
