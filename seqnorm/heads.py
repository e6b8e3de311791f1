"""The task heads of :class:`seqnorm.SeqModel`: what each ``output_kind`` means, in one table.

A head says whether the readout reads every step or the last (pooled) one, and whether the
task is classification or regression; from that follow its loss, its metrics and what each
metric reads from a batch. The model asks its head instead of switching on the kind.

>>> HEADS["last_class"].per_step, HEADS["last_regression"].classification
(False, False)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import Accuracy, MeanMetric, MeanSquaredError

__all__ = ["HEADS", "TaskHead"]


@dataclass(frozen=True)
class TaskHead:
    """One ``output_kind``.

    Attributes:
        name: the kind's name (``per_step_class``, ``last_class``, ``last_regression``).
        per_step: logits at every step (the copy task) rather than from the last step.
        classification: cross-entropy over classes rather than mean squared error.
    """

    name: str
    per_step: bool
    classification: bool

    def metrics(self, num_classes: int) -> dict[str, nn.Module]:
        """``loss`` and ``acc`` (last-step classes) or ``mse`` (regression); per-step tasks
        (copy memory) have ``symbol_acc``, the accuracy on the non-blank targets -- the
        symbols to recall -- and ``acc_all_steps``, every output counted (blanks are most of
        them: it reads (T + 10) / (T + 20) for a model that only ever outputs blank)."""

        def accuracy() -> Accuracy:
            return Accuracy(task="multiclass", num_classes=num_classes, average="micro")

        m: dict[str, nn.Module] = {"loss": MeanMetric()}
        if self.per_step:
            m["symbol_acc"] = accuracy()
            m["acc_all_steps"] = accuracy()
        elif self.classification:
            m["acc"] = accuracy()
        else:
            m["mse"] = MeanSquaredError()
        return m

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy (over every step for per-step tasks) or MSE."""
        if self.per_step:
            return F.cross_entropy(output.flatten(0, 1), target.flatten())  # (B*T, C), (B*T,)
        if self.classification:
            return F.cross_entropy(output, target)  # (B, C), (B,)
        return F.mse_loss(output, target.to(output.dtype))  # (B,), (B,)

    def metric_inputs(self, output: Tensor, y: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``(preds, target)`` of each metric but ``loss`` for one batch."""
        if self.per_step:
            pred = output.argmax(-1)  # (B, T)
            keep = y != 0  # the symbols to recall (0 is the blank)
            inputs = {"acc_all_steps": (pred.flatten(), y.flatten())}
            if keep.any():
                inputs["symbol_acc"] = (pred[keep], y[keep])
            return inputs
        if self.classification:
            return {"acc": (output.argmax(-1), y)}
        return {"mse": (output.detach(), y.to(output.dtype))}

    def prediction(self, readout: Tensor) -> Tensor:
        """The readout of the last (pooled) step as the task's output: logits ``(B, C)``, or
        predictions ``(B,)`` for regression (its one output squeezed)."""
        return readout if self.classification else readout.squeeze(-1)


#: Every ``output_kind`` SeqModel knows, by name.
HEADS: dict[str, TaskHead] = {
    h.name: h
    for h in (
        TaskHead("per_step_class", per_step=True, classification=True),
        TaskHead("last_class", per_step=False, classification=True),
        TaskHead("last_regression", per_step=False, classification=False),
    )
}
