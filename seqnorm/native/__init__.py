"""seqnorm's native CPU kernels: one C++ forward/backward pair per cell type.

The layers use them on CPU (float32, float64) when they build here; otherwise, or with
``SEQNORM_BACKEND=torch``, they run torch's kernels. :func:`backend` says which and why.
"""

from .backend import Backend, available, backend, set_backend
from .build import NativeUnavailable
from .dispatch import MODES, recurrence, sequence
from .memory import tune_allocator

__all__ = [
    "MODES",
    "Backend",
    "NativeUnavailable",
    "available",
    "backend",
    "recurrence",
    "sequence",
    "set_backend",
    "tune_allocator",
]
