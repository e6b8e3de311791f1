"""The console script end to end: every config fits, one directory per run, resume,
validate/test, data found from any directory, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
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
#: Tiny data options by DataModule, for configs added later (e.g. the published recipes).
DATA_TINY_BY_CLASS = {
    "seqnorm.data.CopyMemoryDataModule": DATA_TINY["copy"],
    "seqnorm.data.AddingDataModule": DATA_TINY["adding"],
    "seqnorm.data.SequentialMNISTDataModule": DATA_TINY["smnist"],
    "seqnorm.data.PermutedMNISTDataModule": DATA_TINY["smnist"],
}


def data_tiny(config: Path) -> list[str]:
    data = yaml.safe_load(config.read_text())["data"]["class_path"]
    return DATA_TINY.get(config.stem) or DATA_TINY_BY_CLASS[data]


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


def _last_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("seqnorm: error:"), last
    return last


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_fits(config, tmp_path):
    _needs_mnist(config.stem)
    proc = seqnorm(
        "fit",
        "--config",
        str(config),
        "--trainer.max_steps",
        "3",
        *TINY,
        *data_tiny(config),
        cwd=tmp_path,
    )
    (run_dir,) = (tmp_path / "runs" / config.stem).iterdir()  # one run, one directory
    assert run_dir.name == "version_0"
    ckpts = list(run_dir.rglob("last*.ckpt"))
    assert len(ckpts) == 1, f"no (or several) last checkpoints for {config.name}: {ckpts}"
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing outside it
    # The config's offline W&B run: probe scalars and images in its history, the whole CLI
    # configuration in its config.
    run = read_offline_run(run_dir)
    for key in ("probe/decay_rate", "probe/grad_ratio",
                "probe/gradient_flow/heatmap/_type", "probe/spectrum/spectrum/_type"):  # fmt: skip
        assert key in run["history_keys"], key
    assert [k for k in run["history_keys"] if k.startswith("probe/sigma_max/l0/")]
    cli_config = json.loads(run["config"]["config"])
    assert cli_config["trainer"]["max_steps"] == 3 and cli_config["model"]["hidden_size"] == 8
    assert list(run["run_dir"].glob("files/media/images/probe/gradient_flow/heatmap_*.png"))
    # The fit's verdict: stdout's last line, in the run directory and in the W&B summary.
    line = proc.stdout.strip().splitlines()[-1]
    assert json.loads((run_dir / "verdict.json").read_text())["line"] == line
    assert json.loads(run["summary"]["verdict"]) == line
    tasks = {"copy": "copy T=5", "adding": "adding T=6", "smnist": "sMNIST", "psmnist": "psMNIST"}
    assert line.startswith(tasks[config.stem.split("_")[0]] + ": "), line


def _outputs(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run but W&B's own (its logs change when a later run resumes it)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and "wandb" not in p.parts
    }


def _wandb_ids(run_dir: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}


@pytest.mark.slow
def test_one_directory_per_run_resume_validate_test(tmp_path):
    cfg = str(ROOT / "configs" / "copy.yaml")
    args = ["--config", cfg, *TINY, *DATA_TINY["copy"]]
    seqnorm("fit", *args, "--trainer.max_steps", "3", cwd=tmp_path)
    seqnorm("fit", *args, "--trainer.max_steps", "2", cwd=tmp_path)
    # Two consecutive runs: two complete, separate run directories.
    first, second = tmp_path / "runs/copy/version_0", tmp_path / "runs/copy/version_1"
    assert sorted(p.name for p in (tmp_path / "runs/copy").iterdir()) == ["version_0", "version_1"]
    ids = []
    for run_dir, steps in ((first, 3), (second, 2)):
        files = _outputs(run_dir)
        for name in ("run.json", "config.yaml", "checkpoints/last.ckpt",
                     "gradient_flow/heatmap.png", "gradient_flow/curve.png",
                     "gradient_flow/grad_norms.csv", "spectrum/spectrum.png",
                     "spectrum/singular_values.csv"):  # fmt: skip
            assert name in files, (run_dir, name)
        assert not [n for n in files if "last-v" in n]
        last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
        assert last["global_step"] == steps
        run_id = json.loads(files["run.json"])["run_id"]
        assert _wandb_ids(run_dir) == {run_id}  # its own W&B run, inside it
        rows = (run_dir / "gradient_flow/grad_norms.csv").read_text().splitlines()
        assert rows[0].startswith("run_id,step,") and all(r.startswith(run_id) for r in rows[1:])
        ids.append(run_id)
    assert ids[0] != ids[1]
    before = _outputs(first)

    # `--ckpt_path last` needs the run named, and says which one is the newest.
    proc = seqnorm("fit", *args, "--ckpt_path", "last", cwd=tmp_path, check=False)
    last_line = _last_line(proc)
    assert "--run_dir" in last_line and "runs/copy/version_1" in last_line
    # A fresh fit into a run that has checkpoints is refused: nothing gets overwritten.
    proc = seqnorm("fit", *args, "--run_dir", str(first), cwd=tmp_path, check=False)
    assert "already holds a run" in _last_line(proc)
    assert _outputs(first) == before

    # Resume the first run by name: its own last.ckpt, its own W&B run id.
    seqnorm("fit", *args, "--trainer.max_steps", "6", "--run_dir", "runs/copy/version_0",
            "--ckpt_path", "last", cwd=tmp_path)  # fmt: skip
    assert torch.load(first / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6
    assert not list(first.rglob("last-v*.ckpt"))
    assert len(list((first / "wandb").glob("offline-run-*"))) == 2
    assert _wandb_ids(first) == {ids[0]}  # the resumed run continues the same W&B run
    assert (first / "config-2.yaml").is_file() and (first / "config.yaml").read_bytes() == before[
        "config.yaml"
    ]
    rows = (first / "gradient_flow/grad_norms.csv").read_text().splitlines()[1:]
    # the resumed session's probe (at its start, step 3) appended under the same run id
    assert {r.split(",")[0] for r in rows} == {ids[0]}
    assert {r.split(",")[1] for r in rows} == {"0", "3"}
    assert sorted(p.name for p in (tmp_path / "runs/copy").iterdir()) == ["version_0", "version_1"]

    # validate / test a run's checkpoint: they log into that run, no new directory.
    ckpt = str(first / "checkpoints/last.ckpt")
    out = seqnorm("test", *args, "--ckpt_path", ckpt, cwd=tmp_path)
    assert "test/loss" in out.stdout
    seqnorm("validate", *args, "--ckpt_path", ckpt, cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs/copy").iterdir()) == ["version_0", "version_1"]
    assert _wandb_ids(first) == {ids[0]}
    assert torch.load(ckpt, weights_only=False)["global_step"] == 6  # nothing lost


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
    assert match in _last_line(proc), proc.stderr[-2000:]
    # nothing written, and no empty run directory left behind
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.*"))


def test_garbage_checkpoint_one_line(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    proc = seqnorm(
        "fit",
        "--config",
        str(ROOT / "configs/copy.yaml"),
        "--ckpt_path",
        str(garbage),
        cwd=tmp_path,
        check=False,
    )
    last = _last_line(proc)
    assert "garbage.ckpt is not a checkpoint" in last
    assert "weights_only" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1,\n")
    proc = seqnorm("fit", "--config", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "seqnorm: error: invalid configuration" in proc.stderr


def test_missing_mnist_files_error(tmp_path):
    empty = tmp_path / ("a-long-folder-name-" * 6) / "empty"
    proc = seqnorm(
        "fit",
        "--config",
        str(ROOT / "configs/smnist.yaml"),
        "--data.data_dir",
        str(empty),
        "--data.download",
        "false",
        cwd=tmp_path,
        check=False,
    )
    last = _last_line(proc)
    assert str(empty) in last
    # the whole hint, however long the folder name: what to do is at its end
    assert last.endswith("or pass data_dir=<a folder that has them>."), last
    assert "Place the four IDX files" in last and "SEQNORM_DATA" in last


def _tiny_mnist_checkout(root: Path) -> Path:
    """A checkout-like tree: configs/smnist.yaml beside data/mnist with tiny IDX files."""
    from test_data import write_tiny_mnist

    (root / "configs").mkdir(parents=True)
    config = root / "configs/smnist.yaml"
    config.write_text((ROOT / "configs/smnist.yaml").read_text())
    (root / "data/mnist").mkdir(parents=True)
    write_tiny_mnist(root / "data/mnist", n_train=40, n_test=8)
    return config


MNIST_FAKE = ["--data.val_size", "8", "--data.batch_size", "4", "--data.download", "false"]


@pytest.mark.slow
def test_smnist_config_from_any_directory(tmp_path):
    """The data beside the checkout is found from another working directory."""
    config = _tiny_mnist_checkout(tmp_path / "checkout")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    seqnorm("fit", "--config", str(config), *TINY, *MNIST_FAKE, "--trainer.max_steps", "2",
            cwd=elsewhere)  # fmt: skip
    (ckpt,) = (elsewhere / "runs/smnist/version_0/checkpoints").glob("last.ckpt")
    assert torch.load(ckpt, weights_only=False)["global_step"] == 2
    assert not (elsewhere / "data").exists()  # nothing downloaded or created here


@pytest.mark.parametrize("where", ["beside the config", "SEQNORM_DATA", "cwd"])
def test_data_dir_lookup_order(where, tmp_path, monkeypatch):
    """A relative data_dir: $SEQNORM_DATA/<name>, then beside the config, then the cwd."""
    import pytorch_lightning as pl

    from seqnorm.cli import SeqnormCLI
    from seqnorm.model import SeqModel

    config = _tiny_mnist_checkout(tmp_path / "checkout")
    cwd = tmp_path / "cwd"
    (cwd / "data/mnist").mkdir(parents=True)  # data_dir ../data/mnist from cwd/sub
    (cwd / "sub").mkdir()
    shelf = tmp_path / "shelf"
    (shelf / "mnist").mkdir(parents=True)
    monkeypatch.chdir(cwd / "sub")
    monkeypatch.delenv("SEQNORM_DATA", raising=False)
    expected = config.parent.parent / "data/mnist"
    if where == "SEQNORM_DATA":
        monkeypatch.setenv("SEQNORM_DATA", str(shelf))
        expected = shelf / "mnist"
    elif where == "cwd":
        for f in expected.iterdir():
            f.unlink()
        expected.rmdir()
        expected = cwd / "data/mnist"
    cli = SeqnormCLI(SeqModel, pl.LightningDataModule, subclass_mode_data=True,
                     save_config_callback=None, run=False,
                     args=["--config", str(config), *MNIST_FAKE])  # fmt: skip
    assert Path(cli.datamodule.data_dir) == expected


def test_place_outputs_asks_the_callback_where_it_writes(tmp_path):
    """A callback that implements RunDirOutput gets its folder inside the run directory and
    the run's id; one that only has a ``dirname`` attribute is left as configured."""
    from jsonargparse import Namespace

    from seqnorm.rundir import RunDirOutput, place_outputs

    mod = tmp_path / "usercb.py"
    mod.write_text(
        "import pytorch_lightning as pl\n"
        "from seqnorm.rundir import RunDirOutput\n"
        "class Mine(pl.Callback, RunDirOutput):\n"
        "    @classmethod\n"
        "    def run_subdir(cls):\n"
        "        return 'mine'\n"
        "    def __init__(self, dirpath=None, run_id=None):\n"
        "        self.dirpath, self.run_id = dirpath, run_id\n"
        "class Named(pl.Callback):\n"
        "    dirname = 'named'\n"
        "    def __init__(self, dirpath=None, run_id=None):\n"
        "        self.dirpath, self.run_id = dirpath, run_id\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        entry = {"dirpath": None, "run_id": None}
        cfg = Namespace(trainer=Namespace(logger=None, callbacks=[
            Namespace(class_path="usercb.Mine", init_args=Namespace(**entry)),
            Namespace(class_path="usercb.Named", init_args=Namespace(**entry)),
            Namespace(class_path="seqnorm.callbacks.SpectrumMonitor",
                      init_args=Namespace(**entry)),
        ]))  # fmt: skip
        run_dir = tmp_path / "runs" / "version_0"
        place_outputs(cfg, run_dir, tmp_path / "runs", "abc123")
        mine, named, spectrum = (c.init_args for c in cfg.trainer.callbacks)
        assert (mine.dirpath, mine.run_id) == (str(run_dir / "mine"), "abc123")
        assert (named.dirpath, named.run_id) == (None, None)
        assert (spectrum.dirpath, spectrum.run_id) == (str(run_dir / "spectrum"), "abc123")
        with pytest.raises(NotImplementedError, match="must implement run_subdir"):
            RunDirOutput.run_subdir()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("usercb", None)
