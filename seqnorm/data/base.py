"""The base DataModules every benchmark shares: task attributes, loaders, synthetic splits.

:class:`SequenceDataModule` holds what every benchmark's DataModule has in common: the task
attributes the model wires itself from, the batch size and worker count, and the three
loaders (the training one shuffled by an :class:`~seqnorm.data._common.EpochShuffleSampler`
that a resumed run replays exactly). A subclass builds ``train_dataset``, ``val_dataset``
and ``test_dataset`` in :meth:`~SequenceDataModule.setup`.

:class:`SyntheticDataModule` adds what the generated benchmarks (copy memory, adding) share:
``num_train`` / ``num_val`` / ``num_test`` samples per split, each sample a pure function of
``(seed, split, index)``; a subclass only says how to build one split
(:meth:`~SyntheticDataModule.make_dataset`).
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from seqnorm.data._common import check_int, check_seed, make_loader, resume_batch

__all__ = ["SequenceDataModule", "SyntheticDataModule"]


class SequenceDataModule(pl.LightningDataModule):
    """Batch-first loaders over ``train_dataset``, ``val_dataset`` and ``test_dataset``.

    Args:
        batch_size: samples per batch.
        num_workers: ``DataLoader`` worker processes.
        shuffle_seed: seed of the training shuffle (one permutation per epoch).

    Raises:
        ValueError: if ``batch_size`` is below 1 or ``num_workers`` is negative.

    Attributes (set by every subclass):
        input_kind: ``"tokens"`` or ``"features"``.
        input_dim: vocabulary size or features per step.
        output_kind: ``"per_step_class"``, ``"last_class"`` or ``"last_regression"``.
        num_classes: classes of the readout (1 for regression).
        input_len: the full input length (steps per sample).
        baseline: the loss of a memoryless predictor, or ``None``.
        task_name: the task in a few words, as messages name it (``copy T=100``, ``psMNIST``).

    ``seq_len`` is each task's own setting, as its constructor takes it (copy memory: the
    delay ``T``; adding: ``T``; MNIST: 784), and equals ``input_len`` except for copy memory.
    """

    input_kind: str
    output_kind: str
    input_dim: int
    num_classes: int

    def __init__(self, batch_size: int, num_workers: int, shuffle_seed: int) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.shuffle_seed = check_seed(shuffle_seed)
        self.input_len: int = 0
        self.baseline: float | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    @property
    def task_name(self) -> str:
        """The task in a few words (the class name without ``DataModule`` unless overridden)."""
        return type(self).__name__.removesuffix("DataModule")

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return make_loader(
            self.train_dataset,
            self.batch_size,
            self.num_workers,
            shuffle=True,
            seed=self.shuffle_seed,
            start_batch=resume_batch(self.trainer),
        )

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return make_loader(self.val_dataset, self.batch_size, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return make_loader(self.test_dataset, self.batch_size, self.num_workers)


class SyntheticDataModule(SequenceDataModule):
    """Three generated splits of ``num_train`` / ``num_val`` / ``num_test`` samples.

    Args:
        batch_size: samples per batch.
        num_train: training samples (reused every epoch, reshuffled).
        num_val: validation samples.
        num_test: test samples.
        seed: seed of the data streams and of the training shuffle.
        num_workers: ``DataLoader`` worker processes.

    Raises:
        ValueError: if any size or ``batch_size`` is below 1, or ``num_workers`` is negative.
    """

    def __init__(
        self,
        batch_size: int,
        num_train: int,
        num_val: int,
        num_test: int,
        seed: int,
        num_workers: int,
    ) -> None:
        super().__init__(batch_size, num_workers, shuffle_seed=seed)
        self.num_train = check_int("num_train", num_train, 1)
        self.num_val = check_int("num_val", num_val, 1)
        self.num_test = check_int("num_test", num_test, 1)
        self.seed = self.shuffle_seed

    def make_dataset(self, size: int, split: str) -> Dataset:
        """The ``split`` (``"train"``, ``"val"`` or ``"test"``) of ``size`` samples."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Create the three datasets (cheap: samples are generated on access)."""
        if self.train_dataset is None:
            self.train_dataset = self.make_dataset(self.num_train, "train")
            self.val_dataset = self.make_dataset(self.num_val, "val")
            self.test_dataset = self.make_dataset(self.num_test, "test")
