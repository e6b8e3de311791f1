"""Spectral constraints as ``torch.nn.utils.parametrize`` parametrizations.

Each constraint is an ``nn.Module`` whose ``forward`` maps the stored (unconstrained)
matrix to the constrained one. They act on every ``H x H`` gate block of a stacked
recurrent matrix (1 block for an RNN, 3 for a GRU, 4 for an LSTM), batched over blocks.

Apply one by name with :func:`constrain`; read ``module.weight`` to get the constrained
matrix. Inside ``with seqnorm.cached():`` the constrained matrix is computed once and reused,
which is what a per-time-step loop over a cell should do.

| constraint | per gate block |
|---|---|
| ``none`` | nothing |
| ``spectral`` | ``W / sigma(W)``: largest singular value 1 |
| ``scaled`` | ``gamma * W / sigma(W)``, learnable ``gamma`` in ``[gamma_min, gamma_max]`` |
| ``bound`` | ``W / max(1, sigma(W) / gamma)``: shrinks only when ``sigma > gamma`` |
| ``band`` | ``U diag(s) V^T`` with orthogonal ``U, V`` and ``s`` in ``[1 - r, 1 + r]`` |
| ``orthogonal`` | ``base @ map(A - A^T)``, map exp or Cayley: all singular values 1 |

``sigma`` is exact at every call by default (``estimator="exact"``), so the caps hold at
every forward, in training and in eval. ``spectral``, ``scaled`` and ``bound`` are one
:class:`Cap` each (:class:`Spectral`, :class:`Scaled`, :class:`Bound`) over a ``sigma``
source: :class:`SigmaNorm` for matrices, :class:`ConvNorm` for convolutions. Every
constraint is a :class:`Constraint`: ``holds(W)`` checks a matrix against its own options,
``right_inverse`` makes ``setattr(module, name, W)`` load a plain weight, and
:func:`constrained_tensors` asks the parametrizations which tensors they own.

Beyond recurrent matrices, :func:`constrain` takes any ``nn.Linear`` (square or not:
``spectral``, ``scaled``, ``bound``; ``orthogonal`` gives orthonormal rows or columns,
:class:`SemiOrthogonal`) and ``Conv1d/2d/3d``, whose ``spectral``, ``scaled`` and ``bound``
cap the convolution's operator norm (:class:`ConvSpectral`, :func:`conv_operator_norm`).

Public here: the verbs, the table of names, the bases a new constraint subclasses and the
classes :func:`constrain` registers. The rest (the formulas' halves such as
:class:`~seqnorm.constraints.spectral.SpectralCap`, option tables, helpers) is reached by
its module path, as torch keeps its parametrizations' classes.
"""

from .band import Band
from .bound import Bound
from .cap import Cap, Constraint
from .conv import (
    ConvBound,
    ConvGeometry,
    ConvNorm,
    ConvScaled,
    ConvSpectral,
    conv_operator_norm,
    conv_power_norm,
)
from .gates import GateSubset
from .norm import SigmaNorm
from .orthogonal import Orthogonal
from .registry import (
    CONSTRAINTS,
    check_constraint,
    constrain,
    constrained_tensors,
    constraint_options,
    conv_constraint_options,
    is_constrained,
    satisfies,
)
from .scaled import Scaled
from .semiorthogonal import SemiOrthogonal
from .spectral import Spectral

__all__ = [
    # the verbs
    "check_constraint",
    "constrain",
    "constrained_tensors",
    "constraint_options",
    "conv_constraint_options",
    "conv_operator_norm",
    "conv_power_norm",
    "is_constrained",
    "satisfies",
    # the names, and the classes constrain() registers for them
    "CONSTRAINTS",
    "Band",
    "Bound",
    "ConvBound",
    "ConvScaled",
    "ConvSpectral",
    "GateSubset",
    "Orthogonal",
    "Scaled",
    "SemiOrthogonal",
    "Spectral",
    # the bases a new constraint subclasses, and a convolution's description
    "Cap",
    "Constraint",
    "ConvGeometry",
    "ConvNorm",
    "SigmaNorm",
]
