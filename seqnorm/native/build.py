"""Compile the C++ kernels in ``csrc/`` into one shared library, cached across processes.

The library is built with :func:`torch.utils.cpp_extension.load` (ninja) on first use and
kept under the cache root (``$SEQNORM_CACHE``, else ``$XDG_CACHE_HOME/seqnorm``, else
``~/.cache/seqnorm``) in a folder named by everything the binary depends on:

- the torch version and the Python ABI (the library links against both),
- a hash of the sources and the compiler flags,
- a hash of the CPU's instruction set (the x86 ``flags`` line of ``/proc/cpuinfo``, or its
  equivalent): the kernels are built with ``-march=native``, and a home directory shared by
  cluster nodes with different CPUs must never hand one node's binary to another (SIGILL).

Concurrent first uses (two DDP ranks, two grid workers) are safe: a process takes an
``fcntl.flock`` on ``<key>.lock`` (released by the kernel if the process dies), builds in a
private temporary folder, and renames it into place atomically; a second process waits on
the lock and then loads the finished library instead of building it twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["NativeUnavailable", "cache_root", "isa_key", "library_path", "load_library"]

NAME = "seqnorm_native"
CSRC = Path(__file__).with_name("csrc")
#: -O3 and the host's instruction set; no -ffast-math (the kernels' exp/tanh are written to
#: vectorise without it, and it would change torch's NaN/inf semantics).
CFLAGS = ["-O3", "-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native",
          "-fno-math-errno", "-DNDEBUG"]  # fmt: skip
#: OpenMP, so that the kernels can set their floating-point mode (csrc/fpmode.h) on every thread
#: of torch's intra-op pool: at::parallel_for runs in parallel only in code built with it. On
#: Linux torch's wheel carries its libgomp.so.1, which the library then shares (same soname).
_LINUX_OMP = sys.platform.startswith("linux") and torch.backends.openmp.is_available()
OPENMP = ["-fopenmp"] if _LINUX_OMP else []
_FIX = (
    "the layers use torch's kernels instead. To get the native kernels, install a C++ "
    "compiler (g++ or clang++, or set CXX) and ninja (`pip install ninja`), then start a new "
    "process; SEQNORM_BACKEND=torch silences this warning"
)

_loaded: str | None = None  # path of the library loaded in this process
_failed: str | None = None  # why loading failed in this process (not retried)


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or loaded here; the message says why."""


def cache_root() -> Path:
    """The folder that holds the built libraries (``$SEQNORM_CACHE``, ``$XDG_CACHE_HOME/seqnorm``
    or ``~/.cache/seqnorm``)."""
    if os.environ.get("SEQNORM_CACHE"):
        return Path(os.environ["SEQNORM_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "seqnorm"


def isa_key() -> str:
    """A short hash of this CPU's instruction set: the machine name and, on Linux, the
    ``flags`` (x86) or ``Features`` (ARM) line of ``/proc/cpuinfo``."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("flags", "Features"):
                    text += line
                    break
    except OSError:  # not Linux: the processor's name is the best we have
        text += platform.processor()
    return f"{platform.machine()}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _sources() -> list[Path]:
    return sorted(CSRC.glob("*.cpp"))


def _key() -> str:
    h = hashlib.sha256()
    for p in sorted([*_sources(), *CSRC.glob("*.h")]):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(" ".join(CFLAGS + OPENMP).encode())
    h.update(os.environ.get("CXX", "").encode())
    abi = sysconfig.get_config_var("SOABI") or sys.implementation.cache_tag
    torch_version = torch.__version__.replace("+", "_")
    return f"torch{torch_version}-{abi}-{isa_key()}-{h.hexdigest()[:12]}"


def library_path() -> Path:
    """Where this torch, Python, CPU and source tree's library lives (built or not)."""
    return cache_root() / _key() / f"{NAME}.so"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("seqnorm: waiting for another process building the native kernels ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ninja_on_path() -> None:
    """The ``ninja`` wheel installs its binary beside the interpreter, which is not on PATH
    when a venv's python is run without activating the venv."""
    dirs = [os.path.dirname(sys.executable)]
    with contextlib.suppress(ImportError, AttributeError):
        import ninja  # type: ignore[import-not-found]

        dirs.insert(0, ninja.BIN_DIR)
    path = os.environ.get("PATH", "")
    for d in dirs:
        if shutil.which("ninja", path=d) and d not in path.split(os.pathsep):
            os.environ["PATH"] = d + os.pathsep + path
            return


def _build(target: Path) -> None:
    """Build into a private temporary folder, then rename it to ``target.parent``.

    ``cpp_extension.load`` also loads the library into this process (from the temporary
    folder: the mapping survives the rename)."""
    from torch.utils import cpp_extension

    _ninja_on_path()
    cpp_extension.verify_ninja_availability()
    root = target.parent.parent
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    print(f"seqnorm: building native CPU kernels (first use, cached in {target.parent}) ...",
          end="", file=sys.stderr, flush=True)  # fmt: skip
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            cpp_extension.load(
                name=NAME,
                sources=[str(p) for p in _sources()],
                extra_cflags=CFLAGS + OPENMP,
                extra_ldflags=list(OPENMP),  # a copy: load() appends torch's libraries
                build_directory=str(tmp),
                is_python_module=False,
                verbose=False,
            )
        # Keep the library only: the objects and the ninja files stay behind in tmp.
        final = Path(tempfile.mkdtemp(prefix=".final-", dir=root))
        os.replace(tmp / f"{NAME}.so", final / f"{NAME}.so")
        os.rename(final, target.parent)  # atomic: the folder appears complete or not at all
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f" done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def load_library() -> None:
    """Load the native kernels into this process, building them first if needed.

    Loads at most once per process; a failure is remembered and raised again.

    Raises:
        NativeUnavailable: if the library cannot be built (no compiler, no ninja, a compile
            error) or loaded; the message says why and what to do.
    """
    global _loaded, _failed
    if _loaded is not None:
        return
    if _failed is not None:
        raise NativeUnavailable(_failed)
    try:
        target = library_path()
        if not target.exists():
            target.parent.parent.mkdir(parents=True, exist_ok=True)
            with _locked(target.parent.parent / f"{target.parent.name}.lock"):
                if not target.exists():  # another process may have built it meanwhile
                    _build(target)  # and loaded it
                    _loaded = str(target)
                    return
        torch.ops.load_library(str(target))
        _loaded = str(target)
    except Exception as e:  # noqa: BLE001 -- any failure means: fall back, and say why
        detail = str(e).strip().splitlines()
        tail = " | ".join(line.strip() for line in detail[-6:] if line.strip())
        what = f"{type(e).__name__}: {tail}"
        _failed = f"building or loading seqnorm's native CPU kernels failed ({what}); {_FIX}"
        raise NativeUnavailable(_failed) from e


def is_loaded() -> bool:
    """Whether this process has loaded the library."""
    return _loaded is not None
