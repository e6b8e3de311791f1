"""The native kernels' GEMM as an op, ``seqnorm::gemm_``, for measuring the GEMM floor.

``experiments/bench_speed.py`` times the per-step GEMMs of a recurrence alone with the same
GEMM the kernels call (``csrc/gemm.h``: oneDNN's brgemm micro-kernel for float32), so the
floor is not that of a slower BLAS. ``csrc/gemm.cpp`` registers the CPU kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import build

__all__ = ["gemm_"]

torch.library.define("seqnorm::gemm_", "(Tensor a, Tensor b, Tensor(a!) c, bool accumulate) -> ()")


@torch.library.register_fake("seqnorm::gemm_")
def _fake(a, b, c, accumulate):  # noqa: ANN001, ANN202
    return None


def gemm_(a: Tensor, b: Tensor, c: Tensor, accumulate: bool = False) -> Tensor:
    """``c = a @ b`` (``c += a @ b`` with ``accumulate``), in place, on the kernels' GEMM.

    Args:
        a: ``(M, K)``, rows contiguous (a row stride is allowed).
        b: ``(K, N)``, rows contiguous.
        c: ``(M, N)``, rows contiguous; overwritten (or accumulated into).
        accumulate: add to ``c`` instead of overwriting it.

    >>> import torch
    >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
    >>> gemm_(a, b, torch.empty(2, 4))[0, 0].item()
    3.0
    """
    if not all(isinstance(t, Tensor) and t.dim() == 2 for t in (a, b, c)):
        raise ValueError("gemm_: a, b and c must be 2-D tensors")
    if a.shape[1] != b.shape[0] or c.shape != (a.shape[0], b.shape[1]):
        raise ValueError(
            f"gemm_: a {tuple(a.shape)} @ b {tuple(b.shape)} does not give c {tuple(c.shape)}"
        )
    build.load_library()
    torch.ops.seqnorm.gemm_(a, b, c, accumulate)
    return c
