"""What a constraint means for an LSTM with projections (``proj_size > 0``).

With projections the state carried from step to step is ``h = W_hr m`` (``P`` units), where
``m = o * tanh(c)`` (``H`` units), so a gate's pre-activation reads
``W_hh^g h_{t-1} = (W_hh^g W_hr) m_{t-1}``. The layer is an ordinary LSTM on ``m`` whose
recurrent matrix ``W_hh @ W_hr`` (``(4H, P) @ (P, H)``: ``H x H`` per gate, rank ``<= P``)
is factored. seqnorm constrains that recurrent map, per gate block:

* ``spectral``, ``scaled``, ``bound``: each gate's ``W_hh^g W_hr`` has its largest singular
  value at 1, in ``[gamma_min, gamma_max]``, or at most ``gamma``. These constraints scale a
  block by a number that depends on its largest singular value, so seqnorm scales the gate
  block ``W_hh^g`` (``H x P``) by the number computed on the product; ``W_hr`` stays free
  and the gradient reaches it through the product.
* ``orthogonal`` and ``band`` cannot hold: the product has rank ``P < H``, so ``H - P`` of
  its singular values are 0. They raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..constraints import CONSTRAINTS, SigmaNorm, check_constraint
from ..linalg import as_blocks, compute_dtype

__all__ = ["PROJECTED_CONSTRAINTS", "ProjectedNorm", "constrain_projected"]

#: The constraints that can act on the rank-``P`` recurrent map of an LSTM with projections.
PROJECTED_CONSTRAINTS = ("none", "spectral", "scaled", "bound")


class ProjectedNorm(nn.Module):
    """Scale each gate block of ``W_hh`` so that ``W_hh^g @ W_hr`` satisfies ``inner``.

    The parametrization of ``weight_hh_l{k}`` of a ``SpectralLSTM`` with ``proj_size``. It
    reads the current ``W_hr`` from the layer it is registered on (a plain reference, kept
    right by ``copy.deepcopy`` and unaffected by ``.to()`` or ``load_state_dict``).

    Args:
        inner: a ``spectral``, ``scaled`` or ``bound`` constraint built for ``len(gates)``
            square ``H x H`` blocks.
        blocks: gate blocks stacked in ``W_hh`` (4).
        gates: indices of the constrained blocks; the others are left as they are.
        hr_name: name of the projection matrix on the layer (``weight_hr_l{k}[_reverse]``).
    """

    def __init__(self, inner: SigmaNorm, blocks: int, gates: Sequence[int], hr_name: str) -> None:
        super().__init__()
        self.inner, self.blocks, self.gates, self.hr_name = inner, blocks, tuple(gates), hr_name
        self._owner: nn.Module | None = None

    def bind(self, owner: nn.Module) -> None:
        """Read ``W_hr`` from ``owner`` (not registered as a child: no module cycle)."""
        object.__setattr__(self, "_owner", owner)

    def product(self, W: Tensor) -> Tensor:
        """The recurrent map of every gate ``W_hh^g @ W_hr``, ``(blocks, H, H)``."""
        if self._owner is None:
            raise RuntimeError("ProjectedNorm is not bound to a layer: call bind(layer)")
        return as_blocks(W, self.blocks) @ getattr(self._owner, self.hr_name)  # (G, H, H)

    def forward(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)  # (G, H, P)
        M = self.product(W)[list(self.gates)]  # (g, H, H)
        H = M.shape[-1]
        Mc = as_blocks(self.inner(M.reshape(-1, H)), len(self.gates))  # (g, H, H) = c_g M_g
        # inner multiplies each block by a scalar c_g: recover it exactly as <c M, M> / <M, M>.
        dt = compute_dtype(W.dtype)
        num = (Mc.to(dt) * M.to(dt)).sum((-2, -1))  # (g,)
        den = M.to(dt).square().sum((-2, -1)).clamp_min(torch.finfo(dt).tiny)  # (g,)
        c = (num / den).to(W.dtype)  # (g,)
        idx = torch.tensor(self.gates, device=W.device)
        scale = W.new_ones(self.blocks).index_put((idx,), c)  # (G,) 1 for free gates
        return (Wb * scale[:, None, None]).reshape_as(W)  # (G*H, P)

    def right_inverse(self, W: Tensor) -> Tensor:
        """``W`` itself (the raw ``W_hh`` is stored and scaled at every forward); the inner
        constraint's estimate restarts from the new product with the current ``W_hr``."""
        with torch.no_grad():
            M = self.product(W)[list(self.gates)]  # (g, H, H)
            self.inner.reset(M.reshape(-1, M.shape[-1]))
        return W

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, gates={self.gates}, product with {self.hr_name}"


def constrain_projected(
    module: nn.Module,
    name: str,
    hr_name: str,
    kind: str,
    *,
    blocks: int,
    gates: Sequence[int] | None = None,
    **options: Any,
) -> nn.Module:
    """Constrain the recurrent map ``module.<name> @ module.<hr_name>`` per gate block.

    Args:
        module: the layer holding ``W_hh`` ``(blocks*H, P)`` and ``W_hr`` ``(P, H)``.
        name: the name of ``W_hh``.
        hr_name: the name of ``W_hr``.
        kind: one of :data:`PROJECTED_CONSTRAINTS` (``none`` leaves ``module`` untouched).
        blocks: gate blocks stacked in ``W_hh``.
        gates: indices of the constrained blocks (``None``: all).
        **options: the constraint's options.

    Raises:
        ValueError: for ``orthogonal`` and ``band`` (a rank-``P`` product cannot satisfy
            them), or an unknown constraint or option.
    """
    check_constraint(kind, options)
    if kind not in PROJECTED_CONSTRAINTS:
        P, H = getattr(module, hr_name).shape
        raise ValueError(
            f"constraint={kind!r} cannot apply with proj_size={P}: the recurrent map "
            f"W_hh @ W_hr of each gate is {H} x {H} of rank <= {P}, so it has {H - P} zero "
            f"singular values; use one of {PROJECTED_CONSTRAINTS}"
        )
    cls = CONSTRAINTS[kind]
    if cls is None:
        return module
    chosen = tuple(range(blocks)) if gates is None else tuple(sorted(set(gates)))
    W = getattr(module, name)
    H = W.shape[0] // blocks
    inner = cls((len(chosen) * H, H), len(chosen), **options).to(device=W.device, dtype=W.dtype)
    param = ProjectedNorm(inner, blocks, chosen, hr_name)
    param.bind(module)
    inner.converge(param.product(W.detach())[list(chosen)].reshape(-1, H))
    parametrize.register_parametrization(module, name, param)
    return module
