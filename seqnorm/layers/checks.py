"""Argument checks shared by the layers and the cells, with torch's exception contract.

torch's recurrent layers raise ``TypeError`` for a wrongly typed flag or size, ``ValueError``
for a bad value, and ``RuntimeError`` for an input or state of the wrong shape (the cells: a
``ValueError`` for the wrong number of dimensions). seqnorm raises the same types and, for the
checks torch makes itself, a message that starts with torch's own (so that a regex written
against torch's message matches seqnorm's), followed by seqnorm's guidance in parentheses.
For a bad input or state seqnorm raises :class:`InputError`: it is both a ``ValueError`` and a
``RuntimeError``, so code written against torch's layers catches it whichever of the two it
expects.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ..constraints import check_constraint
from .init import INITS
from .spec import CellSpec

#: Nonlinearities of the Elman layers and cells.
NONLINEARITIES = ("tanh", "relu", "modrelu")

__all__ = [
    "NONLINEARITIES",
    "InputError",
    "autocast_enabled",
    "check_dropout",
    "check_flag",
    "check_proj_size",
    "check_recurrent_init",
    "check_size",
    "gate_indices",
    "mode_of",
]


class InputError(ValueError, RuntimeError):
    """A bad input or state for a seqnorm layer or cell (a shape, a dtype, a length), a size
    argument out of range, or an unknown nonlinearity.

    Both a ``ValueError`` and a ``RuntimeError``: torch's layers raise one or the other for
    the same mistakes, and ``except`` clauses written for either keep working.
    """


def autocast_enabled(x: Tensor) -> bool:
    """Whether autocast is on for ``x``'s device: torch's layers then skip their dtype check
    (autocast casts), and so do seqnorm's."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_flag(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a ``bool`` (torch: ``bias=0`` is an error)."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{name} should be of type bool, got: {type(value).__name__} "
            f"({name}={value!r}: pass True or False)"
        )


def check_size(name: str, value: object, minimum: int = 1) -> None:
    """Raise ``TypeError`` unless ``value`` is an ``int``, :class:`InputError` if below
    ``minimum`` (1 for a layer, 0 for a cell)."""
    if not _is_int(value):
        raise TypeError(
            f"{name} should be of type int, got: {type(value).__name__} ({name}={value!r})"
        )
    if value < minimum:  # torch: ValueError for a layer, RuntimeError (from torch.empty) for a cell
        bound = {0: "greater than or equal to zero", 1: "greater than zero"}
        raise InputError(f"{name} must be {bound.get(minimum, f'>= {minimum}')}, got {value}")


def check_dropout(dropout: object, num_layers: int) -> None:
    """torch's rules: a number in ``[0, 1]``; a warning when there is no layer to drop after."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
        raise ValueError(
            f"dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed (got dropout={dropout!r})"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            f"dropout option adds dropout after all but last recurrent layer, so non-zero "
            f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
            f"num_layers={num_layers} (dropout acts between stacked layers only: here it has "
            f"no effect)",
            UserWarning,
            stacklevel=4,
        )


def check_proj_size(spec: CellSpec, proj_size: object, hidden_size: object) -> None:
    """``proj_size``: an int in ``[0, hidden_size)``, non-zero for an LSTM only (a cell type
    whose spec has a projection).

    torch's RNN and GRU refuse the keyword itself; seqnorm's accept ``proj_size=0`` (the
    default), so that tools which pass every default (LightningCLI) can build them.
    """
    if not spec.has_projection:
        if not (_is_int(proj_size) and proj_size == 0):
            raise ValueError(
                f"proj_size argument is only supported for LSTM, not RNN or GRU (got "
                f"proj_size={proj_size!r} for mode {spec.mode!r}: use SpectralLSTM, or "
                f"proj_size=0)"
            )
        return
    if not _is_int(proj_size):
        raise TypeError(
            f"proj_size should be of type int, got: {type(proj_size).__name__} "
            f"(proj_size={proj_size!r})"
        )
    if proj_size < 0:
        raise ValueError(
            f"proj_size should be a positive integer or zero to disable projections "
            f"(got proj_size={proj_size})"
        )
    if proj_size and _is_int(hidden_size) and proj_size >= hidden_size:
        raise ValueError(
            f"proj_size has to be smaller than hidden_size (got proj_size={proj_size}, "
            f"hidden_size={hidden_size})"
        )


def mode_of(nonlinearity: str) -> str:
    """The mode of an Elman layer or cell with this ``nonlinearity``.

    Raises:
        InputError: for an unknown one (torch: ``ValueError`` from ``nn.RNN``,
            ``RuntimeError`` from ``nn.RNNCell``'s forward; seqnorm's cells refuse it at
            construction).
    """
    if nonlinearity not in NONLINEARITIES:
        choices = ", ".join(repr(n) for n in NONLINEARITIES[:-1]) + f" or {NONLINEARITIES[-1]!r}"
        raise InputError(
            f"Unknown nonlinearity {nonlinearity!r}. Select from {choices} (modrelu: "
            f"sign(z) * relu(|z| + b) with a learnable bias b per unit)"
        )
    return f"rnn_{nonlinearity}"


def gate_indices(spec: CellSpec, constrained_gates: Sequence[str] | None) -> tuple[int, ...]:
    """Indices of the named gate blocks (``None``: all) of a layer of ``spec``'s cell type."""
    names = spec.gate_names
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
    spec: CellSpec,
    init: str,
    chrono_init: int | None,
    bias: bool,
    constraint: str,
    options: dict,
) -> None:
    """Raise ``ValueError`` for an unknown ``init``, constraint or option, or a
    ``chrono_init`` the layer cannot take."""
    check_constraint(constraint, options)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if chrono_init is None:
        return
    if not spec.chrono:
        raise ValueError(
            f"chrono_init applies to GRU and LSTM gates only, not to mode {spec.mode!r}"
        )
    if not isinstance(chrono_init, int) or isinstance(chrono_init, bool) or chrono_init < 2:
        raise ValueError(f"chrono_init must be None or an int T_max >= 2, got {chrono_init!r}")
    if not bias:
        raise ValueError("chrono_init sets gate biases: it needs bias=True")
