"""What every seqnorm constraint shares, and the one cap on ``sigma`` behind ``spectral``,
``scaled`` and ``bound``.

:class:`Constraint` is the base of every parametrization seqnorm registers. It says which of
its stored tensors it leaves free (:attr:`Constraint.free_inputs`), checks a matrix against its
own options (:meth:`Constraint.holds`), and maps a plain weight to what it stores
(``right_inverse``), so that ``setattr(module, name, W)`` loads ``W`` into any constrained
module.

:class:`Cap` is ``W -> W * factor(sigma(W))``. Where ``sigma`` comes from is one base class
(:class:`~seqnorm.constraints.norm.SigmaNorm`: a matrix's largest singular value per gate
block, exact or by power iteration; :class:`~seqnorm.constraints.conv.caps.ConvNorm`: a bound on a
convolution's operator norm); what ``factor`` is is one formula (``spectral``, ``scaled``,
``bound``), written once in its own file and combined with either source. A cap stores
``W`` itself: ``right_inverse(W)`` returns ``W`` (after re-aiming the estimator at it), and the
stored tensor is the raw, uncapped matrix.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

__all__ = ["Cap", "Constraint", "check_options", "options_of"]


class Constraint(nn.Module):
    """Base of seqnorm's parametrizations (``forward(*stored) -> W``)."""

    #: Indices of the stored tensors (``original0..n``) that the constraint leaves free, so
    #: that an optimizer treats them as plain weights (:func:`seqnorm.param_groups`).
    free_inputs: tuple[int, ...] = ()

    def holds(self, W: Tensor, tol: float = 1e-3) -> bool:
        """Whether ``W`` (a constrained matrix or kernel) satisfies this constraint's bound,
        with this instance's options, checked exactly (SVD) within ``tol``."""
        raise NotImplementedError

    def right_inverse(self, W: Tensor) -> Tensor | tuple[Tensor, ...]:
        """The stored tensor(s) whose ``forward`` is ``W`` (or the nearest constrained ``W``)."""
        raise NotImplementedError


class Cap(Constraint):
    """``W * factor(sigma(W))``: ``sigma`` from a source base, ``factor`` from a formula.

    A source defines :meth:`sigma`, :meth:`scale`, :meth:`measure` and :meth:`reset`; a
    formula defines :meth:`factor` and :meth:`within`.
    """

    def sigma(self, W: Tensor) -> Tensor:
        """What the cap divides by: per gate block ``(k,)`` or for the whole kernel ``()``."""
        raise NotImplementedError

    def scale(self, W: Tensor, factor: Tensor) -> Tensor:
        """``W`` with each sigma's part multiplied by its ``factor``."""
        raise NotImplementedError

    def measure(self, W: Tensor) -> Tensor:
        """The exact (or certified upper-bound) sigma of ``W``, no gradient, like :meth:`sigma`."""
        raise NotImplementedError

    def reset(self, W: Tensor) -> None:
        """Re-aim any estimator state at a newly assigned ``W``."""

    def factor(self, sigma: Tensor) -> Tensor:
        """The multiplier of the formula, same shape as ``sigma``."""
        raise NotImplementedError

    def within(self, sigma: Tensor, tol: float) -> bool:
        """Whether the formula's bound holds for the measured ``sigma`` of a capped ``W``."""
        raise NotImplementedError

    def forward(self, W: Tensor) -> Tensor:
        return self.scale(W, self.factor(self.sigma(W)))

    def right_inverse(self, W: Tensor) -> Tensor:
        """``W`` itself: a cap stores the raw matrix and caps it at every forward."""
        self.reset(W)
        return W

    def holds(self, W: Tensor, tol: float = 1e-3) -> bool:
        return self.within(self.measure(W), tol)


def options_of(cls: type[nn.Module]) -> dict[str, Any]:
    """The options of constraint class ``cls`` and their defaults.

    The options are the keyword-only parameters of the ``__init__`` of ``cls`` and of its
    bases, in method resolution order (a formula's options before its source's).
    """
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                out.setdefault(p.name, p.default)
    return out


def check_options(
    cls: type[nn.Module], kind: str, options: dict[str, Any], where: str = ""
) -> None:
    """Raise ``ValueError`` naming the unknown keys of ``options`` for constraint ``cls``."""
    allowed = options_of(cls)
    bad = sorted(set(options) - set(allowed))
    if bad:
        names = ", ".join(allowed) or "none"
        raise ValueError(
            f"unknown option(s) {bad} for constraint {kind!r}{where}; allowed: {names}"
        )
