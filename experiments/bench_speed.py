"""Speed and memory of the seqnorm layers against torch's own recurrent layers (CPU).

For each layer type (rnn, gru, lstm) and each sequence length T, one training step --
forward, the loss, backward, ``zero_grad`` -- of the rows below. ``--loss`` picks the loss:

* ``last`` (what the benchmarks and every sequence classifier train on): the last step's
  output, ``output[-1].sum()``. The gradient then reaches step t only through T - t Jacobians
  and decays below float32's normal range (1.2e-38) within a few hundred steps: on x86 cores
  arithmetic on such subnormal numbers is many times slower unless they are flushed to zero;
* ``mean``: ``mean(output**2)``, a direct gradient at every step (none of them subnormal).

Rows:

* ``torch.nn.RNN/GRU/LSTM`` (the reference, ratio 1.00) and a second instance of it (a noise
  gauge: its true ratio is 1.00, so its measured ratio shows the machine's noise);
* ``torch, flushed``: the same torch layer run under ``torch.set_flush_denormal(True)`` (its
  ratio shows what subnormals cost torch's kernels; ``vs_flushed`` divides by its time);
* ``torch.nn.utils.parametrizations.spectral_norm`` on the stacked ``weight_hh_l0``, plain and
  inside ``parametrize.cached()``;
* ``seqnorm.Spectral{RNN,GRU,LSTM}`` for every constraint (on the active backend: seqnorm's
  native kernels when they build, see ``seqnorm.native.backend()``), ``unroll=True`` for
  ``spectral``, and ``spectral, torch kernel`` (the same layer with the backend set to torch);
* ``GEMM floor``: the per-step ``h @ W_hh^T`` and ``dh`` GEMMs and the one ``dW_hh`` GEMM alone,
  on the native kernels' GEMM (oneDNN brgemm; ``torch.mm`` where the kernels do not build),
  and ``GEMM floor, torch.mm`` the same on ``torch.mm`` (MKL's sgemm);
* layer ``modrelu``: ``SpectralRNN(nonlinearity="modrelu")`` against torch's tanh RNN;
* ``LRU (psmnist_lru.yaml)``: the deep LRU of ``configs/psmnist_lru.yaml`` at that config's
  sizes (encoder, blocks, dropout; :class:`seqnorm.LRUStack`), on the native scan, and ``...,
  torch scan`` the same model with the scan stepped in torch ops (the backend set to torch);
  ``LRU layer``: ``Linear(1, H)`` then one ``seqnorm.LRU(H, H)``, the layer alone at the
  bench's width. They do not depend on the layer type: run them with ``--layers gru`` to
  read them beside the GRU (their ratio is to torch's GRU), e.g.
  ``--layers gru --variants "torch;spectral;LRU (psmnist_lru.yaml);LRU layer"``.

Every row is timed as a training step (``train``) and forward only without a graph (``fwd``).

Time: ``torch.utils.benchmark.Timer.blocked_autorange``, in rounds that visit every row in an
order rotated from round to round; each row's blocks merged (median and IQR over blocks).
Memory (which torch.utils.benchmark does not measure): each row runs once more in a fresh
subprocess that resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) after a T=2
warm-up step and reports how far ``VmHWM`` rose above ``VmRSS`` during one full step
(``VmHWM``, not ``ru_maxrss``, which in a child also counts its parent's peak).

Targets: seqnorm / torch <= 1.05 at T=784; the growth of the per-step cost from the smallest
to the largest T within 1.1x of torch's own; peak memory <= 1.2x torch's. For the native
``spectral`` rows, ``TARGETS`` (by loss and shape): training-step ratios to torch as users run
it and to torch with subnormals flushed (``last``), or training / forward ratios (``mean``).

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
TORCH = {"rnn": nn.RNN, "modrelu": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
OURS = {"rnn": seqnorm.SpectralRNN, "modrelu": seqnorm.SpectralRNN, "gru": seqnorm.SpectralGRU,
        "lstm": seqnorm.SpectralLSTM}  # fmt: skip
GATES = {"rnn": 1, "modrelu": 1, "gru": 3, "lstm": 4}
CONSTRAINTS = ("none", "spectral", "scaled", "bound", "band", "orthogonal")
NATIVE = ["spectral, torch kernel", "GEMM floor", "GEMM floor, torch.mm"]
LRU_ROWS = ["LRU (psmnist_lru.yaml)", "LRU (psmnist_lru.yaml), torch scan", "LRU layer"]
VARIANTS = ["torch", "torch, flushed", "torch (2nd instance, noise gauge)", "torch spectral_norm",
            "torch spectral_norm + cached()", *CONSTRAINTS, "spectral, unroll=True",
            *NATIVE, *LRU_ROWS]  # fmt: skip
LRU_CONFIG = ROOT / "configs" / "psmnist_lru.yaml"
PASSES = ("train", "fwd")
LOSSES = ("last", "mean")
RATIO, RATIO_T, GROWTH, MEMORY = 1.05, 784, 1.1, 1.2
#: The targets of seqnorm's native "spectral" rows, ratios to torch's own layer (modReLU: to
#: torch's tanh RNN), plain python, one thread. ``mean`` loss: (training step, forward only).
#: ``last`` loss, by (T, B, H): (training step vs torch as users run it, vs torch flushed).
TARGETS_MEAN = {"gru": (0.5, 0.6), "rnn": (0.7, 0.7), "modrelu": (0.6, 0.8), "lstm": (0.6, 1.0)}
NAN = float("nan")
TARGETS_LAST = {
    (784, 128, 128): {"gru": (0.15, 0.45), "lstm": (0.1, 0.55), "rnn": (0.25, 0.65),
                      "modrelu": (0.25, 0.65)},
    (100, 64, 512): {"gru": (NAN, 0.7), "lstm": (NAN, 0.9), "rnn": (NAN, 0.75),
                     "modrelu": (NAN, 0.75)},
}  # fmt: skip


class Floor(nn.Module):
    """The GEMMs any implementation must do (the floor): per step ``h @ W_hh^T`` forward and
    ``dgates @ W_hh`` backward, and one ``dW_hh`` over all ``T*B`` rows.

    ``gemm="native"``: on the GEMM the native kernels call (``seqnorm.native.gemm``: oneDNN's
    brgemm micro-kernel); ``gemm="torch"``: ``torch.mm`` (the BLAS torch links, MKL here)."""

    def __init__(self, layer: str, hidden: int, gemm: str = "native") -> None:
        super().__init__()
        self.w = torch.randn(GATES[layer] * hidden, hidden) * hidden**-0.5  # (G*H, H)
        self.wt = self.w.t().contiguous()  # (H, G*H)
        self.hidden = hidden
        if gemm == "native":
            from seqnorm.native.gemm import gemm_

            self.mm = lambda a, b, out: gemm_(a, b, out)
        else:
            self.mm = lambda a, b, out: torch.mm(a, b, out=out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        T, B = x.shape[:2]
        if getattr(self, "shape", None) != (T, B):  # buffers reused: no page faults in the floor
            self.shape, self.h = (T, B), x.new_zeros(B, self.hidden)  # (B, H)
            self.g = x.new_zeros(T, B, self.w.shape[0])  # (T, B, G*H)
            self.dh, self.hs = x.new_zeros(B, self.hidden), x.new_zeros(self.hidden, T * B)
            self.dw = x.new_zeros(self.hidden, self.w.shape[0])  # (H, G*H) = dW_hh^T
        h, g, dh, mm = self.h, self.g, self.dh, self.mm
        for t in range(T):
            mm(h, self.wt, g[t])
        if torch.is_grad_enabled():
            for t in range(T):
                mm(g[t], self.w, dh)
            mm(self.hs, g.view(T * B, -1), self.dw)  # (H, T*B) @ (T*B, G*H)
        return g.new_zeros(1, requires_grad=True), None


class LRULayer(nn.Module):
    """``Linear(1, H)`` then ``seqnorm.LRU(H, H)``: the LRU layer alone at width ``H``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(1, hidden)
        self.lru = seqnorm.LRU(hidden, hidden, r_min=0.9, r_max=0.999)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lru(self.encoder(x))


