"""seqnorm.LRU and LRUStack: the paths agree, the initialisation, the cap at every step,
torch's call conventions, the errors, and the model around them (cell: lru, pooling)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import seqnorm
from seqnorm import LRU, LRUStack, native
from seqnorm.constraints.modulus import ModulusBound
from seqnorm.layers import InputError
from seqnorm.model import SeqModel
from seqnorm.probes import weight_spectrum

pytestmark = pytest.mark.usefixtures("one_thread")

needs_native = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")


def _lru(**kw):
    kw = {"r_min": 0.5, "r_max": 0.99, "dtype": torch.float64, **kw}
    return LRU(3, 5, **kw)


# -- the computation ----------------------------------------------------------------------------
def _by_hand(lru, x, h0=None):
    """y = Re(C h) + D x with h_t = lambda h_{t-1} + gamma B x_t, complex, step by step."""
    lam = lru.eigenvalues()  # (P,)
    gamma = lru.gamma_log.exp()  # (P,)
    B = torch.complex(lru.B_re, lru.B_im) * gamma[:, None]  # (P, I)
    C = torch.complex(lru.C_re, lru.C_im)  # (I, P)
    h = x.new_zeros(x.shape[1], lru.state_size, dtype=lam.dtype) if h0 is None else h0[0]
    ys = []
    for x_t in x.unbind(0):
        h = lam * h + x_t.to(lam.dtype) @ B.T
        ys.append((h @ C.T).real + lru.D * x_t)
    return torch.stack(ys), h[None]


@pytest.mark.parametrize("unroll", [False, True], ids=["native", "unrolled"])
def test_equals_the_equations(unroll):
    lru = _lru()
    lru.unroll = unroll
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    h0 = torch.randn(1, 2, 5, dtype=torch.complex128)
    out, h_n = lru(x, h0)
    ref, ref_h = _by_hand(lru, x, h0)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(h_n, ref_h, atol=1e-12, rtol=1e-10)


@needs_native
def test_native_and_unrolled_paths_agree_with_every_gradient():
    lru = _lru(constraint="bound", constraint_options={"gamma": 0.9})
    x = torch.randn(9, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 3, 5, dtype=torch.complex128, requires_grad=True)
    leaves = [x, h0, *lru.parameters()]
    results = []
    for unroll in (False, True):
        lru.unroll = unroll
        out, h_n = lru(x, h0)
        loss = out.square().sum() + (h_n.abs() ** 2).sum()
        results.append((out, h_n, torch.autograd.grad(loss, leaves)))
    (o1, h1, g1), (o2, h2, g2) = results
    torch.testing.assert_close(o1, o2, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h1, h2, atol=1e-10, rtol=1e-10)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_gradcheck_whole_layer():
    """gradcheck and gradgradcheck of the layer w.r.t. its input, h0 and every parameter."""
    lru = LRU(2, 2, r_min=0.5, r_max=0.9, dtype=torch.float64)
    names = [n for n, _ in lru.named_parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 2, dtype=torch.complex128, requires_grad=True)

    def f(x, h0, *params):
        state = dict(zip(names, params, strict=True))
        out, h_n = torch.func.functional_call(lru, state, (x, h0))
        return out, torch.view_as_real(h_n)

    args = (x, h0, *(p.detach().clone().requires_grad_() for p in lru.parameters()))
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


# -- the initialisation -----------------------------------------------------------------------
def test_ring_initialisation_statistics():
    torch.manual_seed(1)
    r_min, r_max, max_phase = 0.4, 0.95, math.pi / 3
    lru = LRU(64, 4096, r_min=r_min, r_max=r_max, max_phase=max_phase, dtype=torch.float64)
    lam = lru.eigenvalues().detach()
    mod, phase = lam.abs(), torch.exp(lru.theta_log.detach())
    assert mod.min() >= r_min and mod.max() <= r_max
    assert phase.min() >= 0 and phase.max() <= max_phase
    # |lambda|^2 uniform on [r_min^2, r_max^2]: its mean and its spread
    r2 = mod**2
    assert abs(r2.mean() - (r_min**2 + r_max**2) / 2) < 0.01
    assert abs(r2.std() - (r_max**2 - r_min**2) / math.sqrt(12)) < 0.01
    assert abs(phase.mean() - max_phase / 2) < 0.03
    torch.testing.assert_close(lru.gamma_log.detach().exp(), (1 - mod**2).sqrt())
    for name, std in (("B_re", 1 / math.sqrt(2 * 64)), ("B_im", 1 / math.sqrt(2 * 64)),
                      ("C_re", 1 / math.sqrt(4096)), ("C_im", 1 / math.sqrt(4096))):  # fmt: skip
        assert abs(getattr(lru, name).std().item() / std - 1) < 0.05, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_initialisation_edges_stay_finite(dtype):
    """r_min = 0 and r_max = 1 (the paper's defaults): every parameter finite."""
    torch.manual_seed(0)
    lru = LRU(2, 512, dtype=dtype)
    assert all(torch.isfinite(p).all() for p in lru.parameters())
    assert (lru.eigenvalues().abs() <= 1).all()
    lru = LRU(2, 16, r_min=0.999, r_max=0.999, dtype=dtype)  # one modulus
    torch.testing.assert_close(lru.eigenvalues().abs(), torch.full((16,), 0.999, dtype=dtype))


# -- the cap ----------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bound_holds_at_every_step(opt, dtype):
    """``bound`` keeps max|lambda| <= gamma in training and in eval right after every
    optimizer step of a run that pushes every modulus up hard; the layer uses those lambdas
    (its scan reads lambda_planes) and weight_spectrum reports the same maximum."""
    torch.manual_seed(0)
    gamma = 0.9
    lru = LRU(3, 8, r_min=0.5, r_max=0.999, constraint="bound",
              constraint_options={"gamma": gamma}, dtype=dtype)  # fmt: skip
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.5), "adam": lambda p: torch.optim.Adam(p, 0.3)}
    optimizer = make[opt](lru.parameters())
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    x = torch.randn(20, 4, 3, dtype=dtype)
    capped = 0
    for _ in range(15):
        for train in (True, False):
            lru.train(train)
            planes = lru.lambda_planes().detach()
            mods = torch.complex(planes[:8], planes[8:]).abs()
            assert mods.max() <= gamma + tol
            assert lru.eigenvalues().abs().max() <= gamma + tol
            assert float(weight_spectrum(lru)["sigma_max"].max()) <= gamma + tol
        raw = torch.exp(-torch.exp(lru.parametrizations.nu_log.original.detach()))
        capped += bool(raw.max() > gamma)  # the stored moduli went above the cap
        lru.train()
        _, h_n = lru(x)
        optimizer.zero_grad()
        (-(h_n.abs() ** 2).mean().log()).backward()  # longer memory: every |lambda| up
        torch.nn.utils.clip_grad_norm_(lru.parameters(), 10.0)  # large steps, finite ones
        optimizer.step()
        assert all(torch.isfinite(p).all() for p in lru.parameters())
    assert capped > 5  # the cap acted, it was not idle


