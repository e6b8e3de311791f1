"""modReLU: the function, the step, and the whole-sequence Function with its own backward."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.autograd import gradcheck, gradgradcheck

from seqnorm.layers.modrelu import modrelu_rnn
from seqnorm.steps import modrelu, modrelu_step

# ------------------------------------------------------------------------------- helpers


def _signs(*shape: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randint(0, 2, shape).to(dtype) * 2 - 1


def _away_from_kinks(T: int, B: int, H: int) -> tuple[Tensor, ...]:
    """Float64 inputs of a modReLU RNN whose every pre-activation ``z`` satisfies
    ``|z| >= 0.25`` and ``| |z| + b | >= 0.35``, with units of both kinds (on and off).

    By construction: ``|gi| in [0.5, 1.5]``; ``|h| <= |z| + b <= 2``; the recurrent term
    ``|h @ W^T + b_hh| <= H * 0.02 * 2 + 0.05 <= 0.25`` for ``H <= 5``. So ``sign(z)`` is
    ``sign(gi)`` and ``|z| in [0.25, 1.75]``; "on" units have ``b in [0.1, 0.25]``
    (``|z| + b >= 0.35``), "off" units ``b in [-2.5, -2.1]`` (``|z| + b <= -0.35``).
    """
    assert H <= 5
    gi = _signs(T, B, H) * (0.5 + torch.rand(T, B, H, dtype=torch.float64))  # (T, B, H)
    h0 = _signs(B, H) * torch.rand(B, H, dtype=torch.float64)  # (B, H), |h0| <= 1
    w = 0.02 * (2 * torch.rand(H, H, dtype=torch.float64) - 1)  # (H, H)
    b_hh = 0.05 * (2 * torch.rand(H, dtype=torch.float64) - 1)  # (H,)
    on = torch.arange(H) % 2 == 0  # (H,)
    bias = torch.where(
        on,
        0.1 + 0.15 * torch.rand(H, dtype=torch.float64),
        -2.5 + 0.4 * torch.rand(H, dtype=torch.float64),
    )  # (H,)
    return gi, h0, w, b_hh, bias


def _pre_activations(gi: Tensor, h0: Tensor, w: Tensor, b_hh: Tensor | None, bias: Tensor):
    """All pre-activations ``z_t`` of the loop, to check a construction's margins."""
    zs, h = [], h0
    for gi_t in gi.unbind(0):
        z = gi_t + h @ w.t() + (0 if b_hh is None else b_hh)  # (B, H)
        zs.append(z)
        h = modrelu(z, bias)
    return torch.stack(zs)  # (T, B, H)


def _loop(gi: Tensor, h0: Tensor, w: Tensor, b_hh: Tensor | None, bias: Tensor) -> Tensor:
    h, hs = h0, []
    for gi_t in gi.unbind(0):
        h = modrelu_step(gi_t, h, w, b_hh, bias)
        hs.append(h)
    return torch.stack(hs)  # (T, B, H)


def _assert_close(got: Tensor, want: Tensor, tol: float) -> None:
    """``max |got - want| <= tol * max(1, max |want|)``."""
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert got.shape == want.shape and got.dtype == want.dtype
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol:.0e} * {scale:.3g}"


# ---------------------------------------------------------------------- modrelu itself


def test_modrelu_equals_its_formula() -> None:
    z = torch.tensor([-2.0, -0.5, 0.0, 0.0, 0.5, 2.0, -3.0, 3.0])
    b = torch.tensor([-1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 0.5, -4.0])
    assert modrelu(z, b).tolist() == [-1.0, 0.0, 0.0, 0.0, 1.5, 3.0, -3.5, 0.0]
    z, b = torch.randn(7, 3, 16), torch.randn(16)
    want = torch.where(z.abs() + b > 0, z + torch.sign(z) * b, torch.zeros_like(z))
    torch.testing.assert_close(modrelu(z, b), want, rtol=0, atol=0)


def test_modrelu_gradcheck_and_gradgradcheck() -> None:
    z = _signs(6, 5) * (0.5 + torch.rand(6, 5, dtype=torch.float64))  # |z| in [0.5, 1.5]
    on = torch.arange(5) % 2 == 0
    b = torch.where(on, torch.full((5,), 0.2), torch.full((5,), -2.0)).double()
    assert ((z.abs() + b).abs() >= 0.3).all()  # both kinds of units, away from the kinks
    z.requires_grad_(), b.requires_grad_()
    assert gradcheck(modrelu, (z, b))
    assert gradgradcheck(modrelu, (z, b))


