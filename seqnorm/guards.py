"""Lightning callbacks that keep a run healthy: NaN/inf stops it, subnormals are flushed.

:class:`NonFiniteGuard` checks the loss before every backward pass and the gradients
before every optimiser step (automatic and manual optimisation alike, so truncated BPTT
is guarded per chunk). At the first non-finite value it raises
:class:`NonFiniteLossError` before the update is applied, so the newest checkpoint holds
finite weights and the loggers are flushed. The message says whether the input batch held
the NaN/inf (a data problem) or not (a training problem), names the step, the parameter
whose gradient is bad, and the newest checkpoint any ModelCheckpoint of the trainer saved.

:class:`seqnorm.SeqModel` adds a guard by itself (``stop_on_nonfinite=True``, the default),
so every run of the ``seqnorm`` CLI is guarded; any other LightningModule can be guarded by
passing ``NonFiniteGuard()`` in the trainer's callbacks.

:class:`FlushDenormals` runs fit, validate, test and predict with subnormal floats flushed to
zero (:func:`seqnorm.flush_denormal`) and restores the previous mode afterwards, also when the
run fails; :class:`seqnorm.SeqModel` adds it by itself (``flush_denormal=True``, the default).
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from .denormal import flush_denormal

__all__ = ["FlushDenormals", "NonFiniteGuard", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/inf loss or gradient; raised before the bad update is applied."""


class NonFiniteGuard(pl.Callback):
    """Stop training with :class:`NonFiniteLossError` at the first non-finite loss/gradient.

    The batch the message inspects is the module's ``current_batch`` attribute when it has
    one (:class:`seqnorm.SeqModel` sets it to the batch its training step works on), else
    the batch Lightning handed to the step.
    """

    def __init__(self) -> None:
        self._batch: Any = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._batch = None

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        if not torch.isfinite(loss).all():
            raise self.error(trainer, pl_module, f"loss ({loss.detach().float().sum().item()})")

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad.detach().norm() for p in pl_module.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack(grads).sum()):
            name = next(
                n for n, p in pl_module.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            )  # fmt: skip
            raise self.error(trainer, pl_module, f"gradient of {name}")

    def error(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, what: str
    ) -> NonFiniteLossError:
        """The error for a non-finite ``what``: whether the input batch caused it, the newest
        checkpoint of any ModelCheckpoint, and what to do."""
        batch = getattr(pl_module, "current_batch", None)
        if batch is None:
            batch = self._batch
        pairs = zip(("inputs", "targets"), batch if isinstance(batch, (tuple, list)) else (),
                    strict=False)  # fmt: skip
        bad = [
            f"{name} ({int((~torch.isfinite(t)).sum())} values)"
            for name, t in pairs
            if isinstance(t, Tensor) and t.is_floating_point() and not torch.isfinite(t).all()
        ]
        step = trainer.global_step
        if bad:
            head = (
                f"non-finite input batch at step {step}: the {' and '.join(bad)} "
                f"hold NaN/inf, which made the {what} non-finite"
            )
            advice = "check the data: the DataModule or its files"
        else:
            head = f"non-finite {what} at step {step} (the input batch is finite)"
            advice = "lower the learning rate or set trainer.gradient_clip_val"
        return NonFiniteLossError(
            f"{head}; training stopped before the update, last good checkpoint: "
            f"{newest_checkpoint(trainer)} ({advice})"
        )


class FlushDenormals(pl.Callback):
    """Flush subnormal floats to zero for the whole of each trainer entry point.

    Entered at ``setup`` (before the sanity check, the first batch and every validation),
    left at ``teardown`` or, when the run raises, at ``on_exception``: the calling thread and
    torch's intra-op pool get their previous floating-point mode back either way. Covers
    every computation the trainer's thread runs: seqnorm's and torch's kernels, the unrolled
    probe path, autocast.

    Args:
        enabled: flush (``True``) or, with ``False``, run with flushing explicitly off.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._mode = flush_denormal(enabled)
        self._depth = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._mode.__enter__()
        self._depth += 1

    def _leave(self) -> None:
        if self._depth > 0:
            self._depth -= 1
            self._mode.__exit__(None, None, None)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._leave()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._leave()


def newest_checkpoint(trainer: pl.Trainer) -> str:
    """The newest file any ModelCheckpoint of ``trainer`` has saved, or ``none yet``."""
    paths: set[str] = set()
    for cb in trainer.checkpoint_callbacks:
        paths.update(getattr(cb, "best_k_models", {}))
        paths.update((getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")))
    found = [p for p in paths if p and os.path.isfile(p)]
    return max(found, key=os.path.getmtime) if found else "none yet"
