"""torch's exception contract, checked error by error with torch's module as the oracle.

PyTorch's own error tests for its recurrent modules, ported: the ``ModuleInfo`` error inputs
of ``torch/testing/_internal/common_modules.py`` (``module_error_inputs_torch_nn_RNN_GRU_Cell``,
``..._LSTMCell``, ``..._RNN_GRU``, run by ``test_modules.py::test_errors``) with their
exception types and message regexes, and the error cases of ``test/test_nn.py``
(``test_RNN_nonlinearity``, ``test_projections_errors_on_gru_and_rnn``,
``test_rnn_args_check``, ``test_projections_lstm_args_check``,
``test_RNN_cell_no_broadcasting``). Each runs against torch's module first (so the port is
checked), then against seqnorm's at ``constraint="none"`` and ``"spectral"``. Beyond the
regexes, every message of a check torch makes itself is contained in seqnorm's, which adds
its guidance after it. The deliberate differences are listed, with their reasons, at the end.
"""

from __future__ import annotations

import os
import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import seqnorm
from seqnorm.layers import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

OURS = {
    nn.RNN: seqnorm.SpectralRNN, nn.GRU: seqnorm.SpectralGRU, nn.LSTM: seqnorm.SpectralLSTM,
    nn.RNNCell: seqnorm.SpectralRNNCell, nn.GRUCell: seqnorm.SpectralGRUCell,
    nn.LSTMCell: seqnorm.SpectralLSTMCell,
}  # fmt: skip
LAYERS, CELLS = [nn.RNN, nn.GRU, nn.LSTM], [nn.RNNCell, nn.GRUCell, nn.LSTMCell]
CONSTRAINTS = ["none", "spectral"]


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype)


def _raised(fn, *args) -> BaseException:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the tests compare exception types
        return e
    raise AssertionError("expected an exception")


def _check(theirs, ctor, forward, error, regex, constraint):
    """torch's module raises ``error`` matching ``regex`` (at construction when ``forward`` is
    None, else in forward), and so does seqnorm's."""
    args, kwargs = ctor
    for build in (lambda: theirs(*args, **kwargs),
                  lambda: OURS[theirs](*args, constraint=constraint, **kwargs)):  # fmt: skip
        if forward is None:
            with pytest.raises(error, match=regex):
                build()
        else:
            module = build()
            with pytest.raises(error, match=regex):
                module(*forward())


# ------------------------------------------------ common_modules.py: module error inputs

CELL_ERRORS = {  # module_error_inputs_torch_nn_RNN_GRU_Cell (RNNCell, GRUCell)
    "input_size": ((10, 20), lambda: (_x(3, 11), _x(3, 20)), RuntimeError,
                   "input has inconsistent input_size: got 11 expected 10"),
    "hidden_size": ((10, 20), lambda: (_x(3, 10), _x(3, 21)), RuntimeError,
                    "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    "batch": ((10, 20), lambda: (_x(3, 10), _x(5, 20)), RuntimeError,
              "Input batch size 3 doesn't match hidden0 batch size 5"),
    "hidden_dim": ((10, 20), lambda: (_x(3, 10), _x(3, 1, 1, 20)), ValueError,
                   "Expected hidden to be 1D or 2D, got 4D instead"),
}  # fmt: skip
LSTM_CELL_ERRORS = {  # module_error_inputs_torch_nn_LSTMCell
    "input_size": ((10, 20), lambda: (_x(3, 11), (_x(3, 20), _x(3, 20))), RuntimeError,
                   "input has inconsistent input_size: got 11 expected 10"),
    "hidden_size": ((10, 20), lambda: (_x(3, 10), (_x(3, 21), _x(3, 21))), RuntimeError,
                    "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    "batch": ((10, 20), lambda: (_x(3, 10), (_x(5, 20), _x(5, 20))), RuntimeError,
              "Input batch size 3 doesn't match hidden0 batch size 5"),
    "hidden_dim": ((10, 20), lambda: (_x(3, 10), (_x(3, 1, 1, 20), _x(3, 1, 1, 20))),
                   ValueError, r"Expected hx\[0\] to be 1D or 2D, got 4D instead"),
}  # fmt: skip


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("case", list(CELL_ERRORS))
@pytest.mark.parametrize("theirs", [nn.RNNCell, nn.GRUCell], ids=["rnn_cell", "gru_cell"])
def test_module_error_inputs_rnn_gru_cell(theirs, case, constraint):
    ctor, forward, error, regex = CELL_ERRORS[case]
    _check(theirs, (ctor, {}), forward, error, regex, constraint)


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_module_error_inputs_rnn_cell_nonlinearity(nonlinearity, constraint):
    # torch's samples pass FunctionInput(10, 20, 'relu'): positionally that is bias='relu'
    # (see test_documented_differences); the nonlinearity they mean is passed by name here.
    _check(nn.RNNCell, ((10, 20), {"nonlinearity": nonlinearity}),
           lambda: (_x(3, 10), _x(3, 21)), RuntimeError,
           "hidden0 has inconsistent hidden_size: got 21, expected 20", constraint)  # fmt: skip


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("case", list(LSTM_CELL_ERRORS))
def test_module_error_inputs_lstm_cell(case, constraint):
    ctor, forward, error, regex = LSTM_CELL_ERRORS[case]
    _check(nn.LSTMCell, (ctor, {}), forward, error, regex, constraint)


