"""Argument checks shared by the layers and the cells."""

from __future__ import annotations

from ..constraints import check_constraint

__all__ = ["check_common", "mode_of"]


def check_common(input_size: int, hidden_size: int, constraint: str, options: dict) -> None:
    for name, val in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    check_constraint(constraint, options)


def mode_of(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return f"rnn_{nonlinearity}"
