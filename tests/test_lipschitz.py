"""Lipschitz probes: oracles (products of exact norms, exact Jacobians), known constants,
constrained networks, refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from seqnorm import SpectralRNN, constrain
from seqnorm.constraints import ConvGeometry, conv_operator_norm
from seqnorm.probes import (
    GELU_LIPSCHITZ,
    lipschitz_bound,
    lipschitz_factors,
    local_lipschitz,
)

D = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def _sigma(module: nn.Module) -> float:
    return float(torch.linalg.matrix_norm(module.weight.detach().double(), 2))


def _jacobian_norms(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """||J_f(x_i)||_2 per sample from the full Jacobian (autograd, one sample at a time)."""
    out = []
    for xi in x:
        J = jacobian(lambda z: net(z.unsqueeze(0)).squeeze(0), xi)  # (out.., in..)
        n_out = math.prod(J.shape[: J.dim() - xi.dim()])
        out.append(torch.linalg.matrix_norm(J.reshape(n_out, -1), 2))
    return torch.stack(out)


def _max_abs_derivative_on_grid(fn) -> float:
    x = torch.linspace(-12, 12, 2_400_001, dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return float(g.abs().max())


def test_gelu_constant_is_the_max_of_its_derivative():
    assert GELU_LIPSCHITZ == pytest.approx(
        _max_abs_derivative_on_grid(nn.functional.gelu), abs=1e-9
    )
    assert GELU_LIPSCHITZ == pytest.approx(1.1289, abs=1e-4)


@pytest.mark.parametrize(
    "act",
    [nn.GELU(approximate="tanh"), nn.SiLU(), nn.Mish(), nn.SELU(), nn.Hardswish()],
    ids=lambda m: type(m).__name__ + getattr(m, "approximate", ""),
)
def test_computed_constants_match_a_fine_grid(act):
    factor = lipschitz_factors(nn.Sequential(act))[0][1]
    assert factor == pytest.approx(_max_abs_derivative_on_grid(act), rel=1e-6)


@pytest.mark.parametrize(
    ("act", "factor"),
    [
        (nn.ReLU(), 1.0),
        (nn.Tanh(), 1.0),
        (nn.Sigmoid(), 0.25),
        (nn.Softplus(), 1.0),
        (nn.LeakyReLU(0.1), 1.0),
        (nn.LeakyReLU(2.0), 2.0),
        (nn.ELU(0.5), 1.0),
        (nn.ELU(3.0), 3.0),
        (nn.Softmax(dim=-1), 0.5),
        (nn.Identity(), 1.0),
        (nn.Flatten(), 1.0),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v),
)
def test_activation_constants(act, factor):
    assert lipschitz_factors(nn.Sequential(act)) == [("0", factor)]


@pytest.mark.parametrize("act", [nn.Sigmoid(), nn.Tanh(), nn.Softmax(dim=-1), nn.ELU(3.0)])
def test_activation_constant_bounds_the_jacobian(act):
    """No input is stretched more than the constant says (the max over many points)."""
    net = nn.Sequential(act)
    x = 3 * torch.randn(256, 5, dtype=D)
    assert float(local_lipschitz(net, x)) <= lipschitz_factors(net)[0][1] + 1e-9


def test_bound_is_the_product_of_sigmas_and_activation_constants():
    net = nn.Sequential(
        nn.Linear(6, 9), nn.GELU(), nn.Linear(9, 4), nn.Sigmoid(), nn.Linear(4, 3)
    ).double()
    expected = _sigma(net[0]) * GELU_LIPSCHITZ * _sigma(net[2]) * 0.25 * _sigma(net[4])
    assert float(lipschitz_bound(net)) == pytest.approx(expected, rel=1e-12)
    names = [n for n, _ in lipschitz_factors(net)]
    assert names == ["0", "1", "2", "3", "4"]


def test_conv_factor_is_the_conv_operator_bound():
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    g, W = ConvGeometry.of(conv), conv.weight.detach()
    free = lipschitz_factors(net)[0][1]
    at = lipschitz_factors(net, (2, 8, 8))[0][1]
    assert free == pytest.approx(float(conv_operator_norm(W, g)), rel=1e-6)
    assert at == pytest.approx(float(conv_operator_norm(W, g, (8, 8))), rel=1e-6)
    assert at <= free * (1 + 1e-6)


def test_local_equals_the_exact_jacobian_norm_mlp():
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3))
    net = net.double()
    x = torch.randn(6, 5, dtype=D)
    exact = _jacobian_norms(net, x)
    local = local_lipschitz(net, x, per_sample=True)
    assert torch.allclose(local, exact, rtol=1e-6)
    assert float(local_lipschitz(net, x)) == pytest.approx(float(exact.max()), rel=1e-6)
    assert float(exact.max()) <= float(lipschitz_bound(net))


def test_local_equals_the_exact_jacobian_norm_cnn():
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Softplus(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(4, 3),
    ).double()  # fmt: skip
    x = torch.randn(3, 1, 8, 8, dtype=D)
    exact = _jacobian_norms(net, x)
    assert torch.allclose(local_lipschitz(net, x, per_sample=True), exact, rtol=1e-5)
    assert float(exact.max()) <= float(lipschitz_bound(net, (1, 8, 8)))
    assert float(lipschitz_bound(net, (1, 8, 8))) <= float(lipschitz_bound(net)) * (1 + 1e-9)


def test_fully_constrained_mlp_is_bounded_by_one():
    net = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)
    )
    for m in net:
        if isinstance(m, nn.Linear):
            constrain(m, "weight", "spectral")
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    x = torch.randn(32, 20)
    for _ in range(5):  # aggressive steps: the bound holds after each
        opt.zero_grad()
        (-(net(x) ** 2).mean()).backward()
        opt.step()
        bound = float(lipschitz_bound(net))
        assert bound <= 1.01
        assert float(local_lipschitz(net, x)) <= bound + 1e-6


def test_fully_constrained_cnn_is_bounded_by_one():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )  # fmt: skip
    for m in net:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            constrain(m, "weight", "spectral")
    assert float(lipschitz_bound(net)) <= 1.01
    x = torch.randn(4, 1, 8, 8)
    assert float(local_lipschitz(net, x)) <= float(lipschitz_bound(net, (1, 8, 8))) + 1e-6


def test_pools_are_counted_by_their_operator_norms():
    avg = lipschitz_factors(nn.Sequential(nn.AvgPool2d(2)))[0][1]
    assert avg == pytest.approx(0.5)  # non-overlapping average of 4: 1 / sqrt(4)
    assert lipschitz_factors(nn.Sequential(nn.MaxPool2d(2)))[0][1] == 1.0
    # 3x3 windows, stride 2: an element can sit in 2 windows per dimension, 4 in all.
    assert lipschitz_factors(nn.Sequential(nn.MaxPool2d(3, stride=2)))[0][1] == 2.0
    # ... and a spike at a shared maximum does move 4 outputs: the constant is attained.
    x = torch.zeros(1, 1, 7, 7, dtype=D)
    x[0, 0, 2, 2] = 10.0
    assert float(local_lipschitz(nn.MaxPool2d(3, stride=2), x)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "pool",
    [
        nn.AvgPool1d(3, stride=2, padding=1),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(3),
    ],
    ids=["avg1d_pad", "avg2d_no_pad_count", "avg2d_ceil", "adaptive"],
)
def test_avg_pool_at_input_shape_is_exact(pool):
    """A linear map: the factor at the traced size equals its exact Jacobian norm."""
    shape = (2, 9) if isinstance(pool, nn.AvgPool1d) else (2, 7, 7)
    net = nn.Sequential(pool)
    exact = _jacobian_norms(net, torch.randn(1, *shape, dtype=D))
    assert lipschitz_factors(net, shape)[0][1] == pytest.approx(float(exact[0]), rel=1e-9)


def test_batch_norm_in_eval():
    bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([0.25, 1.0, 4.0, 1.0]))
        bn.weight.copy_(torch.tensor([1.0, -3.0, 1.0, 0.5]))
    bn.eval()
    expected = 3.0 / math.sqrt(1.0 + bn.eps)
    assert lipschitz_factors(nn.Sequential(bn))[0][1] == pytest.approx(expected)
    exact = _jacobian_norms(bn.double(), torch.randn(2, 4, dtype=D))
    assert float(exact.max()) == pytest.approx(expected, rel=1e-9)


def test_traced_bound_counts_a_reused_layer_twice():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.lin(x).view(-1, 4))

    net = Twice()
    factors = lipschitz_factors(net, (4,))
    assert [n for n, _ in factors] == ["lin", "lin"]
    assert float(lipschitz_bound(net, (4,))) == pytest.approx(_sigma(net.lin) ** 2)


def test_probes_leave_buffers_rng_and_modes_alone():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 3)
    state = torch.random.get_rng_state()
    local_lipschitz(net, x)
    net[1].eval()
    lipschitz_bound(net, (3,))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net[0].training and net[2].training and not net[1].training


def test_dropout_in_training_counts_its_rescaling():
    net = nn.Sequential(nn.Dropout(0.5))
    assert lipschitz_factors(net.train())[0][1] == 2.0
    assert lipschitz_factors(net.eval())[0][1] == 1.0


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(x + self.a(x))


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) * 3


@pytest.mark.parametrize(
    ("net", "input_shape", "match"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), None,
         r"1 \(BatchNorm1d\): in training mode"),
        (nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False).eval()), None,
         "without running statistics"),
        (nn.Sequential(nn.LayerNorm(4)), None, r"LayerNorm.*not Lipschitz"),
        (nn.Sequential(nn.LSTM(4, 4)), None, r"0 \(LSTM\): no Lipschitz constant is known"),
        (nn.Sequential(nn.MultiheadAttention(4, 2)), None, "MultiheadAttention"),
        (nn.Sequential(SpectralRNN(4, 4)), None, "weight_spectrum"),
        (nn.Sequential(nn.Embedding(3, 4)), None, r"Embedding\): no Lipschitz constant"),
        (nn.Sequential(nn.Hardshrink()), None, "discontinuous"),
        (nn.Sequential(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect")), None,
         "padding_mode='reflect'"),
        (nn.Sequential(nn.AdaptiveAvgPool2d(2)), None, "adaptive pooling needs input_shape"),
        (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True)), None, "ceil_mode=True needs"),
        (nn.Sequential(nn.MaxPool2d(2, return_indices=True)), None, "return_indices"),
        (_Residual(), None, r"<net> \(_Residual\): how it combines its children is unknown"),
        (_Residual(), (4,), r"input of b \(Linear\) is not the output of the layer before"),
        (_Functional(), (4,), "output is not its last layer's output"),
        (nn.Sequential(nn.Linear(4, 4)), (0,), "input_shape must be"),
    ],
)  # fmt: skip
def test_unboundable_modules_are_refused(net, input_shape, match):
    with pytest.raises(ValueError, match=match):
        lipschitz_bound(net, input_shape)


def test_local_lipschitz_errors_and_constant_nets():
    net = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="x must be a non-empty batch"):
        local_lipschitz(net, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="n_iterations must be an int >= 1"):
        local_lipschitz(net, torch.zeros(2, 3), n_iterations=0)
    with pytest.raises(TypeError, match="net must be a torch.nn.Module"):
        lipschitz_bound(lambda x: x)

    class Const(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(x.shape[0], 2) + 0 * x.sum()

    assert float(local_lipschitz(Const(), torch.randn(2, 3))) == 0.0
