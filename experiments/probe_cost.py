"""What the gradient-flow monitors cost: training time with and without them.

Trains the model of ``configs/copy_gru.yaml`` (GRU, H=128, batch 128, T=100, spectral) for
``--steps`` steps, once with ``GradientFlowMonitor`` + ``SpectrumMonitor`` at their defaults
(every 100 steps, 32 probe samples, figures every 1000 steps and at the end) and once
without, alternating the two for ``--repeats`` rounds, one thread. Prints a table and writes
``experiments/results/probe_cost.md``.

    .venv/bin/python experiments/probe_cost.py              # ~6 min on one core
    .venv/bin/python experiments/probe_cost.py --steps 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytorch_lightning as pl
import torch

from seqnorm.callbacks import GradientFlowMonitor, SpectrumMonitor
from seqnorm.data import CopyMemoryDataModule
from seqnorm.model import SeqModel

OUT = Path(__file__).resolve().parent / "results" / "probe_cost.md"


def train_seconds(steps: int, monitors: bool, root: Path) -> float:
    """Wall time of ``trainer.fit`` (no validation), with or without the monitors."""
    pl.seed_everything(0, verbose=False)
    dm = CopyMemoryDataModule(seq_len=100, batch_size=128, num_train=128 * steps, num_val=256)
    model = SeqModel.from_datamodule(
        dm, cell="gru", hidden_size=128, constraint="spectral",
        optimizer=lambda p: torch.optim.RMSprop(p, lr=1e-3),
    )  # fmt: skip
    callbacks = [GradientFlowMonitor(), SpectrumMonitor()] if monitors else []
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=1, val_check_interval=steps,
        num_sanity_val_steps=0, logger=pl.loggers.CSVLogger(root, name="m" if monitors else "n"),
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for monitors in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
                times[monitors].append(train_seconds(args.steps, monitors, Path(tmp)))
                print(f"round {r}: monitors={monitors}: {times[monitors][-1]:.1f} s", flush=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    lines = [
        "# Cost of the gradient-flow monitors",
        "",
        f"- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, one "
        f"thread; copy task T=100, GRU H=128, batch 128, spectral; {args.steps} steps, "
        f"{args.repeats} alternating rounds, medians",
        "- Monitors: `GradientFlowMonitor()` + `SpectrumMonitor()` at their defaults (probe "
        "every 100 steps on 32 samples, figures every 1000 steps and at the end)",
        "- Regenerate: `python experiments/probe_cost.py`",
        "",
        "| training | median s | s per step | overhead |",
        "|---|---:|---:|---:|",
        f"| without monitors | {off:.1f} | {off / args.steps:.3f} | |",
        f"| with monitors | {on:.1f} | {on / args.steps:.3f} | {100 * (on / off - 1):+.1f}% |",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
