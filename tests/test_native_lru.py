"""The LRU's native scan: equal to a plain complex loop (outputs and every gradient), twice
differentiable, packed, its errors, and subnormals flushed."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from seqnorm import native
from seqnorm.native import lru as native_lru

TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}


@pytest.fixture(scope="module", autouse=True)
def _needs_native():
    if not native.available():
        pytest.skip(f"native kernels unavailable: {native.backend().reason}")


def _loop(x, w, b, h0, lam, sizes):
    """The oracle, written independently of the kernel's planes: complex tensors, one step at
    a time, packed rows (step t's first sizes[t] sequences step; the others keep their state)."""
    P = lam.shape[0] // 2
    u = x if w is None else F.linear(x, w, b)  # (N, 2P)
    uc = torch.complex(u[:, :P], u[:, P:])  # (N, P)
    lc = torch.complex(lam[:P], lam[P:])  # (P,)
    state = torch.complex(h0[:, :P], h0[:, P:])  # (B, P)
    outs, off = [], 0
    for n in sizes:
        h = lc * state[:n] + uc[off : off + n]
        outs.append(h)
        state = torch.cat([h, state[n:]])
        off += n
    out = torch.cat(outs)
    return torch.cat([out.real, out.imag], 1), torch.cat([state.real, state.imag], 1)


def _inputs(sizes, P=4, I=3, dtype=torch.float64, proj=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, B = sum(sizes), sizes[0]

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    x = r(N, I if proj else 2 * P)
    w = r(2 * P, I, scale=0.5) if proj else None
    b = r(2 * P) if proj and bias else None
    mod = 0.5 + 0.49 * torch.rand(P, generator=g, dtype=dtype)  # |lambda| in [0.5, 0.99]
    phase = 6.28 * torch.rand(P, generator=g, dtype=dtype)
    lam = torch.cat([mod * phase.cos(), mod * phase.sin()]).requires_grad_()
    return x, w, b, r(B, 2 * P), lam


def _check(sizes, dtype=torch.float64, **kw):
    x, w, b, h0, lam = _inputs(sizes, dtype=dtype, **kw)
    bs = torch.tensor(sizes)
    out, h_n = native_lru.scan(x, lam, h0, bs, w, b)
    ref_out, ref_h = _loop(x, w, b, h0, lam, sizes)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(h_n, ref_h, **TOL[dtype])
    leaves = [t for t in (x, w, b, h0, lam) if t is not None]
    g_out, g_h = torch.randn_like(out), torch.randn_like(h_n)
    got = torch.autograd.grad((out, h_n), leaves, (g_out, g_h), retain_graph=True)
    want = torch.autograd.grad((ref_out, ref_h), leaves, (g_out, g_h), retain_graph=True)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, **TOL[dtype])
    # Each output alone (the other's gradient None): the kernel's two entry points.
    for o, ro in ((out, ref_out), (h_n, ref_h)):
        go = torch.randn_like(o)
        got = torch.autograd.grad(o, leaves, go, retain_graph=True)
        want = torch.autograd.grad(ro, leaves, go, retain_graph=True)
        for a, e in zip(got, want, strict=True):
            torch.testing.assert_close(a, e, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "sizes", [[4, 4, 4, 4, 4, 4], [5, 5, 3, 2, 2, 1]], ids=["padded", "packed"]
)
def test_equals_complex_loop(sizes, dtype):
    _check(sizes, dtype)


@pytest.mark.parametrize(
    ("sizes", "kw"),
    [
        ([3, 3, 3], {"bias": False}),
        ([3, 2, 1], {"proj": False}),
        ([1, 1, 1, 1], {}),
        ([3, 3], {"P": 1}),
        ([4], {}),
        ([2] * 40, {"P": 37, "I": 5}),  # P not a multiple of the vector width, long T
    ],
    ids=["no-bias", "no-projection", "B1", "P1", "T1", "P37-T40"],
)
def test_edge_shapes(sizes, kw):
    _check(sizes, **kw)


def test_long_sequence_float64():
    """A psMNIST-like length (T=784): still equal to the loop to 1e-10, outputs and gradients."""
    _check([8] * 784, P=8, I=2)


def test_row_blocks_on_two_threads():
    """With two intra-op threads the rows are walked in two blocks (each its own partial sum
    of dL/dlambda): the same results, packed or not."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check([40] * 30, P=9)
        _check([40, 33, 33, 17, 16, 1], P=9)
    finally:
        torch.set_num_threads(n)


def test_through_native_dispatch():
    """``seqnorm.native.sequence('lru', ...)``: lambda as ``w_hh``; equal to ``scan``."""
    x, w, b, h0, lam = _inputs([3, 3, 2])
    bs = torch.tensor([3, 3, 2])
    a = native.sequence("lru", x, w, b, h0, lam, None, None, bs, False)
    c = native_lru.scan(x, lam, h0, bs, w, b)
    u = F.linear(x, w, b)
    d = native.recurrence("lru", u, h0, lam, None, None, bs, False)
    for got in (c, d):
        for p, q in zip(a, got, strict=True):
            torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-12)


def test_gradcheck_and_gradgradcheck():
    x, w, b, h0, lam = _inputs([3, 2, 2], P=2, I=2)
    bs = torch.tensor([3, 2, 2])

    def f(x, w, b, h0, lam):
        return native_lru.scan(x, lam, h0, bs, w, b)

    args = (x, w, b, h0, lam)
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)
    # the scan alone (no projection): u itself is the input
    u = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    g = lambda u, h0, lam: native_lru.scan(u, lam, h0, bs)  # noqa: E731
    assert torch.autograd.gradcheck(g, (u, h0, lam))
    assert torch.autograd.gradgradcheck(g, (u, h0, lam))


def test_double_backward_equals_loop():
    """The gradient's own gradient (create_graph=True recomputes through the reference loop)
    equals the complex loop's."""
    x, w, b, h0, lam = _inputs([3, 3, 1])
    bs = torch.tensor([3, 3, 1])
    leaves = (x, w, b, h0, lam)
    out, h_n = native_lru.scan(x, lam, h0, bs, w, b)
    ref_out, ref_h = _loop(x, w, b, h0, lam, [3, 3, 1])
    go = torch.randn_like(out)
    g1 = torch.autograd.grad(out, leaves, go, create_graph=True)
    g2 = torch.autograd.grad(ref_out, leaves, go, create_graph=True)
    s1 = sum((g**2).sum() for g in g1)
    s2 = sum((g**2).sum() for g in g2)
    for a, e in zip(torch.autograd.grad(s1, leaves), torch.autograd.grad(s2, leaves), strict=True):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10)


