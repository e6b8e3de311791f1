"""Constraints by name: the registry, their options, :func:`constrain` and :func:`satisfies`.

A constraint's name is checked in one place (the lookup behind :func:`check_constraint`,
:func:`constraint_options`, :func:`conv_constraint_options` and :func:`constrain`), against
:data:`CONSTRAINTS`, and for a convolution against :data:`CONV_CONSTRAINTS`. A constraint's
options and their defaults are the keyword-only parameters of its class's constructor
(:func:`~seqnorm.constraints.cap.options_of`); nothing here repeats them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..linalg import check_int
from .band import Band
from .bound import Bound
from .cap import Cap, Constraint, check_options, options_of
from .conv import CONV_TYPES, ConvBound, ConvGeometry, ConvScaled, ConvSpectral
from .gates import GateSubset
from .orthogonal import Orthogonal
from .scaled import Scaled
from .semiorthogonal import SemiOrthogonal
from .spectral import Spectral

__all__ = [
    "CONSTRAINTS",
    "CONV_CONSTRAINTS",
    "check_constraint",
    "constrain",
    "constrained_tensors",
    "constraint_options",
    "conv_constraint_options",
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


#: What a convolution takes: caps on its operator norm (:mod:`seqnorm.constraints.conv`).
CONV_CONSTRAINTS: dict[str, type[nn.Module]] = {
    "spectral": ConvSpectral,
    "scaled": ConvScaled,
    "bound": ConvBound,
}


def _class_of(kind: str, conv: str | None = None) -> type[nn.Module] | None:
    """The class behind constraint name ``kind`` (``None`` for ``"none"``): where a name is
    checked. ``conv``: the convolution it is for (its type name), which takes only
    :data:`CONV_CONSTRAINTS`."""
    if not isinstance(kind, str) or kind not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {sorted(CONSTRAINTS)}, got {kind!r}")
    if conv is None or kind == "none":
        return CONSTRAINTS[kind]
    if kind not in CONV_CONSTRAINTS:
        raise ValueError(
            f"constraint {kind!r} does not apply to {conv} (its operator norm is not a matrix's "
            f"singular values); a convolution takes {sorted(CONV_CONSTRAINTS)}"
        )
    return CONV_CONSTRAINTS[kind]


def constraint_options(kind: str) -> dict[str, Any]:
    """The options of constraint ``kind`` and their defaults, read off its signature.

    >>> constraint_options("bound")
    {'gamma': 1.0, 'estimator': 'exact', 'n_power_iterations': 1, 'eps': 1e-12}
    """
    cls = _class_of(kind)
    return {} if cls is None else options_of(cls)


def conv_constraint_options(kind: str) -> dict[str, Any]:
    """The options of constraint ``kind`` on a convolution and their defaults (its signature).

    >>> conv_constraint_options("bound")
    {'gamma': 1.0, 'norm': 'operator', 'input_shape': None, 'slack': 0.01, 'eps': 1e-12}
    """
    cls = _class_of(kind, "a convolution")
    return {} if cls is None else options_of(cls)


def check_constraint(kind: str, options: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` if ``kind`` is unknown or ``options`` are not its options."""
    cls = _class_of(kind)
    if options:
        if cls is None:
            raise ValueError(f"unknown option(s) {sorted(options)} for constraint {kind!r}; "
                             f"allowed: none")  # fmt: skip
        check_options(cls, kind, options)