LAYER_ERRORS = {  # module_error_inputs_torch_nn_RNN_GRU (RNN, GRU and LSTM)
    "hidden_size=0": (((10, 0, 1), {}), None, ValueError, "hidden_size must be greater than zero"),
    "num_layers=0": (((10, 10, 0), {}), None, ValueError, "num_layers must be greater than zero"),
    "dtype": (((3, 5), {"dtype": torch.float32}), lambda: (_x(2, 4, 3, dtype=torch.float64),),
              ValueError, r"RNN input dtype .* does not match weight dtype .* "
              r"Convert input: input\.to\(.*\), or convert model: model\.to\(.*\)"),
    "bias=0": (((3, 5), {"bias": 0}), None, TypeError, "bias should be of type bool, got: int"),
    "bias=1": (((3, 5), {"bias": 1}), None, TypeError, "bias should be of type bool, got: int"),
    "bias='True'": (((3, 5), {"bias": "True"}), None, TypeError,
                    "bias should be of type bool, got: str"),
    "batch_first=0": (((3, 5), {"batch_first": 0}), None, TypeError,
                      "batch_first should be of type bool, got: int"),
    "batch_first=1": (((3, 5), {"batch_first": 1}), None, TypeError,
                      "batch_first should be of type bool, got: int"),
    "batch_first='False'": (((3, 5), {"batch_first": "False"}), None, TypeError,
                            "batch_first should be of type bool, got: str"),
    "input_size=3.0": (((3.0, 5), {}), None, TypeError,
                       "input_size should be of type int, got: float"),
    "input_size='10'": ((("10", 5), {}), None, TypeError,
                        "input_size should be of type int, got: str"),
    "input_size=0": (((0, 5), {}), None, ValueError, "input_size must be greater than zero"),
    "input_size=-1": (((-1, 5), {}), None, ValueError, "input_size must be greater than zero"),
    "hidden_size=5.0": (((3, 5.0), {}), None, TypeError,
                        "hidden_size should be of type int, got: float"),
}  # fmt: skip


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("case", list(LAYER_ERRORS))
@pytest.mark.parametrize("theirs", LAYERS, ids=["rnn", "gru", "lstm"])
def test_module_error_inputs_rnn_gru_lstm(theirs, case, constraint):
    ctor, forward, error, regex = LAYER_ERRORS[case]
    _check(theirs, ctor, forward, error, regex, constraint)


