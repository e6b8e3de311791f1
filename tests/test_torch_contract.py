"""torch's contract for recurrent layers and cells, checked against torch's own modules.

What PyTorch's tests ask of ``nn.RNN/GRU/LSTM`` and their cells (``test/test_nn.py`` and
the ``ModuleInfo`` samples of ``common_modules.py``), asked here of seqnorm's at
``constraint="none"`` with torch's module as the oracle: the same exception *types* for the
same bad calls, torch's attributes, zero-size batches, retained graphs, dropout, and the
ways in and out of plain torch (``from_torch``/``to_torch``, TorchScript, ``torch.compile``,
the meta device).
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from seqnorm import (
    CONSTRAINTS,
    SpectralGRU,
    SpectralGRUCell,
    SpectralLSTM,
    SpectralLSTMCell,
    SpectralRNN,
    SpectralRNNCell,
    native,
)
from seqnorm.layers import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = [(SpectralRNN, nn.RNN), (SpectralGRU, nn.GRU), (SpectralLSTM, nn.LSTM)]
CELLS = [(SpectralRNNCell, nn.RNNCell), (SpectralGRUCell, nn.GRUCell),
         (SpectralLSTMCell, nn.LSTMCell)]  # fmt: skip
ALL = LAYERS + CELLS
IDS = ["rnn", "gru", "lstm"]


def _flat(state):
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state


def _raised(fn) -> BaseException:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test compares exception types
        return e
    raise AssertionError("expected an exception")


def _same_type_as_torch(ours, theirs, *args, **kwargs) -> BaseException:
    """Call both with the same bad arguments; ours must raise what torch's code catches."""
    expected = _raised(lambda: theirs(*args, **kwargs))
    got = _raised(lambda: ours(*args, **kwargs))
    assert isinstance(got, type(expected)), (type(got), type(expected), got)
    return got


# ---------------------------------------------------------------------- constructor


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bias": 0}, {"bias": 1}, {"bias": "True"}, {"batch_first": "False"},
        {"input_size": 3.0}, {"hidden_size": 4.0}, {"hidden_size": 0}, {"input_size": 0},
        {"hidden_size": -2}, {"num_layers": 0}, {"num_layers": 1.5}, {"dropout": 1.5},
        {"dropout": -0.1}, {"dropout": True}, {"dropout": "0.1"},
    ],
)  # fmt: skip
@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_constructor_errors_have_torch_types(ours, theirs, kwargs):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    got = _same_type_as_torch(ours, theirs, **args)
    assert next(iter(kwargs)) in str(got)  # the message names the argument


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        (SpectralGRU, nn.GRU, {"proj_size": 2}),
        (SpectralRNN, nn.RNN, {"proj_size": 2}),
        (SpectralLSTM, nn.LSTM, {"proj_size": 4}),
        (SpectralLSTM, nn.LSTM, {"proj_size": 5}),
        (SpectralLSTM, nn.LSTM, {"proj_size": -1}),
        (SpectralRNN, nn.RNN, {"nonlinearity": "gelu"}),
    ],
)
def test_proj_size_and_nonlinearity_errors(ours, theirs, kwargs):
    got = _same_type_as_torch(ours, theirs, 3, 4, **kwargs)
    assert next(iter(kwargs)) in str(got)


def test_seqnorm_only_differences_in_the_constructor():
    # Stricter than torch: a non-bool bidirectional (torch takes any truthy value).
    with pytest.raises(TypeError, match="bidirectional should be of type bool, got: str"):
        SpectralGRU(3, 4, bidirectional="yes")
    # proj_size=0 is accepted by RNN/GRU (torch refuses the keyword itself), for CLI tools
    # that pass every default.
    assert SpectralGRU(3, 4, proj_size=0).proj_size == 0
    with pytest.raises(ValueError, match="only supported for LSTM, not RNN or GRU.*proj_size=0"):
        SpectralGRU(3, 4, proj_size=2)


