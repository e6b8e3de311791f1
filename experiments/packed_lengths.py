"""Variable-length sequences as a ``PackedSequence``: a bidirectional spectral GRU.

Each sequence has its own length (5 to ``--max-len`` steps of +-1); its label is the sign of
*its own* last value. Packed (``pack_padded_sequence(..., enforce_sorted=False)``), the
forward direction's ``h_n`` is taken at each sequence's last step and the reverse direction
starts there; padded, the model reads the zeros after the end and must carry the last value
across them. Prints the test accuracy of both after the same training.

    python experiments/packed_lengths.py                  # 100 steps, one CPU thread
    python experiments/packed_lengths.py --steps 300 --max-len 100
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqnorm import SpectralGRU


def make_batch(n: int, max_len: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Padded inputs ``(n, max_len, 1)``, lengths ``(n,)`` and labels ``(n,)``."""
    lengths = torch.randint(5, max_len + 1, (n,), generator=gen)  # (n,)
    x = torch.randint(0, 2, (n, max_len), generator=gen).float() * 2 - 1  # (n, T) of +-1
    x = x * (torch.arange(max_len) < lengths[:, None])  # zeros after each sequence's end
    last = x[torch.arange(n), lengths - 1]  # (n,)
    return x.unsqueeze(-1), lengths, (last > 0).long()


class LastValueClassifier(nn.Module):
    """A bidirectional spectral GRU; the readout sees both directions' final states."""

    def __init__(self, hidden_size: int, packed: bool) -> None:
        super().__init__()
        self.packed = packed
        self.rnn = SpectralGRU(1, hidden_size, batch_first=True, bidirectional=True)
        self.readout = nn.Linear(2 * hidden_size, 2)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        inp = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) \
            if self.packed else x  # fmt: skip
        _, h_n = self.rnn(inp)  # (2, B, H): forward, reverse; in the batch's own order
        return self.readout(torch.cat([h_n[0], h_n[1]], dim=-1))  # (B, 2)


def train(packed: bool, steps: int, max_len: int, hidden_size: int, seed: int) -> float:
    """Train with Adam on fresh batches; returns the accuracy on 1000 new sequences."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = LastValueClassifier(hidden_size, packed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x, lengths, y = make_batch(64, max_len, gen)
        loss = nn.functional.cross_entropy(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, lengths, y = make_batch(1000, max_len, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return float((model(x, lengths).argmax(-1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--max-len", type=int, default=40)
    parser.add_argument("--hidden-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    acc = {
        name: train(name == "packed", args.steps, args.max_len, args.hidden_size, args.seed)
        for name in ("packed", "padded")
    }
    print(f"| input | test accuracy after {args.steps} steps |\n|---|---|")
    for name, a in acc.items():
        print(f"| {name} | {a:.3f} |")
    return acc


if __name__ == "__main__":
    main()
