"""What subnormal floats cost, and what flushing them saves (CPU, float32).

Two measurements, each a ratio taken side by side in one process (interleaved rounds,
medians of ``torch.utils.benchmark`` blocks):

1. **A kernel fed subnormal inputs.** The backward pass of a recurrent layer given an output
   gradient of subnormal numbers (``1e-39 * randn``: every product in it is subnormal) against
   the same call with a normal gradient (``randn``). seqnorm's native kernels flush subnormals
   themselves, so their ratio is ~1; torch's kernels, not flushed, show what the processor
   charges for subnormal arithmetic (large on Intel cores, small on some AMD ones).
2. **Two threads.** A training step with the last step's loss, ``torch.set_num_threads(2)``:
   torch as users run it, under ``torch.set_flush_denormal(True)`` (which sets the calling
   thread only: the pool's second thread keeps computing on subnormals) and under
   ``seqnorm.flush_denormal()`` (every thread of torch's pool).

    .venv/bin/python experiments/bench_denormal.py                 # results/denormal.md
    .venv/bin/python experiments/bench_denormal.py --quick         # small shape, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.utils.benchmark as benchmark
from bench_speed import cpu_features, cpu_model
from torch import nn

import seqnorm

ROOT = Path(__file__).resolve().parents[1]
OURS = {"rnn": seqnorm.SpectralRNN, "gru": seqnorm.SpectralGRU, "lstm": seqnorm.SpectralLSTM}
TORCH = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
SUBNORMAL = 1e-39


@contextlib.contextmanager
def calling_thread_flushed():  # noqa: ANN201
    """``torch.set_flush_denormal(True)`` as a user calls it (the calling thread only)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _timed(stmts: dict[str, tuple], rounds: int, min_run_time: float) -> dict[str, float]:
    """Median seconds of each ``name: (fn, context)``, in interleaved rounds."""
    timers = {
        k: benchmark.Timer(
            "with ctx(): fn()", globals={"fn": fn, "ctx": ctx}, num_threads=torch.get_num_threads()
        )  # fmt: skip
        for k, (fn, ctx) in stmts.items()
    }
    runs: dict[str, list] = {k: [] for k in timers}
    keys = list(timers)
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            runs[k].append(timers[k].blocked_autorange(min_run_time=min_run_time))
    return {k: benchmark.Measurement.merge(v)[0].median for k, v in runs.items()}


def subnormal_inputs(T: int, B: int, H: int, rounds: int, min_run_time: float) -> pd.DataFrame:
    """Backward with a subnormal output gradient over backward with a normal one."""
    rows = []
    x = torch.randn(T, B, 1)
    for layer in OURS:
        mods = {"seqnorm native": OURS[layer](1, H, constraint="none"), "torch": TORCH[layer](1, H)}
        for name, m in mods.items():
            if name == "seqnorm native":
                seqnorm.native.set_backend("native")
            try:
                out, _ = m(x)  # (T, B, H), its graph kept for repeated backward passes
                g = torch.randn_like(out)
                gs = g * SUBNORMAL  # every entry subnormal

                def back(grad: torch.Tensor, m: nn.Module = m, out: torch.Tensor = out) -> None:
                    torch.autograd.grad(out, list(m.parameters()), grad, retain_graph=True)

                t = _timed({"normal": (lambda g=g: back(g), contextlib.nullcontext),
                            "subnormal": (lambda gs=gs: back(gs), contextlib.nullcontext)},
                           rounds, min_run_time)  # fmt: skip
            finally:
                seqnorm.native.set_backend(None)
            rows.append(dict(layer=layer, kernel=name, normal_ms=1e3 * t["normal"],
                             subnormal_ms=1e3 * t["subnormal"],
                             ratio=t["subnormal"] / t["normal"]))  # fmt: skip
    return pd.DataFrame(rows)


def two_threads(T: int, B: int, H: int, rounds: int, min_run_time: float) -> pd.DataFrame:
    """Training step (last-step loss) of torch's layers on two threads, three ways."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    rows = []
    try:
        x = torch.randn(T, B, 1)
        for layer in ("gru", "lstm"):
            m = TORCH[layer](1, H)

            def step(m: nn.Module = m) -> None:
                out, _ = m(x)
                out[-1].sum().backward()
                m.zero_grad(set_to_none=True)

            t = _timed({"as users run it": (step, contextlib.nullcontext),
                        "torch.set_flush_denormal(True)": (step, calling_thread_flushed),
                        "seqnorm.flush_denormal()": (step, seqnorm.flush_denormal)},
                       rounds, min_run_time)  # fmt: skip
            base = t["as users run it"]
            for k, v in t.items():
                rows.append(dict(layer=layer, threads=2, mode=k, ms=1e3 * v, ratio=v / base))
    finally:
        torch.set_num_threads(n)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-run-time", type=float, default=0.5)
    p.add_argument("--quick", action="store_true", help="T=100, B=16, H=32; prints only")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "denormal.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seq_len, args.batch, args.hidden, args.rounds, args.min_run_time = 100, 16, 32, 1, 0.1
    torch.set_num_threads(1)
    shape = (args.seq_len, args.batch, args.hidden)
    sub = subnormal_inputs(*shape, args.rounds, args.min_run_time)
    two = two_threads(*shape, args.rounds, args.min_run_time)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    now = datetime.datetime.now(datetime.timezone.utc)
    text = "\n".join([
        "# Subnormal floats: what they cost, what flushing saves", "",
        f"- CPU: {cpu_model()} ({cpu_features()}); torch {torch.__version__}; git {commit}; "
        f"{now:%Y-%m-%d %H:%M} UTC; 1-min load {os.getloadavg()[0]:.1f} at the end",
        f"- T={args.seq_len}, B={args.batch}, H={args.hidden}, input size 1, float32; medians "
        f"of `blocked_autorange(min_run_time={args.min_run_time})` in {args.rounds} "
        "interleaved rounds", "- Regenerate: `.venv/bin/python experiments/bench_denormal.py`",
        "", "## A backward pass fed a subnormal output gradient (one thread)", "",
        "`ratio`: time with `1e-39 * randn` over time with `randn` as the output gradient.", "",
        sub.to_markdown(index=False, floatfmt=".3g"), "",
        "## Two threads: torch's layers, training step with the last step's loss", "",
        "`ratio`: time over the unflushed run's. `torch.set_flush_denormal(True)` sets the "
        "calling thread only; `seqnorm.flush_denormal()` every thread of torch's pool.", "",
        two.to_markdown(index=False, floatfmt=".3g"),
    ]) + "\n"  # fmt: skip
    print(text)
    if not args.quick:
        args.out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
