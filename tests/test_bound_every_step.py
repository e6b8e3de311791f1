"""Property tests: the matrix a layer actually uses satisfies its constraint at EVERY forward.

A hook on each constraint module records every matrix it hands to the layer: in the
training forward of every step and in an eval forward right after every optimizer step
(what validation and the gradient-flow monitors see). Each is checked against an exact SVD.
The training is deliberately violent (lr up to 0.1, a loss that pushes the weights to blow
up), which is when a lagging sigma estimate overshoots.
"""

from __future__ import annotations

import pytest
import torch

from seqnorm import SpectralGRU, SpectralGRUCell, SpectralLSTM, SpectralRNN, cached

# cap of the largest singular value per constraint (bound: gamma; scaled: gamma_max)
CAP = {"spectral": 1.0, "bound": 0.9, "scaled": 1.2, "orthogonal": 1.0, "band": 1.2}
OPTIONS = {
    "bound": {"gamma": 0.9},
    "scaled": {"gamma_min": 0.7, "gamma_max": 1.2},
    "band": {"r": 0.2},
}
REL = 0.005  # the promise: within 0.5% of the cap
OPTIMIZERS = [
    (torch.optim.SGD, 0.1),
    (torch.optim.Adam, 0.1),
    (torch.optim.Adam, 0.01),
    (torch.optim.RMSprop, 0.01),
]


def _record(layer: torch.nn.Module, names: list[str]) -> list[tuple[str, torch.Tensor]]:
    seen: list[tuple[str, torch.Tensor]] = []
    for name in names:
        module = layer.parametrizations[name][0]
        module.register_forward_hook(
            lambda m, i, out, name=name: seen.append(("train" if m.training else "eval", out))
        )
    return seen


def _check(kind: str, W: torch.Tensor, gates: int, where: str) -> None:
    H = W.shape[1]
    s = torch.linalg.svdvals(W.detach().double().reshape(gates, H, H))  # (gates, H)
    smax, smin = s[:, 0], s[:, -1]
    assert (smax <= CAP[kind] * (1 + REL)).all(), f"{kind} {where}: sigma_max {smax.tolist()}"
    if kind in ("spectral", "orthogonal"):  # a normalization, not a loose bound
        assert (smax >= 0.99 * CAP[kind]).all(), f"{kind} {where}: sigma_max {smax.tolist()}"
    if kind == "orthogonal":
        assert (smin >= 1 - 1e-4).all(), f"{where}: sigma_min {smin.tolist()}"
    if kind == "band":
        assert (smin >= (1 - 0.2) * (1 - REL)).all(), f"{where}: sigma_min {smin.tolist()}"


def _run(layer, names, kind, opt_cls, lr, steps, make_input, dtype=torch.float32):
    seen = _record(layer, names)
    opt = opt_cls(layer.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        layer.train()
        out = layer(make_input(gen))
        out = out[0] if isinstance(out, tuple) else out
        loss = -(out.sum() ** 2)  # pushes the weights to blow up
        opt.zero_grad()
        loss.backward()
        opt.step()
        layer.eval()  # eval right after the optimizer step: validation, monitors
        with torch.no_grad():
            layer(make_input(gen))
        for where, W in seen:
            assert W.dtype == dtype
            gates = layer.num_gates if hasattr(layer, "num_gates") else 1
            _check(kind, W, gates, f"step {step} {where}")
        modes = {w for w, _ in seen}
        assert modes == {"train", "eval"}, modes  # both were seen at every step
        seen.clear()


@pytest.mark.parametrize("opt_cls, lr", OPTIMIZERS)
@pytest.mark.parametrize("layer_cls", [SpectralRNN, SpectralGRU, SpectralLSTM])
@pytest.mark.parametrize("kind", list(CAP))
def test_cap_holds_at_every_forward(kind, layer_cls, opt_cls, lr):
    H = 12
    layer = layer_cls(3, H, num_layers=2, constraint=kind, constraint_options=OPTIONS.get(kind))
    _run(
        layer,
        ["weight_hh_l0", "weight_hh_l1"],
        kind,
        opt_cls,
        lr,
        steps=12,
        make_input=lambda g: torch.randn(7, 4, 3, generator=g),
    )


@pytest.mark.parametrize("hidden", [5, 40])
@pytest.mark.parametrize("kind", ["spectral", "scaled", "bound"])
def test_cap_holds_in_float64_and_other_sizes(kind, hidden):
    layer = SpectralGRU(
        2, hidden, constraint=kind, constraint_options=OPTIONS.get(kind), dtype=torch.float64
    )
    _run(
        layer,
        ["weight_hh_l0"],
        kind,
        torch.optim.Adam,
        0.05,
        steps=10,
        make_input=lambda g: torch.randn(5, 3, 2, generator=g, dtype=torch.float64),
        dtype=torch.float64,
    )


@pytest.mark.parametrize("kind", list(CAP))
def test_cap_holds_for_cells_in_a_cached_loop(kind):
    cell = SpectralGRUCell(3, 10, constraint=kind, constraint_options=OPTIONS.get(kind))
    seen = _record(cell, ["weight_hh"])
    opt = torch.optim.Adam(cell.parameters(), lr=0.1)
    for _ in range(8):
        h = None
        with cached():
            for x_t in torch.randn(6, 4, 3).unbind(0):
                h = cell(x_t, h)
        opt.zero_grad()
        (-(h.sum() ** 2)).backward()
        opt.step()
    assert len(seen) == 8  # once per cached sequence
    for where, W in seen:
        _check(kind, W, 3, where)


def test_power_estimator_is_opt_in_and_refreshes_in_eval():
    """estimator='power' is the old, cheaper scheme; eval never reads a stale estimate."""
    layer = SpectralGRU(3, 8, constraint="spectral", constraint_options={"estimator": "power"})
    sigma_mod = layer.parametrizations.weight_hh_l0[0]
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    out, _ = layer(torch.randn(6, 4, 3))
    opt.zero_grad()
    (-(out.sum() ** 2)).backward()
    opt.step()  # W moved; the vectors were last advanced before this step
    u_before = sigma_mod._u.clone()
    layer.eval()
    layer(torch.randn(6, 4, 3))
    assert not torch.equal(u_before, sigma_mod._u)  # refreshed because W changed
    u_after = sigma_mod._u.clone()
    layer(torch.randn(6, 4, 3))
    assert torch.equal(u_after, sigma_mod._u)  # W unchanged: no further update in eval


def test_power_estimator_lags_where_exact_does_not():
    """The reason exact is the default: under fast training power iteration overshoots."""
    worst = {}
    for est in ("power", "exact"):
        torch.manual_seed(0)
        layer = SpectralGRU(3, 32, constraint="spectral", constraint_options={"estimator": est})
        seen = _record(layer, ["weight_hh_l0"])
        opt = torch.optim.Adam(layer.parameters(), lr=0.05)
        target = 3 * torch.randn(6, 4, 32)
        for _ in range(30):
            out, _ = layer(torch.randn(6, 4, 3))
            opt.zero_grad()
            ((out - target) ** 2).mean().backward()
            opt.step()
        s = [torch.linalg.matrix_norm(W.detach().reshape(3, 32, 32), 2).max() for _, W in seen]
        worst[est] = float(torch.stack(s).max())
    assert worst["exact"] <= 1 + 1e-4
    assert worst["power"] > worst["exact"] + 1e-3, worst
