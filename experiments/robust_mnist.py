"""Certified robustness on MNIST: a small CNN with and without operator-norm constraints.

Two copies of one CNN (3 convolutions, 2 linear layers, ReLU) are trained on a subset of
MNIST: ``plain`` (cross-entropy) and ``spectral`` (every Conv2d and Linear constrained with
``seqnorm.constrain(m, "weight", "spectral", ...)``: operator norm <= 1 at 28x28 inputs;
trained with the Lipschitz-margin loss of Tsuzuku et al. 2018). For each, on a test subset:

* clean accuracy;
* certified robust accuracy at L2 radii ``eps``: a test point counts when it is classified
  correctly and its margin (top logit minus runner-up) exceeds ``sqrt(2) * L * eps``, with
  ``L = seqnorm.probes.lipschitz_bound(net, (1, 28, 28))`` (no perturbation of L2 norm
  ``eps`` can then change the prediction);
* accuracy under an L2 PGD attack at the same radii (plain torch, ``--pgd-steps`` steps,
  step ``2.5 eps / steps``, pixels kept in [0, 1]): an upper bound on the true robust
  accuracy, the certified one a lower bound.

Pixels are in [0, 1] (no normalisation, which would rescale L). One CPU thread by default;
the defaults (a subset: 10,000 training images, 3 epochs, 1,000 test images, 20 PGD
steps) take about 4 minutes, the full data set about two hours. Writes
``experiments/results/robust_mnist.md``.

    .venv/bin/python experiments/robust_mnist.py --data-dir ../shared/data/mnist
    SEQNORM_DATA=../shared/data .venv/bin/python experiments/robust_mnist.py \\
        --train-size 60000 --epochs 10 --test-size 10000
"""

from __future__ import annotations

import argparse
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seqnorm import constrain
from seqnorm.constraints import ConvGeometry, conv_power_norm
from seqnorm.data import default_mnist_dir, load_mnist
from seqnorm.probes import lipschitz_bound, lipschitz_factors, local_lipschitz

OUT = Path(__file__).resolve().parent / "results" / "robust_mnist.md"
INPUT = (1, 28, 28)