def test_without_constraint_modulus_stays_below_one():
    torch.manual_seed(0)
    lru = LRU(3, 8, r_min=0.9, r_max=0.999, dtype=torch.float64)
    opt = torch.optim.Adam(lru.parameters(), lr=0.5)
    x = torch.randn(20, 4, 3, dtype=torch.float64)
    for _ in range(10):
        _, h_n = lru(x)
        opt.zero_grad()
        (-(h_n.abs() ** 2).sum()).backward()
        opt.step()
        assert lru.eigenvalues().abs().max() < 1


def test_modulus_bound_formula():
    """The matrix bound's formula on diag(lambda): all moduli divided by max(1, max/gamma)."""
    mods = torch.tensor([0.3, 0.8, 0.97, 0.99], dtype=torch.float64)
    nu = torch.log(-torch.log(mods))
    for gamma in (0.95, 0.99, 1.0):
        capped = torch.exp(-torch.exp(ModulusBound(gamma=gamma)(nu)))
        torch.testing.assert_close(capped, mods / max(1.0, 0.99 / gamma))
        assert ModulusBound(gamma=gamma).holds(ModulusBound(gamma=gamma)(nu), tol=1e-12)
    assert not ModulusBound(gamma=0.9).holds(nu, tol=1e-6)


# -- torch's call conventions -------------------------------------------------------------------
def test_batch_first_unbatched_and_h0_chaining():
    lru = _lru()
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    out, h_n = lru(x)
    assert out.shape == (8, 2, 3) and h_n.shape == (1, 2, 5) and h_n.dtype == torch.complex128
    lru_bf = _lru(batch_first=True)
    lru_bf.load_state_dict(lru.state_dict())
    out_bf, h_bf = lru_bf(x.transpose(0, 1))
    torch.testing.assert_close(out_bf, out.transpose(0, 1))
    torch.testing.assert_close(h_bf, h_n)
    out_u, h_u = lru(x[:, 1])  # unbatched: (T, I), state (1, P)
    assert h_u.shape == (1, 5)
    torch.testing.assert_close(out_u, out[:, 1])
    torch.testing.assert_close(h_u, h_n[:, 1])
    o1, h1 = lru(x[:3])  # h_n carries the sequence on
    o2, h2 = lru(x[3:], h1)
    torch.testing.assert_close(torch.cat([o1, o2]), out)
    torch.testing.assert_close(h2, h_n)


