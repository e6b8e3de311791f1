"""The LRU's chunked parallel scan (the GPU path) against the step-by-step reference."""

from __future__ import annotations

import math

import pytest
import torch

from seqnorm.layers.scan import chunked_scan
from seqnorm.native.lru import reference

F64 = torch.float64


def _lam(P: int, r_max: float = 0.999, zero: bool = False) -> torch.Tensor:
    """Planes of ``P`` eigenvalues inside the unit disc (one exactly 0 when ``zero``)."""
    r = torch.rand(P, dtype=F64) * r_max  # (P,)
    if zero:
        r[0] = 0.0
    phase = torch.rand(P, dtype=F64) * 2 * math.pi  # (P,)
    return torch.cat([r * phase.cos(), r * phase.sin()])  # (2P,)


def _both(T: int, B: int, P: int, chunk: int, **lam_kw):
    lam = _lam(P, **lam_kw).requires_grad_()
    u = torch.randn(T * B, 2 * P, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, 2 * P, dtype=F64, requires_grad=True)
    results = []
    for out, h_n in (chunked_scan(u, lam, h0, T, chunk), reference(u, lam, h0, [B] * T)[:2]):
        loss = (out**2).sum() + (h_n * torch.arange(2 * P, dtype=F64)).sum()
        results.append([out, h_n, *torch.autograd.grad(loss, [u, lam, h0])])
    return results


@pytest.mark.parametrize(
    ("T", "B", "P", "chunk"),
    [(1, 1, 1, 64), (5, 2, 3, 2), (7, 3, 4, 3), (64, 2, 5, 64), (130, 2, 5, 64), (9, 2, 3, 100),
     (300, 3, 4, 16), (1000, 2, 3, 64)],
)  # fmt: skip
def test_equals_the_step_loop_with_every_gradient(T, B, P, chunk):
    """Outputs, final state and the gradients w.r.t. u, lambda and h0, to 1e-10 (float64):
    T below, at and off a multiple of the chunk."""
    ours, ref = _both(T, B, P, chunk)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10 * max(1.0, b.abs().max().item()), rtol=1e-10)


def test_a_zero_eigenvalue_and_one_near_the_circle():
    ours, ref = _both(200, 2, 4, 32, r_max=0.99999, zero=True)
    for a, b in zip(ours, ref, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-10 * max(1.0, b.abs().max().item()), rtol=1e-10)


def test_float32_close_to_float64():
    lam, u, h0 = _lam(6), torch.randn(500 * 4, 12, dtype=F64), torch.randn(4, 12, dtype=F64)
    exact = reference(u, lam, h0, [4] * 500)[0]
    out = chunked_scan(u.float(), lam.float(), h0.float(), 500)[0]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), exact, atol=1e-4 * exact.abs().max().item(), rtol=0)


def test_gradcheck_and_gradgradcheck():
    lam = _lam(2, r_max=0.9).requires_grad_()
    u = torch.randn(7 * 2, 4, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=F64, requires_grad=True)

    def f(u, lam, h0):
        return chunked_scan(u, lam, h0, 7, chunk=3)

    assert torch.autograd.gradcheck(f, (u, lam, h0))
    assert torch.autograd.gradgradcheck(f, (u, lam, h0))


def test_empty_sequence_and_bad_chunk():
    h0 = torch.randn(2, 6)
    out, h_n = chunked_scan(torch.zeros(0, 6), torch.zeros(6), h0, 0)
    assert out.shape == (0, 6) and h_n is h0
    with pytest.raises(ValueError, match="chunk must be positive, got 0"):
        chunked_scan(torch.zeros(2, 6), torch.zeros(6), h0[:1], 2, chunk=0)
