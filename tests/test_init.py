"""Recurrent initialisations: each scheme gives what it claims, per gate block; chrono biases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from seqnorm.layers.init import INITS, chrono_init_, init_recurrent_


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blocks(W: Tensor, blocks: int) -> Tensor:
    return W.reshape(blocks, W.shape[1], W.shape[1])  # (G, H, H)


def _rotation_angles(block: Tensor) -> Tensor:
    """Angles ``th`` of a block-diagonal matrix of rotations ``[[cos, sin], [-sin, cos]]``,
    after checking that it is one (odd ``H``: last diagonal entry 1)."""
    H = block.shape[0]
    k = torch.arange(0, H - 1, 2)  # (H // 2,) first index of each 2x2 block
    structure = torch.zeros(H, H, dtype=torch.bool)
    structure[k, k] = structure[k + 1, k + 1] = True
    structure[k, k + 1] = structure[k + 1, k] = True
    structure[-1, -1] |= H % 2 == 1
    assert block[~structure].abs().max() <= 1e-12  # nothing outside the 2x2 blocks
    c, s = block[k, k], block[k, k + 1]  # (H // 2,)
    torch.testing.assert_close(block[k + 1, k + 1], c)
    torch.testing.assert_close(block[k + 1, k], -s)
    torch.testing.assert_close(c**2 + s**2, torch.ones_like(c))
    if H % 2:
        assert block[-1, -1] == 1
    return torch.atan2(s, c)  # (H // 2,) in (-pi, pi]


def _eigen_angles(block: Tensor) -> Tensor:
    ev = torch.linalg.eigvals(block.double())  # (H,) complex
    torch.testing.assert_close(ev.abs(), torch.ones(ev.shape, dtype=torch.float64))
    return ev.angle()  # (H,)


# --------------------------------------------------------------------------- schemes


def test_inits_lists_every_scheme() -> None:
    assert INITS == ("torch", "identity", "orthogonal", "henaff", "cayley")


def test_torch_leaves_weight_unchanged() -> None:
    W = torch.randn(12, 4)
    before = W.clone()
    assert init_recurrent_(W, "torch", blocks=3) is W
    assert torch.equal(W, before)


@pytest.mark.parametrize("blocks", [1, 3, 4])
def test_identity(blocks: int) -> None:
    W = init_recurrent_(torch.randn(blocks * 5, 5), "identity", blocks=blocks)
    assert torch.equal(W, torch.eye(5).repeat(blocks, 1))


@pytest.mark.parametrize("scheme", ["orthogonal", "henaff", "cayley"])
@pytest.mark.parametrize("blocks", [1, 3, 4])
@pytest.mark.parametrize("H, dtype, tol", [(7, torch.float32, 1e-5), (16, torch.float64, 1e-12)])
def test_orthogonal_schemes_have_unit_singular_values(
    scheme: str, blocks: int, H: int, dtype: torch.dtype, tol: float
) -> None:
    W = init_recurrent_(torch.randn(blocks * H, H, dtype=dtype), scheme, blocks, _gen())
    assert W.dtype == dtype
    s = torch.linalg.svdvals(_blocks(W, blocks))  # (G, H)
    assert (s - 1).abs().max() <= tol
    if blocks > 1:  # each block drawn on its own
        assert not torch.equal(W[:H], W[H : 2 * H])


def test_orthogonal_is_sign_fixed_haar() -> None:
    """Without the sign fix, LAPACK's QR gives ``Q[0, 0] = -|g_00| / |g_0| < 0`` always; the
    Haar measure makes every entry symmetric about 0 (std ``1/sqrt(H)``)."""
    n, H = 400, 8
    first = _blocks(init_recurrent_(torch.empty(n * H, H), "orthogonal", n, _gen()), n)[:, 0, 0]
    assert (first > 0).any() and (first < 0).any()
    assert first.mean().abs() < 4 / math.sqrt(H * n)


@pytest.mark.parametrize("H", [6, 7, 400])
def test_henaff_is_rotation_blocks_with_angles_in_minus_pi_pi(H: int) -> None:
    W = init_recurrent_(torch.empty(2 * H, H, dtype=torch.float64), "henaff", 2, _gen())
    for block in _blocks(W, 2):
        th = _rotation_angles(block)
        assert ((th > -math.pi) & (th <= math.pi)).all()
        eig = _eigen_angles(block).sort().values
        want = torch.cat([th, -th, torch.zeros(H % 2, dtype=th.dtype)]).sort().values
        torch.testing.assert_close(eig, want)
        if H == 400:  # 200 draws of U(-pi, pi) reach past +-pi/2 (Cayley's do not)
            assert th.min() < -math.pi / 2 and th.max() > math.pi / 2


@pytest.mark.parametrize("H", [6, 7, 400])
def test_cayley_convention_and_eigen_angles(H: int) -> None:
    W = init_recurrent_(torch.empty(H, H, dtype=torch.float64), "cayley", 1, _gen())
    s = _rotation_angles(W)  # the docstring's convention: rotations by s ~ U(0, pi/2)
    assert ((s >= 0) & (s <= math.pi / 2)).all()
    assert (_eigen_angles(W).abs() <= math.pi / 2 + 1e-12).all()
    # Invert the Cayley transform: A = (I + W)^-1 (I - W) must be the documented skew matrix.
    eye = torch.eye(H, dtype=torch.float64)
    A = torch.linalg.solve(eye + W, eye - W)
    torch.testing.assert_close(A, -A.t())
    k = torch.arange(0, H - 1, 2)
    a = A[k, k + 1]  # (H // 2,) a = -tan(s / 2) in [-1, 0]
    torch.testing.assert_close(a, -torch.tan(s / 2))
    assert ((a >= -1) & (a <= 0)).all()
    if H == 400:
        assert s.min() < math.pi / 8 and s.max() > 3 * math.pi / 8  # the whole range is used


# ----------------------------------------------------------------- draws and in place


@pytest.mark.parametrize("scheme", ["orthogonal", "henaff", "cayley"])
def test_generator_reproducible_and_global_rng_untouched(scheme: str) -> None:
    state = torch.get_rng_state()
    a = init_recurrent_(torch.empty(9, 9), scheme, 1, _gen(1))
    b = init_recurrent_(torch.empty(9, 9, dtype=torch.float64), scheme, 1, _gen(1))
    c = init_recurrent_(torch.empty(9, 9), scheme, 1, _gen(2))
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a, b.float())  # one seed, one matrix, whatever the dtype
    assert not torch.allclose(a, c)


def test_default_generator_draws_from_torch_seed() -> None:
    torch.manual_seed(3)
    a = init_recurrent_(torch.empty(6, 6), "orthogonal")
    torch.manual_seed(3)
    b = init_recurrent_(torch.empty(6, 6), "orthogonal")
    assert torch.equal(a, b)


def test_init_in_place_on_a_parameter() -> None:
    p = nn.Parameter(torch.randn(8, 4))
    out = init_recurrent_(p, "henaff", blocks=2, generator=_gen())
    assert out is p and p.requires_grad and p.is_leaf and p.grad_fn is None
    torch.testing.assert_close(
        torch.linalg.svdvals(_blocks(p.detach(), 2)), torch.ones(2, 4), atol=1e-5, rtol=0
    )


# ---------------------------------------------------------------------------- chrono


@pytest.mark.parametrize("t_max", [2, 10, 784])
def test_chrono_lstm(t_max: int) -> None:
    H = 200
    b_ih, b_hh = torch.randn(4 * H), torch.randn(4 * H)
    before_ih, before_hh = b_ih.clone(), b_hh.clone()
    out = chrono_init_(b_ih, b_hh, "lstm", t_max, _gen())
    assert out[0] is b_ih and out[1] is b_hh
    i, f, g, o = (b_ih + b_hh).split(H)  # torch's LSTM gate order
    assert (f >= 0).all() and (f <= math.log(t_max - 1) + 1e-6).all()
    torch.testing.assert_close(i, -f)
    if t_max > 2:  # log(U(1, t_max - 1)) spreads over the range
        assert f.max() - f.min() > 0.5 * math.log(t_max - 1)
    assert (b_hh[: 2 * H] == 0).all()  # the value lives in b_ih
    for k in (2, 3):  # g and o untouched, in both biases
        sl = slice(k * H, (k + 1) * H)
        assert torch.equal(b_ih[sl], before_ih[sl]) and torch.equal(b_hh[sl], before_hh[sl])


@pytest.mark.parametrize("t_max", [2, 100])
def test_chrono_gru(t_max: int) -> None:
    H = 200
    b_ih, b_hh = torch.randn(3 * H), torch.randn(3 * H)
    before_ih, before_hh = b_ih.clone(), b_hh.clone()
    chrono_init_(b_ih, b_hh, "gru", t_max, _gen())
    z = (b_ih + b_hh)[H : 2 * H]  # torch's GRU gate order r, z, n
    assert (z >= 0).all() and (z <= math.log(t_max - 1) + 1e-6).all()
    assert (torch.sigmoid(z) >= 0.5).all()  # z -> 1 keeps the memory in h' = (1-z) n + z h
    assert (b_hh[H : 2 * H] == 0).all()
    if t_max > 2:
        assert z.max() - z.min() > 0.5 * math.log(t_max - 1)
    for k in (0, 2):  # r and n untouched
        sl = slice(k * H, (k + 1) * H)
        assert torch.equal(b_ih[sl], before_ih[sl]) and torch.equal(b_hh[sl], before_hh[sl])


def test_chrono_without_bias_hh_and_on_parameters() -> None:
    b_ih = nn.Parameter(torch.randn(12))
    chrono_init_(b_ih, None, "lstm", 50, _gen())
    f = b_ih.detach()[3:6]
    assert b_ih.is_leaf and (f >= 0).all() and (f <= math.log(49) + 1e-6).all()
    torch.testing.assert_close(b_ih.detach()[:3], -f)


# ---------------------------------------------------------------------------- errors


def test_init_bad_scheme() -> None:
    with pytest.raises(ValueError, match=r"init must be one of \('torch', .*got 'xavier'"):
        init_recurrent_(torch.empty(4, 4), "xavier")


@pytest.mark.parametrize(
    "shape, blocks, match",
    [
        ((10, 4), 2, r"weight must stack 2 square H x H blocks.*got \(10, 4\)"),
        ((4, 5), 1, r"weight must stack 1 square H x H blocks.*got \(4, 5\)"),
        ((16,), 1, r"weight must stack 1 square H x H blocks.*got \(16,\)"),
        ((8, 4), 0, r"blocks must be a positive int, got 0"),
        ((8, 4), 2.0, r"blocks must be a positive int, got 2.0"),
    ],
)
def test_init_bad_shape(shape: tuple[int, ...], blocks: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        init_recurrent_(torch.empty(shape), "orthogonal", blocks)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "rnn_tanh"}, r"mode must be one of \('lstm', 'gru'\), got 'rnn_tanh'"),
        ({"t_max": 1}, r"t_max must be an int >= 2, got 1"),
        ({"t_max": 100.0}, r"t_max must be an int >= 2, got 100.0"),
        ({"t_max": True}, r"t_max must be an int >= 2, got True"),
        ({"bias_ih": None}, r"bias_ih is None \(a bias=False layer\)"),
        ({"bias_ih": torch.zeros(10)}, r"bias_ih must have shape \(4 \* H,\).*got \(10,\)"),
        ({"bias_hh": torch.zeros(8)}, r"bias_hh must have bias_ih's shape \(16,\), got \(8,\)"),
    ],
)
def test_chrono_errors(kwargs: dict, match: str) -> None:
    args = {"bias_ih": torch.zeros(16), "bias_hh": torch.zeros(16), "mode": "lstm", "t_max": 10}
    with pytest.raises(ValueError, match=match):
        chrono_init_(**{**args, **kwargs})