def test_modrelu_step_equals_formula() -> None:
    gi, h, w, b_hh, bias = (
        torch.randn(4, 6),
        torch.randn(4, 6),
        torch.randn(6, 6),
        *torch.randn(2, 6),
    )
    want = modrelu(gi + h @ w.t() + b_hh, bias)
    torch.testing.assert_close(modrelu_step(gi, h, w, b_hh, bias), want)
    torch.testing.assert_close(modrelu_step(gi, h, w, None, bias), modrelu(gi + h @ w.t(), bias))


# ------------------------------------------------------------------------ modrelu_rnn


@pytest.mark.parametrize("with_b_hh", [True, False])
@pytest.mark.parametrize("contiguous", [True, False])
def test_modrelu_rnn_gradcheck(with_b_hh: bool, contiguous: bool) -> None:
    gi, h0, w, b_hh, bias = _away_from_kinks(T=6, B=3, H=5)
    b_hh = b_hh if with_b_hh else None
    z = _pre_activations(gi, h0, w, b_hh, bias)
    assert z.abs().min() >= 0.25 and (z.abs() + bias).abs().min() >= 0.35
    assert (z.abs() + bias > 0).any() and (z.abs() + bias < 0).any()
    if not contiguous:  # same values, other strides
        gi = gi.transpose(0, 1).contiguous().transpose(0, 1)  # (T, B, H), batch-major
        w = w.t().contiguous().t()
        h0 = torch.stack([h0, h0], dim=-1)[..., 0]
        assert not (gi.is_contiguous() or w.is_contiguous() or h0.is_contiguous())
    inputs = [t.requires_grad_() if t is not None else None for t in (gi, h0, w, b_hh, bias)]
    assert gradcheck(modrelu_rnn, tuple(inputs))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("with_b_hh", [True, False])
def test_modrelu_rnn_equals_step_loop(dtype: torch.dtype, tol: float, with_b_hh: bool) -> None:
    T, B, H = 50, 8, 16
    gi = torch.randn(B, T, H, dtype=dtype).transpose(0, 1)  # (T, B, H), non-contiguous
    h0 = torch.randn(B, H, dtype=dtype)
    w = torch.empty(H, H, dtype=dtype).uniform_(-(H**-0.5), H**-0.5)
    b_hh = torch.randn(H, dtype=dtype) if with_b_hh else None
    bias = torch.empty(H, dtype=dtype).uniform_(-1.0, 0.5)  # many units switch off
    leaves = [t.requires_grad_() for t in (gi, h0, w, b_hh, bias) if t is not None]
    g = torch.randn(B, T, H, dtype=dtype)

    def loss(out: Tensor) -> Tensor:  # the transpose makes the incoming grad non-contiguous
        return (out.transpose(0, 1) * g).sum()

    out = modrelu_rnn(gi, h0, w, b_hh, bias)
    want = _loop(gi, h0, w, b_hh, bias)
    assert 0.05 < (want == 0).double().mean() < 0.95  # the mask matters in this run
    _assert_close(out, want, tol)
    grads = torch.autograd.grad(loss(out), leaves)
    want_grads = torch.autograd.grad(loss(want), leaves)
    for got_g, want_g in zip(grads, want_grads, strict=True):
        _assert_close(got_g, want_g, tol)


