"""Copy-memory task (Arjovsky et al., 2016, as used by expRNN and scoRNN).

Vocabulary: ``0`` blank, ``1..8`` data symbols, ``9`` marker (``input_dim = 10``).
For a delay ``T = seq_len`` every sample has length ``L = T + 20``::

    x = s_1 .. s_10 | 0 x T        | 9 | 0 x 9
    y = 0 x (T + 10)                    | s_1 .. s_10

where the ten symbols ``s_k`` are drawn uniformly from ``1..8``. The network reads ``x``
and must output ``y`` at every step (``num_classes = 9``: blank plus the eight symbols);
the loss is the cross-entropy averaged over all ``L`` outputs. A memoryless predictor
that outputs blank for the first ``T + 10`` steps and a uniform guess over the eight
symbols for the last ten scores ``10 ln 8 / (T + 20)``, the baseline to beat.

Sample ``i`` of a split is a pure function of ``(seed, split, i)``, so a resumed run sees
exactly the same data, and the train, val and test splits never share a stream.

>>> x, y = CopyMemoryDataset(seq_len=5, size=3)[0]
>>> x.shape, y.shape, int(x[15]), y[:15].tolist()
(torch.Size([25]), torch.Size([25]), 9, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqnorm.data._common import (
    check_int,
    check_seed,
    check_split,
    normalize_index,
    sample_generator,
)
from seqnorm.data.base import SyntheticDataModule

__all__ = [
    "BLANK",
    "COPY_LENGTH",
    "MARKER",
    "NUM_SYMBOLS",
    "CopyMemoryDataModule",
    "CopyMemoryDataset",
    "copy_baseline",
]

BLANK = 0
MARKER = 9
NUM_SYMBOLS = 8
COPY_LENGTH = 10


def copy_baseline(seq_len: int) -> float:
    """Cross-entropy of the optimal memoryless predictor: ``10 ln 8 / (seq_len + 20)``.

    Args:
        seq_len: the delay ``T`` (number of blanks between the symbols and the marker).

    >>> round(copy_baseline(100), 4)
    0.1733
    """
    check_int("seq_len", seq_len, 1)
    return COPY_LENGTH * math.log(NUM_SYMBOLS) / (seq_len + 2 * COPY_LENGTH)


class CopyMemoryDataset(Dataset):
    """Index-deterministic copy-memory samples (see the module docstring for the layout).

    Args:
        seq_len: the delay ``T``; samples have length ``T + 20``.
        size: number of samples.
        seed: base seed; sample ``i`` depends only on ``(seed, split, i)``.
        split: ``"train"``, ``"val"`` or ``"test"``; each split draws from its own streams.

    Raises:
        ValueError: if ``seq_len`` or ``size`` is below 1 or ``split`` is unknown.
    """

    def __init__(self, seq_len: int, size: int, seed: int = 0, split: str = "train") -> None:
        self.seq_len = check_int("seq_len", seq_len, 1)
        self.size = check_int("size", size, 1)
        self.seed = check_seed(seed)
        self.split = split
        self._split_id = check_split(split)
        self.length = self.input_len = seq_len + 2 * COPY_LENGTH

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Return ``(x, y)``, both ``LongTensor`` of shape ``(seq_len + 20,)``."""
        i = normalize_index(index, self.size)
        g = sample_generator(self.seed, self._split_id, i)
        symbols = torch.randint(1, NUM_SYMBOLS + 1, (COPY_LENGTH,), generator=g)  # (10,)
        x = torch.zeros(self.length, dtype=torch.long)  # (L,)
        x[:COPY_LENGTH] = symbols
        x[self.seq_len + COPY_LENGTH] = MARKER
        y = torch.zeros(self.length, dtype=torch.long)  # (L,)
        y[-COPY_LENGTH:] = symbols
        return x, y


class CopyMemoryDataModule(SyntheticDataModule):
    """Copy-memory task: batches ``x (B, T+20)`` long tokens, ``y (B, T+20)`` long targets.

    Args:
        seq_len: the delay ``T``; the full input length is ``T + 20``.
        batch_size: samples per batch.
        num_train: training samples (reused every epoch, reshuffled).
        num_val: validation samples.
        num_test: test samples.
        seed: seed of the data streams and of the training shuffle.
        num_workers: ``DataLoader`` worker processes.

    Raises:
        ValueError: if any size, ``seq_len`` or ``batch_size`` is below 1, or
            ``num_workers`` is negative.

    Attributes:
        input_kind: ``"tokens"``.
        input_dim: 10 (blank, eight symbols, marker).
        output_kind: ``"per_step_class"``.
        num_classes: 9 (blank plus eight symbols).
        input_len: the full input length ``T + 20``.
        seq_len: ``T``, the constructor's ``seq_len`` (as :class:`CopyMemoryDataset` has it).
        delay: ``T`` too.
        baseline: ``10 ln 8 / (T + 20)``, the memoryless cross-entropy.
        task_name: ``copy T=<T>``.
    """

    input_kind: str = "tokens"
    output_kind: str = "per_step_class"
    input_dim: int = NUM_SYMBOLS + 2
    num_classes: int = NUM_SYMBOLS + 1

    def __init__(
        self,
        seq_len: int = 100,
        batch_size: int = 128,
        num_train: int = 12800,
        num_val: int = 1280,
        num_test: int = 1280,
        seed: int = 1234,
        num_workers: int = 0,
    ) -> None:
        delay = check_int("seq_len", seq_len, 1)
        super().__init__(batch_size, num_train, num_val, num_test, seed, num_workers)
        self.seq_len = self.delay = delay
        self.input_len = delay + 2 * COPY_LENGTH
        self.baseline = copy_baseline(delay)

    @property
    def task_name(self) -> str:
        return f"copy T={self.delay}"

    def make_dataset(self, size: int, split: str) -> CopyMemoryDataset:
        return CopyMemoryDataset(self.delay, size, self.seed, split)
