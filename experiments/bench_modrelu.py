"""Speed of the whole-sequence modReLU RNN against torch's tanh RNN (CPU, one thread).

One training step -- forward over the whole sequence, then backward of ``sum(out * g)``
for a fixed random ``g`` -- of one layer at ``T=1000, B=128`` and each ``H``, with
``input_size = H`` (the input projection ``x @ W_ih^T + b_ih`` and its gradient are in
every row):

* ``torch.nn.RNN(nonlinearity="tanh")``: the reference (ratio 1.00);
* ``modrelu_rnn``: the ``torch.autograd.Function`` with the hand-written backward;
* ``modrelu_step`` loop: the same equations stepped in plain autograd ops (what the
  unrolled path and the cell do).

Times are medians of ``torch.utils.benchmark.Timer.blocked_autorange`` on one thread, the
variants interleaved over rounds (the reported time is the median over rounds), so noise on
a shared machine hits them alike. Writes ``experiments/results/modrelu_speed.md``.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_modrelu.py
    OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_modrelu.py --quick   # prints only
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils import benchmark

from seqnorm.layers.modrelu import modrelu_rnn, modrelu_step

OUT = Path(__file__).resolve().parent / "results" / "modrelu_speed.md"
VARIANTS = ("torch.nn.RNN(tanh)", "modrelu_rnn (Function)", "modrelu_step loop (autograd)")


def steps(T: int, B: int, H: int) -> dict[str, Callable[[], None]]:
    """One zero-argument training step per variant, all with the same weights."""
    rnn = nn.RNN(H, H, nonlinearity="tanh")
    bias = nn.Parameter(torch.empty(H).uniform_(-0.01, 0.01))  # modReLU's b
    params = [*rnn.parameters(), bias]
    x, h0, g = torch.randn(T, B, H), torch.zeros(1, B, H), torch.randn(T, B, H)
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0

    def backward(out: Tensor) -> None:
        out.backward(g)
        for p in params:
            p.grad = None

    def torch_rnn() -> None:
        backward(rnn(x, h0)[0])

    def function() -> None:
        backward(modrelu_rnn(F.linear(x, w_ih, b_ih), h0[0], w_hh, b_hh, bias))

    def loop() -> None:
        h, hs = h0[0], []
        for gi_t in F.linear(x, w_ih, b_ih).unbind(0):  # (B, H) each
            h = modrelu_step(gi_t, h, w_hh, b_hh, bias)
            hs.append(h)
        backward(torch.stack(hs))  # (T, B, H)

    return dict(zip(VARIANTS, (torch_rnn, function, loop), strict=True))


def measure(T: int, B: int, H: int, rounds: int, min_run_time: float) -> dict[str, float]:
    """Median over rounds of each variant's median ms per step."""
    fns = steps(T, B, H)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        order = list(fns)[r % len(fns) :] + list(fns)[: r % len(fns)]
        for k in order:
            timer = benchmark.Timer("fn()", globals={"fn": fns[k]}, num_threads=1)
            times[k].append(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=100, one round, no file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    T, B = (100, 128) if args.quick else (1000, 128)
    rounds, min_run_time = (1, 0.2) if args.quick else (3, 2.0)
    rows = []
    for H in (128, 190):
        ms = measure(T, B, H, rounds, min_run_time)
        ref = ms[VARIANTS[0]]
        for k, v in ms.items():
            rows.append(f"| {H} | {k} | {v:.1f} | {v / ref:.2f} |")
    table = [
        f"T={T}, B={B}, input_size=H, float32, one thread; forward + backward of one layer",
        "",
        "| H | variant | ms per step | ratio to torch |",
        "|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(table)
    print(text)
    if not args.quick:
        env = f"torch {torch.__version__}, {platform.processor() or platform.machine()}"
        cmd = "OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_modrelu.py"
        OUT.write_text(
            f"# modReLU RNN speed\n\n`{cmd}` ({env}; median of {rounds} interleaved rounds "
            f"of `Timer.blocked_autorange(min_run_time={min_run_time})`)\n\n{text}\n"
        )
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
