"""Spectral constraints as ``torch.nn.utils.parametrize`` parametrizations.

Each constraint is an ``nn.Module`` whose ``forward`` maps the stored (unconstrained)
matrix to the constrained one. They act on every ``H x H`` gate block of a stacked
recurrent matrix (1 block for an RNN, 3 for a GRU, 4 for an LSTM), batched over blocks.

Apply one by name with :func:`constrain`; read ``module.weight`` to get the constrained
matrix. Inside ``with seqnorm.cached():`` the constrained matrix is computed once and reused,
which is what a per-time-step loop over a cell should do.

| kind | per gate block |
|---|---|
| ``none`` | nothing |
| ``spectral`` | ``W / sigma(W)``: largest singular value 1 |
| ``scaled`` | ``gamma * W / sigma(W)``, learnable ``gamma`` in ``[gamma_min, gamma_max]`` |
| ``bound`` | ``W / max(1, sigma(W) / gamma)``: shrinks only when ``sigma > gamma`` |
| ``band`` | ``U diag(s) V^T`` with orthogonal ``U, V`` and ``s`` in ``[1 - r, 1 + r]`` |
| ``orthogonal`` | ``base @ map(A - A^T)``, map exp or Cayley: all singular values 1 |

``sigma`` is exact at every call by default (``estimator="exact"``), so the caps hold at
every forward, in training and in eval.

Beyond recurrent matrices, :func:`constrain` takes any ``nn.Linear`` (square or not:
``spectral``, ``scaled``, ``bound``; ``orthogonal`` gives orthonormal rows or columns,
:class:`SemiOrthogonal`) and ``Conv1d/2d/3d``, whose ``spectral``, ``scaled`` and ``bound``
cap the convolution's operator norm (:class:`ConvSpectral`, :func:`conv_operator_norm`).
"""

from .band import Band
from .bound import Bound
from .conv import CONV_CONSTRAINTS, ConvBound, ConvNorm, ConvScaled, ConvSpectral
from .conv_geometry import CONV_TYPES, ConvGeometry
from .conv_norm import conv_operator_norm, reshaped_kernel_norm
from .conv_power import conv_power_norm
from .gates import GateSubset
from .norm import ESTIMATORS, SigmaNorm
from .orthogonal import MAPS, Orthogonal
from .registry import (
    CONSTRAINTS,
    check_constraint,
    constrain,
    constraint_options,
    is_constrained,
    satisfies,
)
from .scaled import Scaled
from .semiorthogonal import SemiOrthogonal
from .spectral import Spectral

__all__ = [
    "CONSTRAINTS",
    "CONV_CONSTRAINTS",
    "CONV_TYPES",
    "ESTIMATORS",
    "MAPS",
    "Band",
    "Bound",
    "ConvBound",
    "ConvGeometry",
    "ConvNorm",
    "ConvScaled",
    "ConvSpectral",
    "GateSubset",
    "Orthogonal",
    "Scaled",
    "SemiOrthogonal",
    "SigmaNorm",
    "Spectral",
    "check_constraint",
    "constrain",
    "constraint_options",
    "conv_operator_norm",
    "conv_power_norm",
    "is_constrained",
    "reshaped_kernel_norm",
    "satisfies",
]
