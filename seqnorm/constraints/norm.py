"""Per-block largest singular value, the quantity ``spectral``, ``scaled`` and ``bound`` divide by.

Two estimators, chosen with the ``estimator`` option of those constraints:

* ``"exact"`` (default): at every call, the leading singular pair of each gate block from
  ``W^T W`` (no gradient through it; :func:`seqnorm.linalg.top_singular_vectors`: certified
  inverse iteration warm-started at the stored vectors, or ``eigh``), then
  ``sigma = u^T W v``. The value is the block's largest singular value to float precision
  (1e-6 relative, certified), at every forward, in training and in eval, however fast the
  weight moves; its gradient is ``u v^T``, the true gradient of ``sigma_max``, and its second
  derivative (double backward) is sigma_max's too
  (:func:`~seqnorm.constraints.top_sigma.top_sigma`). Costs one Gram matrix and two Cholesky
  factorizations per block per call (not per time step);
  ``experiments/constraint_cost.py`` measures it beside the layer.
* ``"power"``: ``torch.nn.utils.spectral_norm``'s scheme. Persistent vectors, advanced by
  ``n_power_iterations`` steps per training forward. Cheaper at very large ``H``, but
  ``u^T W v`` is a *lower* bound on sigma: while the weight moves fast the estimate lags and
  ``W / sigma`` overshoots its cap. In eval the vectors are advanced once whenever the weight
  has changed since they last were, so eval never reads an estimate older than the weight.
  The vectors are constants to autograd (as in ``torch.nn.utils.spectral_norm``): both
  derivatives are those of ``W / (u^T W v)`` with the call's ``u, v`` fixed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..linalg import as_blocks, check_int, compute_dtype, power_iteration, top_singular_vectors
from .cap import Cap
from .top_sigma import top_sigma

__all__ = ["ESTIMATORS", "SigmaNorm"]

#: Accepted values of the ``estimator`` option.
ESTIMATORS = ("exact", "power")

#: Iterations used to converge the power-iteration vectors when a constraint is registered.
INIT_ITERATIONS = 100


class SigmaNorm(Cap):
    """The matrix source of the caps ``spectral``, ``scaled`` and ``bound``: sigma per gate block.

    The stored tensor is the raw matrix ``W`` (``right_inverse(W)`` returns it and re-converges
    the estimator's vectors on it).

    Args:
        shape: shape of the constrained matrix ``(blocks*m, n)``.
        blocks: number of gate blocks stacked in its rows.
        estimator: ``"exact"`` (default, guaranteed) or ``"power"`` (see the module docs).
        n_power_iterations: power-iteration steps per training forward (``"power"`` only).
        eps: floor on sigma and on vector norms.
    """

    def __init__(
        self,
        shape: torch.Size,
        blocks: int,
        *,
        estimator: str = "exact",
        n_power_iterations: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        check_int("n_power_iterations", n_power_iterations, minimum=1)
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        rows, cols = shape
        self.blocks = blocks
        self.estimator = estimator
        self.n_power_iterations = n_power_iterations
        self.eps = float(eps)
        gen = torch.Generator().manual_seed(0)  # deterministic, no global RNG side effect
        u = torch.randn(blocks, rows // blocks, generator=gen)
        v = torch.randn(blocks, cols, generator=gen)
        # The current singular-vector estimates: the state of "power", a record for "exact".
        self.register_buffer("_u", nn.functional.normalize(u, dim=-1))
        self.register_buffer("_v", nn.functional.normalize(v, dim=-1))
        self._seen: tuple[int, int] | None = None  # (data_ptr, version) last iterated on

    @torch.no_grad()
    def converge(self, W: Tensor, iterations: int = INIT_ITERATIONS) -> None:
        """Converge the stored vectors on ``W`` (called when the constraint is registered)."""
        Wb = as_blocks(W.detach(), self.blocks)
        dt = compute_dtype(W.dtype)
        self._u = self._u.to(device=W.device, dtype=dt)
        self._v = self._v.to(device=W.device, dtype=dt)
        if W.device.type == "meta":
            return
        if self.estimator == "exact":
            u, v = top_singular_vectors(Wb, self._u, self._v)
        else:
            u, v = power_iteration(Wb, self._u, self._v, iterations, self.eps)
        self._u.copy_(u)
        self._v.copy_(v)

    @torch.no_grad()
    def _update(self, W: Tensor, Wb: Tensor) -> tuple[Tensor, Tensor]:
        if self.estimator == "exact":
            u, v = top_singular_vectors(Wb.detach(), self._u, self._v)
            if self.training:  # keep a record; eval leaves every buffer as it is
                self._u.copy_(u)
                self._v.copy_(v)
            return u, v
        # "power": advance every training forward, and in eval whenever W changed since.
        key = (W.data_ptr(), W._version)
        if self.training or key != self._seen:
            u, v = power_iteration(Wb.detach(), self._u, self._v, self.n_power_iterations, self.eps)
            self._u.copy_(u)
            self._v.copy_(v)
            self._seen = (W.data_ptr(), W._version)
        # Clones: the buffers are updated in place by the next call, while this graph lives on.
        return self._u.clone(), self._v.clone()

    def sigma(self, W: Tensor) -> Tensor:
        """Largest singular value of each block of ``W``, shape ``(blocks,)``, differentiable.

        Args:
            W: the stored matrix ``(blocks*m, n)``.
        """
        Wb = as_blocks(W, self.blocks)  # (k, m, n)
        if W.device.type == "meta":
            return Wb.new_ones(self.blocks)
        u, v = self._update(W, Wb)
        # Computed in float32 or higher even under autocast (bf16/fp16 would bias sigma).
        dt = compute_dtype(Wb.dtype)
        with torch.autocast(Wb.device.type, enabled=False):
            if self.estimator == "exact":  # exact first and second derivatives of sigma_max
                sigma = top_sigma(Wb.to(dt), u.to(dt), v.to(dt))  # (k,)
            else:  # the vectors are constants (as torch.nn.utils.spectral_norm's)
                sigma = torch.einsum("bi,bij,bj->b", u.to(dt), Wb.to(dt), v.to(dt))  # (k,)
        return sigma.to(Wb.dtype).clamp_min(self.eps)

    def sigma_shape(self) -> tuple[int, ...]:
        """One sigma per gate block."""
        return (self.blocks,)

    def scale(self, W: Tensor, factor: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)  # (k, m, n)
        return (Wb * factor.to(Wb.dtype)[:, None, None]).reshape_as(W)

    @torch.no_grad()
    def measure(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W.detach(), self.blocks).to(compute_dtype(W.dtype))  # (k, m, n)
        return torch.linalg.matrix_norm(Wb, 2)  # (k,)

    def reset(self, W: Tensor) -> None:
        self.converge(W)

    def extra_repr(self) -> str:
        s = f"blocks={self.blocks}, estimator={self.estimator!r}"
        if self.estimator == "power":
            s += f", n_power_iterations={self.n_power_iterations}"
        return s
