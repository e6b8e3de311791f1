"""Constraints by name: the registry, their options, :func:`constrain` and :func:`satisfies`.

A constraint's options and their defaults are its class's constructor signature (after
``shape`` and ``blocks``); nothing here repeats them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..linalg import as_blocks, compute_dtype
from .band import Band
from .bound import Bound
from .conv import constrain_conv
from .conv_geometry import CONV_TYPES
from .gates import GateSubset
from .norm import SigmaNorm
from .orthogonal import Orthogonal
from .scaled import Scaled
from .semiorthogonal import SemiOrthogonal
from .spectral import Spectral

__all__ = [
    "CONSTRAINTS",
    "check_constraint",
    "constrain",
    "constraint_options",
    "is_constrained",
    "satisfies",
]

CONSTRAINTS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "spectral": Spectral,
    "scaled": Scaled,
    "bound": Bound,
    "band": Band,
    "orthogonal": Orthogonal,
}


def constraint_options(kind: str) -> dict[str, Any]:
    """The options of constraint ``kind`` and their defaults, read off its signature.

    >>> constraint_options("bound")
    {'gamma': 1.0, 'estimator': 'exact', 'n_power_iterations': 1, 'eps': 1e-12}
    """
    check_constraint(kind)
    cls = CONSTRAINTS[kind]
    if cls is None:
        return {}
    params = list(inspect.signature(cls.__init__).parameters.values())[3:]  # self, shape, blocks
    return {p.name: p.default for p in params}


def check_constraint(kind: str, options: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` if ``kind`` is unknown or ``options`` are not its options."""
    if not isinstance(kind, str) or kind not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {sorted(CONSTRAINTS)}, got {kind!r}")
    if not options:
        return
    allowed = constraint_options(kind)
    bad = sorted(set(options) - set(allowed))
    if bad:
        names = ", ".join(allowed) or "none"
        raise ValueError(f"unknown option(s) {bad} for constraint {kind!r}; allowed: {names}")


