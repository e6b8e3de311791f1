"""What the exact per-call constraint costs, beside the layer it constrains (CPU, one thread).

For H in (128, 512, 1024): forward+backward of the constrained matrix alone (one call of the
``spectral`` parametrization on a GRU's 3 gate blocks, ``estimator="exact"`` and ``"power"``),
and forward+backward of ``torch.nn.GRU`` at B=128. At H=128 the GRU runs at T=784; at larger H
it runs at T=50 and is scaled linearly to T=784 (its cost is linear in T). The constraint runs
once per call, whatever T, so its share of a training step is ``constraint / layer``.

    .venv/bin/python experiments/constraint_cost.py      # prints a markdown table

``--orthogonal``: the ``orthogonal`` constraint instead. For H in (128, 256), forward+backward
of the parametrization alone on one H x H block, for ``map="exp"`` (the exponential from one
Hermitian eigendecomposition, ``expm_skew``) beside ``torch.matrix_exp`` on the same float64
skew matrix (what the constraint ran before), and for ``map="cayley"``; then the training
step (forward+backward) of a modReLU ``SpectralRNN(constraint="orthogonal")`` beside
``torch.nn.RNN`` (tanh) at T=300, B=32, H=256, interleaved rounds, medians.

    .venv/bin/python experiments/constraint_cost.py --orthogonal
"""

from __future__ import annotations

import argparse

import torch
from torch.utils import benchmark

import seqnorm
from seqnorm.constraints.orthogonal import skew


def median_s(fn, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=1)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def orthogonal() -> None:
    print("| H | exp, expm_skew (ms) | exp, torch.matrix_exp float64 (ms) | cayley (ms) |")
    print("|---|---|---|---|")
    for H in (128, 256):
        fns = {}
        for m in ("exp", "cayley"):
            opts = {"map": m, "rebase_every": None}
            rnn = seqnorm.SpectralRNN(H, H, nonlinearity="modrelu", constraint="orthogonal",
                                      constraint_options=opts)  # fmt: skip
            with torch.no_grad():  # a point away from the identity, as after some training
                rnn.parametrizations.weight_hh_l0.original.normal_(0, 0.05)
            fns[m] = lambda rnn=rnn: rnn.weight_hh_l0.sum().backward()
        A = (0.05 * torch.randn(H, H)).requires_grad_(True)
        fns["old"] = lambda A=A: torch.matrix_exp(skew(A.double())).float().sum().backward()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(3):  # interleaved rounds
            for k, fn in fns.items():
                times[k].append(median_s(fn, 0.5))
        cost = {k: sorted(v)[1] for k, v in times.items()}
        print(f"| {H} | {1e3 * cost['exp']:.1f} | {1e3 * cost['old']:.1f} | "
              f"{1e3 * cost['cayley']:.1f} |")  # fmt: skip
    T, B, H = 300, 32, 256
    x = torch.randn(T, B, H)
    ours = seqnorm.SpectralRNN(H, H, nonlinearity="modrelu", constraint="orthogonal")
    ref = torch.nn.RNN(H, H)

    def step(layer) -> None:
        out, _ = layer(x)
        out[-1].sum().backward()

    times: dict[str, list[float]] = {"ours": [], "torch": []}
    for _ in range(5):  # interleaved rounds
        times["ours"].append(median_s(lambda: step(ours), 1.0))
        times["torch"].append(median_s(lambda: step(ref), 1.0))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"\nT={T}, B={B}, H={H} training step: orthogonal modReLU SpectralRNN "
          f"{1e3 * med['ours']:.0f} ms, torch.nn.RNN {1e3 * med['torch']:.0f} ms, "
          f"ratio {med['ours'] / med['torch']:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orthogonal", action="store_true", help="the orthogonal constraint")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.orthogonal:
        orthogonal()
        return
    print("| H | constraint fwd+bwd, exact (ms) | power (ms) | torch GRU fwd+bwd at T=784 (ms) "
          "| exact / GRU |")  # fmt: skip
    print("|---|---|---|---|---|")
    for H in (128, 512, 1024):
        T = 784 if H == 128 else 50
        cost = {}
        for est in ("exact", "power"):
            layer = seqnorm.SpectralGRU(H, H, constraint_options={"estimator": est})
            cost[est] = median_s(lambda layer=layer: layer.weight_hh_l0.sum().backward(), 0.5)
        gru, x = torch.nn.GRU(H, H), torch.randn(T, 128, H)

        def step(gru=gru, x=x) -> None:
            out, _ = gru(x)
            out.sum().backward()

        layer_s = median_s(step, 2.0) * 784 / T
        print(f"| {H} | {1e3 * cost['exact']:.1f} | {1e3 * cost['power']:.1f} | "
              f"{1e3 * layer_s:.0f}{'' if T == 784 else ' (from T=50)'} | "
              f"{100 * cost['exact'] / layer_s:.2f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
