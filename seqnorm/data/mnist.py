"""Sequential and permuted MNIST: each image read pixel by pixel as a 784-step sequence.

Images are scaled to ``[0, 1]`` and flattened row-major into ``(784, 1)`` float32
sequences; the label (int64) is predicted from the last step. Permuted MNIST applies one
fixed pixel permutation to every image, ``numpy.random.RandomState(92916).permutation(784)``
by default, the convention of the expRNN and scoRNN code bases.

Splits: the official 60,000 training images are split 55,000 / 5,000 into train and
validation by a ``torch.randperm`` drawn from ``torch.Generator().manual_seed(split_seed)``
(the first ``N - val_size`` indices of that order train, the rest validate); the test set is
the official 10,000.

Files: the four standard IDX files, raw or gzip-compressed, are looked up in ``data_dir``::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Missing files are downloaded in ``prepare_data`` when ``download=True``: each goes to a
temporary file, the MD5 of its decompressed content is checked, and only then is it moved
into place (atomically), so an interrupted download never leaves a bad file behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqnorm.data._common import check_int, check_seed, normalize_index
from seqnorm.data.base import SequenceDataModule
from seqnorm.data.paths import DATA_ENV, resolve_data_dir

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNISTSequenceDataset",
    "PermutedMNISTDataModule",
    "SequentialMNISTDataModule",
    "default_mnist_dir",
    "load_mnist",
    "mnist_permutation",
    "prepare_mnist",
    "read_idx",
]

#: The deprecated variable naming the MNIST folder itself (use ``SEQNORM_DATA``).
LEGACY_MNIST_ENV = "SEQNORM_MNIST_DIR"

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

NUM_PIXELS = 784
_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a writable, native-endian array.

    The magic number is ``0x0000TTDD``: ``TT`` the element type (``0x08`` uint8 for MNIST)
    and ``DD`` the number of dimensions, so MNIST labels are ``0x00000801`` and images
    ``0x00000803``. Compression is detected from the gzip magic bytes, not the suffix.

    Args:
        path: the file to read.

    Returns:
        An array of the stored shape, e.g. ``(60000, 28, 28)`` uint8 for training images.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not valid gzip, has a bad magic number, is truncated or
            has trailing bytes; the message names the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err
    return _parse_idx(raw, path)


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated IDX file, {len(data)} bytes is too short for the magic number"
        )
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08X}; expected 0x00000801 (labels), "
            "0x00000803 (images) or another 0x0000TTDD with a known type TT and DD >= 1"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX header, expected {header} bytes for {ndim} dimensions, "
            f"got {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    count = math.prod(shape)
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated IDX file" if len(data) < expected else "IDX file with trailing bytes"
        raise ValueError(
            f"{path}: {what}, expected {expected} bytes for shape {shape}, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # writable, native order


def mnist_permutation(seed: int = 92916) -> np.ndarray:
    """The fixed pixel permutation of permuted MNIST: ``RandomState(seed).permutation(784)``.

    Args:
        seed: the permutation seed; 92916 is the expRNN / scoRNN convention.

    >>> perm = mnist_permutation()
    >>> perm.shape, bool((np.sort(perm) == np.arange(784)).all())
    ((784,), True)
    """
    return np.random.RandomState(seed).permutation(NUM_PIXELS)


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
    ``data_dir`` is (``$SEQNORM_DATA/mnist`` first; :mod:`seqnorm.data.paths`).

    The older variable ``SEQNORM_MNIST_DIR`` (the MNIST folder itself) still works when
    ``SEQNORM_DATA`` is unset, with a ``FutureWarning``: set ``SEQNORM_DATA`` to the folder
    that holds ``mnist/`` instead.
    """
    legacy = os.environ.get(LEGACY_MNIST_ENV)
    if legacy:
        warnings.warn(
            f"{LEGACY_MNIST_ENV} is deprecated: set {DATA_ENV} to the folder that holds "
            f"mnist/ ({DATA_ENV}={Path(legacy).parent}); "
            + (f"{DATA_ENV} is set and wins" if os.environ.get(DATA_ENV) else "using it"),
            FutureWarning,
            stacklevel=2,
        )
        if not os.environ.get(DATA_ENV):
            return Path(legacy).expanduser().absolute()
    return resolve_data_dir("data/mnist")


