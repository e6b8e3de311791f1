"""Helpers shared by the benchmark data modules: argument checks, per-index RNG, loaders.

Private to :mod:`seqnorm.data`; nothing here is part of the public API.
"""

from __future__ import annotations

import operator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_MASK64 = (1 << 64) - 1

#: Split names accepted by the synthetic datasets, in the order that gives each its id.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is an int (any sign; it is taken modulo 2**64), else raise."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return seed


def check_split(split: str) -> int:
    """Return the id of ``split`` (0 train, 1 val, 2 test), or raise a ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def normalize_index(index: int, size: int) -> int:
    """Map a (possibly negative) sequence index into ``[0, size)`` or raise ``IndexError``."""
    i = operator.index(index)
    if i < 0:
        i += size
    if not 0 <= i < size:
        raise IndexError(f"index {index} is out of range for a dataset of size {size}")
    return i


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 finaliser: a bijective, well-mixed 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_generator(seed: int, split_id: int, index: int) -> torch.Generator:
    """A fresh CPU generator whose state is a pure function of ``(seed, split_id, index)``.

    The three integers are chained through SplitMix64, so neighbouring indices, splits and
    seeds get unrelated streams. A fresh generator per call keeps ``__getitem__`` free of
    shared mutable state (safe under threads and worker processes alike); it costs ~5 us.
    """
    h = _splitmix64(seed & _MASK64)
    h = _splitmix64(h ^ split_id)
    h = _splitmix64(h ^ (index & _MASK64))
    g = torch.Generator()
    g.manual_seed(h)
    return g


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a permutation that is a pure function of ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every epoch, so the order of epoch ``e``
    does not depend on how many epochs this process has run: a run resumed from a checkpoint
    sees the same order as an uninterrupted one. :meth:`start_at_batch` makes the next pass
    skip the batches an interrupted epoch already trained on (``len`` stays the full size, so
    Lightning's batch counting is unchanged).
    """

    def __init__(self, size: int, seed: int, batch_size: int) -> None:
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at_batch(self, batch: int) -> None:
        skip = max(0, batch) * self.batch_size
        # A checkpoint written after the last batch of an epoch (at its validation) resumes
        # into the next epoch, which starts at its first batch.
        self._skip = skip if skip < self.size else 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self):  # noqa: ANN204
        g = torch.Generator()
        g.manual_seed(_splitmix64(_splitmix64(self.seed & _MASK64) ^ self.epoch))
        order = torch.randperm(self.size, generator=g)[self._skip :]
        self._skip = 0
        yield from order.tolist()


def resume_batch(trainer: object | None) -> int:
    """Batches of the current epoch a resumed Lightning fit already trained on (0 otherwise)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    if loop is None or not getattr(trainer.fit_loop, "restarting", False):
        return 0
    # `processed` counts batches whose training step ran; a checkpoint written in
    # on_train_batch_end predates the `completed` increment of that same batch.
    return int(loop.batch_progress.current.processed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
    seed: int | None = None,
    start_batch: int = 0,
) -> DataLoader:
    """A batch-first ``DataLoader``; the train shuffle is an :class:`EpochShuffleSampler`.

    Args:
        dataset: the map-style dataset to batch.
        batch_size: samples per batch.
        num_workers: worker processes; ``persistent_workers`` is on only when this is > 0.
        shuffle: whether to reshuffle every epoch.
        seed: seed of the shuffle (required when ``shuffle`` is true).
        start_batch: with ``shuffle``, skip this many batches of the first pass (resume).
    """
    sampler = None
    if shuffle:
        if seed is None:
            raise ValueError("seed must be given when shuffle=True, got None")
        sampler = EpochShuffleSampler(len(dataset), seed, batch_size)
        sampler.start_at_batch(start_batch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=False,
        persistent_workers=num_workers > 0,
    )
