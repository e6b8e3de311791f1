"""Whole models holding seqnorm modules: pickle, torch.save/load, deepcopy, conversion.

Oracles: the module before saving (outputs, state, flags), torch's own modules (keys,
weights) and the global RNG state (unchanged by loading and converting).
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import seqnorm
from seqnorm import (
    CONSTRAINTS,
    SpectralGRU,
    SpectralGRUCell,
    SpectralLSTM,
    SpectralLSTMCell,
    SpectralRNN,
    SpectralRNNCell,
)
from seqnorm.layers.serialize import rebuild

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = list(CONSTRAINTS)


class Holder(nn.Module):
    """A user's model: a seqnorm module between torch layers."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        width = getattr(rnn, "proj_size", 0) or rnn.hidden_size
        self.head = nn.Linear(width * (2 if getattr(rnn, "bidirectional", False) else 1), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(x)
        h = out[0] if isinstance(out, tuple) else out
        return self.head(h)


def _input(m: nn.Module) -> torch.Tensor:
    cell = "Cell" in type(m).__name__
    return torch.randn(*((2,) if cell else (5, 2)), m.input_size,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip


def _trained(rnn: nn.Module) -> Holder:
    """A few large optimiser steps, so that every buffer has moved (orthogonal re-bases)."""
    model = Holder(rnn)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = _input(rnn)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    return model


def _module(kind: str, cell: bool) -> nn.Module:
    options = {"rebase_every": 2} if kind == "orthogonal" else {}
    if cell:
        return SpectralGRUCell(3, 4, constraint=kind, constraint_options=options)
    return SpectralGRU(3, 4, num_layers=2, bidirectional=True, constraint=kind,
                       constraint_options=options)  # fmt: skip


def _same(a: Holder, b: Holder) -> None:
    assert type(b.rnn).__mro__[1:] == type(a.rnn).__mro__[1:] or type(b.rnn) is type(a.rnn)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], atol=0, rtol=0, msg=k)
    assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    for attr in ("constraint", "constraint_options", "init", "chrono_init", "constrained_gates"):
        assert getattr(b.rnn, attr) == getattr(a.rnn, attr)
    x = _input(a.rnn)
    torch.testing.assert_close(b(x), a(x), atol=0, rtol=0)


def _save_load(model: nn.Module, weights_only: bool) -> nn.Module:
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    if not weights_only:
        return torch.load(buf, weights_only=False)
    with torch.serialization.safe_globals([Holder, nn.Linear]):  # what torch's layers need
        return torch.load(buf)


@pytest.mark.parametrize("weights_only", [True, False])
@pytest.mark.parametrize("cell", [False, True], ids=["layer", "cell"])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_save_load_round_trips(kind, cell, weights_only):
    model = _trained(_module(kind, cell))
    model.rnn.eval()  # a mixed training state survives
    rng = torch.get_rng_state()
    loaded = _save_load(model, weights_only)
    assert torch.equal(torch.get_rng_state(), rng)
    _same(model, loaded)
    model.train()
    loaded.train()
    _same(model, loaded)  # training-mode forwards advance the same buffers


@pytest.mark.parametrize("cell", [False, True], ids=["layer", "cell"])
@pytest.mark.parametrize("kind", KINDS)
def test_pickle_and_deepcopy_every_kind(kind, cell):
    model = _trained(_module(kind, cell)).eval()
    _same(model, pickle.loads(pickle.dumps(model)))
    twin = copy.deepcopy(model)
    _same(model, twin)
    ours = {t.data_ptr() for t in [*model.parameters(), *model.buffers()] if t.numel()}
    theirs = {t.data_ptr() for t in [*twin.parameters(), *twin.buffers()] if t.numel()}
    assert not ours & theirs  # the copy shares no tensor with the original
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1)
    x = _input(model.rnn)
    before = model(x)
    twin(x)
    torch.testing.assert_close(model(x), before, atol=0, rtol=0)


SPECIAL = [
    pytest.param(SpectralLSTM, {"proj_size": 2, "num_layers": 2, "constraint": "spectral",
                                "constraint_options": {"eps": 1e-9}}, id="lstm_proj"),
    pytest.param(SpectralRNN, {"nonlinearity": "modrelu", "constraint": "orthogonal",
                               "init": "henaff"}, id="modrelu"),
    pytest.param(SpectralLSTM, {"bidirectional": True, "chrono_init": 10, "batch_first": True,
                                "constraint": "bound", "constraint_options": {"gamma": 0.9},
                                "constrained_gates": ["f", "g"]}, id="lstm_bi_chrono_gates"),
    pytest.param(SpectralRNNCell, {"nonlinearity": "modrelu", "constraint": "scaled"},
                 id="modrelu_cell"),
    pytest.param(SpectralLSTMCell, {"bias": False, "constraint": "band"}, id="lstm_cell"),
    pytest.param(SpectralGRU, {"constraint": "none", "dropout": 0.5, "num_layers": 2},
                 id="gru_none"),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "kw"), SPECIAL)
