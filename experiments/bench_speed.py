"""Speed and memory of the seqnorm layers against torch's own recurrent layers (CPU).

For each layer type (rnn, gru, lstm) and each sequence length T this measures one training
step -- forward, ``loss = mean(output**2)``, backward, ``zero_grad`` -- for:

* ``torch.nn.RNN/GRU/LSTM``: the reference (ratio 1.00);
* the same torch layer again (a second instance): a noise gauge, its ratio shows how far two
  identical layers differ on this machine;
* ``torch.nn.utils.parametrizations.spectral_norm`` on the stacked ``weight_hh_l0`` (one
  sigma for the whole ``G*H x H`` matrix, not per gate), called as users call it, and again
  inside ``torch.nn.utils.parametrize.cached()``;
* ``seqnorm.Spectral{RNN,GRU,LSTM}`` for every constraint on the default (fused) path;
* the unrolled path (``layer.unroll = True``) for ``constraint="spectral"``.

Time: wall clock of one step, median over rounds. Within a round every variant of every layer
type runs once, in an order rotated from round to round, so machine noise (this is meant to
run on a shared machine) hits all variants alike. Warm-up rounds come first, and every row
runs with the same ``torch.set_num_threads``.

Memory: every (layer, variant, T) runs once more in a fresh subprocess, which builds the
layer, does a tiny warm-up step (T=2, to load kernels), resets the kernel's peak-RSS mark
(``VmHWM``, via ``/proc/self/clear_refs``), runs one full step and reports how far the peak
rose above the RSS before it: activations kept for backward, gradients and temporaries, as
the OS saw them (glibc returns large blocks to the OS, so this is what a process needs).
``VmHWM`` rather than ``ru_maxrss``, which in a child also counts its parent's peak.

Targets (from the issue): seqnorm layer / torch layer <= 1.05 at T=784; the growth of the
per-step cost from the smallest to the largest T within 1.1x of torch's own growth (a
backward that is O(T^2) fails it); peak memory <= 1.2x torch's.

    .venv/bin/python experiments/bench_speed.py            # full run, ~15 min on 2 cores
    .venv/bin/python experiments/bench_speed.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

import seqnorm

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("rnn", "gru", "lstm")
CONSTRAINTS = ("none", "spectral", "scaled", "bound", "band", "orthogonal")
TORCH_LAYERS: dict[str, type[nn.Module]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
SEQNORM_LAYERS: dict[str, type[nn.Module]] = {
    "rnn": seqnorm.SpectralRNN,
    "gru": seqnorm.SpectralGRU,
    "lstm": seqnorm.SpectralLSTM,
}
TARGET_RATIO, TARGET_T, TARGET_GROWTH, TARGET_MEMORY = 1.05, 784, 1.1, 1.2


# ------------------------------------------------------------------------------- variants


def variant_keys(constraints: list[str], unrolled: list[str]) -> list[str]:
    """Variant keys in table order: torch ones first, then ``sn:<constraint>[:unrolled]``."""
    keys = ["torch", "torch-gauge", "torch-sn", "torch-sn-cached"]
    keys += [f"sn:{c}" for c in constraints]
    keys += [f"sn:{c}:unrolled" for c in unrolled]
    return keys


def variant_label(key: str, layer: str) -> str:
    torch_name = f"torch.nn.{TORCH_LAYERS[layer].__name__}"
    labels = {
        "torch": torch_name,
        "torch-gauge": f"{torch_name}, 2nd instance (noise gauge)",
        "torch-sn": "torch spectral_norm (stacked W_hh)",
        "torch-sn-cached": "torch spectral_norm (stacked W_hh) + cached()",
    }
    if key in labels:
        return labels[key]
    _, constraint, *tail = key.split(":")
    return f"seqnorm {constraint}" + (", unroll=True" if tail else "")


def is_target_row(key: str) -> bool:
    """Rows the issue's targets are about: seqnorm layers on their default (fused) path."""
    return key.startswith("sn:") and not key.endswith(":unrolled")


def build(
    layer: str, key: str, input_size: int, hidden: int
) -> tuple[nn.Module, Callable[[], contextlib.AbstractContextManager]]:
    """The module of one variant, in training mode, and the context its forward runs in."""
    torch.manual_seed(0)
    if key.startswith("torch"):
        module = TORCH_LAYERS[layer](input_size, hidden)
        if key.startswith("torch-sn"):
            spectral_norm(module, "weight_hh_l0")
    else:
        _, constraint, *tail = key.split(":")
        module = SEQNORM_LAYERS[layer](input_size, hidden, constraint=constraint)
        module.unroll = bool(tail)
    module.train()
    ctx = parametrize.cached if key == "torch-sn-cached" else contextlib.nullcontext
    return module, ctx


