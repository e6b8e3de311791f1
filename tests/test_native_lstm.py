"""The native LSTM kernel (seqnorm.native.lstm) against a plain loop of its step equation
(seqnorm.steps.lstm_step) and against torch's own LSTM: outputs, final states and every
gradient, with and without proj_size, forward and reverse, padded and packed, float32 and
float64."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import _VF

from seqnorm import native
from seqnorm.native.build import NativeUnavailable, load_library
from seqnorm.native.reference import reference
from seqnorm.steps import lstm_step

try:
    load_library()
except NativeUnavailable as e:  # pragma: no cover - depends on the machine
    pytest.skip(f"native kernels unavailable: {e}", allow_module_level=True)

lstm_recurrence = functools.partial(native.recurrence, "lstm")  # the kernel
lstm_reference = functools.partial(reference, lstm_step)  # the step loop
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def make(sizes, hidden, proj, dtype, bias=True, seed=0):  # noqa: ANN001, ANN201
    g = torch.Generator().manual_seed(seed)
    bs = torch.tensor(sizes, dtype=torch.int64)
    n, b, r = int(bs.sum()), sizes[0], proj or hidden
    scale = hidden**-0.5

    def rand(*shape, s=1.0):  # noqa: ANN001, ANN202
        return (s * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    args = dict(
        gi=rand(n, 4 * hidden),
        h0=rand(b, r, s=0.5),
        c0=rand(b, hidden, s=0.5),
        w_hh=rand(4 * hidden, r, s=scale),
        b_hh=rand(4 * hidden, s=0.1) if bias else None,
        w_hr=rand(proj, hidden, s=scale) if proj else None,
    )
    return args, bs


def run(fn, args, bs, reverse):  # noqa: ANN001, ANN201
    return fn(args["gi"], (args["h0"], args["c0"]), args["w_hh"], args["b_hh"], args["w_hr"],
              bs, reverse)  # fmt: skip


def grads(fn, args, bs, reverse, seed=1):  # noqa: ANN001, ANN201
    out, (h, c) = run(fn, args, bs, reverse)
    g = torch.Generator().manual_seed(seed)
    cot = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (out, h, c)]
    inputs = {k: v for k, v in args.items() if v is not None}
    gs = torch.autograd.grad((out, h, c), list(inputs.values()), cot)
    return {
        "out": out,
        "h_n": h,
        "c_n": c,
        **{f"d_{k}": v for k, v in zip(inputs, gs, strict=True)},
    }


SIZES = {"padded": [3, 3, 3, 3, 3, 3], "packed": [4, 4, 3, 2, 2, 1]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", list(SIZES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [None, 3])
def test_matches_step_loop(proj, reverse, layout, dtype):
    args, bs = make(SIZES[layout], 5, proj, dtype)
    got, want = grads(lstm_recurrence, args, bs, reverse), grads(lstm_reference, args, bs, reverse)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], **TOL[dtype], msg=k)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("proj", [None, 3])
def test_matches_torch_vf_lstm(proj, dtype):
    """Padded forward direction against torch._VF.lstm with the same weights."""
    T, B, I, H = 7, 4, 2, 6
    g = torch.Generator().manual_seed(3)
    lstm = torch.nn.LSTM(I, H, proj_size=proj or 0, dtype=dtype)
    x = torch.randn(T, B, I, generator=g, dtype=dtype)
    h0 = torch.randn(1, B, proj or H, generator=g, dtype=dtype)
    c0 = torch.randn(1, B, H, generator=g, dtype=dtype)
    params = list(lstm.parameters())
    want_out, (want_h, want_c) = lstm(x, (h0, c0))
    cot = torch.randn(want_out.shape, generator=g, dtype=dtype)
    want_g = torch.autograd.grad((want_out * cot).sum() + want_h.sum() + want_c.sum(), params)
    p = dict(lstm.named_parameters())
    gi = torch.nn.functional.linear(x.reshape(T * B, I), p["weight_ih_l0"], p["bias_ih_l0"])
    out, (h, c) = lstm_recurrence(
        gi, (h0[0], c0[0]), p["weight_hh_l0"], p["bias_hh_l0"], p.get("weight_hr_l0"),
        torch.full((T,), B, dtype=torch.int64), False,
    )  # fmt: skip
    out = out.view(T, B, -1)
    got_g = torch.autograd.grad((out * cot).sum() + h.sum() + c.sum(), params)
    torch.testing.assert_close(out, want_out, **TOL[dtype])
    torch.testing.assert_close(h, want_h[0], **TOL[dtype])
    torch.testing.assert_close(c, want_c[0], **TOL[dtype])
    for name, a, b in zip(p, got_g, want_g, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=name)
    # and the functional kernel itself
    flat = [p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]]
    flat += [p["weight_hr_l0"]] if proj else []
    vf_out, vf_h, vf_c = _VF.lstm(x, (h0, c0), flat, True, 1, 0.0, False, False, False)
    torch.testing.assert_close(out, vf_out, **TOL[dtype])


@pytest.mark.parametrize("I", [3, 70], ids=["per-step projection", "up-front projection"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [None, 3])
def test_projection_inside_the_op(proj, reverse, dtype, I):
    """native.sequence with x and w_ih (the projection in the op) = the step loop on
    F.linear(x, w_ih, b_ih): outputs, states and the gradients of x, w_ih and b_ih too."""
    args, bs = make(SIZES["packed"], 5, proj, dtype)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(args["gi"].shape[0], I, generator=g, dtype=dtype).requires_grad_()
    w_ih = (torch.randn(20, I, generator=g, dtype=dtype) / I**0.5).requires_grad_()
    b_ih = torch.randn(20, generator=g, dtype=dtype).requires_grad_()
    state = (args["h0"], args["c0"])
    out, (h, c) = native.sequence("lstm", x, w_ih, b_ih, state, args["w_hh"], args["b_hh"],
                                  args["w_hr"], bs, reverse)  # fmt: skip
    gi = torch.nn.functional.linear(x, w_ih, b_ih)
    r_out, (r_h, r_c) = lstm_reference(gi, state, args["w_hh"], args["b_hh"], args["w_hr"], bs,
                                       reverse)  # fmt: skip
    leaves = [x, w_ih, b_ih, *state, args["w_hh"], args["b_hh"]] + ([args["w_hr"]] if proj else [])
    cot = [torch.randn(t.shape, generator=g, dtype=dtype) for t in (out, h, c)]
    got = torch.autograd.grad((out, h, c), leaves, cot)
    want = torch.autograd.grad((r_out, r_h, r_c), leaves, cot)
    for a, e in zip([out, h, c, *got], [r_out, r_h, r_c, *want], strict=True):
        torch.testing.assert_close(a, e, **TOL[dtype])


@pytest.mark.parametrize("sizes", [[1], [2], [1, 1, 1], [3, 1]], ids=str)
@pytest.mark.parametrize("proj", [None, 2])
def test_edges_t1_b1_no_bias(sizes, proj):
    for reverse in (False, True):
        args, bs = make(sizes, 4, proj, torch.float64, bias=False)
        got = grads(lstm_recurrence, args, bs, reverse)
        want = grads(lstm_reference, args, bs, reverse)
        for k in want:
            torch.testing.assert_close(got[k], want[k], **TOL[torch.float64], msg=k)


@pytest.mark.parametrize("proj", [None, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck(proj, reverse):
    args, bs = make([3, 2, 2, 1], 3, proj, torch.float64)
    keys = [k for k, v in args.items() if v is not None]

    def f(*xs):  # noqa: ANN002, ANN202
        a = dict(zip(keys, xs, strict=True), **{k: None for k in args if k not in keys})
        out, (h, c) = run(lstm_recurrence, a, bs, reverse)
        return out, h, c

    assert torch.autograd.gradcheck(f, [args[k] for k in keys])


@pytest.mark.parametrize("proj", [None, 2])
def test_double_backward(proj):
    args, bs = make([3, 3, 2, 1], 3, proj, torch.float64)
    keys = [k for k, v in args.items() if v is not None]

    def f(*xs):  # noqa: ANN002, ANN202
        a = dict(zip(keys, xs, strict=True), **{k: None for k in args if k not in keys})
        out, (h, c) = run(lstm_recurrence, a, bs, True)
        return out, h, c

    assert torch.autograd.gradgradcheck(f, [args[k] for k in keys])
    # and it equals the double backward of the step loop
    for fn in (lstm_recurrence, lstm_reference):
        out, (h, c) = run(fn, args, bs, False)
        (d_w,) = torch.autograd.grad(out.square().sum() + c.sum(), args["w_hh"], create_graph=True)
        (dd,) = torch.autograd.grad(d_w.square().sum(), args["gi"])
        if fn is lstm_recurrence:
            got = dd
    torch.testing.assert_close(got, dd, **TOL[torch.float64])


def test_no_grad_and_bad_input():
    args, bs = make([2, 2], 4, None, torch.float32)
    with torch.no_grad():
        out, (h, c) = run(lstm_recurrence, args, bs, False)
    assert out.shape == (4, 4) and h.shape == (2, 4) and c.shape == (2, 4)
    with pytest.raises(RuntimeError, match="w_hh must be"):
        lstm_recurrence(args["gi"], (args["h0"], args["c0"]), args["w_hh"][:4], None, None, bs,
                        False)  # fmt: skip
    with pytest.raises(RuntimeError, match="batch_sizes must be a 1-D CPU int64"):
        lstm_recurrence(args["gi"], (args["h0"], args["c0"]), args["w_hh"], None, None,
                        bs.int(), False)  # fmt: skip
    with pytest.raises(RuntimeError, match="non-increasing"):
        lstm_recurrence(args["gi"][:3], (args["h0"][:1], args["c0"][:1]), args["w_hh"], None,
                        None, torch.tensor([1, 2]), False)  # fmt: skip


def test_torch_compile_fullgraph():  # ~4 s: aot_eager traces the fake impls and autograd
    args, bs = make([3, 3, 2], 4, 2, torch.float32)

    def f(gi, h0, c0, w_hh, b_hh, w_hr):  # noqa: ANN001, ANN202
        out, (h, c) = lstm_recurrence(gi, (h0, c0), w_hh, b_hh, w_hr, bs, False)
        return out.sum() + h.sum() + c.sum()

    xs = list(args.values())
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    want = torch.autograd.grad(f(*xs), xs)
    got = torch.autograd.grad(compiled(*xs), xs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