def test_save_load_keeps_options_and_attributes(cls, kw):
    model = _trained(cls(3, 6, **kw))
    if hasattr(model.rnn, "unroll"):
        model.rnn.unroll = True
    model.head.weight.requires_grad_(False)
    first = next(iter(model.rnn.parameters()))
    first.requires_grad_(False)
    model.eval()
    for loaded in (_save_load(model, True), _save_load(model, False),
                   pickle.loads(pickle.dumps(model))):  # fmt: skip
        _same(model, loaded)
        assert getattr(loaded.rnn, "unroll", None) == getattr(model.rnn, "unroll", None)
        assert [p.requires_grad for p in loaded.parameters()] == [
            p.requires_grad for p in model.parameters()
        ]
        assert repr(loaded) == repr(model)


@pytest.mark.parametrize("cls", [SpectralLSTM, SpectralGRUCell])
def test_power_iteration_state_survives(cls):
    """The power-iteration vectors are saved and loaded; in training mode (where every
    forward advances them) the copy computes what the original does, step after step.

    In eval mode a fresh copy advances its vectors once on its first forward (the vectors
    do not record which weight they were last advanced on), so eval outputs then agree to
    the precision of one more power-iteration step only."""
    kw = {"proj_size": 2} if cls is SpectralLSTM else {}
    options = {"estimator": "power", "n_power_iterations": 2}
    model = _trained(cls(3, 6, constraint="spectral", constraint_options=options, **kw))
    loaded = _save_load(model, True)
    for _ in range(2):
        _same(model, loaded)
    model.eval()
    loaded.eval()
    x = _input(model.rnn)
    torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)


def test_weights_only_needs_only_the_users_classes():
    model = Holder(SpectralLSTM(3, 4, proj_size=2))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="Holder"):
        torch.load(buf)  # the user's class is theirs to allow, as for torch's layers
    buf = io.BytesIO()
    torch.save(model.rnn, buf)
    buf.seek(0)
    loaded = torch.load(buf)  # a bare seqnorm module needs nothing
    torch.testing.assert_close(loaded(_input(model.rnn))[0], model.rnn(_input(model.rnn))[0])


def test_rebuild_accepts_data_only():
    good = SpectralGRU(3, 4)
    _, (name, kwargs, state, extra) = good.__reduce_ex__(2)
    assert isinstance(rebuild(name, kwargs, state, extra), SpectralGRU)
    with pytest.raises(ValueError, match="unknown seqnorm class 'Linear'"):
        rebuild("Linear", kwargs, state, extra)
    with pytest.raises(TypeError, match="seqnorm class name or subclass"):
        rebuild(nn.Linear, kwargs, state, extra)
    with pytest.raises(TypeError, match="kwargs must be a dict of plain values"):
        rebuild(name, {**kwargs, "init": print}, state, extra)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['device'\]"):
        rebuild(name, {**kwargs, "device": "cpu"}, state, extra)
    with pytest.raises(TypeError, match="mapping of names to tensors"):
        rebuild(name, kwargs, {**state, "x": 1}, extra)
    with pytest.raises(TypeError, match="extra must be a dict"):
        rebuild(name, kwargs, state, {"hook": print})
    with pytest.raises(RuntimeError, match="Missing key"):
        rebuild(name, kwargs, {k: v for k, v in state.items() if "hh" not in k}, extra)


class MyGRU(SpectralGRU):
    """A user's subclass: rebuilt as itself."""

    def forward(self, x, hx=None):
        return super().forward(x * 2, hx)


def test_user_subclass_round_trips():
    m = MyGRU(3, 4, constraint="orthogonal").eval()
    back = pickle.loads(pickle.dumps(m))
    assert isinstance(back, MyGRU)
    torch.testing.assert_close(back(_input(m))[0], m(_input(m))[0], atol=0, rtol=0)


# ------------------------------------------------------------------ whole-model conversion


