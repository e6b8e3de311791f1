"""Where a relative ``data_dir`` is looked for: ``$SEQNORM_DATA``, the config file, the cwd.

An absolute ``data_dir`` is used as it is. A relative one is looked for, in this order, and
the first folder that exists wins:

1. ``$SEQNORM_DATA/<its last name>``: the environment variable names a folder of data sets,
   one folder each (``SEQNORM_DATA=/data`` finds ``data_dir: ../data/mnist`` as
   ``/data/mnist``);
2. beside each config file, ``<config folder>/<data_dir>`` (the ``seqnorm`` CLI passes the
   folders of its ``--config`` files, the last one first);
3. the working directory, ``<cwd>/<data_dir>``.

When none exists yet, the first candidate is where a download goes.

>>> data_dir_candidates("/abs/data/../mnist")
[PosixPath('/abs/mnist')]
>>> Path("/repo/configs/../data/mnist") in data_dir_candidates("../data/mnist", ["/repo/configs"])
False
>>> Path("/repo/data/mnist") in data_dir_candidates("../data/mnist", ["/repo/configs"])
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DATA_ENV", "data_dir_candidates", "resolve_data_dir"]

#: The environment variable naming a folder of data sets.
DATA_ENV = "SEQNORM_DATA"


def data_dir_candidates(
    data_dir: str | os.PathLike[str], config_dirs: Sequence[str | os.PathLike[str]] = ()
) -> list[Path]:
    """The absolute folders a ``data_dir`` may mean, most preferred first (no duplicates).

    Args:
        data_dir: the folder as written in a config or passed to a DataModule.
        config_dirs: folders of the config files the value may come from.
    """
    path = Path(data_dir).expanduser()
    if path.is_absolute():
        return [Path(os.path.normpath(path))]
    out: list[Path] = []
    root = os.environ.get(DATA_ENV)
    if root:
        out.append(Path(root).expanduser().absolute() / Path(os.path.normpath(path)).name)
    out += [Path(d).expanduser().absolute() / path for d in config_dirs]
    out.append(Path.cwd() / path)
    unique: list[Path] = []
    for p in (Path(os.path.normpath(c)) for c in out):
        if p not in unique:
            unique.append(p)
    return unique


def resolve_data_dir(
    data_dir: str | os.PathLike[str], config_dirs: Sequence[str | os.PathLike[str]] = ()
) -> Path:
    """The first of :func:`data_dir_candidates` that is a folder, else the first candidate.

    Args:
        data_dir: the folder as written in a config or passed to a DataModule.
        config_dirs: folders of the config files the value may come from.
    """
    candidates = data_dir_candidates(data_dir, config_dirs)
    return next((c for c in candidates if c.is_dir()), candidates[0])