@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_dropout_with_one_layer_warns_like_torch(ours, theirs):
    with pytest.warns(UserWarning, match="num_layers=1"):
        ours(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours(3, 4, num_layers=2, dropout=0.5)


def test_positional_arguments_in_torch_order():
    rnn = SpectralRNN(2, 3, 1, "relu", False, True, 0.0, True)
    ref = nn.RNN(2, 3, 1, "relu", False, True, 0.0, True)
    for attr in ("nonlinearity", "bias", "batch_first", "bidirectional"):
        assert getattr(rnn, attr) == getattr(ref, attr), attr
    lstm = SpectralLSTM(2, 4, 2, True, False, 0.0, True, 3)
    assert (lstm.num_layers, lstm.bidirectional, lstm.proj_size) == (2, True, 3)


@pytest.mark.parametrize(("ours", "theirs"), CELLS, ids=IDS)
def test_cells_allow_zero_sizes(ours, theirs):
    for i, h in ((3, 0), (0, 4)):
        a, b = ours(i, h, constraint="spectral"), theirs(i, h)
        out_a, out_b = a(torch.randn(2, i)), b(torch.randn(2, i))
        assert _flat(out_a).shape == _flat(out_b).shape
    _same_type_as_torch(ours, theirs, 3, -1)


# ------------------------------------------------------------------ forward errors

BAD_LAYER_CALLS = {
    "4-D input": lambda H: (torch.randn(2, 5, 2, 3), None),
    "1-D input": lambda H: (torch.randn(3), None),
    "input features": lambda H: (torch.randn(5, 2, 7), None),
    "hx layers": lambda H: (torch.randn(5, 2, 3), torch.zeros(1, 2, H)),
    "hx batch": lambda H: (torch.randn(5, 2, 3), torch.zeros(4, 3, H)),
    "hx features": lambda H: (torch.randn(5, 2, 3), torch.zeros(4, 2, H + 1)),
    "unbatched input, 3-D hx": lambda H: (torch.randn(5, 3), torch.zeros(4, 1, H)),
    "batched input, 2-D hx": lambda H: (torch.randn(5, 2, 3), torch.zeros(4, H)),
    "float64 input": lambda H: (torch.randn(5, 2, 3, dtype=torch.float64), None),
    "empty sequence": lambda H: (torch.randn(0, 2, 3), None),
}


@pytest.mark.parametrize("bad", list(BAD_LAYER_CALLS))
@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_forward_errors_have_torch_types(ours, theirs, bad):
    a = ours(3, 4, num_layers=2, bidirectional=True, constraint="none")
    b = theirs(3, 4, num_layers=2, bidirectional=True)
    x, h = BAD_LAYER_CALLS[bad](4)
    hx = None if h is None else ((h, h) if theirs is nn.LSTM else h)
    expected = _raised(lambda: b(x, hx))
    got = _same_type_as_torch(a, b, x, hx)
    assert isinstance(got, InputError)  # a ValueError and a RuntimeError
    assert str(expected) in str(got)  # torch's message, then seqnorm's guidance


def test_dtype_mismatch_names_both_dtypes_and_what_to_convert():
    gru = SpectralGRU(3, 4)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    pattern = (r"input dtype \(torch.float64\) does not match .*weight dtype \(torch.float32\)"
               r"\. Convert input: input\.to\(torch.float32\), or convert model: "
               r"model\.to\(torch.float64\)")  # fmt: skip
    with pytest.raises(ValueError, match=pattern):
        gru(x)
    with pytest.raises(ValueError, match=r"Convert input: input\.to\(torch.float32\)"):
        SpectralGRUCell(3, 4)(x[0])
    out, _ = gru.to(torch.float64)(x)  # the advice works
    assert out.dtype == torch.float64


BAD_CELL_CALLS = {
    "3-D input": lambda: (torch.randn(2, 3, 3), None),
    "input features": lambda: (torch.randn(2, 5), torch.zeros(2, 4)),
    "hidden features": lambda: (torch.randn(2, 3), torch.zeros(2, 5)),
    "batch": lambda: (torch.randn(2, 3), torch.zeros(5, 4)),
    "4-D hidden": lambda: (torch.randn(2, 3), torch.zeros(2, 1, 1, 4)),
}


@pytest.mark.parametrize("bad", list(BAD_CELL_CALLS))
@pytest.mark.parametrize(("ours", "theirs"), CELLS, ids=IDS)
def test_cell_forward_errors_have_torch_types(ours, theirs, bad):
    x, h = BAD_CELL_CALLS[bad]()
    hx = None if h is None else ((h, h) if theirs is nn.LSTMCell else h)
    a, b = ours(3, 4, constraint="none"), theirs(3, 4)
    got = _same_type_as_torch(a, b, x, hx)
    assert str(_raised(lambda: b(x, hx))) in str(got)  # torch's message, then seqnorm's


# ------------------------------------------------------------ attributes and behaviour


@pytest.mark.parametrize("kw", [{}, {"bidirectional": True, "num_layers": 2, "bias": False}])
@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_torch_attributes(ours, theirs, kw):
    extra = {"proj_size": 2} if theirs is nn.LSTM and kw else {}
    a, b = ours(3, 4, constraint="spectral", **kw, **extra), theirs(3, 4, **kw, **extra)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "_flat_weights_names"):  # fmt: skip
        assert getattr(a, attr) == getattr(b, attr), attr
    assert [w.shape for w in a._flat_weights] == [w.shape for w in b._flat_weights]
    assert [[w.shape for w in u] for u in a.all_weights] == [
        [w.shape for w in u] for u in b.all_weights
    ]
    torch.testing.assert_close(a._flat_weights[1], a.weight_hh_l0)  # the constrained matrix
    a.flatten_parameters()
    assert "constraint='spectral'" in repr(a)


