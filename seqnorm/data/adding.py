"""Adding problem (Hochreiter & Schmidhuber, 1997; Arjovsky et al., 2016).

Each sample is a sequence of ``T = seq_len`` steps with two input channels::

    x[:, 0]  values drawn i.i.d. from U(0, 1)
    x[:, 1]  markers: exactly one 1 in the first half [0, T // 2) and exactly one 1 in
             the second half [T // 2, T); zeros elsewhere

The target is the scalar sum of the two marked values, read from the network's last
step; the loss is the mean squared error. The target is a sum of two independent
U(0, 1) variables, so always predicting its mean 1 scores ``Var = 2 / 12 = 1/6 ~ 0.167``,
the baseline quoted in the literature.

Sample ``i`` of a split is a pure function of ``(seed, split, i)``, so a resumed run sees
exactly the same data, and the train, val and test splits never share a stream.

>>> x, y = AddingDataset(seq_len=10, size=2)[0]
>>> x.shape, x.dtype, y.shape, int(x[:5, 1].sum()), int(x[5:, 1].sum())
(torch.Size([10, 2]), torch.float32, torch.Size([]), 1, 1)
"""

from __future__ import annotations

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

__all__ = ["ADDING_BASELINE", "AddingDataModule", "AddingDataset"]

#: MSE of always predicting 1, i.e. the variance of the sum of two U(0, 1) variables.
ADDING_BASELINE = 1.0 / 6.0


class AddingDataset(Dataset):
    """Index-deterministic adding-problem samples (see the module docstring).

    Args:
        seq_len: sequence length ``T`` (at least 2, one marker per half).
        size: number of samples.
        seed: base seed; sample ``i`` depends only on ``(seed, split, i)``.
        split: ``"train"``, ``"val"`` or ``"test"``; each split draws from its own streams.

    Raises:
        ValueError: if ``seq_len < 2``, ``size < 1`` or ``split`` is unknown.
    """

    def __init__(self, seq_len: int, size: int, seed: int = 0, split: str = "train") -> None:
        self.seq_len = check_int("seq_len", seq_len, 2)
        self.size = check_int("size", size, 1)
        self.seed = check_seed(seed)
        self.split = split
        self._split_id = check_split(split)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Return ``(x, y)``: ``x`` float32 ``(seq_len, 2)``, ``y`` float32 scalar ``()``."""
        i = normalize_index(index, self.size)
        g = sample_generator(self.seed, self._split_id, i)
        half = self.seq_len // 2
        values = torch.rand(self.seq_len, generator=g)  # (T,)
        first = int(torch.randint(0, half, (), generator=g))
        second = int(torch.randint(half, self.seq_len, (), generator=g))
        x = torch.zeros(self.seq_len, 2)  # (T, 2)
        x[:, 0] = values
        x[first, 1] = 1.0
        x[second, 1] = 1.0
        y = values[first] + values[second]  # ()
        return x, y


class AddingDataModule(SyntheticDataModule):
    """Adding problem: batches ``x (B, T, 2)`` float32, ``y (B,)`` float32.

    Args:
        seq_len: sequence length ``T`` (at least 2).
        batch_size: samples per batch.
        num_train: training samples (reused every epoch, reshuffled).
        num_val: validation samples.
        num_test: test samples.
        seed: seed of the data streams and of the training shuffle.
        num_workers: ``DataLoader`` worker processes.

    Raises:
        ValueError: if ``seq_len < 2``, any size or ``batch_size`` is below 1, or
            ``num_workers`` is negative.

    Attributes:
        input_kind: ``"features"``.
        input_dim: 2 (value, marker).
        output_kind: ``"last_regression"``.
        num_classes: 1 (one regression output).
        seq_len: ``T``.
        input_len: ``T``, the full input length.
        baseline: ``1/6``, the MSE of always predicting 1.
        task_name: ``adding T=<T>``.
    """

    input_kind: str = "features"
    output_kind: str = "last_regression"
    input_dim: int = 2
    num_classes: int = 1

    def __init__(
        self,
        seq_len: int = 200,
        batch_size: int = 50,
        num_train: int = 10000,
        num_val: int = 1000,
        num_test: int = 1000,
        seed: int = 1234,
        num_workers: int = 0,
    ) -> None:
        length = check_int("seq_len", seq_len, 2)
        super().__init__(batch_size, num_train, num_val, num_test, seed, num_workers)
        self.seq_len = self.input_len = length
        self.baseline = ADDING_BASELINE

    @property
    def task_name(self) -> str:
        return f"adding T={self.seq_len}"

    def make_dataset(self, size: int, split: str) -> AddingDataset:
        return AddingDataset(self.seq_len, size, self.seed, split)
