"""Run directories: one per run, named or versioned, with the run's id and its outputs.

A run directory holds everything one run writes (the ``seqnorm`` CLI puts it there; see
:mod:`seqnorm.cli`): ``run.json`` (the run's id, which is also its W&B run id and the
``run_id`` column of the monitors' CSV files), ``config.yaml`` (``config-2.yaml``, ... for
later sessions: a resume, a test), ``checkpoints/``, ``wandb/``, the CSV logs and the
monitors' folders. New runs of a config get ``<root>/version_N``, N the next free number,
taken atomically so that concurrent runs never share one.

The functions that place outputs read a LightningCLI config namespace: ``trainer.logger``
and ``trainer.callbacks`` entries (``class_path`` + ``init_args``).
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import secrets
import string
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

__all__ = [
    "RUN_FILE",
    "RunDirError",
    "RunDirOutput",
    "append_run_rows",
    "check_checkpoint_file",
    "check_fit_into",
    "checkpoint_dirs",
    "checkpoints_in",
    "default_root",
    "drop_run_rows_from",
    "find_run_dir",
    "last_checkpoint",
    "new_version_dir",
    "newest_run_hint",
    "open_run",
    "place",
    "place_outputs",
    "read_run_id",
    "shown",
]

#: The file that marks a run directory and holds the run's id.
RUN_FILE = "run.json"


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (the CLI: exit code 2, one line)."""


class RunDirOutput:
    """What a callback implements to have its files placed inside the run directory.

    A callback class that subclasses this says, with :meth:`run_subdir`, which folder of the
    run directory it writes into, and takes two init arguments: ``dirpath`` (where its
    files go; the default is decided by the caller) and ``run_id`` (the id it writes beside
    its rows). :func:`place_outputs` sets ``dirpath`` to ``<run dir>/<run_subdir()>`` unless
    the user chose a place, and ``run_id`` to the run's id unless given. The monitors of
    :mod:`seqnorm.callbacks` implement it; a user's callback can too.
    """

    @classmethod
    def run_subdir(cls) -> str:
        """The folder, relative to the run directory, this callback writes its files into."""
        raise NotImplementedError(f"{cls.__name__} must implement run_subdir()")


def append_run_rows(path: Path, run_id: str, header: list[str], rows: list) -> None:
    """Append ``rows`` to the CSV table ``path``, each led by ``run_id``; a new file gets the
    header ``run_id, *header`` first. Several runs may share one table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["run_id", *header])
        w.writerows([run_id, *row] for row in rows)


def drop_run_rows_from(path: Path, run_id: str, step: int) -> None:
    """Remove ``run_id``'s rows of training step ``step`` and later from the table ``path``
    (columns ``run_id, step, ...``), atomically; other runs' rows and a missing file or a
    table of another layout are left alone. A run resumed from a checkpoint at ``step``
    records those steps again: dropping them first means no row is written twice."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["run_id", "step"]:
        return
    keep = [r for r in rows[1:] if not (r[0] == run_id and int(r[1]) >= step)]
    if len(keep) == len(rows) - 1:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *keep])
    os.replace(tmp, path)


def check_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Raise a one-line ``ValueError`` unless ``path`` is a file in ``torch.save``'s format.

    Lightning checkpoints are zip archives; anything else (random bytes, a truncated copy,
    a text file) is refused here, before ``torch.load`` can suggest loading it unsafely.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(p):
        raise ValueError(
            f"{path} is not a checkpoint (not a torch.save archive: truncated, or another "
            "kind of file); pass a .ckpt file that Lightning wrote"
        )


def find_run_dir(path: str | os.PathLike[str]) -> Path | None:
    """The run directory (the nearest folder with ``run.json``) that holds ``path``."""
    for parent in Path(path).expanduser().absolute().parents:
        if (parent / RUN_FILE).is_file():
            return parent
    return None


def default_root(cfg: Any) -> Path:
    """Where new runs of this config go: ``trainer.default_root_dir``, else
    ``runs/<first config file's name>``, else ``runs/<DataModule name>``."""
    root = cfg.get("trainer.default_root_dir")
    if root:
        return Path(root).expanduser().absolute()
    configs = cfg.get("config") or []
    if configs:
        name = Path(str(configs[0])).stem
    else:
        data = str(cfg.get("data.class_path") or "seqnorm")
        name = data.rsplit(".", 1)[-1].removesuffix("DataModule").lower() or "seqnorm"
    return Path("runs", name).absolute()


def new_version_dir(root: Path) -> Path:
    """Create and return ``root/version_N`` for the next free N (safe against races)."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        taken = [_version(p) for p in root.iterdir()]
        run_dir = root / f"version_{max(taken, default=-1) + 1}"
        try:
            run_dir.mkdir()
        except FileExistsError:  # another process took it: try the next one
            continue
        return run_dir


def _version(path: Path) -> int:
    """N of a ``version_N`` folder, -1 for anything else."""
    m = re.fullmatch(r"version_(\d+)", path.name)
    return int(m.group(1)) if m else -1


def newest_run_hint(root: Path) -> str:
    """``", e.g. --run_dir <the newest run under root>"`` for an error message."""
    runs = [p for p in root.glob("version_*") if (p / RUN_FILE).is_file()]
    runs.sort(key=_version)
    if not runs:
        return f" (no run of this config in {shown(root)} yet)"
    return f", e.g. --run_dir {shown(runs[-1])} (the newest run in {shown(root)})"


def shown(path: Path) -> str:
    """``path`` as a user would type it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def checkpoints_in(run_dir: Path) -> list[Path]:
    """Every ``.ckpt`` file under ``run_dir`` (none if it does not exist)."""
    return sorted(run_dir.rglob("*.ckpt")) if run_dir.is_dir() else []