class MNISTSequenceDataset(Dataset):
    """MNIST images as ``(784, 1)`` float32 pixel sequences in ``[0, 1]``, optionally permuted.

    Args:
        images: uint8 images, ``(N, 28, 28)`` or ``(N, 784)`` (numpy array or tensor).
        labels: integer labels in ``0..9``, ``(N,)``.
        permutation: pixel order applied to every flattened image, a permutation of
            ``range(784)``; ``None`` keeps row-major order.

    Raises:
        ValueError: if the shapes, dtype, label range or permutation are invalid.
    """

    def __init__(
        self,
        images: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        permutation: np.ndarray | None = None,
    ) -> None:
        images_t = torch.as_tensor(images)
        labels_t = torch.as_tensor(labels)
        if images_t.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {images_t.dtype}")
        if images_t.dim() < 2 or math.prod(images_t.shape[1:]) != NUM_PIXELS:
            raise ValueError(
                f"images must have shape (N, 28, 28) or (N, 784), got {tuple(images_t.shape)}"
            )
        if labels_t.shape != images_t.shape[:1]:
            raise ValueError(
                f"labels must have shape ({images_t.shape[0]},) to match images, "
                f"got {tuple(labels_t.shape)}"
            )
        labels_t = labels_t.to(torch.int64)
        if labels_t.numel() and not (0 <= int(labels_t.min()) and int(labels_t.max()) <= 9):
            raise ValueError(
                f"labels must lie in 0..9, got range {int(labels_t.min())}..{int(labels_t.max())}"
            )
        self.images = images_t.reshape(-1, NUM_PIXELS)  # (N, 784) uint8
        self.labels = labels_t  # (N,) int64
        self.permutation: np.ndarray | None = None
        self._perm: Tensor | None = None
        if permutation is not None:
            perm = np.asarray(permutation)
            if perm.shape != (NUM_PIXELS,) or not np.array_equal(
                np.sort(perm), np.arange(NUM_PIXELS)
            ):
                raise ValueError(
                    f"permutation must be a permutation of range({NUM_PIXELS}), "
                    f"got an array of shape {perm.shape}"
                )
            self.permutation = perm
            self._perm = torch.as_tensor(perm, dtype=torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Return ``(x, y)``: ``x`` float32 ``(784, 1)``, ``y`` int64 scalar ``()``."""
        i = normalize_index(index, len(self))
        pixels = self.images[i]  # (784,) uint8
        if self._perm is not None:
            pixels = pixels[self._perm]  # (784,)
        x = pixels.to(torch.float32).div_(255.0).unsqueeze(-1)  # (784, 1)
        return x, self.labels[i]


class SequentialMNISTDataModule(SequenceDataModule):
    """Pixel-by-pixel MNIST: batches ``x (B, 784, 1)`` float32, ``y (B,)`` int64.

    Args:
        data_dir: folder with the four IDX files (raw or ``.gz``), or to download them to;
            a relative one is looked for in ``$SEQNORM_DATA``, then the working directory
            (see :mod:`seqnorm.data.paths`; the ``seqnorm`` CLI also looks beside the config).
        batch_size: samples per batch.
        permute: whether to apply the fixed pixel permutation (permuted MNIST).
        permutation_seed: seed of ``numpy.random.RandomState(seed).permutation(784)``.
        val_size: images held out of the official training set for validation.
        split_seed: seed of the train / validation split and of the training shuffle.
        download: whether ``prepare_data`` may download missing files.
        num_workers: ``DataLoader`` worker processes.
        limit_train: keep only the first ``limit_train`` training samples (of the seeded
            split order, so a random subset); ``None`` keeps all.

    Raises:
        ValueError: if ``batch_size``, ``val_size`` or ``limit_train`` is below 1, or
            ``num_workers`` is negative; ``setup`` raises if ``val_size`` leaves no
            training images.
        FileNotFoundError: from ``prepare_data`` / ``setup`` if the files are missing.

    Attributes:
        input_kind: ``"features"``.
        input_dim: 1 (one pixel per step).
        output_kind: ``"last_class"``.
        num_classes: 10.
        seq_len: 784.
        input_len: 784, the full input length.
        baseline: ``None`` (the reference is chance, 10%).
        task_name: ``psMNIST`` (permuted) or ``sMNIST``.
        data_dir: the absolute folder used.
        permutation: the pixel permutation (numpy array) or ``None``.
    """

    input_kind: str = "features"
    output_kind: str = "last_class"
    input_dim: int = 1
    num_classes: int = 10

    def __init__(
        self,
        data_dir: str = "data/mnist",
        batch_size: int = 128,
        permute: bool = False,
        permutation_seed: int = 92916,
        val_size: int = 5000,
        split_seed: int = 1234,
        download: bool = True,
        num_workers: int = 0,
        limit_train: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, shuffle_seed=split_seed)
        self.data_dir = str(resolve_data_dir(data_dir))
        self.permute = bool(permute)
        self.permutation_seed = check_seed(permutation_seed)
        self.val_size = check_int("val_size", val_size, 1)
        self.split_seed = self.shuffle_seed
        self.download = bool(download)
        self.limit_train = None if limit_train is None else check_int("limit_train", limit_train, 1)
        self.seq_len = self.input_len = NUM_PIXELS
        self.permutation: np.ndarray | None = (
            mnist_permutation(permutation_seed) if permute else None
        )

    @property
    def task_name(self) -> str:
        return "psMNIST" if self.permute else "sMNIST"

    def prepare_data(self) -> None:
        """Make sure the four IDX files are in ``data_dir``, downloading them if allowed."""
        prepare_mnist(self.data_dir, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        """Load the arrays (once) and build the datasets the stage needs.

        Args:
            stage: ``"fit"`` / ``"validate"`` loads train and val, ``"test"`` /
                ``"predict"`` the test set, ``None`` all three.
        """
        need_train = stage in (None, "fit", "validate") and self.train_dataset is None
        need_test = stage in (None, "test", "predict") and self.test_dataset is None
        if not (need_train or need_test):
            return
        paths = prepare_mnist(self.data_dir, download=False)
        if need_train:
            images, labels = _load_pair(paths["train_images"], paths["train_labels"])
            n = images.shape[0]
            if self.val_size >= n:
                raise ValueError(
                    f"val_size must be in [1, {n - 1}] for {n} training images, got {self.val_size}"
                )
            g = torch.Generator()
            g.manual_seed(self.split_seed)
            order = torch.randperm(n, generator=g).numpy()  # (n,)
            train_idx, val_idx = order[: n - self.val_size], order[n - self.val_size :]
            if self.limit_train is not None:
                train_idx = train_idx[: self.limit_train]
            self.train_dataset = MNISTSequenceDataset(
                images[train_idx], labels[train_idx], self.permutation
            )
            self.val_dataset = MNISTSequenceDataset(
                images[val_idx], labels[val_idx], self.permutation
            )
        if need_test:
            images, labels = _load_pair(paths["test_images"], paths["test_labels"])
            self.test_dataset = MNISTSequenceDataset(images, labels, self.permutation)


class PermutedMNISTDataModule(SequentialMNISTDataModule):
    """Permuted pixel-by-pixel MNIST: :class:`SequentialMNISTDataModule` with ``permute=True``.

    Every other argument is :class:`SequentialMNISTDataModule`'s, in the same order.

    Args:
        permute: whether to apply the fixed pixel permutation (on by default here).
    """

    def __init__(self, *args: Any, permute: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, permute=permute, **kwargs)


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
