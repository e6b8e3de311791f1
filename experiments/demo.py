"""The main job (`make demo`): spectral GRU vs unconstrained GRU on the copy task.

Both runs go through the `seqnorm` CLI with `configs/copy.yaml`, shortened so the pair takes
a few minutes on a 2-core CPU (delay T=50, 600 steps, H=64). Each run logs to an offline W&B
run and writes its gradient-flow figures; this script then puts the two heatmaps side by side
in `runs/demo/gradient_flow.png`.

    python experiments/demo.py                 # what `make demo` runs
    python experiments/demo.py --steps 2000    # longer
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_config(constraint: str, out: Path, steps: int, seq_len: int) -> Path:
    """configs/copy.yaml with the demo's short settings, writing under ``out``."""
    cfg = yaml.safe_load((ROOT / "configs/copy.yaml").read_text())
    trainer = cfg["trainer"]
    trainer.update(max_steps=steps, val_check_interval=steps // 3, default_root_dir=str(out))
    trainer["logger"]["init_args"].update(save_dir=str(out), name=f"demo-copy-{constraint}")
    # A CSV logger beside the W&B one, so that this script can print the outcome.
    csv_logger = {"class_path": "pytorch_lightning.loggers.CSVLogger",
                  "init_args": {"save_dir": str(out), "name": "csv"}}  # fmt: skip
    trainer["logger"] = [trainer["logger"], csv_logger]
    for cb in trainer["callbacks"]:
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"].update(dirpath=str(out / "checkpoints"), every_n_train_steps=steps // 3)
        if cb["class_path"].endswith("GradientFlowMonitor"):
            cb["init_args"].update(every_n_steps=max(steps // 30, 1))
    cfg["model"].update(constraint=constraint, hidden_size=64)
    cfg["data"]["init_args"].update(seq_len=seq_len, batch_size=64, num_train=64 * steps)
    path = out / "demo-config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def outcome(out: Path) -> str:
    """Last validation loss and symbol accuracy against the baseline, and the decay rate."""
    import csv

    (path,) = sorted((out / "csv").glob("version_*/metrics.csv"))[-1:]
    last: dict[str, str] = {}
    for row in csv.DictReader(path.open()):
        last.update({k: v for k, v in row.items() if v})
    base = float(last["train/baseline"])
    return (
        f"val loss {float(last['val/loss']):.4f} (memoryless baseline {base:.4f}, "
        f"ratio {float(last['val/loss']) / base:.2f}), symbol accuracy "
        f"{100 * float(last['val/symbol_acc']):.1f}% (chance 12.5%), gradient decay "
        f"{float(last['probe/decay_rate']):+.2f} log10 per 100 steps"
    )


def side_by_side(images: dict[str, Path], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(7 * len(images), 5))
    for ax, (name, path) in zip(axes, images.items(), strict=True):
        ax.imshow(plt.imread(path))
        ax.set_title(f"GRU, constraint={name}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seq-len", type=int, default=50, help="copy-task delay T")
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = ap.parse_args()
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    env.setdefault("OMP_NUM_THREADS", "1")
    heatmaps = {}
    for constraint in ("spectral", "none"):
        out = args.out / constraint
        cfg = run_config(constraint, out, args.steps, args.seq_len)
        print(f"== training GRU constraint={constraint} ({args.steps} steps) -> {out}", flush=True)
        t0 = time.time()
        cmd = [sys.executable, "-m", "seqnorm.cli", "fit", "--config", str(cfg),
               "--trainer.enable_progress_bar", "false"]  # fmt: skip
        subprocess.run(cmd, env=env, check=True)
        print(f"   done in {time.time() - t0:.0f} s: {outcome(out)}", flush=True)
        heatmaps[constraint] = out / "gradient_flow" / "heatmap.png"
    dest = args.out / "gradient_flow.png"
    side_by_side(heatmaps, dest)
    print(f"\nGradient-flow heatmaps: {dest}")
    print(f"Per-run figures:        {args.out}/<constraint>/gradient_flow/")
    print(f"Offline W&B runs:       {args.out}/<constraint>/wandb/ (upload: wandb sync <run dir>)")


if __name__ == "__main__":
    main()