def train_step(
    module: nn.Module, ctx: Callable[[], contextlib.AbstractContextManager], x: Tensor
) -> None:
    """Forward, mean-square loss, backward, zero the gradients."""
    with ctx():
        out, _ = module(x)  # (T, B, H)
    out.square().mean().backward()
    module.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------- timing


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def time_all(
    args: argparse.Namespace, keys: list[str], T: int, repeats: int
) -> dict[tuple[str, str], list[float]]:
    """Seconds per step of every (layer, variant) at length ``T``, interleaved round-robin."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, args.batch, args.input_size, generator=gen)  # (T, B, I)
    entries = [
        (layer, key, *build(layer, key, args.input_size, args.hidden))
        for layer in args.layers
        for key in keys
    ]
    times: dict[tuple[str, str], list[float]] = {(e[0], e[1]): [] for e in entries}
    for _ in range(args.warmup):
        for _, _, module, ctx in entries:
            train_step(module, ctx, x)
    for r in range(repeats):
        shift = r % len(entries)
        for layer, key, module, ctx in entries[shift:] + entries[:shift]:
            start = time.perf_counter()
            train_step(module, ctx, x)
            times[layer, key].append(time.perf_counter() - start)
        log(f"T={T}: round {r + 1}/{repeats} done")
    del entries
    gc.collect()
    return times


# ---------------------------------------------------------------------------------- memory


def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB; None without /proc."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_child(args: argparse.Namespace) -> None:
    """Run in a fresh process: print the rise of peak RSS (KiB) caused by one full step.

    After imports, construction and a T=2 warm-up step the peak mark ``VmHWM`` is reset to
    the current RSS; the rise of ``VmHWM`` over that RSS is what the step needed. ``VmHWM``
    and not ``ru_maxrss``: a child's ``ru_maxrss`` also counts the peak its parent had when
    it forked (the kernel carries it across ``exec``), which here would be the timing run's
    gigabytes. Without /proc it falls back to the rise of ``ru_maxrss`` and says so.
    """
    layer, key, T = args.mem_child[0], args.mem_child[1], int(args.mem_child[2])
    torch.set_num_threads(args.threads)
    module, ctx = build(layer, key, args.input_size, args.hidden)
    gen = torch.Generator().manual_seed(1)
    train_step(module, ctx, torch.randn(2, args.batch, args.input_size, generator=gen))
    x = torch.randn(T, args.batch, args.input_size, generator=gen)  # (T, B, I)
    gc.collect()
    exact = reset_peak_rss() and proc_status_kib("VmRSS") is not None
    if exact:
        base = proc_status_kib("VmRSS")
        train_step(module, ctx, x)
        peak = proc_status_kib("VmHWM")
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        train_step(module, ctx, x)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_kib": peak - base, "reset": exact}))


def measure_memory(args: argparse.Namespace, layer: str, key: str, T: int) -> float:
    """Peak RSS rise in MiB of one step of ``(layer, key)`` at length ``T``, in a subprocess."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--mem-child",
        layer,
        key,
        str(T),
        "--batch",
        str(args.batch),
        "--hidden",
        str(args.hidden),
        "--input-size",
        str(args.input_size),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"memory run {layer}/{key}/T={T} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["reset"]:
        log(f"memory {layer}/{key}/T={T}: peak mark not resettable, used ru_maxrss rise")
    return result["peak_kib"] / 1024


# --------------------------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu} ({os.cpu_count()} logical CPUs visible)"


def git_state() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()
    return "unknown"


