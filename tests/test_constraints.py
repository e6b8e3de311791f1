"""Property and error tests for the constraints and the linalg helpers."""

import pytest
import torch
from torch import nn

from seqnorm import CONSTRAINTS, SpectralGRU, SpectralLSTM, SpectralRNN, constrain
from seqnorm.constraints import satisfies
from seqnorm.linalg import (
    _certified_top,
    power_iteration,
    spectral_norm,
    stable_rank,
    top_singular_vectors,
)

LAYERS = [SpectralRNN, SpectralGRU, SpectralLSTM]
KINDS = [k for k in CONSTRAINTS if k != "none"]


def test_power_estimate_tracks_after_training():
    """estimator="power" (1 step per forward): after fast training stops, it re-converges.

    The default estimator is exact at every forward: see tests/test_bound_every_step.py.
    """
    layer = SpectralGRU(3, 8, constraint="spectral", constraint_options={"estimator": "power"})
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    target = 3 * torch.randn(6, 4, 8)
    for _ in range(20):
        out, _ = layer(torch.randn(6, 4, 3))
        opt.zero_grad()
        ((out - target) ** 2).mean().backward()
        opt.step()
    errors = []
    for _ in range(30):  # forwards without optimiser steps
        layer(torch.randn(6, 4, 3))
        errors.append((spectral_norm(layer.weight_hh_l0.detach(), 3) - 1).abs().max().item())
    assert errors[-1] < 1e-4


def test_constraint_changes_the_weight_the_layer_uses():
    # A large raw weight: the unconstrained layer sees it, the spectral layer does not.
    layer = SpectralGRU(2, 6, constraint="spectral")
    raw = layer.parametrizations.weight_hh_l0.original
    with torch.no_grad():
        raw.mul_(50)
    assert spectral_norm(raw, 3).min() > 10
    layer.train()
    layer(torch.randn(3, 1, 2))  # one power-iteration step on the new weight
    assert torch.allclose(spectral_norm(layer.weight_hh_l0, 3), torch.ones(3), atol=1e-3)


def test_scaled_gamma_is_learnable_and_clamped():
    lin = constrain(
        nn.Linear(4, 8, bias=False), constraint="scaled", blocks=2, gamma_min=0.8, gamma_max=1.1
    )
    p = lin.parametrizations.weight[0]
    assert torch.allclose(p.gamma, torch.ones(2))
    with torch.no_grad():
        p.gamma_raw.fill_(100.0)
    assert torch.allclose(spectral_norm(lin.weight, 2), torch.full((2,), 1.1), atol=1e-3)
    assert any(q is p.gamma_raw for q in lin.parameters())


def test_bound_leaves_small_matrices_alone():
    lin = nn.Linear(5, 5, bias=False)
    with torch.no_grad():
        lin.weight.copy_(0.3 * torch.linalg.qr(torch.randn(5, 5))[0])
    before = lin.weight.detach().clone()
    constrain(lin, constraint="bound", gamma=1.0)
    assert torch.allclose(lin.weight, before, atol=1e-6)


def test_spectral_equals_exact_normalisation_at_registration():
    W = torch.randn(12, 4, dtype=torch.float64)
    lin = nn.Linear(4, 12, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(W)
    constrain(lin, constraint="spectral", blocks=3)
    lin.eval()
    expected = (W.reshape(3, 4, 4) / spectral_norm(W, 3)[:, None, None]).reshape(12, 4)
    assert torch.allclose(lin.weight, expected, atol=1e-8)


@pytest.mark.parametrize("estimator", ["exact", "power"])
def test_no_buffer_update_in_eval_while_the_weight_is_unchanged(estimator):
    layer = SpectralRNN(2, 5, constraint_options={"estimator": estimator}).eval()
    u = layer.parametrizations.weight_hh_l0[0]._u.clone()
    layer(torch.randn(4, 2, 2))
    assert torch.equal(u, layer.parametrizations.weight_hh_l0[0]._u)


def test_cached_computes_once_per_sequence():
    cell_calls = []
    layer = SpectralGRU(2, 4)
    p = layer.parametrizations.weight_hh_l0[0]
    p.register_forward_hook(lambda *a: cell_calls.append(1))
    layer(torch.randn(50, 2, 2))
    layer.unroll = True
    layer(torch.randn(50, 2, 2))
    assert len(cell_calls) == 2  # once per forward call, whatever T


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_matrix_is_safe(dtype):
    Z = torch.zeros(6, 3, dtype=dtype)
    assert torch.equal(stable_rank(Z, 2), torch.zeros(2, dtype=dtype))
    assert torch.equal(spectral_norm(Z, 2), torch.zeros(2, dtype=dtype))
    for kind in ("spectral", "scaled", "bound"):
        lin = nn.Linear(3, 6, bias=False).to(dtype)
        with torch.no_grad():
            lin.weight.zero_()
        constrain(lin, constraint=kind, blocks=2)
        W = lin.weight
        assert torch.isfinite(W).all() and torch.equal(W, torch.zeros_like(W))
        W.sum().backward()
        assert torch.isfinite(lin.parametrizations.weight.original.grad).all()


def test_power_iteration_converges_to_svd():
    W = torch.randn(3, 7, 7, dtype=torch.float64)
    u, v = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    u, v = power_iteration(W, u, v, n_iterations=500)
    est = torch.einsum("bi,bij,bj->b", u, W, v)
    assert torch.allclose(est, torch.linalg.matrix_norm(W, 2), rtol=1e-6)


def test_power_iteration_runs_in_float32_for_half_input():
    W = torch.randn(1, 6, 6).bfloat16()
    u, v = power_iteration(W, torch.randn(1, 6), torch.randn(1, 6), 3)
    assert u.dtype == torch.float32 and v.dtype == torch.float32


def _stacks() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    q = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))[0]
    tied = torch.diag(torch.tensor([2.0, 2.0, 2.0 - 1e-7] + [1.0] * 37, dtype=torch.float64))
    return {
        "square": torch.randn(3, 48, 48, generator=g),
        "wide": torch.randn(2, 12, 70, generator=g),
        "tall": torch.randn(2, 70, 12, generator=g),
        "orthogonal (all sigma equal)": (3 * q).float().unsqueeze(0),
        "near-tied top": (q @ tied @ q.T).float().unsqueeze(0),
        "rank one": torch.outer(torch.arange(1.0, 31), torch.ones(30)).unsqueeze(0),
    }