def test_packed_unsorted_with_h0():
    lru = _lru()
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in (3, 6, 2)]
    h0 = torch.randn(1, 3, 5, dtype=torch.complex128)
    out, h_n = lru(pack_sequence(seqs, enforce_sorted=False), h0)
    padded, lengths = pad_packed_sequence(out)
    for i, s in enumerate(seqs):
        o, h = lru(s, h0[:, i])
        torch.testing.assert_close(padded[: len(s), i], o)
        torch.testing.assert_close(h_n[:, i], h)
    assert lengths.tolist() == [3, 6, 2]


def test_stack_conventions():
    torch.manual_seed(0)
    stack = LRUStack(2, 6, num_layers=3, state_size=4, r_min=0.5, r_max=0.9,
                     dtype=torch.float64)  # fmt: skip
    x = torch.randn(10, 2, 2, dtype=torch.float64)
    out, h_n = stack(x)
    assert out.shape == (10, 2, 6) and h_n.shape == (3, 2, 4)
    o1, h1 = stack(x[:4])
    o2, h2 = stack(x[4:], h1)
    torch.testing.assert_close(torch.cat([o1, o2]), out)
    torch.testing.assert_close(h2, h_n)
    seqs = [x[:n, i] for i, n in enumerate((7, 10))]
    packed, ph = stack(pack_sequence(seqs, enforce_sorted=False))
    padded, _ = pad_packed_sequence(packed)
    for i, s in enumerate(seqs):
        o, h = stack(s)  # unbatched
        torch.testing.assert_close(padded[: len(s), i], o)
        torch.testing.assert_close(ph[:, i], h)
    assert stack.recurrent_eigenvalues().shape == (3, 4)
    stack.unroll = True
    assert all(b.lru.unroll for b in stack.blocks)
    torch.testing.assert_close(stack(x)[0], out)


def test_recording_hands_out_every_state():
    lru = _lru()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    with lru.recording() as calls:
        _, h_n = lru(x)
    ((states,),) = calls  # one call, one unit
    assert len(states) == 6 and states[0].shape == (2, 10)
    torch.testing.assert_close(torch.complex(states[-1][:, :5], states[-1][:, 5:]), h_n[0])
    assert not lru.is_recording


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"r_min": -0.1}, ValueError, "0 <= r_min <= r_max <= 1"),
        ({"r_min": 0.9, "r_max": 0.5}, ValueError, "0 <= r_min <= r_max <= 1"),
        ({"r_min": 1.0, "r_max": 1.0}, ValueError, "r_min < 1"),
        ({"r_max": 0.0}, ValueError, "r_max > 0"),
        ({"max_phase": 0.0}, ValueError, r"max_phase must be in \(0, 2\*pi\]"),
        ({"max_phase": 180}, ValueError, "radians"),
        ({"r_min": "0.5"}, ValueError, "r_min must be a finite number"),
        ({"batch_first": 1}, TypeError, "batch_first should be of type bool"),
        ({"constraint": "spectral"}, ValueError, "'spectral' does not fit the LRU"),
        ({"constraint": "orthogonal"}, ValueError, "'orthogonal' does not fit the LRU"),
        ({"constraint": "nuclear"}, ValueError, "constraint must be one of"),
        ({"constraint": "bound", "constraint_options": {"gamma": 1.5}}, ValueError,
         r"gamma must be in \(0, 1\]"),
        ({"constraint": "bound", "constraint_options": {"estimator": "power"}}, ValueError,
         r"unknown option\(s\) \['estimator'\]"),
        ({"constraint_options": {"gamma": 0.9}}, ValueError, r"unknown option\(s\) \['gamma'\]"),
        ({"dtype": torch.int64}, ValueError, "floating-point dtype"),
    ],
)  # fmt: skip
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LRU(3, 5, **kwargs)