# ------------------------------------------------------------- test_nn.py error cases


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_rnn_nonlinearity(constraint):
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        nn.RNN(1, 10, nonlinearity="garbage")
    with pytest.raises(ValueError, match="Unknown nonlinearity 'garbage'.*'modrelu'"):
        seqnorm.SpectralRNN(1, 10, nonlinearity="garbage", constraint=constraint)
    # torch's cell raises RuntimeError("Unknown nonlinearity: garbage") in forward; seqnorm's
    # refuses at construction, with an InputError (a ValueError and a RuntimeError).
    with pytest.raises(RuntimeError, match="Unknown nonlinearity"):
        nn.RNNCell(1, 10, nonlinearity="garbage")(_x(2, 1))
    with pytest.raises(RuntimeError, match="Unknown nonlinearity 'garbage'"):
        seqnorm.SpectralRNNCell(1, 10, nonlinearity="garbage", constraint=constraint)


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("theirs", [nn.RNN, nn.GRU], ids=["rnn", "gru"])
def test_projections_errors_on_gru_and_rnn(theirs, constraint):
    msg = "proj_size argument is only supported for LSTM, not RNN or GRU"
    _check(theirs, ((), {"input_size": 2, "hidden_size": 3, "proj_size": 2}), None,
           ValueError, msg, constraint)  # fmt: skip


def _bad_shapes(correct_input, correct_h, correct_c):
    """test_rnn_args_check's cases: one dimension of the input or of one state made 7."""

    def bad(shape, dim):
        return tuple(7 if i == dim else s for i, s in enumerate(shape))

    cases = [(bad(correct_input, 1), correct_h, correct_c),  # input batch
             (bad(correct_input, 2), correct_h, correct_c)]  # input features  # fmt: skip
    for dim in (1, 2, 0):  # hidden batch, hidden features, hidden[0] (layers)
        cases.append((correct_input, bad(correct_h, dim), correct_c))
        if correct_c is not None:
            cases.append((correct_input, correct_h, bad(correct_c, dim)))
    return cases


ARGS_CHECK = {  # test_rnn_args_check, and test_projections_lstm_args_check for LSTM (proj)
    "rnn": (nn.RNN, {}, _bad_shapes((6, 4, 3), (2, 4, 5), None)),
    "gru": (nn.GRU, {}, _bad_shapes((6, 4, 3), (2, 4, 5), None)),
    "lstm": (nn.LSTM, {}, _bad_shapes((6, 4, 3), (2, 4, 5), (2, 4, 5))),
    "lstm_proj": (nn.LSTM, {"proj_size": 2}, _bad_shapes((6, 4, 3), (2, 4, 2), (2, 4, 5))),
}


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("case", list(ARGS_CHECK))
def test_rnn_args_check(case, constraint):
    theirs, kw, shapes = ARGS_CHECK[case]
    a, b = OURS[theirs](3, 5, 2, constraint=constraint, **kw), theirs(3, 5, 2, **kw)
    for x_shape, h_shape, c_shape in shapes:
        x, h = _x(*x_shape), _x(*h_shape)
        hx = h if c_shape is None else (h, _x(*c_shape))
        expected = _raised(b, x, hx)
        assert isinstance(expected, RuntimeError)
        got = _raised(a, x, hx)
        assert isinstance(got, RuntimeError), got
        assert str(expected) in str(got)  # torch's message, then seqnorm's guidance


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_rnn_cell_no_broadcasting(constraint):
    good_hx, good_x = _x(3, 20), _x(3, 10)
    for x, bad_hx in ((good_x, _x(1, 20)), (good_x, _x(3, 1)), (_x(3, 1), good_hx)):
        calls = [(nn.RNNCell, bad_hx), (nn.GRUCell, bad_hx), (nn.LSTMCell, (bad_hx, good_hx)),
                 (nn.LSTMCell, (good_hx, bad_hx))]  # fmt: skip
        for theirs, hx in calls:
            expected = _raised(theirs(10, 20), x, hx)
            assert isinstance(expected, RuntimeError)
            got = _raised(OURS[theirs](10, 20, constraint=constraint), x, hx)
            assert isinstance(got, RuntimeError), got
            assert str(expected) in str(got)