@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_zero_batch_hidden_default_and_retained_graph(ours, theirs):
    a = ours(3, 4, num_layers=2, bidirectional=True, constraint="none")
    b = theirs(3, 4, num_layers=2, bidirectional=True)
    a.load_state_dict(b.state_dict())
    for unroll in (False, True):
        a.unroll = unroll
        out, h = a(torch.randn(5, 0, 3))  # zero batch
        assert out.shape == b(torch.randn(5, 0, 3))[0].shape == (5, 0, 8)
        x = torch.randn(6, 2, 3, requires_grad=True)
        zeros = torch.zeros(4, 2, 4)
        hx = (zeros, zeros) if theirs is nn.LSTM else zeros
        torch.testing.assert_close(a(x)[0], a(x, hx)[0], atol=0, rtol=0)  # hx=None is zeros
        out = a(x)[0]
        grads = [torch.autograd.grad(out.sum(), x, retain_graph=True)[0] for _ in range(3)]
        torch.testing.assert_close(grads[0], grads[2], atol=0, rtol=0)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_unbatched_and_non_contiguous_input_like_torch(ours, theirs, batch_first):
    """torch's no-batch-dim samples: bidirectional, 2 layers, with and without ``hx``."""
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": batch_first}
    kw |= {"proj_size": 2} if theirs is nn.LSTM else {}
    a, b = ours(2, 3, constraint="none", **kw), theirs(2, 3, **kw)
    a.load_state_dict(b.state_dict())
    x = torch.randn(3, 2)
    h = torch.randn(4, kw.get("proj_size", 3))
    hx = (h, torch.randn(4, 3)) if theirs is nn.LSTM else h
    for unroll in (False, True):
        a.unroll = unroll
        for args in ((x,), (x, hx)):
            (out_a, h_a), (out_b, h_b) = a(*args), b(*args)
            torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=0)
            torch.testing.assert_close(_flat(h_a), _flat(h_b), atol=1e-6, rtol=0)
        xs = torch.randn(2, 5, 4)[..., ::2]  # (2, 5, 2), strided: not contiguous
        assert not xs.is_contiguous()
        torch.testing.assert_close(a(xs)[0], b(xs)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("unroll", [False, True], ids=["fused", "unrolled"])
@pytest.mark.parametrize(("ours", "kw"), [(SpectralGRU, {}), (SpectralLSTM, {"proj_size": 1})],
                         ids=["gru", "lstm_proj"])  # fmt: skip
def test_gradcheck_and_gradgradcheck(ours, kw, unroll):
    layer = ours(2, 2, num_layers=2, bidirectional=True, constraint="spectral",
                 dtype=torch.float64, **kw).eval()  # fmt: skip
    layer.unroll = unroll
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x)[0], (x,))
    assert torch.autograd.gradgradcheck(lambda x: layer(x)[0], (x,))