def check_fit_into(run_dir: Path, ckpt: str | None) -> None:
    """A fit into a directory with checkpoints must continue that run: from its last
    checkpoint or one of its own."""
    if not checkpoints_in(run_dir):
        return
    if ckpt == "last":
        return
    if ckpt and run_dir in Path(ckpt).expanduser().absolute().parents:
        return
    raise RunDirError(
        f"{shown(run_dir)} already holds a run with checkpoints: resume it with --ckpt_path "
        "last, or leave out --run_dir to start a new run directory"
    )


def open_run(run_dir: Path) -> str:
    """Create ``run.json`` with a new run id in ``run_dir``, or read the one there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / RUN_FILE
    if marker.is_file():
        return read_run_id(run_dir)
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    marker.write_text(json.dumps({"run_id": run_id, "created": created}) + "\n")
    return run_id


def read_run_id(run_dir: Path) -> str:
    """The run id in ``run_dir/run.json``."""
    try:
        return str(json.loads((run_dir / RUN_FILE).read_text())["run_id"])
    except (OSError, ValueError, KeyError) as err:
        raise RunDirError(f"cannot read the run id from {run_dir / RUN_FILE}: {err}") from None


def _import(class_path: str) -> type | None:
    """The class a config's ``class_path`` names, or ``None`` (jsonargparse has already
    checked the names it instantiates)."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _entries(value: Any) -> list[tuple[type, Any]]:
    """``(class, init_args)`` of each ``class_path`` entry of a logger/callbacks setting."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        class_path = getattr(item, "class_path", None)
        init_args = getattr(item, "init_args", None)
        cls = _import(class_path) if isinstance(class_path, str) else None
        if cls is not None and init_args is not None:
            out.append((cls, init_args))
    return out


def place(path: Any, run_dir: Path, root: Path, default: Path) -> str:
    """Where an output path of a logger or callback goes.

    Unset or ``.`` -> ``default`` (inside the run directory); inside the run directory -> as
    given; inside ``root``, where a config that predates run directories points (``save_dir:
    runs/copy``) -> the same place inside the run directory; anywhere else -> as given (a
    path the user chose).
    """
    if path is None or str(path) in ("", "."):
        return str(default)
    p = Path(str(path)).expanduser().absolute()
    if p == run_dir or run_dir in p.parents:
        return str(path)
    if p == root or root in p.parents:
        return str(run_dir / p.relative_to(root))
    return str(path)


def checkpoint_dirs(cfg: Any, run_dir: Path, root: Path) -> list[Path]:
    """Where each ModelCheckpoint of ``cfg`` writes once placed (:func:`place_outputs`)."""
    dirs = []
    for cls, args in _entries(cfg.get("trainer.callbacks") or []):
        if issubclass(cls, ModelCheckpoint):
            dirs.append(Path(place(args.get("dirpath"), run_dir, root, run_dir / "checkpoints")))
    return dirs


def last_checkpoint(run_dir: Path, dirs: list[Path]) -> Path:
    """The run's one ``last*.ckpt``; several or none is an error, never a silent pick."""
    found = {p.absolute() for p in run_dir.rglob("last*.ckpt")} if run_dir.is_dir() else set()
    for d in dirs:
        found |= {p.absolute() for p in d.expanduser().glob("last*.ckpt")}
    if not found:
        raise RunDirError(f"--ckpt_path last: {shown(run_dir)} has no last checkpoint to resume")
    if len(found) > 1:
        names = ", ".join(shown(p) for p in sorted(found))
        raise RunDirError(
            f"--ckpt_path last: {shown(run_dir)} has several last checkpoints ({names}); "
            "pass the one to resume as --ckpt_path <file>"
        )
    return found.pop()


def place_outputs(cfg: Any, run_dir: Path, root: Path, run_id: str | None) -> None:
    """Point every logger and callback of ``cfg`` into the run directory (in place)."""
    logger = cfg.get("trainer.logger")
    for cls, args in _entries(logger if logger not in (None, True, False) else []):
        if "save_dir" in args:
            args.save_dir = place(args.save_dir, run_dir, root, run_dir)
        if issubclass(cls, (CSVLogger, TensorBoardLogger)) and args.get("name") is None:
            args.name = "lightning_logs"
        if issubclass(cls, WandbLogger):
            if args.get("id") is None and args.get("version") is None:
                args.id = run_id
            if "resume" in args and args.resume is None:
                args.resume = "allow"  # a resumed run continues its W&B run
            if args.get("name") is None:
                args.name = shown(run_dir)
    for cls, args in _entries(cfg.get("trainer.callbacks") or []):
        if issubclass(cls, ModelCheckpoint):
            args.dirpath = place(args.get("dirpath"), run_dir, root, run_dir / "checkpoints")
        elif issubclass(cls, RunDirOutput):
            args.dirpath = place(args.get("dirpath"), run_dir, root, run_dir / cls.run_subdir())
            if args.get("run_id") is None:
                args.run_id = run_id
