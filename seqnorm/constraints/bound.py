"""``bound``: ``W / max(1, sigma(W) / gamma)``, rescales only above the cap."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .cap import Cap
from .gamma import check_gamma
from .norm import SigmaNorm

__all__ = ["Bound", "BoundCap"]


class BoundCap(Cap):
    """The formula of ``bound``: ``factor = 1 / max(1, sigma / gamma)``, so sigma <= gamma.

    Args:
        gamma: the cap (keyword); the other arguments go to the sigma source.
    """

    def __init__(self, *args: Any, gamma: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gamma = check_gamma(gamma)

    def factor(self, sigma: Tensor) -> Tensor:
        return 1 / (sigma / self.gamma).clamp_min(1.0)

    def within(self, sigma: Tensor, tol: float) -> bool:
        return bool((sigma <= self.gamma + tol).all())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={self.gamma}"


class Bound(BoundCap, SigmaNorm):
    """``W / max(1, sigma(W) / gamma)`` per gate block: shrinks only when ``sigma > gamma``.

    Args:
        shape: shape of the constrained matrix.
        blocks: number of gate blocks.
        gamma: the cap on every block's largest singular value.
        estimator: how sigma is computed, ``"exact"`` or ``"power"`` (see ``SigmaNorm``).
        n_power_iterations: steps per training forward with ``estimator="power"``.
        eps: floor on sigma.
    """