# --------------------------------------------- every check torch makes: its own message

_H = lambda *s: _x(*s)  # noqa: E731 - a state of this shape
LAYER_CALLS = {  # a 2-layer bidirectional layer, input_size 3, hidden_size 4
    "4-D input": lambda: (_x(2, 5, 2, 3), None),
    "1-D input": lambda: (_x(3), None),
    "input features": lambda: (_x(5, 2, 7), None),
    "float64 input": lambda: (_x(5, 2, 3, dtype=torch.float64), None),
    "empty sequence": lambda: (_x(0, 2, 3), None),
    "hx layers": lambda: (_x(5, 2, 3), _H(1, 2, 4)),
    "hx batch": lambda: (_x(5, 2, 3), _H(4, 3, 4)),
    "hx features": lambda: (_x(5, 2, 3), _H(4, 2, 5)),
    "unbatched input, 3-D hx": lambda: (_x(5, 3), _H(4, 1, 4)),
    "batched input, 2-D hx": lambda: (_x(5, 2, 3), _H(4, 4)),
    "unbatched hx features": lambda: (_x(5, 3), _H(4, 5)),
    "packed input features": lambda: (pack_padded_sequence(_x(5, 2, 7), [5, 3]), None),
    "packed hx batch": lambda: (pack_padded_sequence(_x(5, 2, 3), [5, 3]), _H(4, 3, 4)),
    "packed float64": lambda: (pack_padded_sequence(_x(5, 2, 3, dtype=torch.float64), [5, 3]),
                               None),
}  # fmt: skip
LSTM_ONLY = {
    "c features": lambda: (_x(5, 2, 3), (_H(4, 2, 4), _H(4, 2, 5))),
    "c dims": lambda: (_x(5, 2, 3), (_H(4, 2, 4), _H(4, 4))),
    "unbatched c features": lambda: (_x(5, 3), (_H(4, 4), _H(4, 5))),
}
# torch's message already says what to do (the dtype), or there is nothing more to say
TORCH_ADVISES = {"float64 input", "packed float64", "empty sequence"}
# torch's LSTM permutes hx before it checks packed input, so its own error is an indexing one
TORCH_LSTM_PACKED = {"packed input features", "packed hx batch", "packed float64"}


LAYER_CASES = [(t, bad) for t in LAYERS for bad in [*LAYER_CALLS, *LSTM_ONLY]
               if (bad not in LSTM_ONLY or t is nn.LSTM)
               and not (bad in TORCH_LSTM_PACKED and t is nn.LSTM)]  # fmt: skip


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize(
    ("theirs", "bad"), LAYER_CASES, ids=[f"{t.__name__}-{b}" for t, b in LAYER_CASES]
)
def test_layer_messages_start_with_torchs(theirs, bad, constraint):
    lstm = theirs is nn.LSTM
    x, h = {**LAYER_CALLS, **LSTM_ONLY}[bad]()
    hx = (h, h) if lstm and isinstance(h, torch.Tensor) else h
    kw = {"num_layers": 2, "bidirectional": True}
    expected = _raised(lambda: theirs(3, 4, **kw)(x, hx))
    got = _raised(lambda: OURS[theirs](3, 4, constraint=constraint, **kw)(x, hx))
    assert isinstance(got, type(expected)) and isinstance(got, InputError), (expected, got)
    assert str(expected) in str(got)
    if bad not in TORCH_ADVISES:
        assert len(str(got)) > len(str(expected))  # seqnorm's guidance follows


CELL_CALLS = {  # input_size 10, hidden_size 20
    "3-D input": lambda: (_x(3, 1, 10), None),
    "0-D input": lambda: (torch.tensor(1.0), None),
    "input features, no hx": lambda: (_x(3, 11), None),
    "unbatched input, 2-D hx": lambda: (_x(10), _H(1, 20)),
    "batched input, 1-D hx": lambda: (_x(3, 10), _H(20)),
    "0-D hx": lambda: (_x(3, 10), torch.tensor(1.0)),
}


