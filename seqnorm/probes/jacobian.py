"""Spectral norm of the Jacobian of the last hidden state with respect to earlier ones."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers import RecurrentLayer
from ..linalg import check_int
from .common import check_layer, jacobian_sigma_max, preserved_buffers
from .recording import record_hidden_states

__all__ = ["jacobian_norms"]


def _single_sequence(layer: RecurrentLayer, x: Tensor) -> Tensor:
    """``x`` as one unbatched sequence ``(T, I)``: batch element 0 of a batched input."""
    if not isinstance(x, Tensor) or x.dim() not in (2, 3):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor (T, input_size) or batched (3-D), got {shape}")
    if x.dim() == 3:
        x = x[0] if layer.batch_first else x[:, 0]
    return x.detach()


def _steps(steps: Sequence[int] | None, T: int) -> list[int]:
    if steps is None:
        return sorted({round(i * (T - 1) / 4) for i in range(5)})
    out = []
    for s in steps:
        if not isinstance(s, int) or isinstance(s, bool) or not -T <= s < T:
            raise ValueError(f"steps must be ints in [-{T}, {T}) (T={T}), got {list(steps)}")
        out.append(s % T)
    if not out:
        raise ValueError("steps must not be empty")
    return out


def jacobian_norms(
    layer: nn.Module,
    x: Tensor,
    steps: Sequence[int] | None = None,
    n_iterations: int = 20,
    method: str = "auto",
    layer_index: int = -1,
) -> Tensor:
    """Spectral norm ``||dh[T-1]/dh[t]||_2`` of the Jacobian of the last hidden state.

    The derivative is the partial one along the layer's own recurrence (the layers below
    do not depend on ``h[t]``; for an LSTM the cell state ``c[t]`` is held fixed). It is
    computed for one sequence: ``x`` unbatched ``(T, I)``, or batch element 0 of a batched
    ``x`` (respecting ``batch_first``).

    Methods:

    * ``"power"``: power iteration on ``J^T J`` with vector-Jacobian products from
      :func:`torch.autograd.grad` and Jacobian-vector products by the double-backward
      trick, for every cell. All requested steps are run at once as a batch of copies of
      the sequence. Converges from below; the error shrinks like ``(s2/s1)**(2 n)``.
    * ``"closed_form"``: Elman RNN only, the exact product
      ``prod_s diag(f'(a[s])) W_hh`` (``f' = 1 - h**2`` for tanh, ``h > 0`` for relu) and its
      matrix 2-norm.
    * ``"auto"``: ``closed_form`` for an Elman RNN, ``power`` otherwise.

    Args:
        layer: a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.
        x: input sequence ``(T, input_size)``, or a batch whose element 0 is used.
        steps: 0-based time steps ``t`` (negative counts from the end); by default five
            spread over the sequence, ``0 .. T-1`` (``t = T-1`` gives 1, the identity).
        n_iterations: power iterations (``power`` only).
        method: ``auto``, ``power`` or ``closed_form``.
        layer_index: which stacked layer ``k`` (default: the last); of a bidirectional
            layer, its forward direction.

    Returns:
        ``(len(steps),)``, detached, in the order of ``steps``.
    """
    layer = check_layer(layer)
    if method not in ("auto", "power", "closed_form"):
        raise ValueError(f"method must be 'auto', 'power' or 'closed_form', got {method!r}")
    elman = layer.mode in ("rnn_tanh", "rnn_relu")
    if method == "closed_form" and not elman:
        raise ValueError(f"method='closed_form' needs an Elman RNN (SpectralRNN), got {layer.mode}")
    check_int("n_iterations", n_iterations, minimum=1)
    L = layer.num_layers
    check_int("layer_index", layer_index, -L, L)
    k = layer_index % L
    seq = _single_sequence(layer, x)  # (T, I)
    idx = _steps(steps, seq.shape[0])
    if method == "power" or not elman:
        return _jacobian_power(layer, seq, idx, n_iterations, k)
    return _jacobian_closed_form(layer, seq, idx, k)


def _jacobian_closed_form(layer: RecurrentLayer, seq: Tensor, idx: list[int], k: int) -> Tensor:
    with preserved_buffers(layer), torch.no_grad(), record_hidden_states(layer) as rec:
        layer(seq)
        hs = torch.stack(rec.states()[k * layer.num_directions]).squeeze(1)  # (T, H)
        W = getattr(layer, f"weight_hh_l{k}").detach()  # (H, H)
    T = hs.shape[0]
    dphi = 1 - hs**2 if layer.mode == "rnn_tanh" else (hs > 0).to(hs.dtype)  # (T, H)
    P = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)  # dh[T-1]/dh[T-1]
    norms = {T - 1: P.new_ones(())}
    for s in range(T - 1, min(idx), -1):
        P = P @ (dphi[s, :, None] * W)  # dh[T-1]/dh[s-1] = P_s diag(f'(a[s])) W
        if s - 1 in idx:
            norms[s - 1] = torch.linalg.matrix_norm(P, 2)
    return torch.stack([norms[i] for i in idx])


def _jacobian_power(
    layer: RecurrentLayer, seq: Tensor, idx: list[int], n_iterations: int, k: int
) -> Tensor:
    S = len(idx)
    xs = seq.unsqueeze(0 if layer.batch_first else 1).expand(*(
        (S, -1, -1) if layer.batch_first else (-1, S, -1)))  # fmt: skip
    with preserved_buffers(layer), torch.enable_grad(), record_hidden_states(layer) as rec:
        # Make the graph exist even when every parameter is frozen.
        layer(xs.clone().requires_grad_(True))
        hs = rec.states()[k * layer.num_directions]  # T x (S, H), forward direction
        h_last = hs[-1]
        wanted = sorted(set(idx))
        inputs = [hs[i] for i in wanted]
        pos = [wanted.index(i) for i in idx]
        rows = torch.arange(S, device=h_last.device)

        def vjp(u: Tensor, create_graph: bool) -> Tensor:
            """Row b: u[b]^T dh[T-1]/dh[idx[b]] of copy b (copies are independent)."""
            g = torch.autograd.grad(h_last, inputs, u, retain_graph=True,
                                    create_graph=create_graph, allow_unused=True,
                                    materialize_grads=True)  # fmt: skip
            return torch.stack([g[p] for p in pos])[rows, rows]  # (S, H)

        gen = torch.Generator(device=h_last.device).manual_seed(0)
        v = torch.randn(h_last.shape, generator=gen, device=h_last.device, dtype=h_last.dtype)
        v = v / v.norm(dim=-1, keepdim=True)
        return jacobian_sigma_max(vjp, h_last, v, n_iterations)