def test_bad_sizes():
    with pytest.raises(TypeError, match="state_size should be of type int"):
        LRU(3, 5.0)
    with pytest.raises(InputError, match="state_size"):
        LRU(3, 0)
    with pytest.raises(ValueError, match="norm must be one of"):
        LRUStack(1, 4, norm="group")
    with pytest.raises(TypeError, match="glu should be of type bool"):
        LRUStack(1, 4, glu="yes")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\]"):
        LRUStack(1, 4, dropout=1.5)


def test_bad_inputs():
    lru = _lru()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with pytest.raises(InputError, match="Expected input to be 2D or 3D, got 4D"):
        lru(x[None])
    with pytest.raises(InputError, match="input.size\\(-1\\) must be equal to input_size"):
        lru(x[..., :2])
    with pytest.raises(InputError, match="does not match the LRU's dtype"):
        lru(x.float())
    with pytest.raises(InputError, match="larger than 0"):
        lru(x[:0])
    with pytest.raises(InputError, match="the LRU's state is complex"):
        lru(x, torch.zeros(1, 2, 5, dtype=torch.float64))
    with pytest.raises(InputError, match=r"Expected hidden size \(1, 2, 5\), got \[2, 5\]"):
        lru(x, torch.zeros(2, 5, dtype=torch.complex128))
    with pytest.raises(TypeError, match="input must be a Tensor or a PackedSequence"):
        lru([1, 2])
    with pytest.raises(TypeError, match="hx must be a Tensor"):
        lru(x, (1, 2))
    stack = LRUStack(3, 4, num_layers=2, dtype=torch.float64)
    with pytest.raises(InputError, match=r"Expected hidden size \(2, 2, 4\)"):
        stack(x, torch.zeros(1, 2, 4, dtype=torch.complex128))


# -- the model ----------------------------------------------------------------------------------
def test_model_lru_and_pooling():
    torch.manual_seed(0)
    model = SeqModel(cell="lru", constraint="bound", constraint_options={"gamma": 0.95},
                     hidden_size=8, num_layers=2, pooling="mean",
                     lru_options={"state_size": 4, "r_min": 0.9, "norm": "batch"})  # fmt: skip
    assert isinstance(model.rnn, LRUStack) and model.rnn.state_size == 4
    x = torch.randn(3, 12, 1)
    logits = model(x)
    assert logits.shape == (3, 10)
    out, _ = model.rnn(model.features(x))
    torch.testing.assert_close(logits, model.readout(out.mean(dim=1)))
    sig = model.sigma_max()
    assert (
        set(sig) == {"l0/lambda", "l1/lambda"}
        and max(float(v.detach()) for v in sig.values()) <= 0.95
    )
    gru = SeqModel(cell="gru", constraint="none", hidden_size=8, pooling="mean")
    out, _ = gru.rnn(gru.features(x))
    torch.testing.assert_close(gru(x), gru.readout(out.mean(dim=1)))
    last = SeqModel(cell="gru", constraint="none", hidden_size=8)  # the default: last step
    out, _ = last.rnn(last.features(x))
    torch.testing.assert_close(last(x), last.readout(out[:, -1]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell": "lru"}, "'spectral' does not fit the LRU"),
        ({"cell": "lru", "constraint": "none", "bidirectional": True}, "forward in time only"),
        ({"cell": "lru", "constraint": "none", "input_projection": True}, "its own encoder"),
        ({"cell": "lru", "constraint": "none", "init": "orthogonal"}, "init is for the gated"),
        ({"cell": "lru", "constraint": "none", "chrono_init": 100}, "chrono_init is for"),
        ({"cell": "lru", "constraint": "none", "lru_options": {"hidden": 4}},
         r"unknown lru_options key\(s\) \['hidden'\]"),
        ({"cell": "lru", "constraint": "none", "lru_options": {"r_max": 2}}, "r_max"),
        ({"cell": "gru", "lru_options": {}}, "lru_options is for cell 'lru' only"),
        ({"cell": "gru", "pooling": "max"}, "pooling must be one of"),
        ({"cell": "gru", "pooling": "mean", "output_kind": "per_step_class"},
         "pooling='mean' is for last-step tasks"),
    ],
)  # fmt: skip
def test_model_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SeqModel(**kwargs)


def test_exported():
    assert seqnorm.LRU is LRU and "LRU" in seqnorm.__all__ and "LRUStack" in seqnorm.__all__
