"""Initialisations of recurrent matrices and gate biases, in place, per gate block.

:func:`init_recurrent_` draws each ``H x H`` gate block of a stacked ``(G*H, H)``
recurrent matrix from one of :data:`INITS`; :func:`chrono_init_` sets the gate biases of a
GRU or LSTM for memories of up to ``t_max`` steps (Tallec & Ollivier 2018).

Random draws are made in float64 on the ``generator``'s device (the CPU, with torch's default
generator, when none is given) and then copied into the tensor, so one seed gives the same
matrix for every dtype and device. Nothing else touches any random state.

>>> W = init_recurrent_(torch.empty(6, 3), "identity", blocks=2)
>>> bool((W == torch.eye(3).repeat(2, 1)).all())
True
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import Tensor

from .spec import SPECS

__all__ = ["INITS", "chrono_init_", "init_recurrent_"]

#: The schemes :func:`init_recurrent_` knows.
INITS = ("torch", "identity", "orthogonal", "henaff", "cayley")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """``n`` draws from U(low, high) in float64 on the generator's device (CPU by default)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)  # (n,)
    return low + (high - low) * u


def _rotations(angles: Tensor, size: int) -> Tensor:
    """Block-diagonal ``(size, size)`` matrix of 2x2 rotations ``[[c, s], [-s, c]]`` by
    ``angles`` (``size // 2`` of them), with a trailing ``1`` when ``size`` is odd."""
    W = torch.eye(size, dtype=angles.dtype, device=angles.device)  # (H, H)
    idx = torch.arange(0, 2 * angles.numel(), 2, device=angles.device)  # (H // 2,)
    c, s = torch.cos(angles), torch.sin(angles)  # (H // 2,)
    W[idx, idx], W[idx + 1, idx + 1] = c, c
    W[idx, idx + 1], W[idx + 1, idx] = s, -s
    return W


def _skew_pairs(entries: Tensor, size: int) -> Tensor:
    """Block-diagonal skew-symmetric ``(size, size)`` matrix with 2x2 blocks
    ``[[0, a], [-a, 0]]`` for ``a`` in ``entries``; zero in the last row and column when
    ``size`` is odd."""
    A = entries.new_zeros(size, size)  # (H, H)
    idx = torch.arange(0, 2 * entries.numel(), 2, device=entries.device)  # (H // 2,)
    A[idx, idx + 1], A[idx + 1, idx] = entries, -entries
    return A


