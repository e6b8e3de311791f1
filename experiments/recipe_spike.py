"""The loss spike of the expRNN recipe on copy memory at T=100, step by step.

Trains what ``tests/test_recipes.py::test_recipe_solves_copy_at_t100_within_600_steps``
trains (orthogonal modReLU RNN, H=128, Henaff init, RMSprop lr 1e-3 with 1e-4 on the
orthogonal parameter, batch 128, the same seeds and batches) and records at every step: the
loss (and its ratio to the memoryless baseline 10 ln 8 / (T + 20)), the gradient norm of
the orthogonal parameter and of all the others (before any clipping), the norm of the update
the optimizer made to each, and the largest ``|h|`` of the hidden states.
It also records the size of RMSprop's second-moment estimate ``v`` before the step,
``sqrt(sum v)`` for each group (the gradient norm RMSprop expects: it divides by
``sqrt(v)``), and for the orthogonal parameter how far the gradient is from it,
``surprise = ||g|| / sqrt(sum v)`` (about 1 while gradients are steady), and the largest step
of one entry in units of the learning rate (RMSprop bounds it by ``1 / sqrt(1 - alpha) = 10``).

Variants (``--variants``, comma-separated):

* ``recipe``: as the test, no clipping;
* ``clip1`` (any ``clipX``): ``clip_grad_norm_(params, X)`` over all parameters before each
  step (what ``trainer.gradient_clip_val: X`` does); ``clipX@S``: from step S on only;
* ``eps1e-6`` / ``eps1e-4`` (any ``epsX``): RMSprop's ``eps`` (torch's default 1e-8);
* ``tanh``: the same with a tanh RNN (a model that should not solve copy in this budget).

Writes a summary table (one row per run) and the steps around the recipe's worst spike to
``experiments/results/recipe_spike.md``; ``--csv`` also writes every step of every run.
To see another CPU's kernels on this one, set ``ATEN_CPU_CAPABILITY=avx2`` (with
``MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2``): the trajectory changes.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/recipe_spike.py     # the test's seed, 3 min
    OMP_NUM_THREADS=1 .venv/bin/python experiments/recipe_spike.py --variants recipe,clip1 \
        --seeds 1,2,3,4,5,6 --steps 1000 --out /tmp/seeds.md --csv /tmp/seeds.csv
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

import seqnorm
from seqnorm import SpectralRNN

RESULTS = Path(__file__).resolve().parent / "results"
#: Environment variables that change which kernels torch uses (named in the results' command).
ENV_KNOBS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA")


def cpu_name() -> str:
    """lscpu's model name and the ATen CPU capability torch dispatches to."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln)
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name} (torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()})"


