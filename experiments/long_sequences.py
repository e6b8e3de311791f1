"""Peak memory and time of training steps on very long sequences (adding problem).

Runs a few training steps of SeqModel (spectral GRU) on the adding problem at T=10,000 (by
default) in a fresh subprocess per setting, full backpropagation through time and truncated
(``tbptt_steps``), and reports the peak resident memory (``ru_maxrss``) of each process
and the median step time. Writes ``experiments/results/long_sequences.md``.

    python experiments/long_sequences.py                  # T=10000, B=32, H=128
    python experiments/long_sequences.py --seq-len 20000 --tbptt 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

CHILD = """
import json, resource, statistics, sys, time
import torch
from seqnorm.data import AddingDataModule
from seqnorm.model import SeqModel
args = json.loads(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(0)
dm = AddingDataModule(seq_len=args["T"], batch_size=args["B"], num_train=args["B"] * 4)
dm.setup("fit")
model = SeqModel.from_datamodule(dm, hidden_size=args["H"], constraint="spectral",
                                 tbptt_steps=args["tbptt"])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for x, y in list(dm.train_dataloader())[: args["steps"]]:
    t0 = time.perf_counter()
    if args["tbptt"]:
        state = None
        chunks = model.features(x).split(args["tbptt"], dim=1)
        for i, chunk in enumerate(chunks):
            if i < len(chunks) - 1:
                with torch.no_grad():
                    _, state = model.rnn(chunk, state)
                continue
            out, _ = model.rnn(chunk, state)
            loss = model.loss(model.decode(out), y)
    else:
        loss = model.loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak / 1024, "before_mib": base / 1024,
                  "median_s": statistics.median(times), "loss": float(loss)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--tbptt", type=int, default=500)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="experiments/results/long_sequences.md")
    a = ap.parse_args()
    rows = []
    for tbptt in (None, a.tbptt):
        cfg = {"T": a.seq_len, "B": a.batch, "H": a.hidden, "tbptt": tbptt, "steps": a.steps}
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True,
                              text=True, check=True)  # fmt: skip
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((tbptt, res))
        print(cfg, res, flush=True)
    lines = [
        "# Long sequences: peak memory of a training step (spectral GRU, adding problem)",
        "",
        f"- T={a.seq_len}, B={a.batch}, H={a.hidden}, input 2 features, one thread, "
        f"{a.steps} steps; torch {__import__('torch').__version__}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "- peak = `ru_maxrss` of a fresh process after the steps (includes ~the interpreter, "
        "torch and the data); before = the same right before the first step",
        "- Regenerate: `python experiments/long_sequences.py`",
        "",
        "| backprop | peak RSS MiB | RSS before steps MiB | median s / step |",
        "|---|---:|---:|---:|",
    ]
    for tbptt, r in rows:
        name = "full BPTT" if tbptt is None else f"truncated, last {tbptt} steps"
        lines.append(
            f"| {name} | {r['peak_mib']:.0f} | {r['before_mib']:.0f} | {r['median_s']:.2f} |"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
