"""Long-range sequence benchmarks, each a torch ``Dataset`` plus a Lightning ``DataModule``.

Every DataModule exposes what the model needs to wire itself up, so it is typed once:
``input_kind`` (``"tokens"`` or ``"features"``), ``input_dim``, ``output_kind``
(``"per_step_class"``, ``"last_regression"`` or ``"last_class"``), ``num_classes``,
``input_len`` (the full input length; ``seq_len`` is each task's own length setting, the
delay ``T`` for copy memory) and ``baseline`` (the loss of a memoryless predictor,
or ``None``). Batches are batch-first.

=====================  ==================  =================  ==================
DataModule             x                   y                  baseline
=====================  ==================  =================  ==================
CopyMemoryDataModule   (B, T+20) int64     (B, T+20) int64    10 ln 8 / (T+20)
AddingDataModule       (B, T, 2) float32   (B,) float32       1/6 (MSE)
SequentialMNIST...     (B, 784, 1) float32 (B,) int64         None
PermutedMNIST...       (B, 784, 1) float32 (B,) int64         None
=====================  ==================  =================  ==================

They share one base, :class:`SequenceDataModule` (loaders, resumable shuffle); the generated
benchmarks also share :class:`SyntheticDataModule` (seeded, index-determined splits). A
relative ``data_dir`` is looked for in ``$SEQNORM_DATA``, beside the config file, then in the
working directory (:mod:`seqnorm.data.paths`).
"""

from seqnorm.data.adding import ADDING_BASELINE, AddingDataModule, AddingDataset
from seqnorm.data.base import SequenceDataModule, SyntheticDataModule
from seqnorm.data.copy import CopyMemoryDataModule, CopyMemoryDataset, copy_baseline
from seqnorm.data.idx import read_idx
from seqnorm.data.mnist import (
    MNISTSequenceDataset,
    PermutedMNISTDataModule,
    SequentialMNISTDataModule,
    mnist_permutation,
)
from seqnorm.data.mnist_files import default_mnist_dir, load_mnist, prepare_mnist
from seqnorm.data.paths import DATA_ENV, data_dir_candidates, resolve_data_dir

__all__ = [
    "ADDING_BASELINE",
    "DATA_ENV",
    "AddingDataModule",
    "AddingDataset",
    "CopyMemoryDataModule",
    "CopyMemoryDataset",
    "MNISTSequenceDataset",
    "PermutedMNISTDataModule",
    "SequenceDataModule",
    "SequentialMNISTDataModule",
    "SyntheticDataModule",
    "copy_baseline",
    "data_dir_candidates",
    "default_mnist_dir",
    "load_mnist",
    "mnist_permutation",
    "prepare_mnist",
    "read_idx",
    "resolve_data_dir",
]
