"""Probes: oracle tests against autograd done by hand, known dynamics, edge cases, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from seqnorm import (
    SpectralGRU,
    SpectralGRUCell,
    SpectralLSTM,
    SpectralLSTMCell,
    SpectralRNN,
    SpectralRNNCell,
    cached,
)
from seqnorm.linalg import stable_rank
from seqnorm.probes import (
    decay_rate,
    find_layers,
    grad_ratio,
    hidden_grad_norms,
    jacobian_norms,
    log10_norms,
    record_hidden_states,
    summarize,
    weight_spectrum,
)

D = torch.float64
LAYERS = {"rnn": SpectralRNN, "gru": SpectralGRU, "lstm": SpectralLSTM}
CELLS = {"rnn": SpectralRNNCell, "gru": SpectralGRUCell, "lstm": SpectralLSTMCell}


# Tensors here are tiny: intra-op threads only add overhead (and stall on a busy box).
pytestmark = pytest.mark.usefixtures("one_thread")


class Tagger(nn.Module):
    """A user's own model: a seqnorm layer and a per-step readout (batch-first)."""

    def __init__(self, cell: str, num_layers: int = 1, **kw) -> None:
        super().__init__()
        self.rnn = LAYERS[cell](3, 5, num_layers=num_layers, batch_first=True, **kw)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])  # (B, T, 4)


def per_step_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())


