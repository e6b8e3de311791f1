"""Second derivatives (double backward) through every constraint, layer, mode and backend.

``torch.autograd.gradgradcheck`` of a whole layer with respect to its input and every
parameter (so through the constraint's parametrization and the recurrent kernel), at a
generic point (every parameter moved off its initial value: an orthogonal or band layer
starts at ``A = 0``), in float64 on tiny sizes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from seqnorm import CONSTRAINTS, SpectralGRU, SpectralLSTM, SpectralRNN, constrain, native
from seqnorm.constraints.orthogonal import MAPS, expm_skew, skew
from seqnorm.linalg import spectral_norm

LAYERS = {"rnn": SpectralRNN, "gru": SpectralGRU, "lstm": SpectralLSTM}

#: Every constraint of the registry (each orthogonal map on its own) with options that make
#: it act: ``bound``'s cap below every block's sigma (0.9 to 1.4 here), so it rescales.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "spectral": ("spectral", {}),
    "scaled": ("scaled", {}),
    "bound": ("bound", {"gamma": 0.5}),
    "band": ("band", {}),
    **{f"orthogonal-{m}": ("orthogonal", {"map": m}) for m in MAPS},
}


def test_the_cases_cover_the_registry() -> None:
    assert {kind for kind, _ in CASES.values()} == set(CONSTRAINTS)
    assert {o["map"] for kind, o in CASES.values() if kind == "orthogonal"} == set(MAPS)


def _layer(cls: type[nn.Module], kind: str, options: dict[str, Any], train: bool) -> nn.Module:
    if kind == "orthogonal" and train:
        # A re-base (every rebase_every training forwards) changes the function between
        # gradgradcheck's many evaluations: see test_rebase_before_backward_raises.
        options = {**options, "rebase_every": None}
    layer = cls(2, 3, constraint=kind, constraint_options=options, dtype=torch.float64)
    with torch.no_grad():  # a generic point: A != 0 for orthogonal and band
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer.train(train)


def _gradgradcheck(layer: nn.Module) -> bool:
    """``gradgradcheck`` with respect to the input and every parameter: in fast mode (random
    projections of the Jacobians, a few evaluations instead of one per entry), with
    tolerances tight enough that a missing second-derivative term cannot hide in them (with
    the default ones fast mode missed the bound GRU's; every check here passes at 100 times
    tighter ones, atol=1e-10 and rtol=1e-8)."""
    x = torch.randn(2, 1, 2, dtype=torch.float64, requires_grad=True)  # (T, B, I)
    params = tuple(layer.parameters())
    assert all(p.dtype == torch.float64 for p in params)
    return torch.autograd.gradgradcheck(
        lambda x, *_: layer(x)[0], (x, *params), fast_mode=True, atol=1e-8, rtol=1e-6
    )


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layer_name", list(LAYERS))
@pytest.mark.parametrize("case", list(CASES))
def test_gradgradcheck_every_constraint(case: str, layer_name: str, train: bool) -> None:
    kind, options = CASES[case]
    layer = _layer(LAYERS[layer_name], kind, options, train)
    if kind == "bound":  # the cap acts on every block (a check at the kink would be moot)
        raw = layer.parametrizations.weight_hh_l0.original
        assert (spectral_norm(raw, layer.num_gates) > 1.5 * options["gamma"]).all()
    assert _gradgradcheck(layer)


@pytest.mark.parametrize(
    "backend", ["auto", "torch"], ids=["SEQNORM_BACKEND=auto", "SEQNORM_BACKEND=torch"]
)
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_gradgradcheck_each_backend(
    backend: str, layer_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernels' own double backward: ``auto`` runs seqnorm's native kernels where they
    build (their double backward recomputes through the step loop), ``torch`` torch's."""
    monkeypatch.setenv("SEQNORM_BACKEND", backend)
    if backend == "torch":
        assert native.backend().name == "torch"
    assert _gradgradcheck(_layer(LAYERS[layer_name], "orthogonal", {"map": "exp"}, True))


def test_power_estimator_gradgradcheck_in_eval() -> None:
    """In eval the power vectors stay put while the weight is unchanged, so the layer is
    one function of its parameters and its second derivative checks."""
    layer = _layer(SpectralGRU, "spectral", {"estimator": "power"}, train=False)
    assert _gradgradcheck(layer)