def load(data_dir: Path, split: str, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` images ``(N, 1, 28, 28)`` in [0, 1] and labels of ``split`` (train/test).

    Raises:
        FileNotFoundError: if the IDX files are not in ``data_dir`` (raw or ``.gz``;
            nothing is downloaded).
    """
    images, labels = load_mnist(data_dir, split, download=False)  # (N, 28, 28), (N,)
    idx = np.random.RandomState(seed).permutation(len(labels))[:size]
    x = torch.from_numpy(images[idx].astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels[idx].astype(np.int64))


def make_net(constrained: bool) -> nn.Sequential:
    """The CNN; with ``constrained``, every Conv2d and Linear capped at operator norm 1."""
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),  # 28x28
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),  # 14x14
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),  # 7x7
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip
    if constrained:
        sizes = iter([(28, 28), (28, 28), (14, 14)])
        for m in net:
            if isinstance(m, nn.Conv2d):
                # input_shape: the bound at the size the layer sees (tighter, cheaper).
                constrain(m, "weight", "spectral", input_shape=next(sizes))
            elif isinstance(m, nn.Linear):
                constrain(m, "weight", "spectral")
    return net


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """Top-class logit minus the best other one (negative when misclassified)."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def lmt_loss(logits: Tensor, y: Tensor, L: float, eps: float, temperature: float) -> Tensor:
    """Lipschitz-margin training: cross-entropy after adding ``sqrt(2) L eps`` to the
    logits of the wrong classes (Tsuzuku, Sato, Sugiyama 2018)."""
    shift = math.sqrt(2) * L * eps * (1 - nn.functional.one_hot(y, logits.shape[1]))
    return nn.functional.cross_entropy((logits + shift) * temperature, y)


def train(net: nn.Sequential, x: Tensor, y: Tensor, args: argparse.Namespace, lmt: bool) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    net.train()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(y), generator=gen).split(args.batch_size):
            logits = net(x[idx])
            if lmt:  # L <= 1 by construction: the margin needed is sqrt(2) eps_train
                loss = lmt_loss(logits, y[idx], 1.0, args.train_eps, args.temperature)
            else:
                loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()


def pgd(net: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int) -> Tensor:
    """L2 PGD from the clean point: normalised gradient ascent on the cross-entropy,
    projected on the eps-ball and the [0, 1] box."""
    alpha = 2.5 * eps / steps
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = nn.functional.cross_entropy(net(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        g_norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + alpha * g / g_norm
        d_norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * (eps / d_norm.clamp_min(eps))  # onto the ball
        delta = (x + delta).clamp(0, 1) - x  # and the box
    return (x + delta).detach()


def evaluate(net: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> dict:
    net.eval()
    L = float(lipschitz_bound(net, INPUT))
    with torch.no_grad():
        logits = torch.cat([net(b) for b in x.split(args.batch_size)])
    m = margins(logits, y)
    row = {"L": L, "clean": float((m > 0).float().mean())}
    row["local"] = float(local_lipschitz(net, x[: args.local_samples], n_iterations=50))
    for eps in args.radii:
        row[f"cert@{eps}"] = float((m > math.sqrt(2) * L * eps).float().mean())
        correct = 0
        for xb, yb in zip(x.split(args.batch_size), y.split(args.batch_size), strict=True):
            adv = pgd(net, xb, yb, eps, args.pgd_steps)
            with torch.no_grad():
                correct += int((net(adv).argmax(1) == yb).sum())
        row[f"pgd@{eps}"] = correct / len(y)
    return row


def layer_norms(net: nn.Sequential) -> list[tuple[str, float, float]]:
    """Per Conv/Linear: the factor ``lipschitz_bound`` uses and the true operator norm
    (power iteration through conv and its adjoint at the layer's input size, 500 steps)."""
    factors = dict(lipschitz_factors(net, INPUT))
    sizes, x, out = {}, torch.zeros(1, *INPUT), []
    with torch.no_grad():
        for name, m in net.named_children():
            sizes[name] = tuple(x.shape[2:])
            x = m(x)
    for name, m in net.named_children():
        if isinstance(m, nn.Conv2d):
            true = conv_power_norm(m.weight, ConvGeometry.of(m), sizes[name], n_iterations=500)
        elif isinstance(m, nn.Linear):
            true = torch.linalg.matrix_norm(m.weight.detach().double(), 2)
        else:
            continue
        out.append((f"{name}: {type(m).__name__}", factors[name], float(true)))
    return out


def table(rows: dict[str, dict], radii: list[float]) -> str:
    head = ["model", "L (bound)", "max local L", "clean"]
    head += [f"certified ε={e}" for e in radii] + [f"PGD ε={e}" for e in radii]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, r in rows.items():
        cells = [name, f"{r['L']:.3g}", f"{r['local']:.3g}", f"{100 * r['clean']:.1f}%"]
        cells += [f"{100 * r[f'cert@{e}']:.1f}%" for e in radii]
        cells += [f"{100 * r[f'pgd@{e}']:.1f}%" for e in radii]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the four MNIST IDX files (default: $SEQNORM_DATA/mnist, else "
                   "data/mnist in the working directory)")  # fmt: skip
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--test-size", type=int, default=1_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-eps", type=float, default=1.0, help="LMT margin radius (spectral)")
    p.add_argument("--temperature", type=float, default=8.0, help="LMT logit scale (spectral)")
    p.add_argument("--radii", type=float, nargs="+", default=[0.5, 1.0, 1.58])
    p.add_argument("--pgd-steps", type=int, default=20)
    p.add_argument("--local-samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = default_mnist_dir()
    if not args.data_dir.is_dir():
        p.error(f"--data-dir {args.data_dir} does not exist (it must hold the MNIST IDX files)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    try:
        x_tr, y_tr = load(args.data_dir, "train", args.train_size, args.seed)
        x_te, y_te = load(args.data_dir, "test", args.test_size, args.seed)
    except FileNotFoundError as err:
        p.error(str(err))
    print(f"MNIST subset: {len(y_tr)} train, {len(y_te)} test images; {args.epochs} epochs; "
          f"{args.threads} thread(s)")  # fmt: skip
    rows, times, layers = {}, {}, {}
    for name, constrained in (("plain", False), ("spectral", True)):
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        net = make_net(constrained)
        train(net, x_tr, y_tr, args, lmt=constrained)
        t1 = time.perf_counter()
        rows[name] = evaluate(net, x_te, y_te, args)
        layers[name] = layer_norms(net)
        times[name] = (t1 - t0, time.perf_counter() - t1)
        print(f"{name}: trained {times[name][0]:.0f} s, evaluated {times[name][1]:.0f} s: "
              f"{rows[name]}")  # fmt: skip
        for eps in args.radii:  # certified robust must never exceed attacked accuracy
            if rows[name][f"cert@{eps}"] > rows[name][f"pgd@{eps}"]:
                print(f"WARNING: {name} certified > PGD accuracy at eps={eps}: a bug")
    total = time.perf_counter() - start
    md = table(rows, args.radii)
    per_layer = ["| layer | " + " | ".join(f"{k}: bound | {k}: true" for k in layers) + " |"]
    per_layer.append("|---" + "|---:" * (2 * len(layers)) + "|")
    for i, (label, *_) in enumerate(layers["plain"]):
        cells = [f"{v:.4f}" for k in layers for v in layers[k][i][1:]]
        per_layer.append(f"| {label} | " + " | ".join(cells) + " |")
    per_layer = "\n".join(per_layer)
    print(md)
    print(per_layer)
    print(f"total {total:.0f} s")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python experiments/robust_mnist.py"
    for flag, value in vars(args).items():
        if flag not in ("data_dir", "out") and value != p.get_default(flag):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            cmd += f" --{flag.replace('_', '-')} {shown}"
    split = ", ".join(f"{k} {a:.0f}/{b:.0f} s" for k, (a, b) in times.items())
    text = f"""# Certified robustness on MNIST: plain vs operator-norm-constrained CNN

- Run: {stamp}, torch {torch.__version__}, {args.threads} CPU thread(s), {total:.0f} s
  in all (train/evaluate: {split}).
- Subset: {len(y_tr)} training images, {args.epochs} epochs, Adam lr {args.lr},
  batch {args.batch_size}; {len(y_te)} test images; seed {args.seed}.
  The full data set (about two hours): `--train-size 60000 --epochs 10 --test-size 10000`.
- Net: Conv(1,16,3) ReLU Conv(16,32,4,s2) ReLU Conv(32,32,4,s2) ReLU Linear(1568,100)
  ReLU Linear(100,10); pixels in [0, 1].
- `spectral`: every Conv2d and Linear `seqnorm.constrain(..., "spectral")` (the convs
  at their input size, `input_shape=`), trained with the Lipschitz-margin loss
  (eps {args.train_eps}, temperature {args.temperature}). `plain`: cross-entropy.
- L: `seqnorm.probes.lipschitz_bound(net, (1, 28, 28))`, a certified bound on the
  network's L2 Lipschitz constant. Max local L: `local_lipschitz` on
  {min(args.local_samples, len(y_te))} test images, a lower bound on the true constant.
- Certified at ε: correct and margin > sqrt(2) L ε, a guarantee (a lower bound on robust
  accuracy). PGD: {args.pgd_steps}-step L2 attack, step 2.5 ε / steps, an upper bound.
- Regenerate: `{cmd}`

{md}

Per layer: the factor `lipschitz_bound` multiplies (certified upper bound; for a conv the
symbol bound at its input size) and the true operator norm (power iteration through the conv
and its adjoint, 500 steps, at the layer's input size; exact SVD for Linear). For `spectral`
this measures how tight the constraint is: the true norm a constrained layer ends at.

{per_layer}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