CELL_CASES = [(t, bad) for t in CELLS for bad in CELL_CALLS] + [
    (nn.LSTMCell, bad) for bad in ("c features", "c batch", "c dims")]  # fmt: skip


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize(
    ("theirs", "bad"), CELL_CASES, ids=[f"{t.__name__}-{b}" for t, b in CELL_CASES]
)
def test_cell_messages_start_with_torchs(theirs, bad, constraint):
    lstm = theirs is nn.LSTMCell
    c_bad = {"c features": _H(3, 21), "c batch": _H(5, 20), "c dims": _H(3, 1, 20)}
    if bad in c_bad:
        x, hx = _x(3, 10), (_H(3, 20), c_bad[bad])
    else:
        x, h = CELL_CALLS[bad]()
        hx = (h, h) if lstm and h is not None else h
    expected = _raised(theirs(10, 20), x, hx)
    got = _raised(OURS[theirs](10, 20, constraint=constraint), x, hx)
    assert isinstance(got, type(expected)) and isinstance(got, InputError), (expected, got)
    assert str(expected) in str(got)


@pytest.mark.parametrize(
    ("theirs", "kwargs"),
    [(nn.LSTM, {"proj_size": 4}), (nn.LSTM, {"proj_size": -1}), (nn.GRU, {"dropout": 1.5}),
     (nn.RNN, {"dropout": -0.1}), (nn.LSTM, {"dropout": True}), (nn.GRU, {"hidden_size": -3})],
)  # fmt: skip
def test_constructor_messages_start_with_torchs(theirs, kwargs):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    expected = _raised(lambda: theirs(**args))
    got = _raised(lambda: OURS[theirs](**args))
    assert isinstance(got, type(expected)), (expected, got)
    assert str(expected) in str(got)


@pytest.mark.parametrize("theirs", LAYERS, ids=["rnn", "gru", "lstm"])
def test_dropout_warning_is_torchs(theirs):
    with warnings.catch_warnings(record=True) as w_theirs:
        warnings.simplefilter("always")
        theirs(3, 4, dropout=0.5)
    with pytest.warns(UserWarning) as w_ours:
        OURS[theirs](3, 4, dropout=0.5)
    (expected,), (got,) = w_theirs, w_ours
    assert str(expected.message) in str(got.message)
    assert got.filename == __file__  # points at the caller's line, as torch's does


@pytest.mark.parametrize("unroll", [False, True], ids=["fused", "unrolled"])
@pytest.mark.parametrize("theirs", LAYERS + CELLS, ids=lambda c: c.__name__)
def test_no_dtype_error_under_autocast(theirs, unroll):
    """torch skips its dtype check under autocast (autocast casts); so does seqnorm."""
    is_cell = theirs in CELLS
    b = theirs(3, 4)
    a = OURS[theirs].from_torch(b, constraint="none")
    if not is_cell:
        a.unroll = unroll
    x = _x(2, 3) if is_cell else _x(5, 2, 3)
    x = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_a, out_b = a(x), b(x)
    flat = lambda o: o[0] if isinstance(o, tuple) else o  # noqa: E731
    assert flat(out_a).dtype == flat(out_b).dtype == torch.bfloat16
    torch.testing.assert_close(flat(out_a), flat(out_b), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="does not match weight dtype"):  # outside: an error
        a(x)


# ------------------------------------------------------------- documented differences


