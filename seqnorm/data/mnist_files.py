"""The four MNIST IDX files: where they are looked for, their download and checksum, loading.

Files: the four standard IDX files, raw or gzip-compressed, are looked up in ``data_dir``::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Missing files are downloaded by :func:`prepare_mnist` (the DataModules call it in
``prepare_data`` when ``download=True``): each goes to a temporary file, the MD5 of its
decompressed content is checked, and only then is it moved into place (atomically), so an
interrupted download never leaves a bad file behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from seqnorm.data.idx import read_idx
from seqnorm.data.paths import DATA_ENV, resolve_data_dir

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "default_mnist_dir",
    "load_mnist",
    "prepare_mnist",
]

#: Role -> (file name without ``.gz``, MD5 of the decompressed content).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
}

#: Download mirrors, tried in order; each serves ``<mirror><name>.gz``.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


def _locate(data_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Return ``(found role -> path, missing file names)``; a raw file wins over its .gz."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, (name, _) in MNIST_FILES.items():
        for candidate in (data_dir / name, data_dir / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(name)
    return found, missing


def _md5_of_decompressed(path: Path) -> str:
    md5 = hashlib.md5()
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
    return md5.hexdigest()


def _download(name: str, md5: str, data_dir: Path, dead_mirrors: set[str]) -> list[str]:
    """Try every live mirror for ``name``; return the failure reasons (empty on success).

    A mirror that cannot be reached at all (no route, DNS, timeout) is added to
    ``dead_mirrors`` so later files do not wait on it again.
    """
    errors: list[str] = []
    for mirror in MNIST_MIRRORS:
        if mirror in dead_mirrors:
            continue
        url = f"{mirror}{name}.gz"
        tmp: Path | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=data_dir)
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as out:
                with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                    shutil.copyfileobj(response, out, _CHUNK)
            got = _md5_of_decompressed(tmp)
            if got != md5:
                errors.append(f"{url}: MD5 of decompressed content is {got}, expected {md5}")
                continue
            os.replace(tmp, data_dir / f"{name}.gz")
            return []
        except urllib.error.HTTPError as err:
            errors.append(f"{url}: HTTP {err.code} {err.reason}")
        except (OSError, EOFError, zlib.error, http.client.HTTPException, ValueError) as err:
            if isinstance(err, (urllib.error.URLError, TimeoutError, ConnectionError)):
                dead_mirrors.add(mirror)
            errors.append(f"{url}: {type(err).__name__}: {err}")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return errors or [f"{name}: every mirror was unreachable earlier"]


def prepare_mnist(data_dir: str | os.PathLike[str], download: bool = True) -> dict[str, Path]:
    """Find the four MNIST IDX files in ``data_dir``, downloading the missing ones if allowed.

    Args:
        data_dir: folder holding (or to receive) the IDX files, raw or ``.gz``.
        download: whether to fetch missing files from :data:`MNIST_MIRRORS`.

    Returns:
        Role (``"train_images"``, ``"train_labels"``, ``"test_images"``, ``"test_labels"``)
        -> path of the file found.

    Raises:
        FileNotFoundError: if any file is still missing; the message lists them, gives the
            absolute folder searched and why downloading did not help.
    """
    folder = Path(data_dir).expanduser().absolute()
    found, missing = _locate(folder)
    if not missing:
        return found
    if download:
        reasons: list[str] = []
        dead_mirrors: set[str] = set()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            reasons.append(f"cannot create {folder}: {err}")
        else:
            md5s = dict(MNIST_FILES.values())
            for name in missing:
                reasons.extend(_download(name, md5s[name], folder, dead_mirrors))
        found, missing = _locate(folder)
        if not missing:
            return found
        why = "downloading failed:\n  " + "\n  ".join(reasons)
    else:
        why = "nothing was downloaded (download=False, or setup() ran before prepare_data())."
    raise FileNotFoundError(
        f"MNIST files missing from {folder}: {', '.join(missing)} (raw or .gz); {why}\n"
        "Place the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; raw or .gz) in that folder, "
        f"set {DATA_ENV} to a folder whose {folder.name}/ holds them, "
        "or pass data_dir=<a folder that has them>."
    )


def load_mnist(
    data_dir: str | os.PathLike[str], split: str, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The official ``split`` of MNIST: uint8 images ``(N, 28, 28)`` and labels ``(N,)``.

    Args:
        data_dir: folder holding the four IDX files (raw or ``.gz``); relative folders are
            resolved as :func:`seqnorm.data.resolve_data_dir` does (``$SEQNORM_DATA``, ...).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        download: whether missing files may be downloaded (:func:`prepare_mnist`).

    Raises:
        ValueError: if ``split`` is neither ``"train"`` nor ``"test"``.
        FileNotFoundError: if the files are missing (the message says where it looked).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = prepare_mnist(resolve_data_dir(data_dir), download=download)
    return _load_pair(paths[f"{split}_images"], paths[f"{split}_labels"])


def default_mnist_dir() -> Path:
    """Where MNIST is when no folder is named: ``data/mnist`` resolved as every relative
    ``data_dir`` is (``$SEQNORM_DATA/mnist`` first; :mod:`seqnorm.data.paths`)."""
    return resolve_data_dir("data/mnist")


def _load_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an images / labels IDX pair and check they are MNIST-shaped and consistent."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} uint8 labels to match {images_path.name}, "
            f"got {labels.dtype} {labels.shape}"
        )
    return images, labels
