"""Speed and memory of the seqnorm layers against torch's own recurrent layers (CPU).

For each layer type (rnn, gru, lstm) and each sequence length T, one training step --
forward, ``loss = mean(output**2)``, backward, ``zero_grad`` -- of:

* ``torch.nn.RNN/GRU/LSTM`` (the reference, ratio 1.00) and a second instance of it (a noise
  gauge: its true ratio is 1.00, so its measured ratio shows the machine's noise);
* ``torch.nn.utils.parametrizations.spectral_norm`` on the stacked ``weight_hh_l0``, plain and
  inside ``parametrize.cached()``;
* ``seqnorm.Spectral{RNN,GRU,LSTM}`` for every constraint (fused path), and ``unroll=True``
  for ``spectral``.

Time: ``torch.utils.benchmark.Timer.blocked_autorange``, in rounds that visit every row in an
order rotated from round to round; each row's blocks merged (median and IQR over blocks).
Memory (which torch.utils.benchmark does not measure): each row runs once more in a fresh
subprocess that resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) after a T=2
warm-up step and reports how far ``VmHWM`` rose above ``VmRSS`` during one full step
(``VmHWM``, not ``ru_maxrss``, which in a child also counts its parent's peak).

Targets (issue 4): seqnorm / torch <= 1.05 at T=784; the growth of the per-step cost from the
smallest to the largest T within 1.1x of torch's own; peak memory <= 1.2x torch's.

    .venv/bin/python experiments/bench_speed.py           # experiments/results/speed.md
    .venv/bin/python experiments/bench_speed.py --quick   # smoke run, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.utils.benchmark as benchmark
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

import seqnorm

ROOT = Path(__file__).resolve().parents[1]
TORCH = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
OURS = {"rnn": seqnorm.SpectralRNN, "gru": seqnorm.SpectralGRU, "lstm": seqnorm.SpectralLSTM}
CONSTRAINTS = ("none", "spectral", "scaled", "bound", "band", "orthogonal")
VARIANTS = ["torch", "torch (2nd instance, noise gauge)", "torch spectral_norm",
            "torch spectral_norm + cached()", *CONSTRAINTS, "spectral, unroll=True"]  # fmt: skip
RATIO, RATIO_T, GROWTH, MEMORY = 1.05, 784, 1.1, 1.2


def build(layer: str, variant: str, hidden: int):  # noqa: ANN201
    """The module of one row (training mode) and the context its forward runs in."""
    torch.manual_seed(0)
    if variant.startswith("torch"):
        module = TORCH[layer](1, hidden)
        if "spectral_norm" in variant:
            spectral_norm(module, "weight_hh_l0")
    else:
        constraint = variant.split(",")[0]
        module = OURS[layer](1, hidden, constraint=constraint)
        module.unroll = "unroll" in variant
    return module.train(), parametrize.cached if "cached" in variant else contextlib.nullcontext


def step(module: nn.Module, ctx, x: torch.Tensor) -> None:  # noqa: ANN001
    """Forward, mean-square loss, backward, zero the gradients."""
    with ctx():
        out, _ = module(x)  # (T, B, H)
    out.square().mean().backward()
    module.zero_grad(set_to_none=True)


def peak_mib(layer: str, variant: str, T: int, batch: int, hidden: int) -> float:
    """Rise of peak RSS (MiB) during one step, measured in a fresh subprocess."""
    code = (
        "import json, sys; sys.path.insert(0, 'experiments'); import torch, bench_speed as b; "
        f"torch.set_num_threads(1); m, c = b.build({layer!r}, {variant!r}, {hidden}); "
        f"b.step(m, c, torch.randn(2, {batch}, 1)); x = torch.randn({T}, {batch}, 1); "
        "open('/proc/self/clear_refs', 'w').write('5'); r0 = b.status('VmRSS'); b.step(m, c, x); "
        "print(json.dumps((b.status('VmHWM') - r0) / 1024))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"memory run {layer}/{variant}/T={T} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def status(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    line = next(
        ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field)
    )
    return int(line.split()[1])


def measure(args: argparse.Namespace) -> pd.DataFrame:
    """Every row at every T: ``args.rounds`` rounds, each timing every row once in an order
    rotated from round to round (so a shared machine's load hits all rows alike); a row's
    blocks from all rounds are merged into one ``Measurement``."""
    rows = []
    for T in args.seq_lens:
        x = torch.randn(T, args.batch, 1, generator=torch.Generator().manual_seed(1))  # (T, B, 1)
        timers = {}
        for layer in args.layers:
            for variant in args.variants:
                module, ctx = build(layer, variant, args.hidden)
                step(module, ctx, x)  # warm-up
                timers[layer, variant] = benchmark.Timer(
                    "step(module, ctx, x)",
                    globals=dict(step=step, module=module, ctx=ctx, x=x),
                    num_threads=1,
                )
        done: dict = {k: [] for k in timers}
        keys = list(timers)
        for r in range(args.rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                done[key].append(timers[key].blocked_autorange(min_run_time=args.min_run_time))
        for (layer, variant), ms in done.items():
            m = benchmark.Measurement.merge(ms)[0]
            mem = (
                float("nan")
                if args.no_memory
                else peak_mib(layer, variant, T, args.batch, args.hidden)
            )
            rows.append(dict(layer=layer, variant=variant, T=T, ms=1e3 * m.median,
                             iqr_ms=1e3 * m.iqr, blocks=len(m.times), peak_mib=mem))  # fmt: skip
            print(f"{layer} {variant} T={T}: {1e3 * m.median:.1f} ms", file=sys.stderr)
    return pd.DataFrame(rows)


def tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measurements with ratios to torch, and the per-row verdicts on the targets."""
    ref = df[df.variant == "torch"].set_index(["layer", "T"])
    key = pd.MultiIndex.from_frame(df[["layer", "T"]])
    df = df.assign(ratio=df.ms.values / ref.ms.reindex(key).values,
                   mem_ratio=df.peak_mib.values / ref.peak_mib.reindex(key).values)  # fmt: skip
    t_lo, t_hi = df["T"].min(), df["T"].max()
    t_ref = RATIO_T if RATIO_T in set(df["T"]) else t_hi
    per_step = df.assign(per=df.ms / df["T"]).pivot_table("per", ["layer", "variant"], "T")
    growth = per_step[t_hi] / per_step[t_lo]
    growth = growth / growth.xs("torch", level="variant").reindex(growth.index, level="layer")
    verdict = (
        df[df["T"] == t_ref]
        .set_index(["layer", "variant"])[["ratio"]]
        .assign(growth=growth, worst_mem_ratio=df.groupby(["layer", "variant"]).mem_ratio.max())
    )
    verdict["pass"] = (
        (verdict.ratio <= RATIO) & (verdict.growth <= GROWTH)
        & (verdict.worst_mem_ratio.fillna(0) <= MEMORY)
    )  # fmt: skip
    return df, verdict.reset_index()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--seq-lens", type=lambda s: [int(t) for t in s.split(",")], default=[100, 784, 2000]
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=lambda s: s.split(","), default=list(TORCH))
    p.add_argument("--variants", type=lambda s: s.split(";"), default=VARIANTS, help="';' list")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per T")
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds per row and round")
    p.add_argument("--no-memory", action="store_true", help="skip the RSS subprocesses")
    p.add_argument("--quick", action="store_true", help="T=20,60, B=16, H=32; prints only")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "speed.md")
    args = p.parse_args(argv)
    if bad := sorted(set(args.variants) - set(VARIANTS)):
        p.error(f"--variants must be among {VARIANTS}, got {bad}")
    if args.quick:
        args.seq_lens, args.batch, args.hidden, args.min_run_time = [20, 60], 16, 32, 0.05
    torch.set_num_threads(1)
    started, load = datetime.datetime.now(datetime.timezone.utc), os.getloadavg()[0]
    df, verdict = tables(measure(args))
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    text = "\n".join([
        "# Speed and memory: seqnorm layers vs torch recurrent layers (CPU, training step)", "",
        f"- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, one thread; torch "
        f"{torch.__version__}; git {commit}; {started:%Y-%m-%d %H:%M} UTC; 1-min load {load:.1f}",
        f"- B={args.batch}, H={args.hidden}, input size 1; `torch.utils.benchmark.Timer."
        f"blocked_autorange(min_run_time={args.min_run_time})` in {args.rounds} interleaved "
        "rounds: median and IQR of all blocks; "
        "peak MiB: rise of `VmHWM` over `VmRSS` during one step in a fresh process",
        f"- Targets: ratio <= {RATIO} at T={RATIO_T}; per-step growth smallest->largest T "
        f"<= {GROWTH}x torch's; peak memory <= {MEMORY}x torch's (worst T)",
        "- Regenerate: `python experiments/bench_speed.py`", "",
        "## Verdicts", "", verdict.to_markdown(index=False, floatfmt=".2f"), "",
        "## Measurements", "", df.to_markdown(index=False, floatfmt=".3g"),
    ]) + "\n"  # fmt: skip
    print(text)
    if not args.quick:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