def test_documented_differences():
    """Where seqnorm deliberately differs from torch, and why (each side checked)."""
    # 1. torch's RNN/GRU refuse the proj_size keyword itself; seqnorm's accept proj_size=0
    #    (the default), so that tools which pass every default (LightningCLI) can build them.
    with pytest.raises(ValueError, match="only supported for LSTM"):
        nn.GRU(3, 4, proj_size=0)
    assert seqnorm.SpectralGRU(3, 4, proj_size=0).proj_size == 0
    # 2. torch's cells take any truthy bias: its own sample FunctionInput(10, 20, 'relu')
    #    builds bias='relu' (and tanh). seqnorm's cells refuse a non-bool bias, as torch's
    #    layers do.
    assert nn.RNNCell(10, 20, "relu").nonlinearity == "tanh"
    with pytest.raises(TypeError, match="bias should be of type bool, got: str"):
        seqnorm.SpectralRNNCell(10, 20, "relu")
    # 3. An unknown cell nonlinearity: torch fails in forward, seqnorm at construction
    #    (test_rnn_nonlinearity). 4. A non-bool bidirectional: torch takes any truthy value.
    assert nn.GRU(3, 4, bidirectional=1).bidirectional == 1
    with pytest.raises(TypeError, match="bidirectional should be of type bool, got: int"):
        seqnorm.SpectralGRU(3, 4, bidirectional=1)
    # 5. A state of the wrong kind: torch fails on what it does with it (AttributeError for
    #    a tuple given to RNN/GRU; for a Tensor given to an LSTM it indexes the tensor);
    #    seqnorm raises TypeError naming the mistake.
    x, h = _x(5, 2, 3), _x(1, 2, 4)
    assert isinstance(_raised(lambda: nn.GRU(3, 4)(x, (h,))), AttributeError)
    with pytest.raises(TypeError, match=r"hx must be a Tensor h_0 \(a tuple is only"):
        seqnorm.SpectralGRU(3, 4)(x, (h,))
    h2 = _x(2, 2, 4)  # torch reads (h2[0], h2[1]), each 2-D
    assert "hx and cx should also be 3-D" in str(_raised(lambda: nn.LSTM(3, 4)(x, h2)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\) for an LSTM"):
        seqnorm.SpectralLSTM(3, 4)(x, h2)
    # 6. A cell's input dtype: torch's message is its matmul kernel's; seqnorm's is the
    #    layers' (both RuntimeError).
    cell_x = _x(2, 3, dtype=torch.float64)
    assert "mat1 and mat2" in str(_raised(lambda: nn.GRUCell(3, 4)(cell_x)))
    with pytest.raises(RuntimeError, match=re.escape("Convert input: input.to(torch.float32)")):
        seqnorm.SpectralGRUCell(3, 4)(cell_x)


# --------------------------------------------------------------- torch.compile: no breaks


@pytest.mark.slow
@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_compile_has_no_graph_break_in_the_checks(constraint):
    """A cell step loop and the unrolled layer forward trace whole under ``torch.compile``
    (the input checks included); the fused path's only break is the one it makes on purpose
    around torch's kernel (``compute._eager_when_compiled``)."""
    import torch._dynamo as dynamo  # seconds to import: only here

    cell = seqnorm.SpectralLSTMCell(3, 4, constraint=constraint)

    def loop(x, hx):
        with seqnorm.cached():
            for x_t in x.unbind(0):
                hx = cell(x_t, hx)
        return hx

    layer = seqnorm.SpectralGRU(3, 4, num_layers=2, bidirectional=True, constraint=constraint)
    x, h = _x(5, 2, 3), _x(4, 2, 4)
    calls = [(loop, (x, (h[0], h[0])), None), (layer, (x, h), True),
             (layer, (x[:, 0], h[:, 0]), True), (layer, (x, h), False)]  # fmt: skip
    for fn, args, unroll in calls:
        layer.unroll = unroll
        dynamo.reset()
        explained = dynamo.explain(fn)(*args)
        where = {f.filename for r in explained.break_reasons for f in r.user_stack[-1:]}
        if unroll is False:  # the fused path: torch's kernel runs outside the graph
            assert {os.path.basename(f) for f in where} <= {"compute.py"}, explained.break_reasons
        else:
            assert explained.graph_break_count == 0, explained.break_reasons
