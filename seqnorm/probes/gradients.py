"""``||dL/dh[t]||`` for every time step of every recurrent layer: one backward pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..linalg import compute_dtype
from .common import preserved_buffers
from .recording import record_hidden_states

__all__ = ["hidden_grad_norms"]


def hidden_grad_norms(
    model: nn.Module,
    batch: Sequence[Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``||dL/dh[t]||`` for every time step of every recurrent layer in ``model``.

    ``L = loss_fn(model(inputs), targets)``. The gradient is the total derivative of ``L``
    with respect to the hidden state ``h[t]`` (every path through it: later steps, the
    layer above, the readout), taken for all ``t`` at once by one
    :func:`torch.autograd.grad` over the recorded states. Per sample it is the L2 norm over
    hidden units; the result is its mean over the batch (with a batch-mean loss each
    sample's gradient carries a factor ``1/B``). For an LSTM, ``h`` is the output state.
    A bidirectional layer gives a row per direction: the reverse direction's ``h[t]`` is its
    state after reading ``x[t]`` (its gradient flows from ``t`` towards ``0``). With packed
    input the mean at step ``t`` is over the sequences still running there.

    Args:
        model: any module containing seqnorm layers, each called once by ``model(inputs)``.
        batch: ``(inputs, targets)``.
        loss_fn: ``loss_fn(model(inputs), targets)`` returns the scalar loss.

    Returns:
        ``(rows, T)``, detached, float32 (float64 for a float64 model): one row per stacked
        layer and direction of every seqnorm layer (``l0``, ``l0_reverse``, ``l1``, ...:
        ``h_n``'s order), in module order.

    Raises:
        ValueError: if ``model`` has no seqnorm layer, ``batch`` is not a pair, the loss is
            not a scalar, or the layers' sequence lengths differ.
    """
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"batch must be a pair (inputs, targets), got {type(batch).__name__}")
    inputs, targets = batch
    with preserved_buffers(model), torch.enable_grad(), record_hidden_states(model) as rec:
        loss = loss_fn(model(inputs), targets)
        rows = rec.states()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r:.80}")
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"all probed layers must see the same sequence length, got {lengths}")
    flat = [h for row in rows for h in row]
    if not loss.requires_grad or not all(h.requires_grad for h in flat):
        raise RuntimeError(
            "the loss and hidden states must require grad: are all parameters frozen, or is "
            "the call inside torch.inference_mode()?"
        )
    grads = torch.autograd.grad(loss, flat, allow_unused=True, materialize_grads=True)
    # The norm is taken in float64: in float32 the squares of entries below ~1e-19 flush to
    # zero, so a vanishing curve would fall off a cliff long before float32 itself underflows.
    if len({gr.shape for gr in grads}) == 1:
        norms = torch.stack([gr.double() for gr in grads]).norm(dim=-1).mean(dim=-1)  # (rows*T,)
    else:  # packed input: batch_sizes[t] sequences at step t
        norms = torch.stack([gr.double().norm(dim=-1).mean() for gr in grads])  # (rows*T,)
    dt = compute_dtype(flat[0].dtype)
    return norms.reshape(len(rows), -1).to(dt).detach()  # (rows, T)
