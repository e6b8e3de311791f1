"""Singular values, stable rank and Lipschitz bound of the recurrent matrices of a layer."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrize import cached

from ..layers import DiagonalRecurrentLayer
from ..linalg import compute_dtype, stable_rank
from .common import check_layer, preserved_buffers

__all__ = ["block_sigma_max", "weight_spectrum"]


def block_sigma_max(layer: nn.Module) -> Tensor:
    """Exact largest singular value of every gate block of every unit, differentiable.

    The matrices are the constrained recurrent maps (:meth:`recurrent_maps`: the gate
    blocks of ``weight_hh``, or ``W_hh^g @ W_hr`` with ``proj_size``), read in eval mode:
    reading them neither advances a ``power`` estimator in training mode nor counts towards
    an ``orthogonal`` re-base, so a logger or a penalty does not change the training
    trajectory (nor the buffers of one DDP rank only). Each module's mode is restored after,
    also on an error. Its gradient is ``u v^T`` per block (``spectral_penalty``).

    Args:
        layer: a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.

    Returns:
        ``(units, gates)``, float32 or higher, in ``layer.unit_names`` order and torch's gate
        order.

    >>> from seqnorm import SpectralGRU
    >>> block_sigma_max(SpectralGRU(2, 4, num_layers=2, constraint="bound")).shape
    torch.Size([2, 3])
    """
    layer = check_layer(layer)
    modes = [(m, m.training) for m in layer.modules()]
    try:
        layer.eval()
        maps = layer.recurrent_maps()  # (U, G, H, H)
    finally:
        for m, mode in modes:
            m.training = mode
    return torch.linalg.matrix_norm(maps.to(compute_dtype(maps.dtype)), ord=2)  # (U, G)


def weight_spectrum(layer: nn.Module) -> dict[str, Tensor]:
    """Singular values of every gate block of every ``weight_hh_l{k}`` (constrained values).

    One row per unit: stacked layer and direction (``l0``, ``l0_reverse``, ``l1``, ...:
    ``layer.unit_names``). With ``proj_size`` a gate's matrix is its recurrent map
    ``W_hh^g @ W_hr`` (``H x H``, rank ``<= proj_size``), which the constraint acts on.

    Args:
        layer: a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.

    Returns:
        A dict of detached tensors (float32, or float64 for a float64 layer):

        * ``singular_values``: ``(units, gates, H)``, descending, from
          :func:`torch.linalg.svdvals`; ``units = num_layers * num_directions``;
        * ``sigma_max``: ``(units, gates)``;
        * ``stable_rank``: ``(units, gates)``, ``||W||_F^2 / ||W||_2^2``;
        * ``lipschitz_bound``: ``()``, ``prod_k max_g sigma_max[k, g]`` (the max also over
          the two directions of a bidirectional layer). For an Elman RNN
          with a 1-Lipschitz nonlinearity each factor bounds the one-step Jacobian
          ``||dh_k[t]/dh_k[t-1]||_2`` of layer ``k`` (so ``||dh[T-1]/dh[t]|| <=
          bound**(T-1-t)`` for one layer), and the product bounds the gain of one step
          through the recurrent matrices of all layers composed. For a GRU/LSTM it bounds
          only the linear part (each gate's pre-activation), not the gated cell's Jacobian.

    Gate order is torch's: ``r, z, n`` (GRU), ``i, f, g, o`` (LSTM).

    A layer of diagonal recurrences (``LRU``, ``LRUStack``: a
    :class:`~seqnorm.layers.DiagonalRecurrentLayer`) has one "gate", ``lambda``, per unit: its
    singular values are the moduli ``|lambda|`` (a diagonal matrix is normal), from the
    layer's :meth:`~seqnorm.layers.DiagonalRecurrentLayer.recurrent_eigenvalues`, and the dict
    also holds ``phases`` ``(units, 1, P)``: ``arg lambda`` in ``[0, 2 pi)``, in the order of
    the moduli.

    >>> from seqnorm import SpectralRNN
    >>> spec = weight_spectrum(SpectralRNN(2, 4, constraint="spectral"))
    >>> tuple(spec["singular_values"].shape), round(float(spec["lipschitz_bound"]), 4)
    ((1, 1, 4), 1.0)
    """
    if isinstance(layer, DiagonalRecurrentLayer):
        return _diagonal_spectrum(layer)
    layer = check_layer(layer)
    with preserved_buffers(layer), torch.no_grad(), cached():
        maps = layer.recurrent_maps().detach()  # (U, G, H, H)
    maps = maps.to(compute_dtype(maps.dtype))
    s = torch.linalg.svdvals(maps)  # (U, G, H)
    ranks = torch.stack([stable_rank(m.flatten(0, 1), blocks=m.shape[0]) for m in maps])  # (U, G)
    smax = s[..., 0]  # (U, G)
    D = layer.num_directions
    per_layer = smax.amax(dim=-1).reshape(-1, D).amax(dim=-1)  # (L,) max over gates, directions
    return {
        "singular_values": s,
        "sigma_max": smax,
        "stable_rank": ranks.to(s.dtype),
        "lipschitz_bound": per_layer.prod(),
    }


def _diagonal_spectrum(layer: DiagonalRecurrentLayer) -> dict[str, Tensor]:
    """:func:`weight_spectrum` of diagonal recurrences, from their eigenvalues."""
    with preserved_buffers(layer), torch.no_grad(), cached():
        lam = layer.recurrent_eigenvalues().detach()  # (U, P) complex
    modulus = lam.abs()  # (U, P)
    modulus, order = modulus.sort(dim=-1, descending=True)
    phases = torch.remainder(lam.angle(), 2 * math.pi).gather(-1, order)  # (U, P) in [0, 2 pi)
    smax = modulus[:, :1]  # (U, 1)
    ranks = (modulus.square().sum(-1, keepdim=True) / smax.square()).nan_to_num(0.0)  # (U, 1)
    return {
        "singular_values": modulus[:, None, :],
        "sigma_max": smax,
        "stable_rank": ranks,
        "lipschitz_bound": smax[:, 0].prod(),
        "phases": phases[:, None, :],
    }
