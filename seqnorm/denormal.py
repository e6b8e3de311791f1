"""Subnormal floats flushed to zero: :func:`flush_denormal` and :func:`denormals_flushed`.

A gradient that shrinks through hundreds of recurrent steps ends below the smallest normal
float (``torch.finfo(torch.float32).tiny`` = 1.18e-38). On x86 cores every operation that
reads or writes such a *subnormal* number takes a slow microcode path, and a training step
whose late gradients are all subnormal runs many times slower (5-15x measured on an Intel
Xeon; much less on some AMD cores). Flush-to-zero / denormals-are-zero mode makes the
hardware treat them as 0 instead: only values below 1.18e-38 (float64: 2.2e-308) change.

The native kernels set that mode themselves for the duration of every call; the
LightningModule (:class:`seqnorm.model.SeqModel`) sets it around fit, validate and test.
:func:`flush_denormal` is the same thing for a user's own loop.

torch's own :func:`torch.set_flush_denormal` sets the mode of the calling thread only, with no
way to read or restore it. This module sets it on the calling thread *and* on every thread of
torch's intra-op pool (with ``torch.get_num_threads() > 1``, the threads that run the GEMMs),
through the native library, and restores each thread's previous mode on exit. Where the native
library cannot be loaded (or ``SEQNORM_BACKEND=torch``), only the calling thread is set.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch

from .native import NativeUnavailable, backend
from .native.build import is_loaded

__all__ = ["denormals_flushed", "flush_denormal"]


def _native() -> bool:
    """Whether the native library (whose ops set every pool thread's mode) is usable here."""
    if is_loaded():
        return True
    try:
        return backend().name == "native"
    except (NativeUnavailable, ValueError):
        return False


def denormals_flushed() -> bool:
    """Whether the calling thread flushes subnormal floats to zero now.

    Read from the arithmetic itself: a subnormal float32 times one is zero exactly when
    flush-to-zero or denormals-are-zero is in effect.

    >>> with flush_denormal():
    ...     denormals_flushed()
    True
    """
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # (1,), subnormal
    return bool((tiny * 1.0).item() == 0.0)


class flush_denormal(contextlib.ContextDecorator):  # noqa: N801 -- reads like torch.no_grad
    """Flush subnormal floats to zero inside a block (or a decorated function), then restore.

    Sets flush-to-zero and denormals-are-zero on the calling thread and on every thread of
    torch's intra-op pool, and puts back each thread's own previous mode on exit (also when
    the block raises). Nests; ``enabled=False`` turns flushing *off* inside the block.

    Args:
        enabled: flush (``True``, the default) or do not flush (``False``) inside the block.

    Raises:
        TypeError: if ``enabled`` is not a bool.

    >>> import torch, seqnorm
    >>> x = torch.tensor([1e-30])
    >>> with seqnorm.flush_denormal():
    ...     (x * 1e-10).item()              # 1e-40 is subnormal: flushed
    0.0
    >>> (x * 1e-10).item() > 0              # the caller's mode is back
    True

    As a decorator::

        @seqnorm.flush_denormal()
        def train_epoch(model, loader): ...
    """

    def __init__(self, enabled: bool = True) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        self.enabled = enabled
        self._local = threading.local()  # one stack of saved modes per thread using it

    def _stack(self) -> list[tuple[str, Any]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def __enter__(self) -> flush_denormal:
        if _native():
            token: tuple[str, Any] = ("native", torch.ops.seqnorm.fp_enter(self.enabled))
        else:
            token = ("thread", denormals_flushed())
            torch.set_flush_denormal(self.enabled)
        self._stack().append(token)
        return self

    def __exit__(self, *exc: object) -> None:
        kind, saved = self._stack().pop()
        if kind == "native":
            torch.ops.seqnorm.fp_exit(saved)
        else:
            torch.set_flush_denormal(saved)
