"""The LRU's diagonal scan in parallel torch ops, for where the native CPU kernel does not run.

``h_t = lambda * h_{t-1} + u_t`` (elementwise, complex) is an associative scan. Here it runs in
chunks of ``C`` steps: inside a chunk every state is a sum over the chunk's inputs weighted by
powers of ``lambda``,

    h_{c, t} = sum_{s <= t} lambda^(t - s) u_{c, s}  +  lambda^(t + 1) h_{c - 1, C - 1}

one batched matrix product over all chunks at once (a lower-triangular ``C x C`` Toeplitz
matrix per state entry), then one short loop over the ``T / C`` chunks carries the state
across. That is ``T / C`` steps of Python instead of ``T``, at ``C`` times the arithmetic of
the plain loop, which a GPU does in parallel: the LRU's training step on a GPU is then a few
kernels per chunk rather than per step. Only powers ``lambda^k`` with ``k >= 0`` appear
(``|lambda| < 1``: they decay, never overflow), built by a cumulative product, so a ``lambda``
of 0 is fine too. Plain autograd ops: gradients and double backward come with them.

Equal-length sequences only (every step holds all ``B`` rows); packed sequences of different
lengths take :func:`seqnorm.native.lru.reference`'s step loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CHUNK", "chunked_scan"]

#: Steps per chunk: the Toeplitz products cost ``C`` times the plain loop's arithmetic and
#: the carry loop ``T / C`` Python steps.
CHUNK = 64


def chunked_scan(
    u: Tensor, lam: Tensor, h0: Tensor, steps: int, chunk: int = CHUNK
) -> tuple[Tensor, Tensor]:
    """The scan of :func:`seqnorm.native.lru.reference` over equal-length sequences.

    Args:
        u: ``(T * B, 2P)`` real planes ``[re | im]``, time-major (step ``t``'s ``B`` rows
            follow step ``t - 1``'s).
        lam: ``(2P,)`` planes of ``lambda``.
        h0: ``(B, 2P)`` planes of the initial state.
        steps: ``T``.
        chunk: steps per chunk (positive).

    Returns:
        ``(out, h_n)``: every step's state ``(T * B, 2P)`` like ``u``, and the last ``(B, 2P)``.

    >>> lam = torch.tensor([0.5, 0.0])        # P = 1: lambda = 0.5
    >>> u = torch.tensor([[1.0, 0.0]] * 3)   # T = 3, B = 1, u_t = 1
    >>> chunked_scan(u, lam, torch.zeros(1, 2), 3, chunk=2)[0][:, 0]
    tensor([1.0000, 1.5000, 1.7500])
    """
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    P, B = lam.shape[0] // 2, h0.shape[0]
    T = steps
    if T == 0:
        return u.new_zeros(0, 2 * P), h0
    uc = torch.complex(u[:, :P], u[:, P:]).reshape(T, B, P)  # (T, B, P)
    lc = torch.complex(lam[:P], lam[P:])  # (P,)
    C = min(chunk, T)
    n = -(-T // C)  # chunks
    if n * C > T:  # zero inputs after the end: they change no state up to step T - 1
        uc = torch.cat([uc, uc.new_zeros(n * C - T, B, P)])
    powers = torch.cumprod(lc.expand(C, P), dim=0)  # (C, P): lambda^1 .. lambda^C
    powers0 = torch.cat([torch.ones_like(lc)[None], powers])  # (C + 1, P): lambda^0 .. ^C
    t = torch.arange(C, device=u.device)
    lag = t[:, None] - t[None, :]  # (C, C): t - s
    toeplitz = powers0[lag.clamp(min=0)] * (lag >= 0)[..., None]  # (C, C, P)
    local = torch.einsum("tsp,nsbp->ntbp", toeplitz, uc.reshape(n, C, B, P))  # (n, C, B, P)
    state = torch.complex(h0[:, :P], h0[:, P:])  # (B, P)
    chunks = []
    for block in local.unbind(0):  # (C, B, P) each
        h = block + powers[:, None, :] * state  # (C, B, P)
        chunks.append(h)
        state = h[-1]  # (B, P)
    h = torch.cat(chunks)[:T]  # (T, B, P)
    out = torch.cat([h.real, h.imag], dim=-1).reshape(T * B, 2 * P)  # (T * B, 2P)
    last = h[-1]  # (B, P): step T - 1, not the padded end
    return out, torch.cat([last.real, last.imag], dim=-1)