def test_factory_kwargs_reach_parameters_and_buffers():
    layer = SpectralLSTM(3, 4, bidirectional=True, constraint="spectral", dtype=torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert {b.dtype for b in layer.buffers()} == {torch.float64}
    cell = SpectralGRUCell(3, 4, constraint="scaled", device="meta")
    assert {p.device.type for p in cell.parameters()} == {"meta"}


@pytest.mark.parametrize("kind", [k for k in CONSTRAINTS if k != "none"])
def test_dtype_reaches_the_constraints_own_parameters(kind):
    """``scaled``'s ``gamma_raw`` (and any tensor a constraint makes) in the layer's dtype."""
    layers = [SpectralGRU(2, 3, constraint=kind, dtype=torch.float64)]
    if kind in ("spectral", "scaled", "bound"):  # the constraints an LSTM with projections takes
        layers.append(SpectralLSTM(2, 3, proj_size=1, constraint=kind, dtype=torch.float64))
    for layer in layers:
        assert {p.dtype for p in layer.parameters()} == {torch.float64}
        assert {b.dtype for b in layer.buffers() if b.is_floating_point()} == {torch.float64}


@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_fused_dropout_is_torch_dropout(ours, theirs):
    a = ours(3, 8, num_layers=3, dropout=0.4, bidirectional=True, constraint="none").train()
    b = theirs(3, 8, num_layers=3, dropout=0.4, bidirectional=True).train()
    a.load_state_dict(b.state_dict())
    x = torch.randn(7, 2, 3)
    torch.manual_seed(1)
    out_a = a(x)[0]
    torch.manual_seed(1)
    # torch's kernel: bit for bit; seqnorm's native kernels: the same masks, rounding apart
    exact = {} if native.backend().name == "native" else {"atol": 0, "rtol": 0}
    torch.testing.assert_close(out_a, b(x)[0], **exact)


@pytest.mark.parametrize(("ours", "theirs"), LAYERS, ids=IDS)
def test_weight_norm_on_input_weights_like_torch(ours, theirs):
    a = ours(3, 4, constraint="none")
    b = theirs(3, 4)
    a.load_state_dict(b.state_dict())
    for m in (a, b):
        nn.utils.weight_norm(m, name="weight_ih_l0")
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(_flat(a(x)[1]), _flat(b(x)[1]))
    assert sum(isinstance(w, nn.Parameter) for w in a._flat_weights) == len(a._flat_weights) - 1


@pytest.mark.parametrize("kind", ["none", "spectral"])
def test_pickle_and_deepcopy(kind):
    a = SpectralLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, constraint=kind)
    x = torch.randn(5, 2, 3)
    b = copy.deepcopy(a)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=0, rtol=0)
    with torch.no_grad():  # the copy's projection is its own: the constraint reads it
        b.weight_hr_l0.mul_(3)
    assert not torch.allclose(a(x)[0], b(x)[0])
    # torch cannot pickle parametrized modules; seqnorm's rebuild from their state
    torch.testing.assert_close(pickle.loads(pickle.dumps(a))(x)[0], a(x)[0], atol=0, rtol=0)
    torch.testing.assert_close(pickle.loads(pickle.dumps(a.to_torch()))(x)[0], a(x)[0])


