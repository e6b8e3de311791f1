"""How a run did against its task's reference, in one line: :func:`verdict`.

Every task has a reference a model must beat to have learned anything: the loss of the
memoryless predictor for copy memory and adding (the DataModule's ``baseline``), chance for a
classification task without one (``1 / num_classes``: 10% for MNIST). The verdict compares
the last validation against it:

- with a ``baseline``: the ratio ``val/loss / baseline``; below 0.1 the task is *learned*,
  below 0.95 *partly learned*, up to 1.05 *at the baseline*, above that *above the baseline*;
- with chance: the error ratio ``(1 - val/acc) / (1 - chance)``, with the same thresholds
  (learned: 90% of chance's errors gone, e.g. accuracy >= 91% on 10 classes; *below chance*
  past 1.05).

>>> verdict("copy T=100", {"val/loss": 0.0018}, baseline=0.17329).line
'copy T=100: val loss 0.0018 = 0.010x the memoryless baseline: learned'
>>> verdict("psMNIST", {"val/acc": 0.113}, num_classes=10, output_kind="last_class").line
'psMNIST: val acc 11.3% = 1.13x chance (10%): at chance, not learned'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LEARNED", "PARTLY", "Verdict", "verdict"]

#: Ratio (to the baseline's loss, or to chance's error rate) at or below which a task is learned.
LEARNED = 0.1
#: Ratio below which a model has left the reference (a finite split scatters around it).
PARTLY = 0.95
_AT = 1.05


@dataclass(frozen=True)
class Verdict:
    """The outcome of a run against its task's reference.

    Attributes:
        task: the task's name (``copy T=100``, ``psMNIST``).
        metric: the validation metric compared (``val/loss`` or ``val/acc``), or ``None``.
        value: its last value, or ``None`` when no validation ran.
        reference: ``"memoryless baseline"``, ``"chance"`` or ``None`` (no reference known).
        reference_value: the baseline's loss or chance's accuracy.
        ratio: ``value / baseline``, or the error rate over chance's error rate.
        outcome: ``learned``, ``partly learned``, ``at the baseline, not learned`` (``at
            chance, ...``), ``above the baseline, not learned`` (``below chance, ...``), or
            ``unknown``.
        line: the one line the ``seqnorm`` CLI prints at the end of a fit.
    """

    task: str
    metric: str | None
    value: float | None
    reference: str | None
    reference_value: float | None
    ratio: float | None
    outcome: str
    line: str

    @property
    def learned(self) -> bool:
        return self.outcome == "learned"

    def as_dict(self) -> dict[str, Any]:
        """The fields and ``learned``, JSON-ready."""
        return {**asdict(self), "learned": self.learned}


def _outcome(ratio: float, at: str, worse: str) -> str:
    if ratio <= LEARNED:
        return "learned"
    if ratio < PARTLY:
        return "partly learned"
    return f"{at if ratio <= _AT else worse}, not learned"


def verdict(
    task: str,
    metrics: Mapping[str, Any],
    baseline: float | None = None,
    num_classes: int | None = None,
    output_kind: str | None = None,
) -> Verdict:
    """Compare a run's last validation with its task's reference.

    Args:
        task: the task's name, the line's first word.
        metrics: the last logged values by key (a trainer's ``callback_metrics``): reads
            ``val/loss`` (with a ``baseline``) or ``val/acc`` (against chance).
        baseline: the loss of the memoryless predictor (the DataModule's ``baseline``).
        num_classes: classes of a classification task without a baseline.
        output_kind: the DataModule's ``output_kind``: chance is the reference only for
            ``last_class`` (one label per sequence).

    Returns:
        The :class:`Verdict`; its ``outcome`` is ``unknown`` when the metric is missing (no
        validation ran) or the task has no reference.
    """

    def get(key: str) -> float | None:
        value = metrics.get(key)
        return None if value is None else float(value)

    if baseline is not None:
        loss = get("val/loss")
        if loss is None:
            return _unknown(task, "val/loss", "no validation ran")
        ratio = loss / baseline
        outcome = _outcome(ratio, "at the baseline", "above the baseline")
        times = f"{ratio:.3f}" if ratio >= 0.01 else f"{ratio:.2g}"  # read against 0.1 and 1
        line = f"{task}: val loss {loss:.3g} = {times}x the memoryless baseline: {outcome}"
        return Verdict(
            task, "val/loss", loss, "memoryless baseline", baseline, ratio, outcome, line
        )
    if output_kind == "last_class" and num_classes and num_classes > 1:
        acc = get("val/acc")
        if acc is None:
            return _unknown(task, "val/acc", "no validation ran")
        chance = 1.0 / num_classes
        ratio = (1.0 - acc) / (1.0 - chance)
        outcome = _outcome(ratio, "at chance", "below chance")
        line = (
            f"{task}: val acc {100 * acc:.1f}% = {acc / chance:.2f}x chance "
            f"({100 * chance:.3g}%): {outcome}"
        )
        return Verdict(task, "val/acc", acc, "chance", chance, ratio, outcome, line)
    return _unknown(task, None, "no reference (no memoryless baseline, not a class per sequence)")


def _unknown(task: str, metric: str | None, why: str) -> Verdict:
    return Verdict(task, metric, None, None, None, None, "unknown", f"{task}: no verdict: {why}")
