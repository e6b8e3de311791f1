"""Spectral constraints as ``torch.nn.utils.parametrize`` parametrizations.

Each constraint is an ``nn.Module`` whose ``forward`` maps the stored (unconstrained)
matrix to the constrained one. They act on every ``H x H`` gate block of a stacked
recurrent matrix (1 block for an RNN, 3 for a GRU, 4 for an LSTM), batched over blocks.

Apply one by name with :func:`constrain`; read ``module.weight`` to get the constrained
matrix. Inside ``with seqnorm.cached():`` the constrained matrix is computed once and reused,
which is what a per-time-step loop over a cell should do.

| kind | per gate block |
|---|---|
| ``none`` | nothing |
| ``spectral`` | ``W / sigma(W)``: largest singular value 1 (power iteration) |
| ``scaled`` | ``gamma * W / sigma(W)``, learnable ``gamma`` in ``[gamma_min, gamma_max]`` |
| ``bound`` | ``W / max(1, sigma(W) / gamma)``: shrinks only when ``sigma > gamma`` |
| ``band`` | ``U diag(s) V^T`` with orthogonal ``U, V`` and ``s`` in ``[1 - r, 1 + r]`` |
| ``orthogonal`` | ``base @ expm(A - A^T)``: all singular values 1 |
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .linalg import as_blocks, compute_dtype, power_iteration

__all__ = [
    "CONSTRAINTS",
    "Band",
    "Bound",
    "Orthogonal",
    "Scaled",
    "Spectral",
    "constrain",
    "is_constrained",
]

#: Iterations used to converge the power-iteration vectors when a constraint is registered.
_INIT_ITERATIONS = 100


class _PowerIterationNorm(nn.Module):
    """Shared machinery: persistent ``u, v`` buffers and a per-block sigma estimate.

    In training mode every call runs ``n_power_iterations`` steps and updates the buffers;
    in eval mode the stored vectors are used as they are (no update), as in
    ``torch.nn.utils.parametrizations.spectral_norm``.
    """

    def __init__(
        self, shape: torch.Size, blocks: int, n_power_iterations: int = 1, eps: float = 1e-12
    ) -> None:
        super().__init__()
        if not isinstance(n_power_iterations, int) or n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be an int >= 1, got {n_power_iterations!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        rows, cols = shape
        self.blocks = blocks
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        gen = torch.Generator().manual_seed(0)  # deterministic, no global RNG side effect
        u = torch.randn(blocks, rows // blocks, generator=gen)
        v = torch.randn(blocks, cols, generator=gen)
        self.register_buffer("_u", nn.functional.normalize(u, dim=-1))
        self.register_buffer("_v", nn.functional.normalize(v, dim=-1))

    @torch.no_grad()
    def converge(self, W: Tensor, iterations: int = _INIT_ITERATIONS) -> None:
        """Run many power iterations on ``W`` (called at registration)."""
        Wb = as_blocks(W.detach(), self.blocks)
        dt = compute_dtype(W.dtype)
        self._u = self._u.to(device=W.device, dtype=dt)
        self._v = self._v.to(device=W.device, dtype=dt)
        u, v = power_iteration(Wb, self._u, self._v, iterations, self.eps)
        self._u.copy_(u)
        self._v.copy_(v)

    def sigma(self, Wb: Tensor) -> Tensor:
        """Estimated largest singular value per block, shape ``(blocks,)``, differentiable."""
        if self.training:
            u, v = power_iteration(Wb.detach(), self._u, self._v, self.n_power_iterations, self.eps)
            with torch.no_grad():
                self._u.copy_(u)
                self._v.copy_(v)
        # Clones: the buffers are updated in place by the next call, while this graph lives on.
        # Computed in float32 or higher even under autocast (bf16/fp16 would bias sigma).
        dt = compute_dtype(Wb.dtype)
        with torch.autocast(Wb.device.type, enabled=False):
            u = self._u.clone(memory_format=torch.contiguous_format).to(dt)
            v = self._v.clone(memory_format=torch.contiguous_format).to(dt)
            sigma = torch.einsum("bi,bij,bj->b", u, Wb.to(dt), v).to(Wb.dtype)  # (blocks,)
        return sigma.clamp_min(self.eps)

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, n_power_iterations={self.n_power_iterations}"


class Spectral(_PowerIterationNorm):
    """``W / sigma(W)`` per gate block: the largest singular value becomes 1.

    ``sigma`` is estimated by power iteration with persistent vectors, so it costs one
    matrix-vector product pair per training forward.
    """

    def forward(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)  # (k, H, H)
        return (Wb / self.sigma(Wb)[:, None, None]).reshape_as(W)


class Scaled(_PowerIterationNorm):
    """``gamma * W / sigma(W)`` per gate block with a learnable ``gamma`` per block.

    ``gamma = gamma_min + (gamma_max - gamma_min) * sigmoid(raw)`` stays inside
    ``[gamma_min, gamma_max]`` whatever the optimiser does; it starts at 1 (or at the nearest
    end of the range when 1 lies outside it).
    """

    def __init__(
        self,
        shape: torch.Size,
        blocks: int,
        gamma_min: float = 0.5,
        gamma_max: float = 1.5,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(shape, blocks, n_power_iterations, eps)
        if not gamma_min > 0:
            raise ValueError(f"gamma_min must be positive, got {gamma_min!r}")
        if gamma_min > gamma_max:
            raise ValueError(
                f"gamma_min must be <= gamma_max, got gamma_min={gamma_min}, gamma_max={gamma_max}"
            )
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        width = self.gamma_max - self.gamma_min
        frac = 0.5 if width == 0 else min(max((1.0 - self.gamma_min) / width, 1e-3), 1 - 1e-3)
        raw = torch.full((blocks,), math.log(frac / (1 - frac)))
        self.gamma_raw = nn.Parameter(raw)

    @property
    def gamma(self) -> Tensor:
        """The effective scale per block, in ``[gamma_min, gamma_max]``."""
        return self.gamma_min + (self.gamma_max - self.gamma_min) * torch.sigmoid(self.gamma_raw)

    def forward(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)
        scale = self.gamma.to(Wb.dtype) / self.sigma(Wb)  # (k,)
        return (Wb * scale[:, None, None]).reshape_as(W)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma_min={self.gamma_min}, gamma_max={self.gamma_max}"


class Bound(_PowerIterationNorm):
    """``W / max(1, sigma(W) / gamma)`` per gate block: rescales only when ``sigma > gamma``."""

    def __init__(
        self,
        shape: torch.Size,
        blocks: int,
        gamma: float = 1.0,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(shape, blocks, n_power_iterations, eps)
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma!r}")
        self.gamma = float(gamma)

    def forward(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)
        div = (self.sigma(Wb) / self.gamma).clamp_min(1.0)  # (k,)
        return (Wb / div[:, None, None]).reshape_as(W)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={self.gamma}"


def _skew(A: Tensor) -> Tensor:
    A = A.triu(1)
    return A - A.transpose(-2, -1)


@torch.no_grad()
def _polar(Wb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    U, S, Vh = torch.linalg.svd(Wb.to(compute_dtype(Wb.dtype)))
    return U.to(Wb.dtype), S.to(Wb.dtype), Vh.transpose(-2, -1).to(Wb.dtype)


class Orthogonal(nn.Module):
    """Orthogonal gate blocks by dynamic trivialization: ``W = base @ expm(A - A^T)``.

    This is the exponential map used by expRNN (and by
    ``torch.nn.utils.parametrizations.orthogonal`` with ``use_trivialization=True``): the
    stored parameter ``A`` is unconstrained, ``base`` is a buffer holding the orthogonal
    matrix nearest (polar factor) to the last assigned weight. All singular values are 1
    to float precision.
    """

    def __init__(self, shape: torch.Size, blocks: int) -> None:
        super().__init__()
        rows, cols = shape
        if rows // blocks != cols:
            raise ValueError(
                f"orthogonal needs square gate blocks, got shape {tuple(shape)} "
                f"with blocks={blocks}"
            )
        self.blocks = blocks
        self.register_buffer("base", torch.eye(cols).repeat(blocks, 1, 1))

    def forward(self, A: Tensor) -> Tensor:
        Ab = as_blocks(A, self.blocks)  # (k, H, H)
        return (self.base.to(A.dtype) @ torch.matrix_exp(_skew(Ab))).reshape_as(A)

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> Tensor:
        U, _, V = _polar(as_blocks(W, self.blocks))
        self.base = (U @ V.transpose(-2, -1)).to(W.dtype)  # (k, H, H)
        return torch.zeros_like(W)

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}"


class Band(nn.Module):
    """Singular values in ``[1 - r, 1 + r]``: ``W = U diag(s) V^T`` per gate block.

    ``U = base_u @ expm(skew(A_u))`` and ``V = base_v @ expm(skew(A_v))`` are orthogonal by
    construction and ``s = 1 + r * tanh(s_raw)``, so the band holds exactly whatever values the
    three stored tensors (``original0..2``) take.
    """

    def __init__(self, shape: torch.Size, blocks: int, r: float = 0.1) -> None:
        super().__init__()
        rows, cols = shape
        if rows // blocks != cols:
            raise ValueError(
                f"band needs square gate blocks, got shape {tuple(shape)} with blocks={blocks}"
            )
        if not 0 < r < 1:
            raise ValueError(f"r must be in the open interval (0, 1), got {r!r}")
        self.blocks, self.r = blocks, float(r)
        eye = torch.eye(cols).repeat(blocks, 1, 1)
        self.register_buffer("base_u", eye.clone())
        self.register_buffer("base_v", eye.clone())

    def forward(self, A_u: Tensor, A_v: Tensor, s_raw: Tensor) -> Tensor:
        U = self.base_u.to(A_u.dtype) @ torch.matrix_exp(_skew(A_u))  # (k, H, H)
        V = self.base_v.to(A_v.dtype) @ torch.matrix_exp(_skew(A_v))  # (k, H, H)
        s = 1 + self.r * torch.tanh(s_raw)  # (k, H)
        Wb = (U * s[:, None, :]) @ V.transpose(-2, -1)
        return Wb.reshape(-1, Wb.shape[-1])

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        U, S, V = _polar(as_blocks(W, self.blocks))
        self.base_u, self.base_v = U, V
        frac = ((S - 1) / self.r).clamp(-0.999, 0.999)
        return torch.zeros_like(U), torch.zeros_like(V), torch.atanh(frac)

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, r={self.r}"


CONSTRAINTS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "spectral": Spectral,
    "scaled": Scaled,
    "bound": Bound,
    "band": Band,
    "orthogonal": Orthogonal,
}

_OPTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "spectral": ("n_power_iterations", "eps"),
    "scaled": ("gamma_min", "gamma_max", "n_power_iterations", "eps"),
    "bound": ("gamma", "n_power_iterations", "eps"),
    "band": ("r",),
    "orthogonal": (),
}


def check_constraint(kind: str, options: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` if ``kind`` is unknown or ``options`` are not its options."""
    if kind not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {sorted(CONSTRAINTS)}, got {kind!r}")
    bad = sorted(set(options or {}) - set(_OPTIONS[kind]))
    if bad:
        allowed = ", ".join(_OPTIONS[kind]) or "none"
        raise ValueError(f"unknown option(s) {bad} for constraint {kind!r}; allowed: {allowed}")


