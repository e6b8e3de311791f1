"""``bound`` on a diagonal recurrence stored as ``nu = log(-log|lambda|)`` (the LRU's).

The matrix ``bound`` (:class:`~seqnorm.constraints.Bound`) is ``W / max(1, sigma(W) / gamma)``.
For a diagonal ``Lambda = diag(lambda)`` the largest singular value is ``max|lambda|``, so the
same formula divides every ``lambda`` by ``max(1, max|lambda| / gamma)``: nothing changes
below the cap, and above it every modulus shrinks by the same factor (the phases are kept).
The LRU stores the modulus as ``|lambda| = exp(-exp(nu))``; dividing every modulus by ``c``
adds ``log c`` to every ``exp(nu)``, so the constraint is a parametrization of ``nu``:

    nu' = log(exp(nu) + max(0, -min(exp(nu)) - log(gamma)))

>>> import math, torch
>>> nu = torch.log(-torch.log(torch.tensor([0.5, 0.95, 0.99])))  # |lambda| 0.5, 0.95, 0.99
>>> (-ModulusBound(gamma=0.9)(nu).exp()).exp()  # all scaled by 0.9 / 0.99
tensor([0.4545, 0.8636, 0.9000])
"""

from __future__ import annotations

import math

from torch import Tensor

from .cap import Constraint

__all__ = ["ModulusBound"]


class ModulusBound(Constraint):
    """``bound`` on the moduli of a diagonal recurrence: ``max|lambda| <= gamma``.

    Acts on ``nu`` (``|lambda| = exp(-exp(nu))``, the LRU's ``nu_log``), at every read, so the
    cap holds in training and in eval whatever the optimizer did to the stored ``nu``. Its
    gradient reaches the smallest ``exp(nu)`` (the largest modulus) through the shift, as the
    matrix cap's reaches the top singular pair.

    Args:
        gamma: the cap on every ``|lambda|``, in ``(0, 1]`` (``|lambda| < 1`` holds by
            construction, so ``gamma >= 1`` would never act).
    """

    def __init__(self, *, gamma: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool)):
            raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}")
        if not 0 < gamma <= 1:
            raise ValueError(
                f"gamma must be in (0, 1] for a diagonal recurrence (|lambda| < 1 by "
                f"construction), got {gamma!r}"
            )
        self.gamma = float(gamma)

    def forward(self, nu: Tensor) -> Tensor:
        e = nu.exp()  # -log|lambda| (P,)
        shift = (-e.min() - math.log(self.gamma)).clamp_min(0.0)  # log(max|lambda| / gamma)+
        return (e + shift).log()

    def right_inverse(self, nu: Tensor) -> Tensor:
        """``nu`` itself: the raw value is stored and capped at every read."""
        return nu

    def holds(self, nu: Tensor, tol: float = 1e-3) -> bool:
        """Whether the moduli of constrained ``nu`` are all ``<= gamma + tol``."""
        return bool((-nu.detach().double().exp()).exp().max() <= self.gamma + tol)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"
