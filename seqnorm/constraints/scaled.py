"""``scaled``: ``gamma * W / sigma(W)`` per gate block with a learnable, bounded ``gamma``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..linalg import as_blocks
from .norm import SigmaNorm
from .scale import bounded_scale, check_gamma_range, initial_scale_raw

__all__ = ["Scaled"]


class Scaled(SigmaNorm):
    """``gamma * W / sigma(W)`` per gate block with a learnable ``gamma`` per block.

    ``gamma = gamma_min + (gamma_max - gamma_min) * sigmoid(gamma_raw)`` stays inside
    ``[gamma_min, gamma_max]`` whatever the optimiser does; it starts at 1 (or at the nearest
    end of the range when 1 lies outside it).

    Args:
        shape: shape of the constrained matrix.
        blocks: number of gate blocks.
        gamma_min: smallest scale.
        gamma_max: largest scale (the cap).
        estimator: how sigma is computed, ``"exact"`` or ``"power"`` (see ``SigmaNorm``).
        n_power_iterations: steps per training forward with ``estimator="power"``.
        eps: floor on sigma.
    """

    def __init__(
        self,
        shape: torch.Size,
        blocks: int,
        gamma_min: float = 0.5,
        gamma_max: float = 1.5,
        estimator: str = "exact",
        n_power_iterations: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(shape, blocks, estimator, n_power_iterations, eps)
        self.gamma_min, self.gamma_max = check_gamma_range(gamma_min, gamma_max)
        self.gamma_raw = nn.Parameter(initial_scale_raw(self.gamma_min, self.gamma_max, (blocks,)))

    @property
    def gamma(self) -> Tensor:
        """The effective scale per block, in ``[gamma_min, gamma_max]``."""
        return bounded_scale(self.gamma_raw, self.gamma_min, self.gamma_max)

    def forward(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)
        scale = self.gamma.to(Wb.dtype) / self.sigma(W)  # (k,)
        return (Wb * scale[:, None, None]).reshape_as(W)

    @staticmethod
    def holds(s: Tensor, tol: float, gamma_min: float = 0.5, gamma_max: float = 1.5) -> bool:
        """Whether singular values ``s`` (``(k, n)``, descending) satisfy the constraint."""
        smax = s[:, 0]
        return bool(((smax >= gamma_min - tol) & (smax <= gamma_max + tol)).all())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma_min={self.gamma_min}, gamma_max={self.gamma_max}"