def test_subnormals_flushed():
    """A state below float32's normal range reads and is written as 0 in the kernel."""
    P = 2
    tiny = torch.finfo(torch.float32).tiny
    u = torch.zeros(2, 2 * P)
    u[0] = tiny * 0.25  # subnormal input: read as 0
    lam = torch.tensor([0.5, 0.5, 0.0, 0.0])
    h0 = torch.full((1, 2 * P), tiny)  # normal; lambda * h0 = tiny / 2 is subnormal: written 0
    out, h_n = native_lru.scan(u, lam, h0, torch.tensor([1, 1]))
    assert (out == 0).all() and (h_n == 0).all()
    ref, _, _ = native_lru.reference(u, lam, h0, torch.tensor([1, 1]))  # torch does not flush
    assert (ref[0, :P] > 0).all()


def test_errors():
    x, w, b, h0, lam = _inputs([2, 2])
    bs = torch.tensor([2, 2])
    with pytest.raises(ValueError, match="forward in time only"):
        native.sequence("lru", x, w, b, h0, lam, None, None, bs, True)
    with pytest.raises(ValueError, match="takes no b_hh and no extra"):
        native.sequence("lru", x, w, b, h0, lam, torch.zeros(8, dtype=x.dtype), None, bs, False)
    with pytest.raises(RuntimeError, match="batch_sizes must sum to"):
        native_lru.scan(x, lam, h0, torch.tensor([2, 1]), w, b)
    with pytest.raises(RuntimeError, match="non-increasing"):
        native_lru.scan(x[:3], lam, h0, torch.tensor([1, 2]), w, b)
    with pytest.raises(RuntimeError, match=r"lambda must be \(2P,\)"):
        native_lru.scan(x, lam[:3], h0, bs, w, b)
    with pytest.raises(RuntimeError, match="h0 must be"):
        native_lru.scan(x, lam, h0[:, :3], bs, w, b)
    with pytest.raises(RuntimeError, match="w_ih must be"):
        native_lru.scan(x, lam, h0, bs, w[:, :2], b)
    with pytest.raises(RuntimeError, match="without w_ih, x is u itself"):
        native_lru.scan(x, lam, h0, bs)
    with pytest.raises(RuntimeError, match="float32 or float64 CPU tensor"):
        native_lru.scan(x.half(), lam, h0, bs, w, b)