def test_cli_sees_every_argument():
    """LightningCLI (jsonargparse) resolves ``*args, **kwargs`` to the one constructor."""
    torch_args = {"input_size", "hidden_size", "bias", "device", "dtype"}
    seqnorm_args = {"constraint", "constraint_options", "init", "chrono_init",
                    "constrained_gates"}  # fmt: skip
    layer_args = {"num_layers", "batch_first", "dropout", "bidirectional", "proj_size"}
    for cls, extra in [(SpectralRNN, {"nonlinearity"}), (SpectralGRU, set()),
                       (SpectralLSTM, set()), (SpectralRNNCell, {"nonlinearity"}),
                       (SpectralGRUCell, set()), (SpectralLSTMCell, set())]:  # fmt: skip
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "m")
        seen = set(parser.get_defaults().m.keys())
        is_layer = "Cell" not in cls.__name__
        assert seen == torch_args | seqnorm_args | extra | (layer_args if is_layer else set())
        built = parser.instantiate_classes(parser.parse_args(["--m.input_size=3",
                                                              "--m.hidden_size=4"])).m  # fmt: skip
        assert isinstance(built, cls) and built.hidden_size == 4


# ------------------------------------------------------------- in and out of plain torch

TWINS = [
    (SpectralRNN, nn.RNN, {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True}),
    (SpectralGRU, nn.GRU, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    (SpectralLSTM, nn.LSTM, {"num_layers": 2, "bidirectional": True, "proj_size": 3}),
    (SpectralLSTM, nn.LSTM, {"bias": False}),
    (SpectralRNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    (SpectralGRUCell, nn.GRUCell, {}),
    (SpectralLSTMCell, nn.LSTMCell, {"bias": False}),
]
TWIN_IDS = ["rnn", "gru", "lstm_proj", "lstm_nobias", "rnn_cell", "gru_cell", "lstm_cell"]


def _run(m, is_cell):
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(3))
    return _flat(m(x[0])) if is_cell else torch.cat([m(x)[0].flatten(), _flat(m(x)[1]).flatten()])


@pytest.mark.parametrize(("ours", "theirs", "kw"), TWINS, ids=TWIN_IDS)
def test_from_torch_and_to_torch_round_trips(ours, theirs, kw):
    is_cell = "Cell" in ours.__name__
    ref = theirs(3, 6, **kw)
    loaded = ours.from_torch(ref, constraint="none")
    assert not nn.utils.parametrize.is_parametrized(loaded)
    torch.testing.assert_close(_run(loaded, is_cell), _run(ref, is_cell), atol=1e-6, rtol=0)
    kind = "orthogonal" if theirs is not nn.LSTM else "spectral"
    constrained = ours(3, 6, constraint=kind, **kw)
    plain = constrained.to_torch()
    assert type(plain) is theirs and not nn.utils.parametrize.is_parametrized(plain)
    torch.testing.assert_close(_run(plain, is_cell), _run(constrained, is_cell), atol=1e-6, rtol=0)
    back = ours.from_torch(plain, constraint=kind)  # orthogonal re-bases: float32 rounding
    torch.testing.assert_close(_run(back, is_cell), _run(constrained, is_cell), atol=1e-6,
                               rtol=1e-6)  # fmt: skip
    with torch.no_grad():  # independent copies
        next(plain.parameters()).add_(1)
    torch.testing.assert_close(_run(back, is_cell), _run(constrained, is_cell), atol=1e-6,
                               rtol=1e-6)  # fmt: skip


def test_from_torch_and_to_torch_errors():
    with pytest.raises(TypeError, match=r"SpectralGRU.from_torch takes a torch.nn.*GRU, got LSTM"):
        SpectralGRU.from_torch(nn.LSTM(3, 4))
    with pytest.raises(ValueError, match="modrelu.* no torch equivalent"):
        SpectralRNN(3, 4, nonlinearity="modrelu").to_torch()


@pytest.mark.parametrize(("ours", "theirs"), ALL, ids=IDS + [i + "_cell" for i in IDS])
def test_torchscript_refused_clearly_tracing_works(ours, theirs):
    m = ours(3, 4).eval()
    is_cell = "Cell" in ours.__name__
    x = torch.randn(2, 3) if is_cell else torch.randn(5, 2, 3)
    with pytest.raises(RuntimeError, match=r"cannot be scripted.*trace.*to_torch\(\)"):
        torch.jit.script(m)
    if is_cell:  # torch 2.13 scripts its cells, but not its layers (no scripted forward)
        exported = torch.jit.script(m.to_torch())
    else:
        exported = torch.jit.trace(m.to_torch(), (x,))
    torch.testing.assert_close(_run(exported, is_cell), _run(m, is_cell), atol=1e-6, rtol=0)
    traced = torch.jit.trace(m, (x,))  # the live module traces too (tests/test_export.py)
    torch.testing.assert_close(
        _run(traced, is_cell), _run(m, is_cell), atol=1e-6, rtol=0
    )  # eager: native


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["none", "spectral"])
def test_torch_compile_fused_path(kind):
    layer = SpectralLSTM(3, 5, num_layers=2, bidirectional=True, constraint=kind)
    compiled = torch.compile(layer)
    x = torch.randn(6, 2, 3, requires_grad=True)
    out_c, (h_c, c_c) = compiled(x)
    out_e, (h_e, c_e) = layer(x)
    torch.testing.assert_close(out_c, out_e, atol=1e-6, rtol=0)
    torch.testing.assert_close(c_c, c_e, atol=1e-6, rtol=0)
    g_c = torch.autograd.grad(out_c.sum(), [x, *layer.parameters()])
    g_e = torch.autograd.grad(out_e.sum(), [x, *layer.parameters()])
    for a, b in zip(g_c, g_e, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --------------------------------------------------------------- devices and dtypes


@pytest.mark.parametrize("kind", list(CONSTRAINTS))
@pytest.mark.parametrize(("cls", "kw"), [(SpectralGRU, {"bidirectional": True}),
                                         (SpectralRNN, {"nonlinearity": "modrelu"}),
                                         (SpectralLSTMCell, {})])  # fmt: skip
def test_meta_device_builds_runs_and_materialises(cls, kw, kind):
    is_cell = "Cell" in cls.__name__
    meta = cls(3, 4, device="meta", constraint=kind, **kw)
    x = torch.randn(2, 3) if is_cell else torch.randn(5, 2, 3)
    out = meta(x.to("meta"))
    assert _flat(out).device.type == "meta"
    real = cls(3, 4, constraint=kind, **kw)
    moved = copy.deepcopy(real).to("meta")  # a move to meta, then back by loading
    assert all(p.device.type == "meta" for p in moved.parameters())
    meta.to_empty(device="cpu").load_state_dict(real.state_dict())
    torch.testing.assert_close(_flat(meta(x) if is_cell else meta(x)[0]),
                               _flat(real(x) if is_cell else real(x)[0]))  # fmt: skip


def test_dtype_moves_keep_the_constraint():
    gru = SpectralGRU(3, 4, bidirectional=True, constraint="spectral").to(torch.float64)
    out, h = gru(torch.randn(5, 2, 3, dtype=torch.float64))
    assert out.dtype == h.dtype == torch.float64
    s = torch.linalg.svdvals(gru.weight_hh_l0_reverse.detach().reshape(3, 4, 4))[:, 0]
    torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64))
    buf = io.BytesIO()
    torch.save(gru.state_dict(), buf)
    back = SpectralGRU(3, 4, bidirectional=True, dtype=torch.float64)
    back.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    torch.testing.assert_close(back(torch.ones(5, 2, 3, dtype=torch.float64))[0],
                               gru(torch.ones(5, 2, 3, dtype=torch.float64))[0])  # fmt: skip
