"""The caps' ``gamma``: a fixed one (``bound``), a learnable one held in a range (``scaled``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["bounded_scale", "check_gamma", "check_gamma_range", "initial_scale_raw"]


def check_gamma(gamma: float) -> float:
    """``gamma`` as a float, or ``ValueError`` unless it is a positive number."""
    if not (isinstance(gamma, (int, float)) and gamma > 0):
        raise ValueError(f"gamma must be a positive number, got {gamma!r}")
    return float(gamma)


def check_gamma_range(gamma_min: float, gamma_max: float) -> tuple[float, float]:
    """``(gamma_min, gamma_max)`` as floats, or ``ValueError`` unless ``0 < min <= max``."""
    if not (isinstance(gamma_min, (int, float)) and gamma_min > 0):
        raise ValueError(f"gamma_min must be a positive number, got {gamma_min!r}")
    if not (isinstance(gamma_max, (int, float)) and gamma_min <= gamma_max):
        raise ValueError(
            f"gamma_min must be <= gamma_max, got gamma_min={gamma_min}, gamma_max={gamma_max}"
        )
    return float(gamma_min), float(gamma_max)


def initial_scale_raw(gamma_min: float, gamma_max: float, shape: tuple[int, ...]) -> Tensor:
    """The raw value at which :func:`bounded_scale` is 1 (or the nearest end of the range).

    >>> bounded_scale(initial_scale_raw(0.5, 1.5, ()), 0.5, 1.5)
    tensor(1.)
    """
    width = gamma_max - gamma_min
    frac = 0.5 if width == 0 else min(max((1.0 - gamma_min) / width, 1e-3), 1 - 1e-3)
    return torch.full(shape, math.log(frac / (1 - frac)))


def bounded_scale(raw: Tensor, gamma_min: float, gamma_max: float) -> Tensor:
    """``gamma_min + (gamma_max - gamma_min) * sigmoid(raw)``: in the range, whatever ``raw``."""
    return gamma_min + (gamma_max - gamma_min) * torch.sigmoid(raw)
