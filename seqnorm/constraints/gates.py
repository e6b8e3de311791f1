"""A constraint on some of the gate blocks of a stacked recurrent matrix, the others free."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..linalg import as_blocks
from .cap import Constraint

__all__ = ["GateSubset"]


class GateSubset(Constraint):
    """Apply ``inner`` to the gate blocks ``gates`` of a ``(blocks*H, H)`` matrix only.

    The stored tensors are ``original0``: the free blocks stacked ``(n_free*H, H)``, trained
    as plain weights; then the inner constraint's own stored tensor(s) for the chosen blocks
    (``original1``, ...). So an optimizer can treat the constrained part apart (the free
    tensor is :attr:`free_inputs`, read by :func:`seqnorm.param_groups`), and the free blocks
    are exactly what a plain layer holds.

    Args:
        inner: the constraint, built for ``len(gates)`` blocks.
        blocks: number of gate blocks of the full matrix.
        gates: indices of the constrained blocks (a proper, non-empty subset).
    """

    def __init__(self, inner: nn.Module, blocks: int, gates: Sequence[int]) -> None:
        super().__init__()
        gates = tuple(sorted(set(gates)))
        if not gates or len(gates) >= blocks or not all(0 <= g < blocks for g in gates):
            raise ValueError(
                f"gates must be a non-empty proper subset of range({blocks}), got {gates}"
            )
        self.inner, self.blocks, self.gates = inner, blocks, gates
        self.free = tuple(g for g in range(blocks) if g not in gates)

    #: The free gate blocks' stored tensor (``original0``) is a plain weight.
    free_inputs = (0,)

    def forward(self, free: Tensor, *stored: Tensor) -> Tensor:
        Wc = as_blocks(self.inner(*stored), len(self.gates))  # (n_gates, H, H)
        Wf = as_blocks(free, len(self.free))  # (n_free, H, H)
        parts: list[Tensor] = [Wc[0]] * self.blocks
        for j, g in enumerate(self.gates):
            parts[g] = Wc[j]
        for j, g in enumerate(self.free):
            parts[g] = Wf[j]
        return torch.cat(parts, dim=0)  # (blocks*H, H)

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> tuple[Tensor, ...]:
        """The free blocks as they are, then the inner constraint's stored tensor(s)."""
        Wb = as_blocks(W, self.blocks)  # (blocks, H, H)
        free = Wb[list(self.free)].reshape(-1, W.shape[1])
        chosen = Wb[list(self.gates)].reshape(-1, W.shape[1])
        stored = self.inner.right_inverse(chosen)
        return (free, *((stored,) if isinstance(stored, Tensor) else tuple(stored)))

    def holds(self, W: Tensor, tol: float = 1e-3) -> bool:
        """Whether the constrained blocks of ``W`` satisfy the inner constraint."""
        chosen = as_blocks(W, self.blocks)[list(self.gates)].reshape(-1, W.shape[1])
        return self.inner.holds(chosen, tol)

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, gates={self.gates}"