def constrain(
    module: nn.Module,
    name: str = "weight",
    constraint: str = "spectral",
    *,
    blocks: int = 1,
    gates: Sequence[int] | None = None,
    **options: Any,
) -> nn.Module:
    """Constrain ``module.<name>`` per gate block with the parametrization ``constraint``.

    Shapes:

    * a 2-D parameter (``nn.Linear``, a recurrent matrix, any module's matrix):
      ``spectral``, ``scaled`` and ``bound`` cap the largest singular value of each block,
      square or not (``(out, in)`` for a Linear); ``band`` needs square blocks;
      ``orthogonal`` needs square blocks, or a non-square matrix with ``blocks=1``
      (orthonormal rows or columns, :class:`~seqnorm.constraints.semiorthogonal.SemiOrthogonal`).
    * the kernel of a ``Conv1d/2d/3d``: ``spectral``, ``scaled`` and ``bound`` cap the
      convolution's *operator norm* (:mod:`seqnorm.constraints.conv`); their options are
      ``norm``, ``input_shape``, ``slack``, ``eps`` and the caps
      (:func:`conv_constraint_options`).

    Args:
        module: any module holding a 2-D parameter ``name``, or a ``Conv1d/2d/3d``.
        name: the parameter to constrain.
        constraint: ``none``, ``spectral`` (default), ``scaled``, ``bound``, ``band`` or
            ``orthogonal``: the same names as the layers' ``constraint=``.
        blocks: how many gate blocks are stacked in the rows (1 for a convolution).
        gates: indices of the blocks to constrain (``None``: all); the others stay free
            (see :class:`~seqnorm.constraints.gates.GateSubset`).
        **options: options of the constraint (see :func:`constraint_options` and the
            classes): ``estimator``, ``n_power_iterations``, ``eps``, ``gamma_min``,
            ``gamma_max``, ``gamma``, ``r``, ``map``, ``rebase_every``.

    Returns:
        ``module`` itself, now parametrized (``constraint="none"`` leaves it untouched).
        Assigning a plain weight, ``setattr(module, name, W)``, goes through the
        constraint's ``right_inverse`` for every kind.

    Raises:
        ValueError: unknown constraint or option, bad option value, blocks not dividing the
            rows, non-square blocks.

    >>> lin = constrain(nn.Linear(4, 4, bias=False), constraint="spectral")
    >>> round(torch.linalg.matrix_norm(lin.weight, 2).item(), 4)
    1.0
    """
    kind = constraint
    what = type(module).__name__
    if isinstance(module, CONV_TYPES):
        if blocks != 1 or gates is not None:
            raise ValueError(f"blocks and gates do not apply to {what}, got blocks={blocks!r}, "
                             f"gates={gates!r}")  # fmt: skip
        return _constrain_conv(module, name, kind, options)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        raise ValueError(f"constraint {kind!r}: {what} is not supported (Conv1d/2d/3d are)")
    check_constraint(kind, options)
    check_int("blocks", blocks, minimum=1, expected="a positive int")
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
    if rows // blocks != cols and not issubclass(cls, Cap):  # one non-square matrix
        if kind != "orthogonal":
            raise ValueError(
                f"constraint {kind!r} needs a square matrix; {what}.{name} has shape "
                f"{tuple(W.shape)} (spectral, scaled, bound and orthogonal take any shape)"
            )
        cls = SemiOrthogonal
    chosen = tuple(range(blocks)) if gates is None else tuple(sorted(set(gates)))
    if not chosen or not all(isinstance(g, int) and 0 <= g < blocks for g in chosen):
        raise ValueError(f"gates must be block indices in range({blocks}), got {gates!r}")
    # Registration runs the constraint's right_inverse on W (caps converge their estimator).
    # In W's dtype: a constraint's own parameters (scaled's gamma_raw) follow the weight's.
    like = {"device": W.device, "dtype": W.dtype}
    if len(chosen) == blocks:
        param: nn.Module = cls(W.shape, blocks, **options).to(**like)
    else:
        inner = cls((len(chosen) * cols, cols), len(chosen), **options).to(**like)
        param = GateSubset(inner, blocks, chosen)
    parametrize.register_parametrization(module, name, param)
    return module


def _constrain_conv(conv: nn.Module, name: str, kind: str, options: dict[str, Any]) -> nn.Module:
    """Register constraint ``kind`` (a cap on the operator norm) on the kernel of ``conv``.

    Raises:
        ValueError: ``name`` is not ``"weight"``, ``kind`` does not apply to a convolution,
            unknown options, or a geometry without a bound (e.g. reflect padding).
    """
    geometry = ConvGeometry.of(conv)
    what = type(conv).__name__
    if name != "weight":
        raise ValueError(f"only the kernel 'weight' of a {what} can be constrained, got {name!r}")
    cls = _class_of(kind, what)
    if cls is None:
        return conv
    check_options(cls, kind, options, f" on {what}")
    W = conv.weight
    param = cls(geometry, **options).to(device=W.device)
    try:
        param.check(W)
    except ValueError as err:
        raise ValueError(f"constraint {kind!r} on {what}: {err}") from None
    parametrize.register_parametrization(conv, name, param)
    return conv


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

    Builds the constraint with ``options`` and asks its :meth:`~Constraint.holds`.

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
    cls = CONSTRAINTS[kind]
    if cls is None:
        return bool(torch.isfinite(W).all())
    rows, cols = W.shape
    if kind == "orthogonal" and rows // blocks != cols:
        cls = SemiOrthogonal
    return cls(W.shape, blocks, **options).holds(W, tol)


def constrained_tensors(module: nn.Module) -> list[nn.Parameter]:
    """The parameters behind every constrained tensor of ``module`` itself (not its children).

    Asks each parametrization: every stored tensor (``original``, ``original0..n``) except
    those a seqnorm constraint leaves free (:attr:`Constraint.free_inputs`, e.g. the free
    gate blocks of :class:`GateSubset`), and the parametrizations' own parameters
    (``scaled``'s ``gamma_raw``). A parametrization that is not a seqnorm constraint owns all
    its stored tensors. Registration order, no repeats.

    Args:
        module: any module.
    """
    found: dict[int, nn.Parameter] = {}
    if not parametrize.is_parametrized(module):
        return []
    for plist in module.parametrizations.values():
        stored = [plist.original] if hasattr(plist, "original") else [
            getattr(plist, f"original{i}") for i in range(plist.ntensors)
        ]  # fmt: skip
        first = plist[0]  # the parametrization that reads the stored tensors
        free = set(first.free_inputs) if isinstance(first, Constraint) else set()
        for i, t in enumerate(stored):
            if i not in free and isinstance(t, nn.Parameter):
                found.setdefault(id(t), t)
        for p in plist:
            for t in p.parameters():
                found.setdefault(id(t), t)
    return list(found.values())
