"""The native CPU kernels: equal to the step loop and to torch, the build cache, the backend."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import _VF
from torch.nn import functional as F

import seqnorm
from seqnorm import native
from seqnorm.layers.spec import SPECS
from seqnorm.native import build

MODES = ["rnn_tanh", "rnn_relu", "rnn_modrelu", "gru"]
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}
ROOT = Path(__file__).resolve().parents[1]
backend_mod = importlib.import_module("seqnorm.native.backend")  # the module, not the function


@pytest.fixture(scope="module", autouse=True)
def _needs_native():
    if not native.available():
        pytest.skip(f"native kernels unavailable: {native.backend().reason}")


def _loop(mode, gi, h0, w_hh, b_hh, extra, sizes, reverse):
    """The oracle: SPECS[mode].step per step over packed rows, written independently."""
    step = SPECS[mode].step
    args = (w_hh, b_hh, extra) if mode == "rnn_modrelu" else (w_hh, b_hh)
    offs = [sum(sizes[:t]) for t in range(len(sizes))]
    state, outs = h0, {}
    ts = range(len(sizes))
    for t in reversed(ts) if reverse else ts:
        n = sizes[t]
        new = step(gi[offs[t] : offs[t] + n], state[:n], *args)
        outs[t] = new
        state = torch.cat([new, state[n:]])
    return torch.cat([outs[t] for t in ts]), state


def _inputs(mode, dtype, sizes, H=5, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    G, B, N = SPECS[mode].num_gates, sizes[0], sum(sizes)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    gi, h0, w = r(N, G * H), r(B, H), r(G * H, H, scale=0.4)
    b = r(G * H) if bias else None
    extra = r(H, scale=0.3) if mode == "rnn_modrelu" else None
    return gi, h0, w, b, extra


def _check(mode, dtype, sizes, reverse, H=5, bias=True):
    gi, h0, w, b, extra = _inputs(mode, dtype, sizes, H, bias)
    bs = torch.tensor(sizes)
    out, h_n = native.recurrence(mode, gi, h0, w, b, extra, bs, reverse)
    ref_out, ref_h = _loop(mode, gi, h0, w, b, extra, sizes, reverse)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(h_n, ref_h, **TOL[dtype])
    leaves = [x for x in (gi, h0, w, b, extra) if x is not None]
    g_out, g_h = torch.randn_like(out), torch.randn_like(h_n)
    got = torch.autograd.grad((out, h_n), leaves, (g_out, g_h))
    want = torch.autograd.grad((ref_out, ref_h), leaves, (g_out, g_h))
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "sizes", [[4, 4, 4, 4, 4, 4], [5, 5, 3, 2, 2, 1]], ids=["padded", "packed"]
)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", MODES)
def test_equals_step_loop(mode, reverse, sizes, dtype):
    _check(mode, dtype, sizes, reverse)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("sizes", "H", "bias"),
    [([3, 3, 3], 4, False), ([1, 1, 1, 1], 4, True), ([3, 3], 1, True), ([4], 3, True)],
    ids=["no-bias", "B1", "H1", "T1"],
)
def test_edge_shapes(mode, sizes, H, bias):
    for reverse in (False, True):
        _check(mode, torch.float64, sizes, reverse, H=H, bias=bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu", "gru"])
def test_equals_torch_kernel(mode, dtype):
    T, B, H = 6, 3, 5
    _, h0, w, b, _ = _inputs(mode, dtype, [B] * T, H)
    x = torch.randn(T, B, H, dtype=dtype)
    w_ih = torch.randn(SPECS[mode].num_gates * H, H, dtype=dtype) * 0.5
    b_ih = torch.randn(SPECS[mode].num_gates * H, dtype=dtype)
    gi = F.linear(x, w_ih, b_ih).reshape(T * B, -1)
    out, h_n = native.recurrence(mode, gi, h0, w, b, None, torch.full((T,), B), False)
    kernel = {"rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu, "gru": _VF.gru}[mode]
    ref_out, ref_h = kernel(x, h0[None], [w_ih, w, b_ih, b], True, 1, 0.0, False, False, False)
    torch.testing.assert_close(out, ref_out.reshape(T * B, H), **TOL[dtype])
    torch.testing.assert_close(h_n, ref_h[0], **TOL[dtype])


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_and_double_backward(mode):
    gi, h0, w, b, extra = _inputs(mode, torch.float64, [3, 2, 2], H=3)
    if extra is not None:  # keep |z| + bias away from the kink
        extra = (extra.detach() + 0.5).requires_grad_()
    bs = torch.tensor([3, 2, 2])
    leaves = [x for x in (gi, h0, w, b, extra) if x is not None]

    def f(*xs):
        it = iter(xs)
        args = [next(it) if x is not None else None for x in (gi, h0, w, b, extra)]
        out, h_n = native.recurrence(mode, args[0], args[1], args[2], args[3], args[4], bs, True)
        return out, h_n

    assert torch.autograd.gradcheck(f, leaves)
    assert torch.autograd.gradgradcheck(f, leaves)


def test_double_backward_matches_step_loop():
    gi, h0, w, b, _ = _inputs("gru", torch.float64, [3, 3, 2])
    out, h_n = native.recurrence("gru", gi, h0, w, b, None, torch.tensor([3, 3, 2]), False)
    (g,) = torch.autograd.grad(out.sum() + h_n.sum(), w, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), gi)
    ref_out, ref_h = _loop("gru", gi, h0, w, b, None, [3, 3, 2], False)
    (rg,) = torch.autograd.grad(ref_out.sum() + ref_h.sum(), w, create_graph=True)
    (rgg,) = torch.autograd.grad(rg.square().sum(), gi)
    torch.testing.assert_close(gg, rgg, **TOL[torch.float64])


@pytest.mark.parametrize("projected", [0, 2, 70], ids=["gi", "x+w_ih per step", "x+w_ih"])
@pytest.mark.parametrize("op", ["rnn_forward", "gru_forward"])
def test_opcheck(op, projected):
    mode = "rnn_modrelu" if op == "rnn_forward" else "gru"
    gi, h0, w, b, extra = _inputs(mode, torch.float64, [3, 2], H=3)
    x, w_ih, b_ih = gi, None, None
    if projected:
        x = torch.randn(5, projected, dtype=torch.float64, requires_grad=True)
        w_ih = torch.randn(gi.shape[1], projected, dtype=torch.float64, requires_grad=True)
        b_ih = torch.randn(gi.shape[1], dtype=torch.float64, requires_grad=True)
    if op == "rnn_forward":
        args = (mode, x, w_ih, b_ih, h0, w, b, extra, torch.tensor([3, 2]), False)
    else:
        args = (x, w_ih, b_ih, h0, w, b, torch.tensor([3, 2]), False, True)
    torch.library.opcheck(getattr(torch.ops.seqnorm, op), args)


@pytest.mark.parametrize("I", [4, 70], ids=["per-step projection", "up-front projection"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", MODES)
def test_sequence_projects_inside_the_op(mode, reverse, dtype, I):
    """``sequence`` = the input projection (in the op: per step for an input of at most 64
    features, one GEMM up front above) + ``recurrence``, every gradient included (x, w_ih,
    b_ih), for packed rows and with only ``h_n`` or only the output used (the other gradient
    never materialised), and an expanded output gradient. The oracle runs in float64 on the
    same values, so a float32 result is held to 1e-5 of the truth (its gradients to 1e-5 of
    their largest entry: they sum many rounded products), not of another float32 rounding."""
    sizes = [5, 5, 3, 2, 2, 1]
    _, h0, w, b, extra = _inputs(mode, dtype, sizes, H=6)
    G, N = SPECS[mode].num_gates, sum(sizes)
    x = torch.randn(N, I, dtype=dtype, requires_grad=True)
    w_ih = (torch.randn(G * 6, I, dtype=dtype) / I**0.5).requires_grad_()
    b_ih = torch.randn(G * 6, dtype=dtype, requires_grad=True)
    bs = torch.tensor(sizes)
    out, h_n = native.sequence(mode, x, w_ih, b_ih, h0, w, b, extra, bs, reverse)
    leaves = [t for t in (x, w_ih, b_ih, h0, w, b, extra) if t is not None]
    exact = {id(t): t.detach().double().requires_grad_() for t in leaves}
    x64, w_ih64, b_ih64, h064, w64, b64 = (exact[id(t)] for t in (x, w_ih, b_ih, h0, w, b))
    extra64 = exact[id(extra)] if extra is not None else None
    ref_out, ref_h = _loop(mode, F.linear(x64, w_ih64, b_ih64), h064, w64, b64, extra64, sizes,
                           reverse)  # fmt: skip
    torch.testing.assert_close(out, ref_out.to(dtype), **TOL[dtype])
    torch.testing.assert_close(h_n, ref_h.to(dtype), **TOL[dtype])
    for pick in (lambda o, h: o.sum(), lambda o, h: (h * h).sum(), lambda o, h: (o * o).mean()):
        got = torch.autograd.grad(pick(out, h_n), leaves, retain_graph=True)
        want = torch.autograd.grad(pick(ref_out, ref_h), list(exact.values()), retain_graph=True)
        for a, e in zip(got, want, strict=True):  # float32: 1e-5 of the gradient's scale
            scale = max(1.0, float(e.abs().max())) if dtype == torch.float32 else 1.0
            tol = {**TOL[dtype], "atol": TOL[dtype]["atol"] * scale}
            torch.testing.assert_close(a, e.to(dtype), **tol)


def test_compiles_without_graph_break():
    gi, h0, w, b, _ = _inputs("gru", torch.float32, [2, 2, 2], H=4)

    def f(gi, h0, w, b):
        out, h_n = native.recurrence("gru", gi, h0, w, b, None, torch.tensor([2, 2, 2]), False)
        return out.sum() + h_n.sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(gi, h0, w, b), f(gi, h0, w, b))


def test_bad_input_is_refused():
    gi, h0, w, b, _ = _inputs("gru", torch.float32, [2, 2])
    with pytest.raises(ValueError, match="mode must be one of"):
        native.recurrence("gruu", gi, h0, w, b, None, torch.tensor([2, 2]), False)
    with pytest.raises(RuntimeError, match="batch_sizes must be positive, non-increasing"):
        native.recurrence("gru", gi, h0, w, b, None, torch.tensor([1, 3]), False)
    with pytest.raises(RuntimeError, match="shapes do not match"):
        native.recurrence("gru", gi[:, :5], h0, w, b, None, torch.tensor([2, 2]), False)
    with pytest.raises(ValueError, match="backend must be one of"):
        native.set_backend("fast")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 300, 5), (64, 1536, 512), (3, 40, 1300)])
def test_kernel_gemm_equals_matmul(M, N, K, dtype):
    """The kernels' GEMM (brgemm in 128-column panels and 512-deep chunks) against torch.mm,
    overwriting and accumulating, with a row stride (a view into a wider buffer)."""
    from seqnorm.native.gemm import gemm_

    g = torch.Generator().manual_seed(M * N + K)
    a = torch.randn(M, K + 3, generator=g, dtype=dtype)[:, :K]
    b = torch.randn(K, N, generator=g, dtype=dtype)
    c0 = torch.randn(M, N, generator=g, dtype=dtype)
    tol = {"rtol": 1e-5, "atol": 1e-4 * K**0.5} if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(gemm_(a, b, c0.clone()), a @ b, **tol)
    torch.testing.assert_close(gemm_(a, b, c0.clone(), accumulate=True), c0 + a @ b, **tol)
    with pytest.raises(ValueError, match="does not give c"):
        gemm_(a, b, torch.empty(M + 1, N, dtype=dtype))


# -- build cache and backend ----------------------------------------------------------------
def _python(code: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_cache_path_is_keyed_by_isa_and_torch():
    path = build.library_path()
    assert build.isa_key() in str(path)
    assert torch.__version__.replace("+", "_") in str(path)
    assert path.parent.parent == build.cache_root()


def test_env_var_chooses_the_backend():
    code = "from seqnorm import native; print(native.backend().name)"
    assert _python(code, {"SEQNORM_BACKEND": "torch"}).stdout.strip() == "torch"
    assert _python(code, {"SEQNORM_BACKEND": "native"}).stdout.strip() == "native"
    bad = _python(code, {"SEQNORM_BACKEND": "nope"})
    assert bad.returncode != 0 and "SEQNORM_BACKEND must be one of" in bad.stderr


def test_set_backend_switches_layers():
    from seqnorm import SpectralGRU
    from seqnorm.layers import compute

    gru = SpectralGRU(2, 3)
    x = torch.randn(4, 2, 2)
    calls = []
    real = compute.native
    try:
        compute.native = lambda *a: calls.append(1) or real(*a)
        native.set_backend("torch")
        assert native.backend().name == "torch"
        a = gru(x)[0]
        native.set_backend("native")
        b = gru(x)[0]
    finally:
        compute.native = real
        native.set_backend(None)
    assert calls == [1]
    torch.testing.assert_close(a, b)


def test_fallback_warns_once_and_uses_torch(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "_loaded", None)
    monkeypatch.setattr(build, "_failed", None)
    monkeypatch.setattr(backend_mod, "_resolved", {})
    monkeypatch.setattr(backend_mod, "_warned", False)
    monkeypatch.delenv("SEQNORM_BACKEND", raising=False)
    monkeypatch.setattr(build, "library_path", lambda: tmp_path / "key" / "lib.so")

    def broken(target):
        raise RuntimeError("simulated compiler failure")

    monkeypatch.setattr(build, "_build", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = native.backend()
        native.set_backend("auto")
        native.backend()
        native.set_backend(None)
    assert first.name == "torch" and "simulated compiler failure" in first.reason
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "install a C++ compiler" in msgs[0]
    native.set_backend("native")
    try:
        with pytest.raises(native.NativeUnavailable, match="asks for the native backend"):
            native.backend()
    finally:
        native.set_backend(None)


def test_no_compiler_falls_back_in_a_fresh_process(tmp_path):
    code = """
        import warnings, torch
        warnings.simplefilter("always")
        from seqnorm import SpectralRNN, native
        out, _ = SpectralRNN(2, 3)(torch.randn(4, 1, 2))
        print(native.backend().name, out.shape[-1])
    """
    res = _python(code, {"SEQNORM_CACHE": str(tmp_path), "CXX": "/nonexistent/c++"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["torch", "3"]
    assert res.stderr.count("RuntimeWarning") == 1 and "install a C++ compiler" in res.stderr


@pytest.mark.slow
def test_two_processes_build_one_library(tmp_path):
    code = "from seqnorm import native; print(native.backend().name)"
    env = {"SEQNORM_CACHE": str(tmp_path)}
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    results = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert [r[0].strip() for r in results] == ["native", "native"]
    assert sum("building native CPU kernels" in r[1] for r in results) == 1
    libs = list(tmp_path.rglob("*.so"))
    assert len(libs) == 1 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "make", [lambda: seqnorm.SpectralGRU(3, 8), lambda: seqnorm.SpectralLSTM(3, 8)]
)
def test_training_after_inference_mode_reuses_no_inference_buffer(make):
    """Lightning validates under torch.inference_mode(); the kernels' reused output buffers
    from that call must not come back as tensors autograd has to save in training."""
    native.set_backend("native")
    try:
        layer = make()
        x = torch.randn(5, 2, 3)
        with torch.inference_mode():
            layer(x)
        out, _ = layer(x)  # same shapes: the pool's buffers are free and large enough
        out.sum().backward()
        assert layer.weight_hh_l0.grad is not None or any(
            p.grad is not None for p in layer.parameters()
        )
    finally:
        native.set_backend(None)
