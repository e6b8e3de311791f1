"""Training-step time on a CUDA device at the psMNIST shape, seqnorm's layers beside torch's.

On a GPU seqnorm's layers take torch's own kernels (cuDNN) with the constrained weight computed
once per call; the LRU runs its scan step by step (its native kernel is CPU-only). This prints,
and writes as Markdown, the median time of one training step (forward, cross-entropy on the
last step or the mean-pooled output, backward) per row, with the device named.

    python experiments/bench_cuda.py                   # T=784, B=128, H=128
    python experiments/bench_cuda.py --quick           # T=100, prints only

Needs a CUDA device; exits with a message without one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark

from seqnorm.model import SeqModel

ROOT = Path(__file__).resolve().parents[1]


class TorchModel(nn.Module):
    """torch's own layer with a linear readout of the last step: the baseline rows."""

    def __init__(self, cls: type[nn.Module], hidden: int) -> None:
        super().__init__()
        self.rnn = cls(1, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.rnn(x)[0][:, -1])  # (B, 10)


def rows(hidden: int) -> dict[str, nn.Module]:
    """Label -> model; the seqnorm rows are the LightningModule the CLI trains."""
    kw = {"input_kind": "features", "input_dim": 1, "output_kind": "last_class",
          "num_classes": 10, "hidden_size": hidden}  # fmt: skip
    lru = {"state_size": 128, "r_min": 0.9, "r_max": 0.999, "norm": "layer", "glu": True}
    return {
        "torch.nn.GRU (cuDNN)": TorchModel(nn.GRU, hidden),
        "GRU, none": SeqModel(cell="gru", constraint="none", **kw),
        "GRU, spectral": SeqModel(cell="gru", constraint="spectral", **kw),
        "GRU, spectral, power estimator": SeqModel(
            cell="gru", constraint="spectral", constraint_options={"estimator": "power"}, **kw
        ),
        "GRU, scaled": SeqModel(cell="gru", constraint="scaled", **kw),
        "torch.nn.LSTM (cuDNN)": TorchModel(nn.LSTM, hidden),
        "LSTM, spectral": SeqModel(cell="lstm", constraint="spectral", **kw),
        "tanh RNN, orthogonal": SeqModel(cell="rnn", constraint="orthogonal", **kw),
        "LRU stack (psmnist_lru.yaml sizes), none": SeqModel(
            **{**kw, "hidden_size": 64}, cell="lru", num_layers=2, constraint="none",
            dropout=0.1, pooling="mean", lru_options=lru,
        ),
    }  # fmt: skip


def step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, min_run_time: float) -> float:
    """Median seconds of one forward + loss + backward."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()

    step()  # warm-up: cuDNN plans, allocator
    timer = benchmark.Timer(stmt="step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=784)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--min-run-time", type=float, default=2.0, help="seconds per row")
    p.add_argument("--quick", action="store_true", help="T=100, short runs; prints only")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "speed_cuda.md")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_cuda.py needs a CUDA device; none is visible to torch")
    if args.quick:
        args.seq_len, args.min_run_time = 100, 0.3
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, args.seq_len, 1, generator=g).to(dev)  # (B, T, 1)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)  # (B,)
    name = torch.cuda.get_device_name(dev)
    head = (f"Device: {name}; torch {torch.__version__}; T={args.seq_len}, B={args.batch}, "
            f"H={args.hidden}, float32; median of torch.utils.benchmark's blocked_autorange "
            f"({args.min_run_time} s per row).")  # fmt: skip
    print(head, flush=True)
    lines = ["| model | ms per training step | x torch.nn.GRU |", "|---|---|---|"]
    base = None
    for label, model in rows(args.hidden).items():
        model = model.to(dev).train()
        t = step_time(model, x, y, args.min_run_time)
        base = base or t
        lines.append(f"| {label} | {1e3 * t:.1f} | {t / base:.2f} |")
        print(lines[-1], flush=True)
    if not args.quick:
        cmd = "python experiments/bench_cuda.py " + " ".join(sys.argv[1:])
        text = f"# Training-step time on a GPU\n\n{head}\n\n" + "\n".join(lines) + "\n"
        args.out.write_text(text + f"\nCommand: `{cmd.strip()}`\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
