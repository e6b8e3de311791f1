"""Convolutions: their operator norm, and ``spectral``, ``scaled`` and ``bound`` as caps on it.

* :mod:`~seqnorm.constraints.conv.geometry`: a ``Conv1d/2d/3d`` reduced to what its operator
  norm depends on (:class:`ConvGeometry`, a stride-1 kernel);
* :mod:`~seqnorm.constraints.conv.operator_norm`: certified upper bounds on the operator norm
  from the kernel's Fourier symbol (:func:`conv_operator_norm`);
* :mod:`~seqnorm.constraints.conv.power`: the operator norm at one input size by power
  iteration (:func:`conv_power_norm`), a lower bound for measuring how tight those are;
* :mod:`~seqnorm.constraints.conv.caps`: the constraints, a cap on that norm
  (:class:`ConvSpectral`, :class:`ConvScaled`, :class:`ConvBound` over :class:`ConvNorm`),
  which :func:`~seqnorm.constraints.registry.constrain` registers by name.
"""

from .caps import CONV_NORMS, ConvBound, ConvNorm, ConvScaled, ConvSpectral
from .geometry import CONV_TYPES, ConvGeometry, spatial_dims, spatial_shape
from .operator_norm import conv_operator_norm, reshaped_kernel_norm
from .power import conv_power_norm

__all__ = [
    "CONV_NORMS",
    "CONV_TYPES",
    "ConvBound",
    "ConvGeometry",
    "ConvNorm",
    "ConvScaled",
    "ConvSpectral",
    "conv_operator_norm",
    "conv_power_norm",
    "reshaped_kernel_norm",
    "spatial_dims",
    "spatial_shape",
]
