"""Singular values, stable rank and Lipschitz bound of the recurrent matrices of a layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..linalg import as_blocks, compute_dtype, stable_rank
from .common import check_layer, preserved_buffers

__all__ = ["weight_spectrum"]


def weight_spectrum(layer: nn.Module) -> dict[str, Tensor]:
    """Singular values of every gate block of every ``weight_hh_l{k}`` (constrained values).

    Args:
        layer: a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.

    Returns:
        A dict of detached tensors (float32, or float64 for a float64 layer):

        * ``singular_values``: ``(num_layers, gates, H)``, descending, from
          :func:`torch.linalg.svdvals`;
        * ``sigma_max``: ``(num_layers, gates)``;
        * ``stable_rank``: ``(num_layers, gates)``, ``||W||_F^2 / ||W||_2^2``;
        * ``lipschitz_bound``: ``()``, ``prod_k max_g sigma_max[k, g]``. For an Elman RNN
          with a 1-Lipschitz nonlinearity each factor bounds the one-step Jacobian
          ``||dh_k[t]/dh_k[t-1]||_2`` of layer ``k`` (so ``||dh[T-1]/dh[t]|| <=
          bound**(T-1-t)`` for one layer), and the product bounds the gain of one step
          through the recurrent matrices of all layers composed. For a GRU/LSTM it bounds
          only the linear part (each gate's pre-activation), not the gated cell's Jacobian.

    Gate order is torch's: ``r, z, n`` (GRU), ``i, f, g, o`` (LSTM).

    >>> from seqnorm import SpectralRNN
    >>> spec = weight_spectrum(SpectralRNN(2, 4, constraint="spectral"))
    >>> tuple(spec["singular_values"].shape), round(float(spec["lipschitz_bound"]), 4)
    ((1, 1, 4), 1.0)
    """
    layer = check_layer(layer)
    G = layer.gates
    svs, ranks = [], []
    with preserved_buffers(layer), torch.no_grad():
        for k in range(layer.num_layers):
            W = getattr(layer, f"weight_hh_l{k}").detach()  # (G*H, H)
            svs.append(torch.linalg.svdvals(as_blocks(W, G).to(compute_dtype(W.dtype))))  # (G, H)
            ranks.append(stable_rank(W, blocks=G).to(svs[-1].dtype))  # (G,)
    s = torch.stack(svs)  # (L, G, H)
    smax = s[..., 0]  # (L, G)
    return {
        "singular_values": s,
        "sigma_max": smax,
        "stable_rank": torch.stack(ranks),
        "lipschitz_bound": smax.amax(dim=-1).prod(),
    }