@pytest.mark.parametrize("needed", ["gi", "h0", "w_hh", "b_hh", "bias"])
def test_modrelu_rnn_gradient_of_one_input(needed: str) -> None:
    """Only the needed gradient is asked for; it equals the one computed with all."""
    T, B, H = 7, 3, 4
    names = ("gi", "h0", "w_hh", "b_hh", "bias")
    tensors = [torch.randn(T, B, H), torch.randn(B, H), torch.randn(H, H), *torch.randn(2, H)]
    full = [t.clone().requires_grad_() for t in tensors]
    want = torch.autograd.grad(modrelu_rnn(*full).sum(), full)[names.index(needed)]
    one = [t.clone().requires_grad_(n == needed) for n, t in zip(names, tensors, strict=True)]
    (got,) = torch.autograd.grad(modrelu_rnn(*one).sum(), one[names.index(needed)])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_modrelu_rnn_is_one_autograd_node() -> None:
    """The whole sequence is one node (no per-step graph, whose backward would grow)."""
    T, B, H = 30, 2, 4
    args = [torch.randn(T, B, H), torch.randn(B, H), torch.randn(H, H), *torch.randn(2, H)]
    out = modrelu_rnn(*[a.requires_grad_() for a in args])
    assert type(out.grad_fn).__name__ == "_ModReLURNNBackward"
    assert all(type(f).__name__ == "AccumulateGrad" for f, _ in out.grad_fn.next_functions)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_modrelu_rnn_keeps_dtype_and_runs_on_any_device(dtype: torch.dtype) -> None:
    """The meta device stands in for any device: nothing may be allocated elsewhere."""
    T, B, H = 5, 3, 4
    for device in ("cpu", "meta"):
        kw = {"dtype": dtype, "device": device}
        args = [torch.randn(T, B, H, **kw), torch.randn(B, H, **kw), torch.randn(H, H, **kw)]
        args += [torch.randn(H, **kw), torch.randn(H, **kw)]
        leaves = [a.requires_grad_() for a in args]
        out = modrelu_rnn(*leaves)
        assert out.shape == (T, B, H) and out.dtype == dtype and out.device.type == device
        grads = torch.autograd.grad(out.sum(), leaves)
        assert all(
            g.shape == a.shape and g.device.type == device for g, a in zip(grads, args, strict=True)
        )


def test_modrelu_rnn_empty_batch_and_empty_sequence() -> None:
    H = 4
    w, b_hh, bias = torch.randn(H, H, requires_grad=True), torch.randn(H), torch.randn(H)
    gi, h0 = torch.randn(6, 0, H, requires_grad=True), torch.randn(0, H)
    out = modrelu_rnn(gi, h0, w, b_hh, bias)
    assert out.shape == (6, 0, H)
    (dw,) = torch.autograd.grad(out.sum(), w)
    assert torch.equal(dw, torch.zeros(H, H))
    gi, h0 = torch.randn(0, 3, H), torch.randn(3, H, requires_grad=True)
    out = modrelu_rnn(gi, h0, w, b_hh, bias)
    assert out.shape == (0, 3, H)
    dh0, dw = torch.autograd.grad(out.sum(), (h0, w), allow_unused=True, materialize_grads=True)
    assert torch.equal(dh0, torch.zeros(3, H)) and torch.equal(dw, torch.zeros(H, H))


def test_modrelu_rnn_double_backward_raises() -> None:
    T, B, H = 4, 2, 3
    args = [torch.randn(T, B, H), torch.randn(B, H), torch.randn(H, H), *torch.randn(2, H)]
    leaves = [a.requires_grad_() for a in args]
    (dw,) = torch.autograd.grad((modrelu_rnn(*leaves) ** 2).sum(), leaves[2], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dw.sum().backward()


# ----------------------------------------------------------------------------- errors

T_, B_, H_ = 3, 2, 4
_GOOD = {
    "gi": (T_, B_, H_),
    "h0": (B_, H_),
    "w_hh": (H_, H_),
    "b_hh": (H_,),
    "bias": (H_,),
}


@pytest.mark.parametrize(
    "name, shape, match",
    [
        ("gi", (B_, H_), r"gi must have shape \(T, B, H\), got \(2, 4\)"),
        ("h0", (B_ + 1, H_), r"h0 must have shape \(2, 4\), got \(3, 4\)"),
        ("w_hh", (H_, H_ + 1), r"w_hh must have shape \(4, 4\), got \(4, 5\)"),
        ("b_hh", (H_ + 1,), r"b_hh must have shape \(4,\), got \(5,\)"),
        ("bias", (1, H_), r"bias must have shape \(4,\), got \(1, 4\)"),
    ],
)
def test_modrelu_rnn_bad_shape(name: str, shape: tuple[int, ...], match: str) -> None:
    args = {n: torch.randn(*(shape if n == name else s)) for n, s in _GOOD.items()}
    with pytest.raises(ValueError, match=match):
        modrelu_rnn(**args)


def test_modrelu_rnn_bad_dtype() -> None:
    args = {n: torch.randn(*s) for n, s in _GOOD.items()}
    args["w_hh"] = args["w_hh"].double()
    with pytest.raises(ValueError, match=r"w_hh must have gi's dtype and device"):
        modrelu_rnn(**args)
    args = {n: torch.randint(0, 3, s) for n, s in _GOOD.items()}
    with pytest.raises(ValueError, match=r"gi must be a floating-point tensor"):
        modrelu_rnn(**args)


def test_modrelu_bad_bias() -> None:
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\).*got \(4,\)"):
        modrelu(torch.randn(3, 5), torch.randn(4))
