"""Sequential and permuted MNIST: each image read pixel by pixel as a 784-step sequence.

Images are scaled to ``[0, 1]`` and flattened row-major into ``(784, 1)`` float32
sequences; the label (int64) is predicted from the last step. Permuted MNIST applies one
fixed pixel permutation to every image, ``numpy.random.RandomState(92916).permutation(784)``
by default, the convention of the expRNN and scoRNN code bases.

Splits: the official 60,000 training images are split 55,000 / 5,000 into train and
validation by a ``torch.randperm`` drawn from ``torch.Generator().manual_seed(split_seed)``
(the first ``N - val_size`` indices of that order train, the rest validate); the test set is
the official 10,000.

Files: the four standard IDX files, raw or gzip-compressed, in ``data_dir``; missing ones
are downloaded and checked in ``prepare_data`` when ``download=True``
(:mod:`seqnorm.data.mnist_files`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqnorm.data._common import check_int, check_seed, normalize_index
from seqnorm.data.base import SequenceDataModule
from seqnorm.data.mnist_files import load_mnist, prepare_mnist
from seqnorm.data.paths import resolve_data_dir

__all__ = [
    "MNISTSequenceDataset",
    "PermutedMNISTDataModule",
    "SequentialMNISTDataModule",
    "mnist_permutation",
]

NUM_PIXELS = 784


def mnist_permutation(seed: int = 92916) -> np.ndarray:
    """The fixed pixel permutation of permuted MNIST: ``RandomState(seed).permutation(784)``.

    Args:
        seed: the permutation seed; 92916 is the expRNN / scoRNN convention.

    >>> perm = mnist_permutation()
    >>> perm.shape, bool((np.sort(perm) == np.arange(784)).all())
    ((784,), True)
    """
    return np.random.RandomState(seed).permutation(NUM_PIXELS)


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
        if need_train:
            images, labels = load_mnist(self.data_dir, "train")
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
            images, labels = load_mnist(self.data_dir, "test")
            self.test_dataset = MNISTSequenceDataset(images, labels, self.permutation)


class PermutedMNISTDataModule(SequentialMNISTDataModule):
    """Permuted pixel-by-pixel MNIST: :class:`SequentialMNISTDataModule` with ``permute=True``.

    Every other argument is :class:`SequentialMNISTDataModule`'s, in the same order.

    Args:
        permute: whether to apply the fixed pixel permutation (on by default here).
    """

    def __init__(self, *args: Any, permute: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, permute=permute, **kwargs)