def _orthogonal(size: int, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    g = torch.randn(size, size, generator=generator, dtype=torch.float64, device=device)
    q, r = torch.linalg.qr(g)  # (H, H), (H, H)
    d = torch.sign(torch.diagonal(r))  # (H,) the sign fix that makes q Haar-distributed
    return q * torch.where(d == 0, torch.ones_like(d), d)  # (H, H) column j times d_j


def _henaff(size: int, generator: torch.Generator | None) -> Tensor:
    # expm(S) of S = blockdiag([[0, th], [-th, 0]]) is blockdiag([[cos, sin], [-sin, cos]]):
    # written in closed form, exact to rounding.
    return _rotations(_uniform(size // 2, -math.pi, math.pi, generator), size)


def _cayley(size: int, generator: torch.Generator | None) -> Tensor:
    a = -torch.tan(_uniform(size // 2, 0.0, math.pi / 2, generator) / 2)  # (H // 2,)
    A = _skew_pairs(a, size)  # (H, H) skew-symmetric
    eye = torch.eye(size, dtype=A.dtype, device=A.device)
    return torch.linalg.solve(eye + A, eye - A)  # (H, H) (I + A)^-1 (I - A)


_DRAW = {"orthogonal": _orthogonal, "henaff": _henaff, "cayley": _cayley}


def init_recurrent_(
    weight: Tensor, scheme: str, blocks: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """Initialise each ``H x H`` gate block of a stacked recurrent matrix in place.

    Schemes (each block independently):

    * ``"torch"``: leave ``weight`` as it is (torch's U(-1/sqrt(H), 1/sqrt(H))).
    * ``"identity"``: ``I`` (IRNN, Le, Jaitly & Hinton 2015).
    * ``"orthogonal"``: Haar-random orthogonal, the Q of the QR of a Gaussian matrix with
      the columns' signs fixed so that ``diag(R) > 0``.
    * ``"henaff"``: ``expm(S)`` for ``S`` block-diagonal skew-symmetric with 2x2 blocks
      ``[[0, th], [-th, 0]]``, ``th ~ U(-pi, pi)`` (Henaff, Szlam & LeCun 2016; expRNN's
      ``henaff_init_``); i.e. 2x2 rotations ``[[cos th, sin th], [-sin th, cos th]]``, whose
      eigenvalues are ``exp(+-i th)``. For odd ``H`` the last diagonal entry is 1.
    * ``"cayley"``: the Cayley transform ``(I + A)^-1 (I - A)`` of ``A`` block-diagonal
      skew-symmetric with 2x2 blocks ``[[0, a], [-a, 0]]``, ``a = -tan(s / 2)``,
      ``s ~ U(0, pi/2)`` (scoRNN; expRNN's ``cayley_init_``). With this sign convention each
      block is the rotation ``[[cos s, sin s], [-sin s, cos s]]``, so the eigenvalues are
      ``exp(+-i s)``: eigen-angles in ``[-pi/2, pi/2]``, away from ``-1`` (where the Cayley
      map is singular). For odd ``H`` the last diagonal entry is 1.

    Args:
        weight: the stacked matrix ``(blocks * H, H)``; modified in place under ``no_grad``.
        scheme: one of :data:`INITS`.
        blocks: number of stacked gate blocks (1 for Elman, 3 for GRU, 4 for LSTM).
        generator: the random generator to draw from; torch's default CPU one if ``None``.

    Returns:
        ``weight``.

    Raises:
        ValueError: for an unknown ``scheme`` (named ``init`` after the layer argument), a
            ``blocks`` that is not a positive int, or blocks that are not square.
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}")
    if not isinstance(blocks, Integral) or isinstance(blocks, bool) or blocks < 1:
        raise ValueError(f"blocks must be a positive int, got {blocks!r}")
    if weight.dim() != 2 or weight.shape[0] != blocks * weight.shape[1]:
        raise ValueError(
            f"weight must stack {blocks} square H x H blocks, shape ({blocks} * H, H), "
            f"got {tuple(weight.shape)}"
        )
    if scheme == "torch":
        return weight
    H = weight.shape[1]
    with torch.no_grad():
        for block in weight.split(H, dim=0):  # each (H, H), a view of weight
            if scheme == "identity":
                block.copy_(torch.eye(H, dtype=block.dtype, device=block.device))
            else:
                block.copy_(_DRAW[scheme](H, generator))
    return weight


def chrono_init_(
    bias_ih: Tensor,
    bias_hh: Tensor | None,
    mode: str,
    t_max: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Chrono initialisation of the gate biases (Tallec & Ollivier 2018), in place.

    Torch adds both biases, so each chosen gate gets its value in ``bias_ih`` and zero in
    ``bias_hh``: their sum is the target. With ``u ~ U(1, t_max - 1)`` per unit:

    * ``"lstm"`` (gates i, f, g, o): ``b_f = log(u)``, ``b_i = -b_f``; g and o untouched.
    * ``"gru"`` (gates r, z, n): in torch's ``h' = (1 - z) * n + z * h`` the update gate
      ``z`` plays the forget gate's role (``z -> 1`` keeps the memory), so ``b_z = log(u)``;
      r and n untouched.

    A gate's characteristic memory is then ``1 / sigmoid(-b) ~ u`` steps, spread over
    ``[1, t_max - 1]`` across units.

    Args:
        bias_ih: input bias ``(G * H,)``.
        bias_hh: recurrent bias ``(G * H,)``, or ``None`` if the layer has only one bias.
        mode: ``"lstm"`` or ``"gru"``.
        t_max: the longest dependency to cater for, an int >= 2.
        generator: the random generator to draw from; torch's default CPU one if ``None``.

    Returns:
        ``(bias_ih, bias_hh)``.

    Raises:
        ValueError: for a ``bias_ih`` of ``None`` (a ``bias=False`` layer), an unknown
            ``mode``, a ``t_max`` that is not an int >= 2, or biases of the wrong shape.
    """
    modes = tuple(m for m, spec in SPECS.items() if spec.chrono)  # those with gates to set
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")
    if not isinstance(t_max, Integral) or isinstance(t_max, bool) or t_max < 2:
        raise ValueError(f"t_max must be an int >= 2, got {t_max!r}")
    if bias_ih is None:
        raise ValueError("chrono_init_ sets gate biases: bias_ih is None (a bias=False layer)")
    spec = SPECS[mode]
    G = spec.num_gates
    if bias_ih.dim() != 1 or bias_ih.shape[0] % G:
        raise ValueError(
            f"bias_ih must have shape ({G} * H,) for mode {mode!r}, got {tuple(bias_ih.shape)}"
        )
    if bias_hh is not None and bias_hh.shape != bias_ih.shape:
        raise ValueError(
            f"bias_hh must have bias_ih's shape {tuple(bias_ih.shape)}, got {tuple(bias_hh.shape)}"
        )
    H = bias_ih.shape[0] // G
    b = torch.log(_uniform(H, 1.0, float(t_max - 1), generator))  # (H,) in [0, log(t_max-1)]
    with torch.no_grad():
        for name, sign in spec.chrono.items():  # e.g. LSTM: f -> +b, i -> -b
            gate = spec.gate_names.index(name)
            bias_ih[gate * H : (gate + 1) * H].copy_(sign * b)
            if bias_hh is not None:
                bias_hh[gate * H : (gate + 1) * H].zero_()
    return bias_ih, bias_hh