def constrain(
    module: nn.Module,
    name: str = "weight",
    kind: str = "spectral",
    *,
    blocks: int = 1,
    gates: Sequence[int] | None = None,
    **options: Any,
) -> nn.Module:
    """Constrain ``module.<name>`` per gate block with the parametrization ``kind``.

    Shapes:

    * a 2-D parameter (``nn.Linear``, a recurrent matrix, any module's matrix):
      ``spectral``, ``scaled`` and ``bound`` cap the largest singular value of each block,
      square or not (``(out, in)`` for a Linear); ``band`` needs square blocks;
      ``orthogonal`` needs square blocks, or a non-square matrix with ``blocks=1``
      (orthonormal rows or columns, :class:`~seqnorm.constraints.semiorthogonal.SemiOrthogonal`).
    * the kernel of a ``Conv1d/2d/3d``: ``spectral``, ``scaled`` and ``bound`` cap the
      convolution's *operator norm* (:mod:`seqnorm.constraints.conv`); their options are
      ``norm``, ``input_shape``, ``slack``, ``eps`` and the caps
      (:func:`~seqnorm.constraints.conv.conv_constraint_options`).

    Args:
        module: any module holding a 2-D parameter ``name``, or a ``Conv1d/2d/3d``.
        name: the parameter to constrain.
        kind: ``none``, ``spectral``, ``scaled``, ``bound``, ``band`` or ``orthogonal``.
        blocks: how many gate blocks are stacked in the rows (1 for a convolution).
        gates: indices of the blocks to constrain (``None``: all); the others stay free
            (see :class:`~seqnorm.constraints.gates.GateSubset`).
        **options: options of the constraint (see :func:`constraint_options` and the
            classes): ``estimator``, ``n_power_iterations``, ``eps``, ``gamma_min``,
            ``gamma_max``, ``gamma``, ``r``, ``map``, ``rebase_every``.

    Returns:
        ``module`` itself, now parametrized (``kind="none"`` leaves it untouched).

    Raises:
        ValueError: unknown ``kind`` or option, bad option value, blocks not dividing the
            rows, non-square blocks.

    >>> lin = constrain(nn.Linear(4, 4, bias=False), kind="spectral")
    >>> round(torch.linalg.matrix_norm(lin.weight, 2).item(), 4)
    1.0
    """
    what = type(module).__name__
    if isinstance(module, CONV_TYPES):
        check_constraint(kind)
        if blocks != 1 or gates is not None:
            raise ValueError(f"blocks and gates do not apply to {what}, got blocks={blocks!r}, "
                             f"gates={gates!r}")  # fmt: skip
        return constrain_conv(module, name, kind, **options)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        raise ValueError(f"constraint {kind!r}: {what} is not supported (Conv1d/2d/3d are)")
    check_constraint(kind, options)
    if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1:
        raise ValueError(f"blocks must be a positive int, got {blocks!r}")
    W = getattr(module, name, None)
    if not isinstance(W, Tensor):
        raise ValueError(f"module has no tensor named {name!r}")
    if W.dim() != 2:
        raise ValueError(
            f"{name} of {what} must be a 2-D matrix (or the kernel of a Conv1d/2d/3d), "
            f"got shape {tuple(W.shape)}"
        )
    rows, cols = W.shape
    if rows % blocks:
        raise ValueError(f"blocks={blocks} must divide the {rows} rows of {name}")
    if blocks > 1 and rows // blocks != cols:
        raise ValueError(
            f"{name} must hold {blocks} square gate block(s) of size {cols}x{cols}, "
            f"got shape {tuple(W.shape)}"
        )
    cls = CONSTRAINTS[kind]
    if cls is None:
        return module
    if rows // blocks != cols and not issubclass(cls, SigmaNorm):  # one non-square matrix
        if kind != "orthogonal":
            raise ValueError(
                f"constraint {kind!r} needs a square matrix; {what}.{name} has shape "
                f"{tuple(W.shape)} (spectral, scaled, bound and orthogonal take any shape)"
            )
        cls = SemiOrthogonal
    chosen = tuple(range(blocks)) if gates is None else tuple(sorted(set(gates)))
    if not chosen or not all(isinstance(g, int) and 0 <= g < blocks for g in chosen):
        raise ValueError(f"gates must be block indices in range({blocks}), got {gates!r}")
    if len(chosen) == blocks:
        param: nn.Module = cls(W.shape, blocks, **options).to(device=W.device)
        if isinstance(param, SigmaNorm):
            param.converge(W)
    else:
        inner = cls((len(chosen) * cols, cols), len(chosen), **options).to(device=W.device)
        if isinstance(inner, SigmaNorm):
            inner.converge(as_blocks(W.detach(), blocks)[list(chosen)].reshape(-1, cols))
        param = GateSubset(inner, blocks, chosen)
    parametrize.register_parametrization(module, name, param)
    return module


def is_constrained(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` carries a parametrization."""
    return parametrize.is_parametrized(module, name)


def satisfies(
    W: Tensor,
    kind: str,
    *,
    blocks: int = 1,
    tol: float = 1e-3,
    **options: Any,
) -> bool:
    """Check with an exact SVD that every gate block of ``W`` satisfies constraint ``kind``.

    Args:
        W: matrix ``(blocks*H, H)``.
        kind: a name in :data:`CONSTRAINTS`.
        blocks: number of gate blocks.
        tol: absolute tolerance on singular values.
        **options: the constraint's options (the bounds: ``gamma``, ``gamma_min``/``gamma_max``,
            ``r``); omitted ones take the constraint's own defaults, options that do not bound
            (``estimator``...) are ignored.

    >>> satisfies(torch.eye(3), "orthogonal")
    True
    >>> satisfies(2 * torch.eye(3), "bound", gamma=1.5)
    False
    """
    check_constraint(kind, options)
    s = torch.linalg.svdvals(as_blocks(W.detach(), blocks).to(compute_dtype(W.dtype)))  # (k, H)
    cls = CONSTRAINTS[kind]
    if cls is None:
        return bool(torch.isfinite(s).all())
    wanted = inspect.signature(cls.holds).parameters
    return cls.holds(s, tol, **{k: v for k, v in options.items() if k in wanted})