def lru_model(variant: str, hidden: int) -> nn.Module:
    """The module of an LRU row: the config's deep LRU, or :class:`LRULayer`."""
    if variant == "LRU layer":
        return LRULayer(hidden)
    import yaml

    m = yaml.safe_load(LRU_CONFIG.read_text())["model"]
    return seqnorm.LRUStack(1, m["hidden_size"], m.get("num_layers", 1),
                            dropout=m.get("dropout", 0.0), constraint=m.get("constraint", "none"),
                            constraint_options=m.get("constraint_options"),
                            **m.get("lru_options", {}))  # fmt: skip


@contextlib.contextmanager
def torch_kernel():  # noqa: ANN201
    """seqnorm's layer on torch's kernels (the native backend switched off)."""
    seqnorm.native.set_backend("torch")
    try:
        yield
    finally:
        seqnorm.native.set_backend(None)


@contextlib.contextmanager
def flushed():  # noqa: ANN201
    """torch as a user who calls ``torch.set_flush_denormal(True)`` runs it (one thread)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def native_kernel():  # noqa: ANN201
    """seqnorm's layer on its native kernels, also where ``auto`` would pick torch's (LSTM)."""
    seqnorm.native.set_backend("native")
    try:
        yield
    finally:
        seqnorm.native.set_backend(None)


def build(layer: str, variant: str, hidden: int):  # noqa: ANN201
    """The module of one row (training mode) and the context its forward runs in."""
    torch.manual_seed(0)
    if variant.startswith("GEMM floor"):
        gemm = "torch" if "torch.mm" in variant or not seqnorm.native.available() else "native"
        return Floor(layer, hidden, gemm), contextlib.nullcontext
    if variant in LRU_ROWS:
        native = seqnorm.native.available() and "torch scan" not in variant
        return lru_model(variant, hidden).train(), native_kernel if native else torch_kernel
    nonlin = {"nonlinearity": "modrelu"} if layer == "modrelu" else {}
    if variant == "spectral, torch kernel":
        return OURS[layer](1, hidden, constraint="spectral", **nonlin).train(), torch_kernel
    if variant.startswith("torch"):
        module = TORCH[layer](1, hidden)
        if "spectral_norm" in variant:
            spectral_norm(module, "weight_hh_l0")
    else:
        constraint = variant.split(",")[0]
        module = OURS[layer](1, hidden, constraint=constraint, **nonlin)
        module.unroll = "unroll" in variant
    if "cached" in variant:
        return module.train(), parametrize.cached
    if variant == "torch, flushed":
        return module.train(), flushed
    ours = isinstance(module, tuple(OURS.values()))
    if ours and not module.unroll and seqnorm.native.available():  # seqnorm's: native kernels
        return module.train(), native_kernel
    return module.train(), contextlib.nullcontext


def step(module: nn.Module, ctx, x: torch.Tensor, loss: str = "mean") -> None:  # noqa: ANN001
    """Forward, the loss (``mean``: mean square of every step; ``last``: the last step's sum),
    backward, zero the gradients."""
    with ctx():
        out, _ = module(x)  # (T, B, H)
        (out[-1].sum() if loss == "last" else out.square().mean()).backward()
    module.zero_grad(set_to_none=True)


def forward(module: nn.Module, ctx, x: torch.Tensor) -> None:  # noqa: ANN001
    """Forward only, without a graph."""
    with ctx(), torch.no_grad():
        module(x)


def peak_mib(layer: str, variant: str, T: int, batch: int, hidden: int, threads: int = 1,
             loss: str = "mean") -> float:  # fmt: skip
    """Rise of peak RSS (MiB) during one step, measured in a fresh subprocess."""
    code = (
        "import json, sys; sys.path.insert(0, 'experiments'); import torch, bench_speed as b; "
        f"torch.set_num_threads({threads}); m, c = b.build({layer!r}, {variant!r}, {hidden}); "
        f"b.step(m, c, torch.randn(2, {batch}, 1)); x = torch.randn({T}, {batch}, 1); "
        "open('/proc/self/clear_refs', 'w').write('5'); r0 = b.status('VmRSS'); "
        f"b.step(m, c, x, {loss!r}); "
        "print(json.dumps((b.status('VmHWM') - r0) / 1024))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"memory run {layer}/{variant}/T={T} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """lscpu's model name and core count (or the platform's processor string)."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
    model = info.get("Model name", platform.processor()).strip()
    return " ".join(f"{model}, {info.get('CPU(s)', os.cpu_count())} CPUs".split())


