"""The constraints' interface: holds(), right_inverse, constrained_tensors, the constraint=
spelling, the orthogonal map's exactness and cost path, and torch.compile without breaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import seqnorm
from seqnorm import SpectralRNN, SpectralRNNCell, constrain
from seqnorm.constraints import (
    CONSTRAINTS,
    Bound,
    ConvGeometry,
    Orthogonal,
    Scaled,
    Spectral,
    constrained_tensors,
    constraint_options,
    conv_constraint_options,
    conv_operator_norm,
)
from seqnorm.constraints.orthogonal import expm_skew, skew

KINDS = [k for k in CONSTRAINTS if k != "none"]


def test_holds_uses_the_instance_options():
    W = 0.8 * torch.eye(4)  # sigma_max 0.8
    shape = torch.Size((4, 4))
    assert Bound(shape, 1, gamma=1.0).holds(W)
    assert not Bound(shape, 1, gamma=0.5).holds(W)
    assert Scaled(shape, 1, gamma_min=0.7, gamma_max=0.9).holds(W)
    assert not Scaled(shape, 1, gamma_min=0.85, gamma_max=0.9).holds(W)
    assert not Spectral(shape, 1).holds(W) and Spectral(shape, 1).holds(W / 0.8)
    assert Orthogonal(shape, 1).holds(torch.eye(4)) and not Orthogonal(shape, 1).holds(W)


def test_options_are_the_keyword_only_parameters():
    assert constraint_options("orthogonal") == {"map": "exp", "rebase_every": 100}
    assert constraint_options("band") == {"r": 0.1}
    assert constraint_options("spectral") == {
        "estimator": "exact",
        "n_power_iterations": 1,
        "eps": 1e-12,
    }
    assert list(conv_constraint_options("bound"))[0] == "gamma"


def _expected(kind: str, W0: torch.Tensor, blocks: int) -> torch.Tensor:
    """What the constrained matrix must be right after assigning ``W0``, by hand."""
    Wb = W0.double().reshape(blocks, -1, W0.shape[1])
    U, S, Vh = torch.linalg.svd(Wb)
    smax = S[:, :1, None]  # (k, 1, 1)
    out = {
        "spectral": lambda: Wb / smax,
        "scaled": lambda: Wb / smax,  # gamma starts at 1
        "bound": lambda: Wb / smax.clamp_min(1.0),
        "orthogonal": lambda: U @ Vh,
        "band": lambda: (U * S.clamp(1 - 0.0999, 1 + 0.0999)[:, None, :]) @ Vh,  # r=0.1, atanh-safe
    }[kind]()
    return out.reshape_as(W0).to(W0.dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gates", [None, (1,)])
def test_setattr_loads_a_plain_weight_for_every_kind(kind, gates):
    H, blocks = 5, 3
    module = constrain(nn.Linear(H, blocks * H, bias=False), "weight", kind, blocks=blocks,
                       gates=gates)  # fmt: skip
    W0 = 2 * torch.randn(blocks * H, H, generator=torch.Generator().manual_seed(1))
    module.weight = W0  # through the constraint's right_inverse
    want = W0.clone()
    chosen = list(range(blocks)) if gates is None else list(gates)
    for g in chosen:
        want[g * H : (g + 1) * H] = _expected(kind, W0[g * H : (g + 1) * H], 1)
    torch.testing.assert_close(module.weight, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["spectral", "bound", "scaled"])
def test_setattr_loads_a_plain_kernel_into_a_constrained_conv(kind):
    conv = constrain(nn.Conv1d(2, 3, 3, padding=1), "weight", kind)
    K = 3 * torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(2))
    conv.weight = K
    sigma = conv_operator_norm(K, ConvGeometry.of(conv))
    want = K / (sigma.clamp_min(1.0) if kind == "bound" else sigma)
    torch.testing.assert_close(conv.weight, want, atol=1e-5, rtol=1e-5)
    assert conv.parametrizations.weight[0].holds(conv.weight.detach(), tol=1e-4)


def test_setattr_reconverges_the_power_estimator():
    lin = constrain(nn.Linear(6, 6, bias=False), "weight", "spectral", estimator="power")
    lin.weight = 5 * torch.randn(6, 6, generator=torch.Generator().manual_seed(3))
    lin.eval()
    assert abs(torch.linalg.matrix_norm(lin.weight, 2).item() - 1) < 1e-3


def test_constraint_is_the_one_spelling():
    """``kind=`` (the spelling before ``constraint=``) is an unknown option like any other."""
    unknown = r"unknown option\(s\) \['kind'\] for constraint 'spectral'"
    with pytest.raises(ValueError, match=unknown):
        constrain(nn.Linear(4, 4, bias=False), kind="bound")
    with pytest.raises(ValueError, match=unknown + " on Conv1d"):
        constrain(nn.Conv1d(2, 2, 3), kind="bound")
    lin = constrain(nn.Linear(4, 4, bias=False), constraint="bound", gamma=0.5)
    assert isinstance(lin.parametrizations.weight[0], Bound)
    assert lin.parametrizations.weight[0].gamma == 0.5


class _Custom(nn.Module):
    """A module of its own: a constrained matrix named neither weight_hh nor original."""

    def __init__(self) -> None:
        super().__init__()
        self.recur = nn.Parameter(torch.randn(12, 4))
        self.gated = nn.Parameter(torch.randn(12, 4))
        self.plain = nn.Linear(4, 4)


def test_param_groups_ask_the_parametrizations():
    m = _Custom()
    constrain(m, "recur", "scaled", blocks=3)
    constrain(m, "gated", "orthogonal", blocks=3, gates=(0, 2))
    plist = m.parametrizations
    owned = {id(p) for p in constrained_tensors(m)}
    assert id(plist.recur.original) in owned
    assert id(plist.recur[0].gamma_raw) in owned
    assert id(plist.gated.original1) in owned
    assert id(plist.gated.original0) not in owned  # the free gate blocks
    groups = seqnorm.param_groups(m, lr=1e-3, constrained_lr=1e-4)
    assert {id(p) for p in groups[1]["params"]} == owned
    assert sorted(map(id, m.parameters())) == sorted(id(p) for g in groups for p in g["params"])
    # a parametrization that is not seqnorm's owns all its stored tensors
    lin = nn.utils.parametrizations.weight_norm(nn.Linear(3, 3))
    assert len(constrained_tensors(lin)) == 2


@pytest.mark.parametrize("n", [1, 6, 40])
def test_expm_skew_is_the_matrix_exponential_and_its_gradient(n):
    gen = torch.Generator().manual_seed(n)
    A = 4 * torch.randn(3, n, n, generator=gen, dtype=torch.float64)
    A[1] = 0  # all eigenvalues equal: the divided differences' limit
    S = skew(A).requires_grad_(True)
    G = torch.randn(3, n, n, generator=gen, dtype=torch.float64)
    (mine,) = torch.autograd.grad((expm_skew(S) * G).sum(), S)
    (ref,) = torch.autograd.grad((torch.matrix_exp(S) * G).sum(), S)
    torch.testing.assert_close(expm_skew(S), torch.matrix_exp(S), atol=1e-12, rtol=0)
    torch.testing.assert_close(mine, ref, atol=1e-11, rtol=0)


@pytest.mark.parametrize("map_", ["exp", "cayley"])
def test_orthogonal_within_1e5_of_1_at_every_step_of_violent_training(map_):
    torch.manual_seed(0)
    rnn = SpectralRNN(3, 32, nonlinearity="modrelu", constraint="orthogonal",
                      constraint_options={"map": map_, "rebase_every": 5})  # fmt: skip
    seen: list[torch.Tensor] = []
    rnn.parametrizations.weight_hh_l0[0].register_forward_hook(
        lambda m, i, out: seen.append(out.detach())
    )
    opt = torch.optim.Adam(rnn.parameters(), lr=0.5)
    x = torch.randn(20, 4, 3)
    for _ in range(25):
        out, _ = rnn(x)
        (-out.square().mean()).backward()  # pushes the weights to blow up
        opt.step()
        opt.zero_grad()
    assert len(seen) == 25
    for W in seen:
        s = torch.linalg.svdvals(W.double())
        assert (s - 1).abs().max() <= 1e-5, (s - 1).abs().max()
    assert rnn.parametrizations.weight_hh_l0.original.abs().max() > 0  # it did move


@pytest.mark.parametrize("kind", ["orthogonal", "spectral", "bound", "scaled"])
def test_cell_forward_compiles_without_a_graph_break(kind):
    cell = SpectralRNNCell(3, 6, constraint=kind)  # training mode, grad enabled

    def loop(x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(2, 6)
        with parametrize.cached():
            for x_t in x.unbind(0):
                h = cell(x_t, h)
        return h.sum()

    torch._dynamo.reset()
    explained = torch._dynamo.explain(loop)(torch.randn(4, 2, 3))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