def run(
    variant: str, steps: int, seed: int = 0, T: int = 100, B: int = 128, H: int = 128
) -> pd.DataFrame:
    """One training run of ``variant``; one row per step. Seed 0 is the test's."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    nonlin = "tanh" if variant == "tanh" else "modrelu"
    eps = float(variant[3:]) if variant.startswith("eps") else 1e-8
    clip, clip_from = None, 0
    if variant.startswith("clip"):
        clip, _, start = variant[4:].partition("@")
        clip, clip_from = float(clip), int(start or 0)
    rnn = SpectralRNN(10, H, nonlinearity=nonlin, constraint="orthogonal", init="henaff",
                      batch_first=True)  # fmt: skip
    head = nn.Linear(H, 9)
    model = nn.ModuleList([rnn, head])
    groups = seqnorm.param_groups(model, lr=1e-3, constrained_lr=1e-4, eps=eps)
    opt = torch.optim.RMSprop(groups)
    orth, others = groups[1]["params"], groups[0]["params"]
    baseline = 10 * math.log(8) / (T + 20)
    rows = []
    for step in range(steps):
        seq = torch.randint(1, 9, (B, 10), generator=g)
        blank = torch.zeros(B, T - 1, dtype=torch.long)
        x = torch.cat([seq, blank, torch.full((B, 1), 9), torch.zeros(B, 10, dtype=torch.long)], 1)
        y = torch.cat([torch.zeros(B, T + 10, dtype=torch.long), seq], 1)
        out, _ = rnn(F.one_hot(x, 10).float())  # (B, T + 20, H)
        loss = F.cross_entropy(head(out).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        norm = torch.linalg.vector_norm
        g_orth = norm(torch.stack([p.grad.norm() for p in orth]))
        g_rest = norm(torch.stack([p.grad.norm() for p in others]))
        v_orth, v_rest = ([opt.state[p]["square_avg"].sum() for p in ps if p in opt.state]
                          for ps in (orth, others))  # fmt: skip
        sqrt_v_orth = float(torch.stack(v_orth).sum().sqrt()) if v_orth else math.nan
        sqrt_v_rest = float(torch.stack(v_rest).sum().sqrt()) if v_rest else math.nan
        if clip is not None and step >= clip_from:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        before = [p.detach().clone() for p in (*orth, *others)]
        opt.step()
        d = [p.detach() - b for p, b in zip((*orth, *others), before, strict=True)]
        d_orth, d_rest = d[: len(orth)], d[len(orth) :]
        rows.append(
            {
                "variant": variant,
                "seed": seed,
                "step": step,
                "loss": loss.item(),
                "ratio": loss.item() / baseline,
                "grad_orth": float(g_orth),
                "grad_rest": float(g_rest),
                "update_orth": float(norm(torch.stack([t.norm() for t in d_orth]))),
                "update_rest": float(norm(torch.stack([t.norm() for t in d_rest]))),
                "sqrt_v_orth": sqrt_v_orth,
                "sqrt_v_rest": sqrt_v_rest,
                "surprise_orth": float(g_orth) / sqrt_v_orth,
                "max_step_orth_lr": max(float(t.abs().max()) for t in d_orth) / groups[1]["lr"],
                "max_abs_h": float(out.detach().abs().max()),
            }
        )
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame, solve_ratio: float = 0.1) -> dict[str, object]:
    """First step at ``solve_ratio`` x baseline, the worst ratio after it, tail statistics."""
    r = df["ratio"].to_numpy()
    hit = [i for i, v in enumerate(r) if v <= solve_ratio]
    first = hit[0] if hit else None
    after = df.iloc[first:] if first is not None else df.iloc[:0]
    worst = after.loc[after["ratio"].idxmax()] if len(after) else None
    return {
        "variant": df["variant"].iloc[0],
        "seed": int(df["seed"].iloc[0]),
        "first<=0.1x": first,
        "max ratio after": None if worst is None else round(float(worst["ratio"]), 2),
        "at step": None if worst is None else int(worst["step"]),
        "steps >0.1x after": int((after["ratio"] > solve_ratio).sum()),
        "median last 100": round(float(df["ratio"].iloc[-100:].median()), 4),
        "mean last 20": round(float(df["ratio"].iloc[-20:].mean()), 4),
        "max grad_orth": round(float(df["grad_orth"].max()), 2),
        "max update_orth": round(float(df["update_orth"].max()), 4),
        "max surprise_orth": round(float(df["surprise_orth"].max()), 1),
        "max abs h": round(float(df["max_abs_h"].max()), 1),
    }


def spike_excerpt(df: pd.DataFrame, before: int = 6, after: int = 4) -> str | None:
    """The steps around the worst loss after the first solve, when it was above baseline."""
    info = summary(df)
    if info["at step"] is None or info["max ratio after"] <= 1:
        return None
    k = info["at step"]
    cols = ["step", "ratio", "grad_orth", "grad_rest", "sqrt_v_orth", "surprise_orth",
            "update_orth", "update_rest", "max_step_orth_lr", "max_abs_h"]  # fmt: skip
    rows = df[(df["step"] >= k - before) & (df["step"] <= k + after)][cols]
    return rows.to_markdown(index=False, floatfmt=".4g")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="recipe,clip1,clip0.1,eps1e-4,eps1e-3,eps1e-2,tanh")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", default="0", help="comma-separated; 0 is the test's")
    ap.add_argument("--out", default=str(RESULTS / "recipe_spike.md"), help="summary table")
    ap.add_argument("--csv", default=None, help="also write every step of every run here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cpu = cpu_name()
    print(cpu, flush=True)
    frames, rows, excerpts = [], [], []
    for seed in (int(s) for s in a.seeds.split(",")):
        for v in a.variants.split(","):
            t0 = time.perf_counter()
            df = run(v, a.steps, seed)
            frames.append(df)
            rows.append({**summary(df), "s": round(time.perf_counter() - t0)})
            print(rows[-1], flush=True)
            if v == "recipe" and (text := spike_excerpt(df)):
                excerpts.append(f"Seed {seed}, the recipe, around its worst step:\n\n{text}\n")
    if a.csv:
        pd.concat(frames).to_csv(a.csv, index=False)
    table = pd.DataFrame(rows).to_markdown(index=False)
    env = " ".join(f"{k}={os.environ[k]}" for k in ENV_KNOBS if k in os.environ)
    command = f"{env} python experiments/recipe_spike.py".strip()
    Path(a.out).write_text(
        f"# Loss spike of the copy recipe (T=100, {a.steps} steps)\n\n"
        f"- CPU: {cpu}, one thread\n"
        f"- command: `{command} --variants {a.variants} --steps {a.steps} --seeds {a.seeds}`\n"
        "- ratio: loss / memoryless baseline; first<=0.1x: first step at 0.1x baseline; max ratio "
        "after: the worst step after it\n\n"
        f"{table}\n\n" + "\n".join(excerpts)
    )
    print(table)
    print(*excerpts, sep="\n")


if __name__ == "__main__":
    main()