def cpu_features() -> str:
    """The instruction sets that decide these timings: AVX2, AVX-512, AMX (x86 flags)."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    named = {"AVX2": "avx2", "AVX-512": "avx512f", "AMX": "amx_tile"}
    if not flags:
        return "instruction sets unknown"
    return ", ".join(f"{k} {'yes' if v in flags else 'no'}" for k, v in named.items())


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
                step(module, ctx, x, args.loss)  # warm-up
                for pas in args.passes:
                    timers[layer, variant, pas] = benchmark.Timer(
                        f"{'step' if pas == 'train' else 'forward'}(module, ctx, x"
                        + (", loss)" if pas == "train" else ")"),
                        globals=dict(
                            step=step, forward=forward, module=module, ctx=ctx, x=x, loss=args.loss
                        ),  # fmt: skip
                        num_threads=args.threads,
                    )
        done: dict = {k: [] for k in timers}
        keys = list(timers)
        for r in range(args.rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                done[key].append(timers[key].blocked_autorange(min_run_time=args.min_run_time))
        for (layer, variant, pas), ms in done.items():
            m = benchmark.Measurement.merge(ms)[0]
            skip = args.no_memory or pas != "train" or variant.startswith("GEMM floor")
            mem = (
                float("nan")
                if skip
                else peak_mib(layer, variant, T, args.batch, args.hidden, args.threads, args.loss)
            )
            rows.append(dict(layer=layer, variant=variant, T=T, B=args.batch, H=args.hidden,
                             ms=1e3 * m.median, iqr_ms=1e3 * m.iqr, blocks=len(m.times),
                             peak_mib=mem, **{"pass": pas}))  # fmt: skip
            print(f"{layer} {variant} {pas} T={T}: {1e3 * m.median:.1f} ms", file=sys.stderr)
    return pd.DataFrame(rows)


def tables(df: pd.DataFrame, loss: str = "mean") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measurements with ratios to torch (and to torch flushed, where measured), and the
    per-row verdicts on the targets."""
    if "pass" not in df:
        df = df.assign(**{"pass": "train"})
    ref = df[df.variant == "torch"].set_index(["layer", "T", "pass"])
    key = pd.MultiIndex.from_frame(df[["layer", "T", "pass"]])
    df = df.assign(ratio=df.ms.values / ref.ms.reindex(key).values,
                   mem_ratio=df.peak_mib.values / ref.peak_mib.reindex(key).values)  # fmt: skip
    fl = df[df.variant == "torch, flushed"].set_index(["layer", "T", "pass"])
    df = df.assign(vs_flushed=df.ms.values / fl.ms.reindex(key).values)
    t_lo, t_hi = df["T"].min(), df["T"].max()
    t_ref = RATIO_T if RATIO_T in set(df["T"]) else t_hi
    per_step = df.assign(per=df.ms / df["T"]).pivot_table("per", ["layer", "variant"], "T")
    growth = per_step[t_hi] / per_step[t_lo]
    growth = growth / growth.xs("torch", level="variant").reindex(growth.index, level="layer")
    df_all, df = df, df[df["pass"] == "train"]
    verdict = (
        df[df["T"] == t_ref]
        .set_index(["layer", "variant"])[["ratio"]]
        .assign(growth=growth, worst_mem_ratio=df.groupby(["layer", "variant"]).mem_ratio.max())
    )
    verdict["pass"] = (
        (verdict.ratio <= RATIO) & (verdict.growth <= GROWTH)
        & (verdict.worst_mem_ratio.fillna(0) <= MEMORY)
    )  # fmt: skip
    fwd = df_all[(df_all["pass"] == "fwd") & (df_all["T"] == t_ref)]
    verdict["fwd_ratio"] = fwd.set_index(["layer", "variant"]).ratio.reindex(verdict.index)
    verdict["vs_flushed"] = (
        df[df["T"] == t_ref].set_index(["layer", "variant"]).vs_flushed.reindex(verdict.index)
    )
    layers = verdict.index.get_level_values("layer")
    shape = tuple(int(df[c].iloc[0]) if c in df else 0 for c in ("T", "B", "H"))
    shape = (int(t_ref), *shape[1:])
    if loss == "last":
        targets = TARGETS_LAST.get(shape, {})
        verdict["target_train"] = [targets.get(k, (NAN, NAN))[0] for k in layers]
        verdict["target_flushed"] = [targets.get(k, (NAN, NAN))[1] for k in layers]
    else:
        verdict["target_train"] = [TARGETS_MEAN.get(k, (NAN, NAN))[0] for k in layers]
        verdict["target_fwd"] = [TARGETS_MEAN.get(k, (NAN, NAN))[1] for k in layers]
    floor = (
        verdict.xs("GEMM floor", level="variant").ratio
        if "GEMM floor" in set(verdict.index.get_level_values("variant"))
        else pd.Series(dtype=float)
    )
    verdict["x_floor"] = verdict.ratio / floor.reindex(layers).values  # time / the floor's
    native = verdict.index.get_level_values("variant") == "spectral"
    if loss == "last":  # a target that is not set (NaN) holds; a ratio not measured does not
        meets = (verdict.target_train.isna() | (verdict.ratio <= verdict.target_train)) & (
            verdict.target_flushed.isna() | (verdict.vs_flushed <= verdict.target_flushed)
        )
    else:
        meets = (
            (verdict.ratio <= verdict.target_train)
            & (verdict.fwd_ratio.isna() | (verdict.fwd_ratio <= verdict.target_fwd))
            & (verdict.worst_mem_ratio.fillna(0) <= 1.0)
        )
    verdict["meets_targets"] = [
        ("yes" if m else "no") if n else "" for m, n in zip(meets, native, strict=True)
    ]
    return df_all, verdict.reset_index()


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
    p.add_argument("--passes", type=lambda s: s.split(","), default=list(PASSES),
                   help="train (forward+backward) and/or fwd (forward only, no graph)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads (the targets: one)")
    p.add_argument("--loss", choices=LOSSES, default="mean",
                   help="last: the last step (classification); mean: all steps")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="T=20,60, B=16, H=32; prints only")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "speed.md")
    args = p.parse_args(argv)
    if bad := sorted(set(args.variants) - set(VARIANTS)):
        p.error(f"--variants must be among {VARIANTS}, got {bad}")
    if args.quick:
        args.seq_lens, args.batch, args.hidden, args.min_run_time = [20, 60], 16, 32, 0.05
    torch.set_num_threads(args.threads)
    started, load = datetime.datetime.now(datetime.timezone.utc), os.getloadavg()[0]
    df, verdict = tables(measure(args), args.loss)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    text = "\n".join([
        "# Speed and memory: seqnorm layers vs torch recurrent layers (CPU, training step)", "",
        f"- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} thread{'s' if args.threads > 1 else ''}; torch "
        f"{torch.__version__}; git {commit}; {started:%Y-%m-%d %H:%M} UTC; 1-min load {load:.1f}",
        f"- CPU: {cpu_model()} ({cpu_features()}); allocator: "
        + (", ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith("MALLOC_"))
           or "glibc defaults (no MALLOC_* set)")
        + f"; seqnorm backend: {seqnorm.native.backend().name}",
        f"- loss: `{args.loss}` ("
        + ("the last step's output, `out[-1].sum()`, as classification" if args.loss == "last"
           else "`mean(out**2)` over every step")
        + f"); B={args.batch}, H={args.hidden}, input size 1; `torch.utils.benchmark.Timer."
        f"blocked_autorange(min_run_time={args.min_run_time})` in {args.rounds} interleaved "
        "rounds: median and IQR of all blocks; "
        "peak MiB: rise of `VmHWM` over `VmRSS` during one step in a fresh process",
        f"- Targets: ratio <= {RATIO} at T={RATIO_T}; per-step growth smallest->largest T "
        f"<= {GROWTH}x torch's; peak memory <= {MEMORY}x torch's (worst T)",
        "- `spectral` rows run seqnorm's native kernels (forced); `spectral, torch kernel` the "
        "same layer on torch's; `torch, flushed`: torch under `torch.set_flush_denormal(True)`; "
        "`vs_flushed`: time over that row's; `meets_targets`: the native row within the "
        "targets (`last`: training step vs torch and vs torch flushed; `mean`: train and "
        "forward ratios, peak memory <= torch's); `x_floor`: training time over the "
        "`GEMM floor` row's (the kernels' own GEMM)",
        "- Regenerate: `make bench`", "",
        "## Verdicts", "", verdict.to_markdown(index=False, floatfmt=".2f"), "",
        "## Measurements", "", df.to_markdown(index=False, floatfmt=".3g"),
    ]) + "\n"  # fmt: skip
    print(text)
    if not args.quick:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