@pytest.mark.parametrize("name", list(_stacks()))
@pytest.mark.parametrize("start", ["random", "previous"])
def test_top_singular_pair_is_exact_from_any_start(name, start):
    """sigma = u^T W v within the certified 1e-6 of an SVD, warm-started or not."""
    W = _stacks()[name]
    g = torch.Generator().manual_seed(4)
    u = torch.randn(W.shape[0], W.shape[1], generator=g)
    v = torch.randn(W.shape[0], W.shape[2], generator=g)
    if start == "previous":  # the pair of a nearby matrix, as after an optimizer step
        u, v = top_singular_vectors(W + 0.01 * torch.randn(W.shape, generator=g), u, v)
    u, v = top_singular_vectors(W, u, v)
    sigma = torch.einsum("bi,bij,bj->b", u.double(), W.double(), v.double())
    true = torch.linalg.svdvals(W.double())[:, 0]
    assert torch.allclose(sigma, true, rtol=1.5e-6, atol=0), (sigma - true) / true
    assert torch.allclose(u.norm(dim=-1), torch.ones(len(u)), atol=1e-5)


def test_certificate_rejects_a_vector_that_is_not_the_top():
    """An exact second eigenvector is a fixed point of power and inverse iteration: the
    float64 Cholesky certificate must refuse it, and the eigh fallback still finds sigma."""
    W = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5])).unsqueeze(0)
    e2 = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    _, ok = _certified_top(W.mT @ W, e2, 1e-12)
    assert not bool(ok.any())
    u, v = top_singular_vectors(W, e2, e2)
    assert torch.einsum("bi,bij,bj->b", u, W, v).item() == pytest.approx(3.0, rel=1e-6)
    good = torch.tensor([[1.0, 1e-3, 0.0, 0.0]])
    assert bool(_certified_top(W.mT @ W, good, 1e-12)[1].all())


def test_stable_rank_values():
    assert torch.allclose(stable_rank(torch.eye(5)), torch.tensor([5.0]))
    rank_one = torch.outer(torch.randn(4), torch.randn(4))
    assert torch.allclose(stable_rank(rank_one), torch.tensor([1.0]), atol=1e-5)


def test_satisfies_detects_violations():
    assert not satisfies(2 * torch.eye(3), "spectral")
    assert satisfies(torch.eye(3), "spectral")
    assert not satisfies(torch.diag(torch.tensor([1.0, 0.5])), "band", r=0.1)
    assert satisfies(torch.diag(torch.tensor([1.05, 0.95])), "band", r=0.1)
    assert not satisfies(torch.eye(2) * 2, "scaled", gamma_min=0.5, gamma_max=1.5)
    with pytest.raises(ValueError, match="constraint must be one of"):
        satisfies(torch.eye(2), "nope")


@pytest.mark.parametrize(
    "kind, options, match",
    [
        ("nope", {}, "constraint must be one of"),
        ("band", {"r": 0.0}, "r must be in the open interval"),
        ("band", {"r": 1.0}, "r must be in the open interval"),
        ("scaled", {"gamma_min": 2.0, "gamma_max": 1.0}, "gamma_min must be <= gamma_max"),
        ("scaled", {"gamma_min": -1.0}, "gamma_min must be a positive number"),
        ("bound", {"gamma": 0}, "gamma must be a positive number"),
        ("spectral", {"gamma": 1.0}, r"unknown option\(s\) \['gamma'\].*allowed: estimator"),
        ("spectral", {"n_power_iterations": 0}, "n_power_iterations must be an int >= 1"),
    ],
)
def test_bad_options(kind, options, match):
    with pytest.raises(ValueError, match=match):
        constrain(nn.Linear(4, 4), constraint=kind, **options)


def test_bad_blocks():
    with pytest.raises(ValueError, match="blocks=3 must divide the 8 rows"):
        constrain(nn.Linear(4, 8), constraint="spectral", blocks=3)
    with pytest.raises(ValueError, match="square gate block"):
        constrain(nn.Linear(4, 6), constraint="spectral", blocks=2)
    with pytest.raises(ValueError, match="blocks must be a positive int"):
        constrain(nn.Linear(4, 4), constraint="spectral", blocks=0)
    with pytest.raises(ValueError, match="no tensor named 'bogus'"):
        constrain(nn.Linear(4, 4), name="bogus")