def constrain(
    module: nn.Module,
    name: str = "weight",
    kind: str = "spectral",
    *,
    blocks: int = 1,
    **options: Any,
) -> nn.Module:
    """Constrain ``module.<name>`` per gate block with the parametrization ``kind``.

    Args:
        module: any module holding a 2-D parameter ``name``.
        name: the parameter to constrain.
        kind: ``none``, ``spectral``, ``scaled``, ``bound``, ``band`` or ``orthogonal``.
        blocks: how many square ``H x H`` gate blocks are stacked in the rows.
        **options: options of the constraint (see the classes): ``n_power_iterations``,
            ``eps``, ``gamma_min``, ``gamma_max``, ``gamma``, ``r``.

    Returns:
        ``module`` itself, now parametrized (``kind="none"`` leaves it untouched).

    Raises:
        ValueError: unknown ``kind`` or option, bad option value, blocks not dividing the
            rows, non-square blocks.

    >>> lin = constrain(nn.Linear(4, 4, bias=False), kind="spectral")
    >>> round(torch.linalg.matrix_norm(lin.weight, 2).item(), 4)
    1.0
    """
    check_constraint(kind, options)
    if not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks must be a positive int, got {blocks!r}")
    W = getattr(module, name, None)
    if not isinstance(W, Tensor):
        raise ValueError(f"module has no tensor named {name!r}")
    if W.dim() != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(W.shape)}")
    rows, cols = W.shape
    if rows % blocks:
        raise ValueError(f"blocks={blocks} must divide the {rows} rows of {name}")
    if rows // blocks != cols:
        raise ValueError(
            f"{name} must hold {blocks} square gate block(s) of size {cols}x{cols}, "
            f"got shape {tuple(W.shape)}"
        )
    cls = CONSTRAINTS[kind]
    if cls is None:
        return module
    param = cls(W.shape, blocks, **options).to(device=W.device)
    if isinstance(param, _PowerIterationNorm):
        param.converge(W)
    parametrize.register_parametrization(module, name, param)
    return module


def is_constrained(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` carries a parametrization."""
    return parametrize.is_parametrized(module, name)