class LM(nn.Module):
    """A small word-level LM written for torch: Embedding -> LSTM -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.body = nn.ModuleDict({"rnn": nn.LSTM(4, 6, num_layers=2, dropout=0.1)})
        self.out = nn.Sequential(nn.Linear(6, 11))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body["rnn"](self.emb(x))[0])


class Looper(nn.Module):
    """A GRUCell stepped in a loop, in a ModuleList."""

    def __init__(self) -> None:
        super().__init__()
        self.cells = nn.ModuleList([nn.GRUCell(3, 5), nn.RNNCell(5, 5, nonlinearity="relu")])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = h2 = None
        for x_t in x.unbind(0):
            h1 = self.cells[0](x_t, h1)
            h2 = self.cells[1](h1, h2)
        return h2


def _tokens() -> torch.Tensor:
    return torch.randint(0, 11, (7, 2), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model_cls", [LM, Looper])
def test_from_torch_and_to_torch_whole_models(model_cls):
    model = model_cls().eval()
    x = _tokens() if model_cls is LM else torch.randn(6, 2, 3)
    ref = model(x)
    rng = torch.get_rng_state()
    same = seqnorm.from_torch(model, constraint="none")
    assert same is model and torch.equal(torch.get_rng_state(), rng)
    kinds = {type(m).__name__ for m in model.modules()}
    assert kinds & {"SpectralLSTM", "SpectralGRUCell", "SpectralRNNCell"}
    assert not kinds & {"LSTM", "GRUCell", "RNNCell"}
    assert not any(m.training for m in model.modules())
    torch.testing.assert_close(model(x), ref, atol=1e-6, rtol=0)
    seqnorm.to_torch(model)
    assert torch.equal(torch.get_rng_state(), rng)
    constrained = seqnorm.from_torch(model, constraint="spectral")
    assert torch.equal(torch.get_rng_state(), rng)
    ref = constrained(x)
    plain = seqnorm.to_torch(copy.deepcopy(constrained))
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in plain.modules())
    torch.testing.assert_close(plain(x), ref, atol=1e-6, rtol=0)
    assert torch.equal(torch.get_rng_state(), rng)


def test_from_torch_root_shared_and_training_flags():
    lstm = nn.LSTM(3, 4).double()
    new = seqnorm.from_torch(lstm, constraint="orthogonal")
    assert (
        isinstance(new, SpectralLSTM) and new.training and new.weight_ih_l0.dtype == torch.float64
    )
    assert isinstance(lstm, nn.LSTM)  # a recurrent root is returned converted, left as it was
    shared = nn.GRU(3, 3)
    tree = nn.Sequential(shared, nn.Sequential(shared))
    tree[1].eval()
    seqnorm.from_torch(tree)
    assert tree[0] is tree[1][0] and isinstance(tree[0], SpectralGRU)
    assert isinstance(seqnorm.to_torch(SpectralGRUCell(3, 4)), nn.GRUCell)


def test_to_torch_modrelu_names_the_path_and_changes_nothing():
    inner = nn.ModuleDict({"a": SpectralGRU(3, 3), "b": SpectralRNN(3, 3, nonlinearity="modrelu")})
    model = nn.Sequential(nn.Linear(3, 3), inner)
    with pytest.raises(ValueError, match=r"1\.b \(SpectralRNN, nonlinearity='modrelu'\)"):
        seqnorm.to_torch(model)
    assert isinstance(model[1]["a"], SpectralGRU)
    with pytest.raises(ValueError, match="modrelu"):
        seqnorm.torch_state_dict(model)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("ours", "theirs", "kw"), [
    (SpectralLSTM, nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    (SpectralLSTM, nn.LSTM, {"proj_size": 2}),
    (SpectralGRUCell, nn.GRUCell, {}),
], ids=["lstm_bi", "lstm_proj", "gru_cell"])  # fmt: skip
def test_plain_state_dict_both_ways(kind, ours, theirs, kw):
    if kw.get("proj_size") and kind in ("band", "orthogonal"):
        pytest.skip("a rank-P recurrent map cannot be orthogonal or banded")
    cell = "Cell" in ours.__name__
    x = torch.randn(*((2,) if cell else (5, 2)), 3)

    def run(m):
        out = m(x)
        return out[0] if isinstance(out, tuple) else out

    torch_model = Holder(theirs(3, 6, **kw))
    ours_model = Holder(ours(3, 6, constraint=kind, **kw))
    ours_model.load_state_dict(torch_model.state_dict())  # a plain checkpoint loads
    expected = Holder(ours.from_torch(torch_model.rnn, constraint=kind))
    expected.head.load_state_dict(torch_model.head.state_dict())
    torch.testing.assert_close(run(ours_model), run(expected), atol=1e-6, rtol=1e-6)
    if kind == "none":
        torch.testing.assert_close(run(ours_model), run(torch_model), atol=1e-6, rtol=0)
    plain = seqnorm.torch_state_dict(ours_model)  # and a constrained one gives torch's keys
    assert list(plain) == list(torch_model.state_dict())
    torch_model.load_state_dict(plain)
    torch.testing.assert_close(run(torch_model), run(ours_model), atol=1e-6, rtol=1e-6)
    again = Holder(ours(3, 6, constraint=kind, **kw))
    again.load_state_dict(plain)  # the constrained weights are fixed points of the constraint
    torch.testing.assert_close(run(again), run(ours_model), atol=1e-5, rtol=1e-5)