def num(x: float) -> str:
    """About three significant digits, never in exponent notation."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def verdict(median_based: float, best_based: float, target: float) -> str:
    """PASS/FAIL on the median; flagged when the best-of-rounds value says otherwise."""
    ok = median_based <= target
    cell = f"{median_based:.2f} {'PASS' if ok else 'FAIL'}"
    if ok != (best_based <= target):
        cell += f" (best-of-rounds {best_based:.2f}: within noise)"
    return cell


def report(
    args: argparse.Namespace,
    keys: list[str],
    times: dict[tuple[str, str, int], list[float]],
    memory: dict[tuple[str, str, int], float],
    header: list[str],
) -> str:
    Ts = args.seq_lens
    t_lo, t_hi = min(Ts), max(Ts)
    t_ref = TARGET_T if TARGET_T in Ts else t_hi
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    best = {k: 1000 * min(v) for k, v in times.items()}

    def ratio(stat: dict, layer: str, key: str, T: int) -> float:
        return stat[layer, key, T] / stat[layer, "torch", T]

    def growth(stat: dict, layer: str, key: str) -> float:
        own = (stat[layer, key, t_hi] / t_hi) / (stat[layer, key, t_lo] / t_lo)
        ref = (stat[layer, "torch", t_hi] / t_hi) / (stat[layer, "torch", t_lo] / t_lo)
        return own / ref

    lines = header + [
        "",
        "Columns: median ms per training step (forward + backward + zero_grad) and the",
        "min-max over rounds; ratio = median / median of the torch layer at the same T;",
        "best ratio = min / min of the torch layer (less sensitive to other processes' load);",
        "ms/step = median / T; growth = (ms/step at T_max / ms/step at T_min) of the row",
        f"divided by the same for the torch layer (T_min={t_lo}, T_max={t_hi}; shown on the",
        "T_max row); peak MiB = rise of peak RSS during one step in a fresh process; mem ratio",
        "= peak MiB / torch's at the same T.",
    ]
    summary = []
    for layer in args.layers:
        lines += [
            "",
            f"### {layer}",
            "",
            "| variant | T | median ms | min-max ms | ratio | best ratio | ms/step | growth "
            "| peak MiB | mem ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in keys:
            for T in Ts:
                g = f"{growth(med, layer, key):.2f}" if T == t_hi and len(Ts) > 1 else ""
                mem = memory.get((layer, key, T))
                ref_mem = memory.get((layer, "torch", T))
                mem_s = "" if mem is None else num(mem)
                mem_r = "" if mem is None or not ref_mem else f"{mem / ref_mem:.2f}"
                lines.append(
                    f"| {variant_label(key, layer)} | {T} | {num(med[layer, key, T])} "
                    f"| {num(best[layer, key, T])}-{num(1000 * max(times[layer, key, T]))} "
                    f"| {ratio(med, layer, key, T):.2f} | {ratio(best, layer, key, T):.2f} "
                    f"| {med[layer, key, T] / T:.3f} | {g} | {mem_s} | {mem_r} |"
                )
        for key in keys[1:]:
            cells = [
                layer,
                variant_label(key, layer),
                verdict(
                    ratio(med, layer, key, t_ref), ratio(best, layer, key, t_ref), TARGET_RATIO
                ),
            ]
            if len(Ts) > 1:
                g_med, g_best = growth(med, layer, key), growth(best, layer, key)
                cells.append(verdict(g_med, g_best, TARGET_GROWTH))
            else:
                cells.append("n/a")
            mem_ratios = [
                memory[layer, key, T] / memory[layer, "torch", T]
                for T in Ts
                if (layer, key, T) in memory and memory[layer, "torch", T]
            ]
            worst = max(mem_ratios) if mem_ratios else None
            cells.append("n/a" if worst is None else verdict(worst, worst, TARGET_MEMORY))
            summary.append((is_target_row(key), cells))
    gauge = ", ".join(
        f"{layer} {ratio(med, layer, 'torch-gauge', t_ref):.2f} "
        f"(best {ratio(best, layer, 'torch-gauge', t_ref):.2f})"
        for layer in args.layers
        if (layer, "torch-gauge", t_ref) in med
    )
    head = [
        "",
        "## Summary",
        "",
        f"Targets: time ratio at T={t_ref} <= {TARGET_RATIO}"
        + ("" if t_ref == TARGET_T else f" (T={TARGET_T} not measured; largest T used)")
        + f"; per-step growth T={t_lo}->{t_hi} <= {TARGET_GROWTH}x torch's; peak memory"
        f" <= {TARGET_MEMORY}x torch's (worst T).",
        "",
        "PASS/FAIL is decided on the medians as measured. Where the best-of-rounds value",
        "gives the other verdict the cell says so (within noise). The noise gauge (a 2nd",
        "instance of the torch layer; its true ratio is 1.00) shows what noise alone does on",
        f"this machine at T={t_ref}: {gauge}.",
        "",
    ]
    table = [
        "| layer | variant | time ratio | growth | memory ratio (worst T) |",
        "|---|---|---|---|---|",
    ]
    lines += head + ["Issue targets (seqnorm layers, default fused path):", ""] + table
    lines += [f"| {' | '.join(c)} |" for target, c in summary if target]
    lines += ["", "For reference (not held to the targets):", ""] + table
    lines += [f"| {' | '.join(c)} |" for target, c in summary if not target]
    rows = [c for target, c in summary if target]
    fails = sum("FAIL" in " ".join(c) for c in rows)
    noisy = sum("FAIL" in " ".join(c) and "within noise" in " ".join(c) for c in rows)
    lines += [
        "",
        f"Issue-target rows with any FAIL: {fails} of {len(rows)}"
        + (f" ({noisy} of them flagged within noise)." if noisy else "."),
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ main


def csv(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",") if part.strip()]

    return parse


def default_repeats(T: int) -> int:
    return 11 if T <= 200 else 7 if T <= 1000 else 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seq-lens", type=csv(int), default=[100, 784, 2000], help="comma list of T")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--input-size", type=int, default=1)
    p.add_argument(
        "--repeats",
        type=csv(int),
        default=None,
        help="timed rounds: one value for every T or one per T "
        "(default 11 for T<=200, 7 for T<=1000, 3 above)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every row")
    p.add_argument("--layers", type=csv(str), default=list(LAYERS), help="comma list")
    p.add_argument("--constraints", type=csv(str), default=list(CONSTRAINTS), help="comma list")
    p.add_argument(
        "--unrolled",
        type=csv(str),
        default=["spectral"],
        help="constraints also timed with unroll=True ('' for none)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--mem-jobs", type=int, default=2, help="memory subprocesses run at once")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: T=20,60, B=16, H=32, 2 rounds, memory at T=60; writes only with --out",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file (default experiments/results/speed.md, none with --quick)",
    )
    p.add_argument("--mem-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seq_lens, args.batch, args.hidden = [20, 60], 16, 32
        args.repeats = args.repeats or [2]
    if args.out is None and not args.quick:
        args.out = REPO / "experiments" / "results" / "speed.md"
    for name in ("batch", "hidden", "input_size", "threads", "mem_jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if not args.seq_lens or min(args.seq_lens) < 1:
        p.error(f"--seq-lens must be positive integers, got {args.seq_lens}")
    if bad := sorted(set(args.layers) - set(LAYERS)):
        p.error(f"--layers must be among {','.join(LAYERS)}, got {bad}")
    for opt in ("constraints", "unrolled"):
        if bad := sorted(set(getattr(args, opt)) - set(CONSTRAINTS)):
            p.error(f"--{opt} must be among {','.join(CONSTRAINTS)}, got {bad}")
    if args.repeats is None:
        args.repeats = [default_repeats(T) for T in args.seq_lens]
    elif len(args.repeats) == 1:
        args.repeats = args.repeats * len(args.seq_lens)
    elif len(args.repeats) != len(args.seq_lens):
        p.error(f"--repeats needs 1 or {len(args.seq_lens)} values, got {args.repeats}")
    if min(args.repeats) < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


@contextlib.contextmanager
def stopwatch(what: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    log(f"{what} took {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mem_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    keys = variant_keys(args.constraints, args.unrolled)
    command = shlex.join(["python", "experiments/bench_speed.py", *sys.argv[1:]])
    load_before = os.getloadavg()
    started = datetime.datetime.now().astimezone()

    times: dict[tuple[str, str, int], list[float]] = {}
    with stopwatch("timing"):
        for T, repeats in zip(args.seq_lens, args.repeats, strict=True):
            for (layer, key), runs in time_all(args, keys, T, repeats).items():
                times[layer, key, T] = runs

    memory: dict[tuple[str, str, int], float] = {}
    if not args.no_memory:
        mem_lens = [max(args.seq_lens)] if args.quick else args.seq_lens
        jobs = [(layer, key, T) for T in mem_lens for layer in args.layers for key in keys]
        with (
            stopwatch(f"memory ({len(jobs)} subprocesses)"),
            ThreadPoolExecutor(args.mem_jobs) as pool,
        ):
            for job, mib in zip(
                jobs, pool.map(lambda j: measure_memory(args, *j), jobs), strict=True
            ):
                memory[job] = mib

    load_after = os.getloadavg()
    elapsed = (datetime.datetime.now().astimezone() - started).total_seconds()
    header = [
        "# Speed and memory: seqnorm layers vs torch recurrent layers (CPU, training step)",
        "",
        f"- Machine: {machine()}; torch.set_num_threads({args.threads}) for every row",
        f"- torch {torch.__version__}, Python {platform.python_version()}, seqnorm "
        f"{seqnorm.__version__} (git {git_state()})",
        f"- Date: {started:%Y-%m-%d %H:%M %Z}; run took {elapsed / 60:.1f} min; 1-min load "
        f"average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end",
        f"- Shapes: B={args.batch}, H={args.hidden}, input size {args.input_size}, "
        f"T in {args.seq_lens}; timed rounds per T {args.repeats} after {args.warmup} warm-up "
        "round(s), variants interleaved round-robin (order rotated every round)",
        "- Memory: one step in a fresh subprocess per row; after imports, construction and a"
        " T=2 warm-up step the kernel's peak-RSS mark is reset (`/proc/self/clear_refs`), then"
        " peak MiB = `VmHWM` after the step - `VmRSS` before it (not `ru_maxrss`: a child's"
        " `ru_maxrss` includes its parent's peak)"
        + (" (skipped)" if args.no_memory else " (largest T only)" if args.quick else ""),
        f"- Regenerate: `{command}` (from the repository root, with the project's venv)",
    ]
    text = report(args, keys, times, memory, header)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