def test_power_estimator_holds_its_vectors_constant_in_training() -> None:
    """In training every forward advances the power vectors (no gradient through them, as
    ``torch.nn.utils.spectral_norm``): both derivatives are those of ``W / (u^T W v)`` with
    the call's ``u, v`` held constant."""
    lin = constrain(nn.Linear(3, 3, bias=False).double(), constraint="spectral",
                    estimator="power")  # fmt: skip
    W = lin.parametrizations.weight.original
    cap = lin.parametrizations.weight[0]
    probe = torch.randn(3, 3, dtype=torch.float64)
    out = lin.weight  # a training forward: one power step
    u, v = cap._u.clone(), cap._v.clone()
    ref = W / torch.einsum("i,ij,j->", u[0], W, v[0])
    grads = []
    for y in (out, ref):
        (g,) = torch.autograd.grad((y * probe).sum() ** 2, W, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), W)
        grads.append((g.detach(), gg))
    torch.testing.assert_close(grads[0], grads[1])


def test_expm_skew_second_derivative_equals_matrix_exp() -> None:
    A = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda A: expm_skew(skew(A)), (A,))
    G = torch.randn(2, 4, 4, dtype=torch.float64)
    ours, ref = expm_skew(skew(A)), torch.matrix_exp(skew(A))
    (g1,) = torch.autograd.grad((ours * G).sum(), A, create_graph=True)
    (g2,) = torch.autograd.grad((ref * G).sum(), A, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(g1.square().sum(), A)[0],
                               torch.autograd.grad(g2.square().sum(), A)[0])  # fmt: skip


@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (5, 2)], ids=["square", "wide", "tall"])
def test_sigma_second_derivative_is_svdvals(shape: tuple[int, int]) -> None:
    """The exact sigma's second derivative is that of ``svdvals(W)[0]``, square or not."""
    lin = constrain(nn.Linear(shape[1], shape[0], bias=False).double(), constraint="spectral")
    W = lin.parametrizations.weight.original
    assert torch.autograd.gradgradcheck(lambda W: lin.parametrizations.weight[0](W), (W,))
    probe = torch.randn(shape, dtype=torch.float64)
    got = []
    for y in (lin.weight, W / torch.linalg.svdvals(W)[0]):
        (g,) = torch.autograd.grad((y * probe).sum() ** 2, W, create_graph=True)
        got.append(torch.autograd.grad(g.square().sum(), W)[0])
    torch.testing.assert_close(got[0], got[1])


def test_sigma_second_derivative_of_a_rank_deficient_map() -> None:
    """An LSTM with projections caps a rank-``P`` product (``H - P`` zero singular values):
    still a simple largest singular value, so a finite, checked second derivative."""
    layer = SpectralLSTM(2, 3, proj_size=1, constraint="spectral", dtype=torch.float64)
    assert _gradgradcheck(layer)


def test_sigma_second_derivative_where_sigma_is_repeated_raises() -> None:
    """At a repeated largest singular value (an orthogonal block) sigma has no second
    derivative: asking for one raises instead of returning something."""
    lin = constrain(nn.Linear(3, 3, bias=False).double(), constraint="spectral")
    with torch.no_grad():
        lin.parametrizations.weight.original.copy_(torch.eye(3, dtype=torch.float64))
    W = lin.parametrizations.weight.original
    probe = torch.randn(3, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad((lin.weight * probe).sum() ** 2, W, create_graph=True)
    with pytest.raises(RuntimeError, match="largest singular value .* repeated"):
        torch.autograd.grad(g.square().sum(), W)


def test_rebase_before_backward_raises() -> None:
    """A re-base between a forward and its backward changes the orthogonal constraint's
    ``base`` in place: autograd refuses that graph instead of returning a wrong gradient."""
    layer = SpectralGRU(2, 3, constraint="orthogonal", dtype=torch.float64).train()
    out, _ = layer(torch.randn(2, 1, 2, dtype=torch.float64))
    orth = layer.parametrizations.weight_hh_l0[0]
    orth.rebase(layer.parametrizations.weight_hh_l0.original)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_conv_reshaped_norm_second_derivative() -> None:
    """The reshaped-kernel norm of a convolution is the same exact sigma, twice differentiable."""
    conv = constrain(nn.Conv1d(2, 2, 3).double(), constraint="spectral", norm="reshaped")
    K = conv.parametrizations.weight.original
    assert torch.autograd.gradgradcheck(conv.parametrizations.weight[0], (K,))
