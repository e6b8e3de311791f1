"""The long-memory recipe: parameter groups, gate choice, modReLU layers, inits, re-basing."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import seqnorm
from seqnorm import SpectralGRU, SpectralGRUCell, SpectralLSTM, SpectralRNN, SpectralRNNCell
from seqnorm.model import SeqModel


def _ids(params):
    return [id(p) for p in params]


@pytest.mark.parametrize("kind", ["none", "spectral", "scaled", "bound", "band", "orthogonal"])
@pytest.mark.parametrize("gates", [None, ["n"], ["r", "z"]])
def test_param_groups_cover_every_parameter_exactly_once(kind, gates):
    model = nn.ModuleDict(
        {
            "gru": SpectralGRU(3, 6, num_layers=2, constraint=kind, constrained_gates=gates),
            "cell": SpectralRNNCell(3, 6, nonlinearity="modrelu", constraint=kind),
            "head": nn.Linear(6, 2),
        }
    )
    groups = seqnorm.param_groups(model, lr=1e-3, constrained_lr=1e-4, weight_decay=0.0)
    flat = [i for g in groups for i in _ids(g["params"])]
    assert sorted(flat) == sorted(_ids(model.parameters()))  # all, none twice
    assert len(flat) == len(set(flat))
    if kind == "none":
        assert len(groups) == 1
        return
    constrained = set(_ids(groups[1]["params"]))
    assert groups[1]["lr"] == 1e-4 and groups[0]["lr"] == 1e-3
    assert all(g["weight_decay"] == 0.0 for g in groups)
    named = dict(model.named_parameters())
    for name, p in named.items():
        behind_weight_hh = ".parametrizations.weight_hh" in name
        free_blocks = gates is not None and name.endswith("original0") and "gru" in name
        expected = behind_weight_hh and not free_blocks
        assert (id(p) in constrained) == expected, name
    if kind == "scaled":  # the constraint's own parameter rides with the constrained group
        assert any(name.endswith("gamma_raw") and id(p) in constrained for name, p in named.items())
    opt = torch.optim.RMSprop(groups)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4]


def test_param_groups_errors():
    with pytest.raises(ValueError, match="constrained_lr must be None or a positive number"):
        seqnorm.param_groups(SpectralRNN(2, 3), constrained_lr=0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        seqnorm.param_groups("model")


@pytest.mark.parametrize("kind", ["spectral", "orthogonal", "band", "bound"])
@pytest.mark.parametrize("layer_cls, gates", [(SpectralGRU, ["n"]), (SpectralLSTM, ["f", "g"])])
def test_constrained_gates_leave_the_other_blocks_untouched(kind, layer_cls, gates):
    torch.manual_seed(0)
    H = 7
    ref = layer_cls(3, H, constraint="none")
    layer = layer_cls(3, H, constraint=kind, constrained_gates=gates)
    layer.load_state_dict(
        {k: v for k, v in ref.state_dict().items() if "weight_hh" not in k}, strict=False
    )
    names = layer.gate_names
    W0 = torch.randn(len(names) * H, H) * 3
    layer.weight_hh_l0 = W0  # right_inverse: free blocks stored as given
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(3):
        out, _ = layer(torch.randn(5, 2, 3))
        out = out[0] if isinstance(out, tuple) else out
        opt.zero_grad()
        (-(out.sum() ** 2)).backward()
        opt.step()
        W = layer.weight_hh_l0.detach().reshape(len(names), H, H)
        free = layer.parametrizations.weight_hh_l0.original0.detach().reshape(-1, H, H)
        j = 0
        for i, g in enumerate(names):
            s = torch.linalg.svdvals(W[i])
            if g in gates:
                assert s[0] <= (1.1 if kind == "band" else 1.0) + 1e-4, (g, s[0])
            else:
                assert torch.equal(W[i], free[j])  # exactly the stored free block
                j += 1
    assert j == len(names) - len(gates)


def test_constrained_gates_errors():
    with pytest.raises(
        ValueError, match=r"constrained_gates must be .*gate names from \['r', 'z', 'n'\]"
    ):
        SpectralGRU(2, 3, constrained_gates=["x"])
    with pytest.raises(ValueError, match="constrained_gates must be a list of gate names"):
        SpectralGRUCell(2, 3, constrained_gates="n")
    with pytest.raises(ValueError, match="non-empty list"):
        SpectralLSTM(2, 3, constrained_gates=[])


@pytest.mark.parametrize("layers", [1, 2])
def test_modrelu_layer_fused_equals_unrolled_equals_cell(layers):
    torch.manual_seed(0)
    rnn = SpectralRNN(3, 6, num_layers=layers, nonlinearity="modrelu", constraint="orthogonal")
    assert [n for n, _ in rnn.named_parameters() if "modrelu" in n] == [
        f"modrelu_bias_l{k}" for k in range(layers)
    ]
    b = rnn.modrelu_bias_l0.detach()
    assert (b.abs() <= 0.01).all() and b.abs().sum() > 0  # U(-0.01, 0.01)
    x = torch.randn(9, 4, 3)
    out_f, h_f = rnn(x)
    g_f = torch.autograd.grad(out_f.square().sum(), list(rnn.parameters()))
    rnn.unroll = True
    out_u, h_u = rnn(x)
    g_u = torch.autograd.grad(out_u.square().sum(), list(rnn.parameters()))
    torch.testing.assert_close(out_f, out_u)
    torch.testing.assert_close(h_f, h_u)
    for a, c in zip(g_f, g_u, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)  # float32 summation order
    if layers == 1:
        cell = SpectralRNNCell(3, 6, nonlinearity="modrelu", constraint="none")
        cell.weight_ih.data.copy_(rnn.weight_ih_l0)
        cell.weight_hh.data.copy_(rnn.weight_hh_l0)
        cell.bias_ih.data.copy_(rnn.bias_ih_l0)
        cell.bias_hh.data.copy_(rnn.bias_hh_l0)
        cell.modrelu_bias.data.copy_(rnn.modrelu_bias_l0)
        h = None
        for x_t in x.unbind(0):
            h = cell(x_t, h)
        torch.testing.assert_close(h, h_f[0], rtol=1e-5, atol=1e-6)


def test_modrelu_layer_probes_work():
    from seqnorm.probes import hidden_grad_norms, jacobian_norms

    rnn = SpectralRNN(3, 5, nonlinearity="modrelu", init="henaff", constraint="orthogonal")
    x, y = torch.randn(12, 2, 3), torch.randn(12, 2, 5)
    norms = hidden_grad_norms(rnn, (x, y), lambda out, t: F.mse_loss(out[0], t))
    assert norms.shape == (1, 12) and torch.isfinite(norms).all()
    assert jacobian_norms(rnn, x[:, 0], steps=[0, 5]).shape[-1] == 2


@pytest.mark.parametrize("init", ["identity", "orthogonal", "henaff", "cayley"])
@pytest.mark.parametrize("kind", ["none", "orthogonal"])
def test_layer_init_is_applied_before_the_constraint(init, kind):
    rnn = SpectralGRU(2, 6, init=init, constraint=kind)
    W = rnn.weight_hh_l0.detach().reshape(3, 6, 6)
    s = torch.linalg.svdvals(W)
    torch.testing.assert_close(s, torch.ones_like(s), rtol=0, atol=1e-5)  # all orthogonal
    if init == "identity":
        torch.testing.assert_close(W, torch.eye(6).expand(3, 6, 6), rtol=0, atol=1e-6)
    if kind == "orthogonal":  # starts exactly at the init: A = 0, base = W
        assert torch.equal(rnn.parametrizations.weight_hh_l0.original, torch.zeros(18, 6))


def test_chrono_init_through_the_layer():
    lstm = SpectralLSTM(2, 8, chrono_init=100)
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().reshape(4, 8)  # i, f, g, o
    assert (b[1] >= 0).all() and (b[1] <= math.log(99) + 1e-5).all()
    torch.testing.assert_close(b[0], -b[1])
    with pytest.raises(ValueError, match="chrono_init applies to GRU and LSTM gates only"):
        SpectralRNN(2, 3, chrono_init=10)
    with pytest.raises(ValueError, match="chrono_init sets gate biases: it needs bias=True"):
        SpectralGRU(2, 3, chrono_init=10, bias=False)
    with pytest.raises(ValueError, match="init must be one of"):
        SpectralGRU(2, 3, init="xavier")


def test_orthogonal_rebases_every_k_forwards_without_changing_w():
    rnn = SpectralRNN(2, 6, constraint="orthogonal", constraint_options={"rebase_every": 3})
    param = rnn.parametrizations.weight_hh_l0
    opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
    for _ in range(7):
        out, _ = rnn(torch.randn(4, 3, 2))
        opt.zero_grad()
        out.sum().backward()
        opt.step()
        before = rnn.weight_hh_l0.detach().clone()
        A_norm = param.original.detach().abs().sum()
        out, _ = rnn(torch.randn(4, 3, 2))  # the next training forward re-bases when due
        due = int(param[0].steps) - 1 > 0 and (int(param[0].steps) - 1) % 3 == 0
        opt.zero_grad()
        if due:
            assert param.original.detach().abs().sum() == 0 < A_norm
            torch.testing.assert_close(rnn.weight_hh_l0.detach(), before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("map_", ["exp", "cayley"])
def test_orthogonal_maps(map_):
    rnn = SpectralRNN(2, 6, constraint="orthogonal", constraint_options={"map": map_})
    with torch.no_grad():
        rnn.parametrizations.weight_hh_l0.original.normal_()
    s = torch.linalg.svdvals(rnn.weight_hh_l0.detach())
    torch.testing.assert_close(s, torch.ones(6), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="map must be one of"):
        SpectralRNN(2, 6, constraint="orthogonal", constraint_options={"map": "qr"})


def test_seqmodel_recipe_options():
    model = SeqModel(
        cell="rnn",
        nonlinearity="modrelu",
        constraint="orthogonal",
        init="henaff",
        constrained_lr=1e-4,
        hidden_size=8,
        input_kind="tokens",
        input_dim=10,
        output_kind="per_step_class",
        num_classes=9,
        optimizer=lambda p: torch.optim.RMSprop(p, lr=1e-3),
    )
    opt = model.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4]
    gru = SeqModel(
        cell="gru",
        constrained_gates=["n"],
        chrono_init=50,
        input_projection=True,
        input_dim=2,
        hidden_size=8,
        output_kind="last_regression",
        num_classes=1,
    )
    assert gru.rnn.input_size == 8 and gru.input_proj.in_features == 2
    assert gru(torch.randn(3, 5, 2)).shape == (3,)
    with pytest.raises(ValueError, match="constrained_lr must be None or a positive number"):
        SeqModel(constrained_lr=-1.0)


# What the copy recipe promises at T=100 in 600 steps, as multiples of the memoryless
# baseline. Measured (experiments/recipe_spike.py, docs/training.md): the loss first reached
# 0.1x at steps 87-121 and the median of steps 500-599 was 0.003x-0.008x in 9 runs (7 seeds
# with torch's AVX-512 kernels, 2 with its AVX2 ones); at most 1.6% of the steps after the
# first were above 0.1x. Spikes above the baseline (2.5x-27.7x, back under 0.1x within 5
# steps) came in 6 of the 9 runs: the recipe does not clip, so the test warns about them and
# does not judge them.
SOLVED = 0.1  # loss / baseline
SOLVED_BY = 300  # first step at SOLVED at the latest
HELD = 0.9  # fraction of the steps from the first solve on that stay at SOLVED


def _judge_copy_curve(ratios: list[float]) -> tuple[list[str], tuple[int, float] | None]:
    """What a copy-task loss curve misses of the recipe's promise, and its worst spike.

    Args:
        ratios: loss / memoryless baseline at every training step.

    Returns:
        The promises broken (empty when the curve keeps them all), and ``(step, ratio)`` of
        the worst step after the first solve when it was above the baseline itself, else None.
    """
    first = next((i for i, r in enumerate(ratios) if r <= SOLVED), None)
    if first is None or first > SOLVED_BY:
        when = "never" if first is None else f"first at step {first}"
        return [f"loss at {SOLVED}x baseline {when}, not by step {SOLVED_BY}"], None
    failures = []
    tail = sorted(ratios[-100:])
    median = (tail[49] + tail[50]) / 2
    if median > SOLVED:
        failures.append(f"median of the last 100 steps {median:.3g}x baseline > {SOLVED}x")
    after = ratios[first:]
    held = sum(r <= SOLVED for r in after) / len(after)
    if held < HELD:
        failures.append(f"only {held:.0%} of the steps from {first} on at {SOLVED}x baseline")
    worst = max(range(first, len(ratios)), key=ratios.__getitem__)
    return failures, (worst, ratios[worst]) if ratios[worst] > 1 else None


def _solved_curve(n=600, first=95, floor=0.005):
    """From the untrained 15.6x baseline down to 0.099x at step ``first``, on to ``floor``."""
    return [max(15.6 * (0.099 / 15.6) ** (i / first), floor) for i in range(n)]


def _with(curve, changes):
    curve = list(curve)
    for i, v in changes.items():
        curve[i] = v
    return curve


@pytest.mark.parametrize(
    "curve, broken, spike",
    [
        (_solved_curve(), [], None),
        (_with(_solved_curve(), {594: 0.15, 595: 27.7, 596: 0.26}), [], (595, 27.7)),  # seen
        ([15.6] * 600, ["not by step 300"], None),  # lr = 0: the untrained loss throughout
        ([0.95] * 600, ["not by step 300"], None),  # tanh RNN, measured: 0.95x at the end
        (_solved_curve(first=400), ["not by step 300"], None),  # too slow
        (_solved_curve()[:450] + [2.0] * 150, ["median of the last 100", "only 70%"], (450, 2)),
        (_with(_solved_curve(), {i: 0.5 for i in range(100, 600, 5)}), ["only 80%"], None),
    ],
    ids=["solved", "solved-one-spike", "lr0", "tanh", "slow", "diverges", "unsteady"],
)
def test_copy_curve_judge(curve, broken, spike):
    failures, worst = _judge_copy_curve(curve)
    assert len(failures) == len(broken)
    for f, b in zip(failures, broken, strict=True):
        assert b in f, failures
    assert worst == (pytest.approx(spike) if spike else None)


@pytest.mark.slow
def test_recipe_solves_copy_at_t100_within_600_steps():
    """orthogonal + modReLU + Henaff, RMSprop 1e-3 / 1e-4 on the orthogonal part, no clipping.

    Judged by what it promises on any CPU (_judge_copy_curve): the loss at 0.1x the memoryless
    baseline by step 300, there on 90% of the steps from then on and on the median of the last
    100. A spike of a few steps after the solve, which the recipe's unclipped RMSprop makes on
    some CPUs and seeds, is reported as a warning (docs/training.md, "Loss spikes with the
    expRNN recipe").
    """
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    T, B, H = 100, 128, 128
    rnn = SpectralRNN(10, H, nonlinearity="modrelu", constraint="orthogonal", init="henaff",
                      batch_first=True)  # fmt: skip
    head = nn.Linear(H, 9)
    model = nn.ModuleList([rnn, head])
    opt = torch.optim.RMSprop(seqnorm.param_groups(model, lr=1e-3, constrained_lr=1e-4))
    baseline = 10 * math.log(8) / (T + 20)
    losses = []
    for _ in range(600):
        seq = torch.randint(1, 9, (B, 10), generator=g)
        blank = torch.zeros(B, T - 1, dtype=torch.long)
        x = torch.cat([seq, blank, torch.full((B, 1), 9), torch.zeros(B, 10, dtype=torch.long)], 1)
        y = torch.cat([torch.zeros(B, T + 10, dtype=torch.long), seq], 1)
        out, _ = rnn(F.one_hot(x, 10).float())
        loss = F.cross_entropy(head(out).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    failures, spike = _judge_copy_curve([v / baseline for v in losses])
    if spike is not None:
        warnings.warn(
            f"the copy recipe's loss spiked to {spike[1]:.1f}x the memoryless baseline at step "
            f"{spike[0]} (unclipped RMSprop; see 'Loss spikes with the expRNN recipe' in "
            "docs/training.md)",
            stacklevel=1,
        )
    assert not failures, (failures, [round(v / baseline, 4) for v in losses[::10]])
