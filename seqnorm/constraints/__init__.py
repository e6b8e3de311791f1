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
:class:`Cap` each (:class:`SpectralCap`, :class:`ScaledCap`, :class:`BoundCap`) over a ``sigma``
source: :class:`SigmaNorm` for matrices, :class:`ConvNorm` for convolutions. Every
constraint is a :class:`Constraint`: ``holds(W)`` checks a matrix against its own options,
``right_inverse`` makes ``setattr(module, name, W)`` load a plain weight, and
:func:`constrained_tensors` asks the parametrizations which tensors they own.

Beyond recurrent matrices, :func:`constrain` takes any ``nn.Linear`` (square or not:
``spectral``, ``scaled``, ``bound``; ``orthogonal`` gives orthonormal rows or columns,
:class:`SemiOrthogonal`) and ``Conv1d/2d/3d``, whose ``spectral``, ``scaled`` and ``bound``
cap the convolution's operator norm (:class:`ConvSpectral`, :func:`conv_operator_norm`).
"""

from .band import Band
from .bound import Bound, BoundCap
from .cap import Cap, Constraint, options_of
from .conv import (
    CONV_TYPES,
    ConvBound,
    ConvGeometry,
    ConvNorm,
    ConvScaled,
    ConvSpectral,
    conv_operator_norm,
    conv_power_norm,
    reshaped_kernel_norm,
    spatial_dims,
)
from .gates import GateSubset
from .norm import ESTIMATORS, SigmaNorm
from .orthogonal import MAPS, Orthogonal, expm_skew
from .registry import (
    CONSTRAINTS,
    CONV_CONSTRAINTS,
    check_constraint,
    constrain,
    constrained_tensors,
    constraint_options,
    is_constrained,
    satisfies,
)
from .scaled import Scaled, ScaledCap
from .semiorthogonal import SemiOrthogonal
from .spectral import Spectral, SpectralCap

__all__ = [
    "CONSTRAINTS",
    "CONV_CONSTRAINTS",
    "CONV_TYPES",
    "ESTIMATORS",
    "MAPS",
    "Band",
    "Bound",
    "BoundCap",
    "Cap",
    "Constraint",
    "ConvBound",
    "ConvGeometry",
    "ConvNorm",
    "ConvScaled",
    "ConvSpectral",
    "GateSubset",
    "Orthogonal",
    "Scaled",
    "ScaledCap",
    "SemiOrthogonal",
    "SigmaNorm",
    "Spectral",
    "SpectralCap",
    "check_constraint",
    "constrain",
    "constrained_tensors",
    "constraint_options",
    "conv_operator_norm",
    "conv_power_norm",
    "expm_skew",
    "is_constrained",
    "options_of",
    "reshaped_kernel_norm",
    "satisfies",
    "spatial_dims",
]
