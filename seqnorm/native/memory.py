"""An opt-in allocator setting: keep freed memory instead of returning it to the OS.

glibc serves large allocations (above a threshold that grows to 32 MB) with fresh ``mmap``
pages and gives them back on ``free``; each new buffer then page-faults on first touch. On
some VMs that costs more than the arithmetic of a training step. :func:`tune_allocator`
tells glibc to serve every allocation from its heap and never trim it, so a training loop
reuses the same, already-mapped memory. The same effect from the shell, for any program:
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1`` (set before Python starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_allocator() -> bool:
    """Make glibc keep freed memory for reuse (``mallopt``): no ``mmap`` per large buffer, no
    trimming. Affects the whole process (torch's and everyone's allocations) from now on;
    the process's resident memory then stays at its peak.

    Returns:
        ``True`` if applied, ``False`` where the C library is not glibc (nothing changes).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1)
