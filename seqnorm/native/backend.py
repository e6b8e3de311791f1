"""Which backend the layers use on CPU, and why: seqnorm's native kernels or torch's.

``SEQNORM_BACKEND`` chooses: ``auto`` (default: native where it builds, torch otherwise, with
one warning per process saying why), ``native`` (an error if it cannot be built), ``torch``
(never build). :func:`set_backend` overrides the variable in this process (benchmarks switch
both ways in one run).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from . import build
from .build import NativeUnavailable

__all__ = ["Backend", "available", "backend", "set_backend"]

CHOICES = ("auto", "native", "torch")
_choice: str | None = None  # set_backend's override of SEQNORM_BACKEND
_resolved: dict[str, Backend] = {}
_warned = False


@dataclass(frozen=True)
class Backend:
    """The active backend: ``name`` is ``"native"`` or ``"torch"``; ``reason`` says why."""

    name: str
    reason: str
    #: Whether the native backend was asked for by name (``SEQNORM_BACKEND=native`` or
    #: ``set_backend("native")``): then every mode with a kernel runs it, also those whose
    #: spec prefers torch's kernel under ``auto`` (``CellSpec.native_by_default``).
    forced: bool = False


def _requested() -> tuple[str, str]:
    if _choice is not None:
        return _choice, f"set_backend({_choice!r})"
    value = os.environ.get("SEQNORM_BACKEND", "").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"SEQNORM_BACKEND must be one of {', '.join(CHOICES)}, got {value!r}")
    return value, f"SEQNORM_BACKEND={value}" if "SEQNORM_BACKEND" in os.environ else "default"


def backend() -> Backend:
    """The backend the layers use for CPU float32/float64 tensors, and why.

    The first call in a process may build the native kernels (once, cached on disk).

    Returns:
        A frozen :class:`Backend` with ``name`` (``"native"`` or ``"torch"``) and ``reason``.

    Raises:
        NativeUnavailable: if the native backend is forced (``SEQNORM_BACKEND=native`` or
            ``set_backend("native")``) but cannot be built or loaded.
        ValueError: if ``SEQNORM_BACKEND`` is not ``auto``, ``native`` or ``torch``.
    """
    global _warned
    choice, source = _requested()
    key = f"{choice}|{source}"
    if key in _resolved:
        return _resolved[key]
    if choice == "torch":
        result = Backend("torch", f"{source}: torch's kernels were asked for")
    else:
        try:
            build.load_library()
        except NativeUnavailable as e:
            if choice == "native":
                raise NativeUnavailable(f"{source} asks for the native backend, but {e}") from e
            if not _warned:
                warnings.warn(str(e), RuntimeWarning, stacklevel=2)
                _warned = True
            result = Backend("torch", str(e))
        else:
            result = Backend(
                "native",
                f"{source}: native kernels loaded from {build.library_path()}",
                forced=choice == "native",
            )
    _resolved[key] = result
    return result


def set_backend(name: str | None) -> None:
    """Force the backend in this process: ``"native"``, ``"torch"`` or ``"auto"``; ``None``
    returns to ``SEQNORM_BACKEND``.

    Raises:
        ValueError: if ``name`` is none of these.
    """
    global _choice
    if name is not None and name not in CHOICES:
        raise ValueError(f"backend must be one of {', '.join(CHOICES)} or None, got {name!r}")
    _choice = name


def available() -> bool:
    """Whether the native kernels can be used here (builds them on first call)."""
    try:
        build.load_library()
    except NativeUnavailable:
        return False
    return True
