"""``scaled``: ``gamma * W / sigma(W)`` with a learnable, bounded ``gamma``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .cap import Cap
from .gamma import bounded_scale, check_gamma_range, initial_scale_raw
from .norm import SigmaNorm

__all__ = ["Scaled", "ScaledCap"]


class ScaledCap(Cap):
    """The formula of ``scaled``: ``factor = gamma / sigma`` with one learnable ``gamma`` per
    sigma, ``gamma = gamma_min + (gamma_max - gamma_min) * sigmoid(gamma_raw)`` in
    ``[gamma_min, gamma_max]`` whatever the optimiser does; it starts at 1 (or at the nearest
    end of the range when 1 lies outside it).

    Args:
        gamma_min: smallest scale (keyword).
        gamma_max: largest scale, the cap (keyword); the other arguments go to the source.
    """

    def __init__(
        self, *args: Any, gamma_min: float = 0.5, gamma_max: float = 1.5, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.gamma_min, self.gamma_max = check_gamma_range(gamma_min, gamma_max)
        raw = initial_scale_raw(self.gamma_min, self.gamma_max, self.sigma_shape())
        self.gamma_raw = nn.Parameter(raw)

    @property
    def gamma(self) -> Tensor:
        """The effective scale (per block for a matrix), in ``[gamma_min, gamma_max]``."""
        return bounded_scale(self.gamma_raw, self.gamma_min, self.gamma_max)

    def factor(self, sigma: Tensor) -> Tensor:
        return self.gamma.to(sigma.dtype) / sigma

    def within(self, sigma: Tensor, tol: float) -> bool:
        return bool(((sigma >= self.gamma_min - tol) & (sigma <= self.gamma_max + tol)).all())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma_min={self.gamma_min}, gamma_max={self.gamma_max}"


class Scaled(ScaledCap, SigmaNorm):
    """``gamma * W / sigma(W)`` per gate block with a learnable ``gamma`` per block.

    Args:
        shape: shape of the constrained matrix.
        blocks: number of gate blocks.
        gamma_min: smallest scale.
        gamma_max: largest scale (the cap).
        estimator: how sigma is computed, ``"exact"`` or ``"power"`` (see ``SigmaNorm``).
        n_power_iterations: steps per training forward with ``estimator="power"``.
        eps: floor on sigma.
    """
