"""What the exact per-call constraint costs, beside the layer it constrains (CPU, one thread).

For H in (128, 512, 1024): forward+backward of the constrained matrix alone (one call of the
``spectral`` parametrization on a GRU's 3 gate blocks, ``estimator="exact"`` and ``"power"``),
and forward+backward of ``torch.nn.GRU`` at B=128. At H=128 the GRU runs at T=784; at larger H
it runs at T=50 and is scaled linearly to T=784 (its cost is linear in T). The constraint runs
once per call, whatever T, so its share of a training step is ``constraint / layer``.

    .venv/bin/python experiments/constraint_cost.py      # prints a markdown table
"""

from __future__ import annotations

import torch
from torch.utils import benchmark

import seqnorm


def median_s(fn, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=1)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    torch.set_num_threads(1)
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
