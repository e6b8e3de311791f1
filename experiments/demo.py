"""The headline (`make demo`): on copy, a norm-preserving RNN remembers; tanh and GRU don't.

Three runs on copy memory (remember 10 symbols across T blanks, T=100 by default), each
trained the same number of steps with the public API only (the layers,
:func:`seqnorm.param_groups`, :func:`seqnorm.probes.hidden_grad_norms`):

* ``orthogonal modReLU RNN``: the expRNN recipe -- orthogonal recurrent matrix (Henaff init),
  modReLU, RMSprop 1e-3 with 1e-4 on the orthogonal parameters, no clipping;
* ``tanh RNN (none)``: an unconstrained Elman RNN, RMSprop 1e-3;
* ``GRU (none)``: an unconstrained GRU, RMSprop 1e-3.

It prints one line per run saying whether it solved the task (mean training loss over the
last 20 steps <= 0.1 x the memoryless baseline 10 ln 8 / (T + 20)) and writes
``runs/demo/copy_demo.png``: per run the loss / baseline curve beside the gradient-flow
heatmap (log10 ||dL/dh_t|| over time step t and training step, one colour scale for all).
Whatever happens is what it says; nothing here is tuned per run.

    python experiments/demo.py                       # what `make demo` runs
    python experiments/demo.py --steps 1000 --seq-len 200
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import seqnorm
from seqnorm import plots
from seqnorm.data import CopyMemoryDataModule
from seqnorm.probes import below_range, hidden_grad_norms, log10_norms

RUNS = {  # name: (layer factory, lr of the constrained parameters)
    "orthogonal modReLU RNN": (
        lambda h: seqnorm.SpectralRNN(
            10, h, nonlinearity="modrelu", constraint="orthogonal", init="henaff", batch_first=True
        ),
        1e-4,
    ),
    "tanh RNN (none)": (
        lambda h: seqnorm.SpectralRNN(10, h, constraint="none", batch_first=True),
        None,
    ),
    "GRU (none)": (lambda h: seqnorm.SpectralGRU(10, h, constraint="none", batch_first=True), None),
}


class CopyNet(nn.Module):
    """One-hot symbols -> recurrent layer -> per-step logits over the 9 outputs."""

    def __init__(self, layer: nn.Module, hidden: int) -> None:
        super().__init__()
        self.layer, self.readout = layer, nn.Linear(hidden, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.layer(F.one_hot(x, 10).float())  # (B, T, H)
        return self.readout(out)  # (B, T, 9)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def train(name: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    factory, constrained_lr = RUNS[name]
    net = CopyNet(factory(args.hidden), args.hidden)
    groups = seqnorm.param_groups(net, lr=args.lr, constrained_lr=constrained_lr)
    opt = torch.optim.RMSprop(groups)
    dm = CopyMemoryDataModule(
        seq_len=args.seq_len,
        batch_size=args.batch,
        num_train=args.batch * args.steps,
        seed=args.seed,
    )
    dm.setup("fit")
    probe_batch = next(iter(dm.val_dataloader()))
    probe_batch = (probe_batch[0][:32], probe_batch[1][:32])
    losses, probes = [], []
    t0 = time.time()
    for step, (x, y) in enumerate(dm.train_dataloader()):
        if step % args.probe_every == 0:
            probes.append((step, hidden_grad_norms(net, probe_batch, loss_fn)[0]))
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    probes.append((len(losses), hidden_grad_norms(net, probe_batch, loss_fn)[0]))
    return {
        "losses": losses,
        "probes": probes,
        "seconds": time.time() - t0,
        "baseline": dm.baseline,
    }


def figure(results: dict[str, dict], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    # One colour scale over the measurable norms of all runs; norms below float range (zero,
    # flushed, subnormal) go under it, in the library's own colour for them.
    vmin, vmax = plots.heatmap_limits(*(r["probes"] for r in results.values())) or (-1.0, 0.0)
    cmap = colormaps["viridis"].with_extremes(under=plots.BELOW_RANGE_COLOR)
    logs, below = {}, {}
    for n, r in results.items():
        norms = torch.stack([p for _, p in r["probes"]])  # (probes, T)
        below[n] = below_range(norms)
        logs[n] = torch.where(below[n], vmin - 1.0, log10_norms(norms).clamp_min(vmin))
    fig, axes = plt.subplots(len(results), 2, figsize=(12, 3.2 * len(results)), squeeze=False)
    for (name, r), (ax_l, ax_h) in zip(results.items(), axes, strict=True):
        ratio = torch.tensor(r["losses"]) / r["baseline"]
        ax_l.semilogy(range(1, len(ratio) + 1), ratio, lw=0.8)
        ax_l.axhline(1.0, color="k", ls="--", lw=0.8, label="memoryless baseline")
        ax_l.axhline(0.1, color="g", ls=":", lw=0.8, label="solved (0.1x)")
        ax_l.set(title=f"{name}: training loss / baseline", xlabel="training step")
        ax_l.legend(loc="lower left", fontsize=8)
        steps = [s for s, _ in r["probes"]]
        T = logs[name].shape[1]
        im = ax_h.imshow(
            logs[name].numpy(),
            aspect="auto",
            origin="lower",
            vmin=vmin,
            vmax=vmax,
            extent=(-0.5, T - 0.5, -0.5, len(steps) - 0.5),
            cmap=cmap,
        )
        ticks = range(0, len(steps), max(1, len(steps) // 6))
        ax_h.set_yticks(list(ticks), [str(steps[i]) for i in ticks])
        ax_h.set(title=f"{name}: log10 ||dL/dh_t||", xlabel="time step t", ylabel="training step")
        grey = bool(below[name].any())
        fig.colorbar(im, ax=ax_h, extend="min" if grey else "neither",
                     label="grey: below float range" if grey else None)  # fmt: skip
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=100, help="copy-task delay T")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--probe-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="runs trained at once")
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"copy task, T={args.seq_len}, H={args.hidden}, batch {args.batch}, "
        f"{args.steps} steps each; "
        f"baseline 10 ln 8 / (T + 20) = {10 * math.log(8) / (args.seq_len + 20):.4f}",
        flush=True,
    )
    with ProcessPoolExecutor(max_workers=args.workers) as pool:  # one thread per run
        futures = {name: pool.submit(train, name, args) for name in RUNS}
        results = {name: f.result() for name, f in futures.items()}
    for name, r in results.items():
        final = sum(r["losses"][-20:]) / len(r["losses"][-20:]) / r["baseline"]
        below = next((i + 1 for i, v in enumerate(r["losses"]) if v <= 0.1 * r["baseline"]), None)
        verdict = "SOLVED" if final <= 0.1 else "not solved"
        when = f", first below 0.1x at step {below}" if below else ""
        print(
            f"  {name:24s} {verdict:10s} final loss / baseline {final:.3f}{when} "
            f"({r['seconds']:.0f} s)",
            flush=True,
        )
    dest = args.out / "copy_demo.png"
    figure(results, dest)
    print(f"figure: {dest}")


if __name__ == "__main__":
    main()
