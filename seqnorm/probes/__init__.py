"""Gradient-flow probes: pure functions over a model (or a layer) and a batch.

Time steps are 0-based everywhere: ``h[t]``, ``t = 0 .. T-1``, is the hidden state after
reading ``x[t]``; column ``t`` of :func:`hidden_grad_norms` belongs to ``h[t]``.

* :func:`hidden_grad_norms` -- ``||dL/dh[t]||`` for every ``t`` and every recurrent layer,
  from one backward pass over the states recorded by the unrolled path of the layers.
* :func:`decay_rate`, :func:`grad_ratio`, :func:`summarize` -- one number per curve, over
  the steps whose norm is within float range (:func:`below_range`, :func:`log10_floor`:
  zero, flushed or subnormal norms carry no slope).
* :func:`jacobian_norms` -- ``||dh[T-1]/dh[t]||_2`` by power iteration (any cell) or in
  closed form (Elman RNN).
* :func:`block_sigma_max` -- the exact, differentiable sigma_max of every gate block.
* :func:`weight_spectrum` -- singular values, stable rank and a Lipschitz bound of every
  gate block of every ``weight_hh_l{k}``.
* :func:`lipschitz_bound`, :func:`lipschitz_factors` -- a certified bound on the Lipschitz
  constant of a feed-forward network (Linear, Conv, activations, pools, eval BatchNorm) as
  the product of its layers' constants (:func:`layer_lipschitz`); :func:`local_lipschitz` --
  ``max_i ||J_f(x_i)||_2``.

"Pure" means: no ``.grad`` is written (gradients come from :func:`torch.autograd.grad`),
buffers that a forward pass in training mode would update (the power-iteration vectors of
the constraints, batch-norm statistics) are restored, the probes draw nothing from the
global RNG, and the train/eval mode is left as the caller set it (the caller decides: eval
mode gives a deterministic probe; in training mode the model's own dropout still draws).
"""

from .curves import (
    MAX_FIT_POINTS,
    below_range,
    decay_rate,
    grad_ratio,
    log10_floor,
    log10_norms,
    summarize,
)
from .gradients import hidden_grad_norms
from .jacobian import jacobian_norms
from .layer_lipschitz import GELU_LIPSCHITZ, layer_lipschitz
from .lipschitz import lipschitz_bound, lipschitz_factors, local_lipschitz
from .recording import StateRecording, find_layers, record_hidden_states
from .spectrum import block_sigma_max, weight_spectrum

__all__ = [
    "GELU_LIPSCHITZ",
    "MAX_FIT_POINTS",
    "StateRecording",
    "below_range",
    "block_sigma_max",
    "decay_rate",
    "find_layers",
    "grad_ratio",
    "hidden_grad_norms",
    "jacobian_norms",
    "layer_lipschitz",
    "lipschitz_bound",
    "lipschitz_factors",
    "local_lipschitz",
    "log10_floor",
    "log10_norms",
    "record_hidden_states",
    "summarize",
    "weight_spectrum",
]