def manual_grad_norms(model: Tagger, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unroll cells with the layer's (constrained) weights, retain_grad on every h[t]."""
    rnn = model.rnn
    lstm = rnn.mode == "lstm"
    extra = {"nonlinearity": rnn.nonlinearity} if rnn.mode.startswith("rnn") else {}
    layer_in = x.unbind(1)  # T x (B, I)
    rows = []
    with cached():
        for k in range(rnn.num_layers):
            cell = CELLS[rnn.mode.split("_")[0]](
                len(layer_in[0][0]), 5, constraint="none", dtype=D, **extra
            )
            with torch.no_grad():
                cell.weight_ih.copy_(getattr(rnn, f"weight_ih_l{k}"))
                cell.weight_hh.copy_(getattr(rnn, f"weight_hh_l{k}"))
                cell.bias_ih.copy_(getattr(rnn, f"bias_ih_l{k}"))
                cell.bias_hh.copy_(getattr(rnn, f"bias_hh_l{k}"))
            state, hs = None, []
            for x_t in layer_in:
                state = cell(x_t, state)
                h = state[0] if lstm else state
                h.retain_grad()
                hs.append(h)
            rows.append(hs)
            layer_in = hs
    out = model.head(torch.stack(layer_in, 1))  # (B, T, 4)
    per_step_ce(out, y).backward()
    return torch.stack([torch.stack([h.grad.norm(dim=-1).mean() for h in hs]) for hs in rows])


# ---------------------------------------------------------------------------- recording


def test_record_hidden_states_restores_recorder_even_on_error() -> None:
    gru = SpectralGRU(3, 4)
    with pytest.raises(RuntimeError, match="boom"), record_hidden_states(gru):
        raise RuntimeError("boom")
    assert not gru.is_recording


def test_find_layers_in_module_order() -> None:
    model = nn.Sequential(nn.Linear(2, 3), SpectralRNN(3, 4), nn.Sequential(SpectralLSTM(4, 4)))
    assert [n for n, _ in find_layers(model)] == ["1", "2.0"]


def test_model_without_seqnorm_layer_raises() -> None:
    with pytest.raises(ValueError, match="must contain a seqnorm layer"):
        hidden_grad_norms(nn.GRU(3, 4), (torch.randn(5, 2, 3), None), lambda o, t: o[0].sum())


def test_layer_called_twice_raises() -> None:
    rnn = SpectralRNN(3, 3)

    def twice(x: torch.Tensor) -> torch.Tensor:
        return rnn(rnn(x)[0])[0]

    model = nn.Module()
    model.rnn = rnn
    model.forward = twice
    with pytest.raises(ValueError, match="exactly once"):
        hidden_grad_norms(model, (torch.randn(4, 2, 3), None), lambda o, t: o.sum())
    assert not rnn.is_recording


def test_bad_batch_raises() -> None:
    with pytest.raises(ValueError, match="batch must be a pair"):
        hidden_grad_norms(SpectralRNN(2, 2), torch.randn(3, 2), lambda o, t: o[0].sum())


# ---------------------------------------------------------------------- hidden_grad_norms


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_hidden_grad_norms_equal_manual_unroll(cell: str) -> None:
    model = Tagger(cell, num_layers=2, constraint="spectral").to(D).eval()
    x, y = torch.randn(3, 7, 3, dtype=D), torch.randint(0, 4, (3, 7))
    got = hidden_grad_norms(model, (x, y), per_step_ce)
    assert got.shape == (2, 7) and got.dtype == D
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(got, manual_grad_norms(model, x, y), rtol=1e-10, atol=1e-14)


def test_probe_keeps_mode_buffers_and_grads() -> None:
    model = Tagger("gru", constraint="spectral").train()
    with torch.no_grad():  # move the weights: a training forward now updates u, v
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    hidden_grad_norms(model, (torch.randn(2, 6, 3), torch.randint(0, 4, (2, 6))), per_step_ce)
    assert model.training and model.rnn.training
    assert not model.rnn.is_recording
    for k, v in model.state_dict().items():  # power-iteration vectors restored
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_probe_runs_under_no_grad() -> None:
    model = Tagger("rnn")
    with torch.no_grad():
        batch = (torch.randn(2, 5, 3), torch.randint(0, 4, (2, 5)))
        n = hidden_grad_norms(model, batch, per_step_ce)
    assert torch.isfinite(n).all() and (n > 0).all()


def _linear_relu_rnn(W: torch.Tensor, T: int = 60, H: int = 4) -> tuple[SpectralRNN, torch.Tensor]:
    """relu RNN, zero biases, positive W_ih and inputs: states stay positive, so it is
    exactly linear, h[t] = W h[t-1] + W_ih x[t]."""
    rnn = SpectralRNN(2, H, nonlinearity="relu", constraint="none", dtype=D)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(W)
        rnn.weight_ih_l0.uniform_(0.1, 1.0)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    return rnn, torch.rand(T, 3, 2, dtype=D) + 0.1


@pytest.mark.parametrize("a", [0.9, 0.97, 1.02])
def test_linear_rnn_scaled_identity_decays_as_a_power(a: float) -> None:
    H, T = 4, 60
    rnn, x = _linear_relu_rnn(a * torch.eye(H, dtype=D), T, H)
    n = hidden_grad_norms(rnn, (x, None), lambda out, _: out[-1].sum())[0]  # loss at the end
    expected = math.sqrt(H) * a ** torch.arange(T - 1, -1, -1, dtype=D)  # ||1|| a^(T-1-t)
    torch.testing.assert_close(n, expected, rtol=1e-9, atol=0)
    rate = float(decay_rate(n))
    assert rate == pytest.approx(100 * math.log10(a), rel=1e-6)
    assert (rate < 0) == (a < 1)  # negative: vanishing going back in time
    assert float(grad_ratio(n)) == pytest.approx(a ** (T - 1), rel=1e-9)


def test_orthogonal_linear_regime_is_flat() -> None:
    # tanh with tiny inputs and zero biases is linear to ~1e-16; orthogonal W keeps norms.
    rnn = SpectralRNN(2, 6, constraint="orthogonal", dtype=D)
    with torch.no_grad():
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    x = 1e-8 * torch.randn(80, 2, 2, dtype=D)
    n = hidden_grad_norms(rnn, (x, None), lambda out, _: out[-1].sum())[0]
    torch.testing.assert_close(n, n[-1].expand_as(n), rtol=1e-9, atol=0)
    assert abs(float(decay_rate(n))) < 1e-6
    assert float(grad_ratio(n)) == pytest.approx(1.0, rel=1e-9)


# ------------------------------------------------------------------------------ summaries


def test_decay_rate_is_robust_to_outliers() -> None:
    t = torch.arange(200, dtype=D)
    n = 10 ** (0.01 * t)  # log10 grows 1 per 100 steps forward: -1 going backward
    n[::17] *= 1e6  # spikes (e.g. steps that carry a target)
    assert float(decay_rate(n)) == pytest.approx(-1.0, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_and_underflowing_norms_give_finite_summary(dtype: torch.dtype) -> None:
    tiny = torch.finfo(dtype).tiny
    curves = torch.stack([
        torch.zeros(50, dtype=dtype),
        torch.logspace(-60, 0, 50, dtype=torch.float64).to(dtype),  # float32 underflows to 0
        torch.full((50,), tiny / 8, dtype=dtype),  # subnormal
        torch.tensor([0.0] * 25 + [1.0] * 25, dtype=dtype),
        torch.tensor([float("inf")] + [1.0] * 49, dtype=dtype),
    ])  # fmt: skip
    assert torch.isfinite(log10_norms(curves)).all()
    s = summarize(curves)
    assert all(v is None or math.isfinite(v) for v in s.values()), s
    # nothing measurable: no rate and no ratio (not a flat 0 and a perfect 1)
    for k in (0, 2):
        assert s[f"decay_rate/l{k}"] is None and s[f"grad_ratio/l{k}"] is None
        assert s[f"fit_steps/l{k}"] == 0 and s[f"below_range_steps/l{k}"] == 50
    assert s["grad_ratio/l3"] == pytest.approx(tiny, rel=1e-4)  # floored zero over one
    assert s["decay_rate/l3"] == 0.0 and s["fit_steps/l3"] == 25  # flat over the measured
    assert s["decay_rate/l4"] == 0.0 and s["below_range_steps/l4"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decay_rate_ignores_the_underflowed_part(dtype: torch.dtype) -> None:
    # ||dL/dh[t]|| = 10**(-0.5 (T-1-t)) over T=784 steps: below float32's range for all but
    # the last ~75 steps (and zero there). The fit must see -50 per 100 steps, not a flat
    # curve at the floor.
    t = torch.arange(784, dtype=torch.float64)
    curve = (10 ** (-0.5 * (783 - t))).to(dtype)
    assert (curve == 0).float().mean() > (0.5 if dtype == torch.float32 else 0.0)
    assert float(decay_rate(curve)) == pytest.approx(-50.0, rel=1e-6)
    assert decay_rate(torch.zeros(10, dtype=dtype)).isnan()  # nothing measurable: no rate


def test_float32_norms_do_not_flush_tiny_gradients_to_zero() -> None:
    # Entries ~1e-25 are normal float32 numbers, but their squares are not: a norm taken in
    # float32 reads 0 there. The probe must see the true size down to float32's own range.
    rnn = SpectralRNN(2, 8, constraint="none")  # float32
    x = torch.randn(6, 3, 2)
    scale = 1e-25

    def loss_fn(out: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return scale * (out[0][-1] * y).sum()

    y = torch.randn(3, 8)
    tiny = hidden_grad_norms(rnn, (x, y), loss_fn)
    ref = hidden_grad_norms(rnn, (x, y / scale), loss_fn)  # same curve, entries ~1
    assert tiny.dtype == torch.float32 and (tiny > 0).all()
    torch.testing.assert_close(tiny / scale, ref, rtol=1e-4, atol=0)


def _theil_sen_rate(norms: torch.Tensor) -> float:
    """Oracle: median slope of log10 ||dL/dh[t]|| over all pairs of nonzero, normal steps,
    per 100 steps going backward in time (no subsampling: keep the curve <= 128 such steps)."""
    keep = (norms > torch.finfo(norms.dtype).tiny).nonzero().flatten().tolist()
    y = norms.double().log10().tolist()
    slopes = [(y[j] - y[i]) / (j - i) for a, i in enumerate(keep) for j in keep[a + 1 :]]
    return -100.0 * float(torch.tensor(slopes, dtype=D).quantile(0.5))


def test_flushed_gradients_of_a_long_run() -> None:
    """A last-step loss over T=400 steps with subnormals flushed to zero: the early steps'
    ||dL/dh[t]|| are exactly 0. Nothing reads -inf or NaN, those steps sit at the floor, and
    the decay rate is the fit over the nonzero steps only."""
    from seqnorm import probes

    rnn = SpectralRNN(2, 16, constraint="none")
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.5)  # vanishes fast: fewer than 128 measurable steps
    x, y = torch.randn(400, 4, 2), torch.randn(4, 16)

    def last_step_loss(out: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return ((out[0][-1] - y) ** 2).mean()

    flushing = torch.set_flush_denormal(True)
    try:
        norms = hidden_grad_norms(rnn, (x, y), last_step_loss)[0]  # (T,)
    finally:
        torch.set_flush_denormal(False)
    zero = norms == 0
    assert norms.dtype == torch.float32 and zero[:100].all() and not zero[-20:].any()
    if flushing:  # flushed, not merely underflowed: no subnormal survives
        assert not ((norms > 0) & (norms < torch.finfo(torch.float32).tiny)).any()
    floor = probes.log10_floor(torch.float32)
    assert floor == pytest.approx(math.log10(torch.finfo(torch.float32).tiny))  # -37.93
    y10 = log10_norms(norms)
    assert torch.isfinite(y10).all() and (y10[zero] == floor).all()
    assert torch.equal(probes.below_range(norms), zero)
    measurable = int((~zero).sum())
    assert 2 <= measurable <= 128
    assert float(decay_rate(norms)) == pytest.approx(_theil_sen_rate(norms), rel=1e-6)
    s = summarize(norms)
    assert s["fit_steps"] == measurable and s["below_range_steps"] == 400 - measurable
    assert s["decay_rate"] == pytest.approx(_theil_sen_rate(norms), rel=1e-6)
    assert all(math.isfinite(v) for v in s.values()), s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decay_rate_needs_two_measurable_steps(dtype: torch.dtype) -> None:
    """Fewer than two steps above the floor: no rate (NaN in the tensor, None in the
    summary), never a slope drawn through the floor."""
    one = torch.zeros(50, dtype=dtype)
    one[-1] = 1e-3
    sub = torch.full((50,), torch.finfo(dtype).tiny / 8, dtype=dtype)  # subnormal
    curves = torch.stack([torch.zeros(50, dtype=dtype), one, sub])
    assert decay_rate(curves).isnan().all()
    s = summarize(curves)
    assert [s[f"decay_rate/l{k}"] for k in range(3)] == [None, None, None]
    assert [s[f"fit_steps/l{k}"] for k in range(3)] == [0, 1, 0]
    assert [s[f"below_range_steps/l{k}"] for k in range(3)] == [50, 49, 50]
    two = one.clone()
    two[0] = 1e-5  # two measurable steps 49 apart: the rate is their slope
    assert summarize(two)["decay_rate"] == pytest.approx(-200 / 49, rel=1e-5)


def test_below_range_and_floor() -> None:
    from seqnorm import probes

    tiny = torch.finfo(torch.float32).tiny
    n = torch.tensor([0.0, tiny / 8, tiny, 2 * tiny, 1.0, float("inf"), float("nan")])
    assert probes.below_range(n).tolist() == [True, True, True, False, False, False, False]
    assert probes.log10_floor(torch.float64) == pytest.approx(-307.6526555685888)
    # half-precision norms are measured in float32: float32's floor
    assert probes.log10_floor(torch.float16) == probes.log10_floor(torch.float32)
    assert float(log10_norms(torch.zeros(1, dtype=torch.float16))) == probes.log10_floor(
        torch.float16
    )


def test_summarize_headline_is_last_row() -> None:
    n = torch.stack([10 ** (0.02 * torch.arange(30.0)), torch.ones(30)])
    s = summarize(n)
    assert s["decay_rate"] == s["decay_rate/l1"] == 0.0
    assert s["decay_rate/l0"] == pytest.approx(-2.0, rel=1e-5)
    keys = {"decay_rate", "grad_ratio", "fit_steps", "below_range_steps"}
    assert set(summarize(torch.ones(30))) == keys


@pytest.mark.parametrize("bad", [torch.ones(1), torch.ones(2, 3, 4), torch.ones(3, 1)])
def test_summaries_reject_bad_shapes(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="norms must"):
        summarize(bad)


# ------------------------------------------------------------------------------ Jacobians


def _full_jacobian_norm(layer, x: torch.Tensor, t: int) -> float:
    """||dh[T-1]/dh[t]||_2 of a one-layer net, restarting the layer from h[t] (public API)."""
    _, state = layer(x[: t + 1])
    lstm = layer.mode == "lstm"

    def f(h: torch.Tensor) -> torch.Tensor:
        hx = (h[None], state[1]) if lstm else h[None]
        _, s = layer(x[t + 1 :], hx)
        return (s[0] if lstm else s)[0]

    J = jacobian(f, (state[0] if lstm else state)[0].detach())  # (H, H)
    return float(torch.linalg.matrix_norm(J, 2))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_jacobian_power_iteration_matches_full_jacobian(cell: str) -> None:
    layer = LAYERS[cell](3, 5, constraint="none", dtype=D)
    x = torch.randn(12, 3, dtype=D)
    steps = [0, 4, 9]
    got = jacobian_norms(layer, x, steps=steps, method="power", n_iterations=60)
    want = torch.tensor([_full_jacobian_norm(layer, x, t) for t in steps], dtype=D)
    assert (got <= want * (1 + 1e-12)).all()  # power iteration converges from below
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-12)
    one = jacobian_norms(layer, x, steps=[-1], method="power")
    torch.testing.assert_close(one, torch.ones(1, dtype=D))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_jacobian_power_iteration_matches_closed_form(nonlinearity: str) -> None:
    # Two stacked layers, batch-first batched input: last layer, batch element 0.
    layer = SpectralRNN(3, 6, num_layers=2, nonlinearity=nonlinearity, batch_first=True,
                        constraint="spectral", dtype=D).eval()  # fmt: skip
    x = torch.randn(2, 15, 3, dtype=D)
    exact = jacobian_norms(layer, x, method="closed_form")
    assert exact.shape == (5,) and exact[-1] == 1
    power = jacobian_norms(layer, x, method="power", n_iterations=300)
    torch.testing.assert_close(power, exact, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(jacobian_norms(layer, x), exact)  # auto = closed form
    # only element 0 counts
    x2 = torch.cat([x[:1], torch.randn(1, 15, 3, dtype=D)])
    torch.testing.assert_close(jacobian_norms(layer, x2, method="closed_form"), exact)


def test_jacobian_closed_form_first_layer_matches_power() -> None:
    layer = SpectralRNN(3, 4, num_layers=2, constraint="none", dtype=D)
    x = torch.randn(10, 3, dtype=D)
    exact = jacobian_norms(layer, x, steps=[1, 5], method="closed_form", layer_index=0)
    power = jacobian_norms(layer, x, steps=[1, 5], method="power", n_iterations=300,
                           layer_index=0)  # fmt: skip
    torch.testing.assert_close(power, exact, rtol=1e-6, atol=1e-12)


def test_jacobian_errors() -> None:
    gru = SpectralGRU(3, 4)
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="closed_form"):
        jacobian_norms(gru, x, method="closed_form")
    with pytest.raises(ValueError, match="method must be"):
        jacobian_norms(gru, x, method="svd")
    with pytest.raises(ValueError, match="steps must be ints"):
        jacobian_norms(gru, x, steps=[6])
    with pytest.raises(ValueError, match="n_iterations"):
        jacobian_norms(gru, x, n_iterations=0)
    with pytest.raises(ValueError, match="layer_index"):
        jacobian_norms(gru, x, layer_index=1)
    with pytest.raises(TypeError, match="layer must be"):
        jacobian_norms(nn.GRU(3, 4), x)


# ------------------------------------------------------------------------------- spectrum


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_weight_spectrum_matches_svdvals(cell: str) -> None:
    layer = LAYERS[cell](3, 6, num_layers=2, constraint="none")
    with torch.no_grad():
        layer.weight_hh_l1.mul_(3.0)
    spec = weight_spectrum(layer)
    G = layer.num_gates
    assert spec["singular_values"].shape == (2, G, 6)
    for k in range(2):
        W = getattr(layer, f"weight_hh_l{k}").detach()
        torch.testing.assert_close(
            spec["singular_values"][k], torch.linalg.svdvals(W.view(G, 6, 6))
        )
        torch.testing.assert_close(spec["stable_rank"][k], stable_rank(W, blocks=G))
        torch.testing.assert_close(
            spec["sigma_max"][k], torch.linalg.matrix_norm(W.view(G, 6, 6), 2)
        )
    bound = spec["sigma_max"][0].max() * spec["sigma_max"][1].max()
    torch.testing.assert_close(spec["lipschitz_bound"], bound)


def test_weight_spectrum_orthogonal_and_bound() -> None:
    spec = weight_spectrum(SpectralGRU(3, 8, constraint="orthogonal"))
    torch.testing.assert_close(spec["singular_values"], torch.ones(1, 3, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(spec["stable_rank"], torch.full((1, 3), 8.0), atol=1e-4, rtol=0)
    half = {"gamma_min": 0.5, "gamma_max": 0.5}
    spec = weight_spectrum(
        SpectralRNN(3, 8, num_layers=3, constraint="scaled", constraint_options=half)
    )
    assert float(spec["lipschitz_bound"]) == pytest.approx(0.125, rel=1e-3)


def test_lipschitz_bound_bounds_elman_jacobian() -> None:
    layer = SpectralRNN(3, 6, constraint="bound", constraint_options={"gamma": 0.9}, dtype=D)
    x = torch.randn(20, 3, dtype=D)
    bound = float(weight_spectrum(layer)["lipschitz_bound"])
    steps = [0, 5, 10, 19]
    got = jacobian_norms(layer, x, steps=steps)
    assert all(float(g) <= bound ** (19 - t) * (1 + 1e-9) for g, t in zip(got, steps, strict=True))


def test_weight_spectrum_keeps_power_iteration_state() -> None:
    layer = SpectralLSTM(3, 5).train()
    with torch.no_grad():
        layer.parametrizations.weight_hh_l0.original.add_(0.3)  # u, v no longer converged
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    weight_spectrum(layer)
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())


@pytest.mark.parametrize("kind", ["bound", "orthogonal"])
def test_block_sigma_max_is_exact_differentiable_and_side_effect_free(kind):
    from seqnorm.probes import block_sigma_max

    options = {"estimator": "power", "gamma": 0.8} if kind == "bound" else {"rebase_every": 1}
    layer = SpectralGRU(3, 5, num_layers=2, bidirectional=True, constraint=kind,
                        constraint_options=options)  # fmt: skip
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    got = block_sigma_max(layer)  # (units, gates)
    assert layer.training and all(m.training for m in layer.modules())
    for k, v in layer.state_dict().items():  # no power step, no re-base count
        assert torch.equal(v, before[k]), k
    with torch.no_grad():  # no training bookkeeping (a re-base would void got's graph)
        maps = layer.recurrent_maps().double()
    torch.testing.assert_close(got.double(), torch.linalg.svdvals(maps)[..., 0], atol=1e-5, rtol=0)
    assert got.shape == (4, 3)
    got.sum().backward()
    assert all(p.grad is not None for n, p in layer.named_parameters() if "weight_hh" in n)
