"""The console script end to end: every config fits, resume, validate/test, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MNIST_DIR, subprocess_env
from wandb_offline import read_offline_run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TINY = [
    "--model.hidden_size",
    "8",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.limit_test_batches",
    "2",
]
DATA_TINY = {
    "copy": ["--data.seq_len", "5", "--data.batch_size", "4"],
    "adding": ["--data.seq_len", "6", "--data.batch_size", "4"],
    "smnist": [
        "--data.data_dir",
        str(MNIST_DIR),
        "--data.batch_size",
        "4",
        "--data.limit_train",
        "64",
        "--data.download",
        "false",
    ],
}
DATA_TINY["psmnist"] = DATA_TINY["smnist"]


def seqnorm(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("seqnorm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "seqnorm.cli"]
    env = subprocess_env()
    proc = subprocess.run(
        [*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def _needs_mnist(name: str) -> None:
    if "mnist" in name and not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found at {MNIST_DIR}")


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_fits(config, tmp_path):
    _needs_mnist(config.stem)
    seqnorm(
        "fit",
        "--config",
        str(config),
        "--trainer.max_steps",
        "3",
        *TINY,
        *DATA_TINY[config.stem],
        cwd=tmp_path,
    )
    ckpts = list((tmp_path / "runs" / config.stem / "checkpoints").glob("last*.ckpt"))
    assert ckpts, f"no checkpoint written for {config.name}"
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 3
    # The config's offline W&B run: probe scalars and images in its history, the whole CLI
    # configuration in its config.
    run = read_offline_run(tmp_path / "runs" / config.stem)
    for key in ("probe/decay_rate", "probe/grad_ratio", "probe/sigma_max/l0/z",
                "probe/gradient_flow/heatmap/_type", "probe/spectrum/spectrum/_type"):  # fmt: skip
        assert key in run["history_keys"], key
    cli_config = json.loads(run["config"]["config"])
    assert cli_config["trainer"]["max_steps"] == 3 and cli_config["model"]["hidden_size"] == 8
    assert list(run["run_dir"].glob("files/media/images/probe/gradient_flow/heatmap_*.png"))


@pytest.mark.slow
def test_resume_validate_test_and_second_run(tmp_path):
    cfg = str(ROOT / "configs" / "copy.yaml")
    args = ["--config", cfg, *TINY, *DATA_TINY["copy"]]
    seqnorm("fit", *args, "--trainer.max_steps", "3", cwd=tmp_path)
    last = tmp_path / "runs/copy/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    seqnorm("fit", *args, "--trainer.max_steps", "6", "--ckpt_path", "last", cwd=tmp_path)
    assert torch.load(last, weights_only=False)["global_step"] == 6
    out = seqnorm("test", *args, "--ckpt_path", str(last), cwd=tmp_path)
    assert "test/loss" in out.stdout
    seqnorm("validate", *args, "--ckpt_path", str(last), cwd=tmp_path)
    # A second, fresh run into the same directory (config file, logs, checkpoints exist).
    # Lightning keeps the old last.ckpt and versions the new one (last-v1.ckpt); `--ckpt_path
    # last` picks the newest.
    seqnorm("fit", *args, "--trainer.max_steps", "2", cwd=tmp_path)
    newest = max(last.parent.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert newest != last and torch.load(newest, weights_only=False)["global_step"] == 2
    assert torch.load(last, weights_only=False)["global_step"] == 6  # nothing lost


def test_print_config_and_overrides(tmp_path):
    out = seqnorm(
        "fit",
        "--config",
        str(ROOT / "configs/copy.yaml"),
        "--model.constraint",
        "orthogonal",
        "--data.seq_len",
        "500",
        "--print_config",
        cwd=tmp_path,
    )
    assert "constraint: orthogonal" in out.stdout and "seq_len: 500" in out.stdout


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--data.bogus", "3"], "Option 'bogus' is not accepted"),
        (["--trainer.max_steps", "abc"], "trainer.max_steps"),
        (["--model.cell", "transformer"], "cell must be one of"),
        (["--model.constraint", "nuclear"], "constraint must be one of"),
        (["--data.seq_len", "0"], "seq_len must be >= 1, got 0"),
        (["--data.batch_size", "0"], "batch_size must be >= 1, got 0"),
        (
            ["--model.tbptt_steps", "5", "--trainer.gradient_clip_val", "1.0"],
            "clipping is not supported for manual optimization",
        ),
    ],
)
def test_bad_input_one_line_error(extra, match, tmp_path):
    proc = seqnorm(
        "fit", "--config", str(ROOT / "configs/copy.yaml"), *extra, cwd=tmp_path, check=False
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("seqnorm: error:") and match in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.ckpt"))


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1,\n")
    proc = seqnorm("fit", "--config", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "seqnorm: error: invalid configuration" in proc.stderr


def test_missing_mnist_files_error(tmp_path):
    proc = seqnorm(
        "fit",
        "--config",
        str(ROOT / "configs/smnist.yaml"),
        "--data.data_dir",
        str(tmp_path / "empty"),
        "--data.download",
        "false",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "seqnorm: error:" in proc.stderr and str(tmp_path / "empty") in proc.stderr
    assert "Traceback" not in proc.stderr
