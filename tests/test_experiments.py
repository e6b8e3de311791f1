"""The reproduction grid (experiments/reproduce.py) and its report, on a two-run tiny grid."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import bench_speed  # noqa: E402
import report  # noqa: E402
import reproduce  # noqa: E402

TINY_BUDGET = {
    "name": "tiny",
    "seeds": [0],
    "probe_batch": 4,
    "overrides": {"model.hidden_size": 4, "trainer.log_every_n_steps": 1},
    "variants": {
        "gru_none": {
            "label": "GRU, none",
            "overrides": {"model.cell": "gru", "model.constraint": "none"},
        },
        "modrelu_orthogonal": {
            "label": "modReLU RNN, orthogonal",
            "overrides": {
                "model.cell": "rnn",
                "model.nonlinearity": "modrelu",
                "model.constraint": "orthogonal",
                "model.constrained_lr": 1e-4,
            },
        },
    },
    "tasks": {
        "copy": {
            "config": "configs/copy.yaml",
            "metric": "symbol_acc",
            # lenient, so that the criterion column gets a value on a 4-step run
            "criterion": {"metric": "train/loss_step", "baseline_fraction": 10.0},
            "overrides": {
                "data.seq_len": 3,
                "data.batch_size": 4,
                "data.num_train": 64,
                "data.num_val": 8,
                "data.num_test": 8,
                "trainer.max_steps": 4,
                "trainer.val_check_interval": 2,
            },
        }
    },
}


def test_budgets_expand_and_filter(tmp_path):
    for name in ("cpu", "paper", "lru"):
        runs = reproduce.expand(reproduce.load_budget(name), tmp_path)
        assert runs and len({r["run_id"] for r in runs}) == len(runs)
        assert [r["seed"] for r in runs] == sorted(r["seed"] for r in runs)  # seed-major
        for run in runs:
            assert (ROOT / run["config"]).exists()
    runs = reproduce.expand(reproduce.load_budget("cpu"), tmp_path)
    copy = reproduce.apply_filters(runs, ["task=copy", "seed=0"])
    assert {r["task"] for r in copy} == {"copy"} and {r["seed"] for r in copy} == {0}
    chrono = [r for r in runs if r["variant"] == "gru_chrono" and r["task"] == "adding"]
    assert chrono and all(r["overrides"]["model.chrono_init"] == 100 for r in chrono)
    with pytest.raises(SystemExit, match="--only expects key=value"):
        reproduce.apply_filters(runs, ["colour=red"])


def test_bad_budget_fails_early(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        reproduce.load_budget(str(tmp_path / "nope.yaml"))
    copy = {
        **TINY_BUDGET["tasks"]["copy"],
        "overrides": {"trainer.max_steps": 5, "trainer.val_check_interval": 2},
    }
    with pytest.raises(SystemExit, match="multiple of"):
        reproduce.expand({**TINY_BUDGET, "tasks": {"copy": copy}}, tmp_path)
    with pytest.raises(SystemExit, match="unknown variant 'lstm'"):
        bad = {**TINY_BUDGET["tasks"]["copy"], "variants": ["lstm"]}
        reproduce.expand({**TINY_BUDGET, "tasks": {"copy": bad}}, tmp_path)


def test_dirty_checkout_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "git_state", lambda root=None: ("abc", False))
    budget = tmp_path / "tiny.yaml"
    budget.write_text(yaml.safe_dump(TINY_BUDGET))
    with pytest.raises(SystemExit, match="--allow-dirty"):
        reproduce.main(["--budget", str(budget), "--out", str(tmp_path / "runs.csv")])


def test_git_state_sees_changes(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "seqnorm").mkdir()
    (tmp_path / "seqnorm" / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    commit, clean = reproduce.git_state(tmp_path)
    assert len(commit) == 40 and clean
    (tmp_path / "seqnorm" / "a.py").write_text("x = 2\n")
    assert reproduce.git_state(tmp_path) == (commit, False)


def test_steps_to_criterion_and_metrics(tmp_path):
    m = pd.DataFrame({"step": [9, 19, 29], "train/loss_step": [0.5, 0.03, 0.01],
                      "train/baseline": [0.2, None, None]})  # fmt: skip
    assert (
        reproduce.steps_to_criterion(m, {"metric": "train/loss_step", "baseline_fraction": 0.1})
        == 30
    )
    assert (
        reproduce.steps_to_criterion(m, {"metric": "train/loss_step", "threshold": 0.001}) is None
    )
    assert reproduce.steps_to_criterion(m, None) is None
    # a resumed run logs step 19 again in version_1: the later value wins
    for v, rows in enumerate(([[9, 0.5], [19, 0.02]], [[19, 0.03], [29, 0.01]])):
        (tmp_path / "logs" / f"version_{v}").mkdir(parents=True)
        pd.DataFrame(rows, columns=["step", "train/loss_step"]).to_csv(
            tmp_path / "logs" / f"version_{v}" / "metrics.csv", index=False
        )
    assert reproduce.read_metrics(tmp_path)["train/loss_step"].tolist() == [0.5, 0.03, 0.01]


def _fake_runs() -> pd.DataFrame:
    rows = []
    for variant, mse, crit in (("gru_none", 0.16, None), ("gru_none_proj", 0.001, 200.0)):
        for seed in (0, 1):
            rows.append(dict(run_id=f"adding_{variant}_s{seed}", status="ok", task="adding",
                             variant=variant, label=variant.replace("_", " "), seed=seed,
                             metric="mse", T=100, baseline=1 / 6, val_loss_final=mse,
                             test_metric_final=mse + seed * 1e-3, test_metric_at_best_val=mse,
                             steps_to_criterion=crit, decay_rate_init=-1.0, decay_rate_end=-2.0,
                             grad_ratio_end=0.1, fit_time_s=60.0, git_commit="a" * 40,
                             git_clean=True, run_dir=f"runs/{variant}_s{seed}"))  # fmt: skip
    return pd.DataFrame(rows)


def test_report_tables_and_check():
    df = _fake_runs()
    table = report.task_table(df)
    assert table["seeds"].tolist() == [2, 2]
    assert table["test MSE (final)"].tolist() == ["0.161 ± 0.00071", "0.0015 ± 0.00071"]
    assert table["steps to criterion (reached)"].tolist() == ["never (0/2)", "200 (2/2)"]
    assert table["below baseline (seeds)"].tolist() == ["0/2", "2/2"]
    head = report.headline(df)
    assert head.columns.tolist() == ["variant", "adding: test MSE", "adding: steps to criterion"]
    proj = report.projection_table(df)
    assert len(proj) == 1 and "200 (2/2)" in proj["input projection"].iloc[0]
    checks = dict(report.check(df))
    assert checks["one commit, clean"] and checks["no absolute paths"]
    assert not checks["a copy run at T=100 reaches the criterion"]
    dirty = df.assign(git_clean=[True, False, True, True], run_dir="/abs/path")
    checks = dict(report.check(dirty))
    assert not checks["one commit, clean"] and not checks["no absolute paths"]


def test_report_gradflow_keeps_steps_below_float_range_below_it():
    """probes.npz holds log10_norms curves; a step at the floor in every seed must come back
    as below float range (drawn as such), not 10**floor, a hair above it."""
    import numpy as np
    import torch

    from seqnorm.probes import below_range, log10_norms

    seeds = [log10_norms(torch.tensor(c)).numpy() for c in
             ([0.0, 0.0, 1e-3, 1e-1], [0.0, 1e-5, 1e-3, 1e-1])]  # fmt: skip
    norms = report.seed_mean_norms(seeds)
    assert norms.dtype == np.float32 and np.isfinite(norms).all()
    assert below_range(torch.from_numpy(norms)).tolist() == [True, False, False, False]
    assert np.allclose(np.log10(norms[2:]), [-3, -1])
    assert np.log10(norms[1]) == pytest.approx((-37.93 - 5) / 2, abs=0.01)  # floor counts


def test_report_elapsed_sums_invocations(tmp_path):
    log = tmp_path / "reproduce.log"
    log.write_text(
        "reproduce [08:00:00]: 4 runs, 0 finished, 4 to run\n"
        "reproduce [08:05:00]: done a [ok] in 300 s (5.0 min elapsed)\n"
        "reproduce [08:06:00]: 4 runs, 1 finished, 3 to run\n"
        "reproduce [08:08:00]: done b [ok] in 120 s (2.5 min elapsed)\n"
        "reproduce [08:10:00]: done c [ok] in 120 s (4.0 min elapsed)\n"
    )
    assert report.elapsed(log) == "9 min over 2 invocation(s)"


def test_bench_speed_tables():
    rows = []
    for T, scale in ((100, 1.0), (1000, 10.0)):
        rows += [
            dict(layer="gru", variant="torch", T=T, ms=10 * scale, peak_mib=10.0),
            dict(layer="gru", variant="spectral", T=T, ms=11 * scale, peak_mib=11.0),
            dict(layer="gru", variant="band", T=T, ms=T * scale / 10, peak_mib=30),
        ]
    df, verdict = bench_speed.tables(pd.DataFrame(rows))
    assert df.ratio.round(2).tolist() == [1.0, 1.1, 1.0, 1.0, 1.1, 10.0]
    v = verdict.set_index("variant")
    assert v.growth["spectral"] == pytest.approx(1.0) and v.growth["band"] == pytest.approx(10.0)
    assert v["pass"].tolist() == [True, False, False]  # spectral: 1.1 > 1.05; band: all three


def test_bench_speed_last_loss_verdicts_against_torch_and_torch_flushed():
    rows = []
    for layer, ours in (("gru", 100.0), ("lstm", 600.0)):  # torch 1000 ms, flushed 250 ms
        for variant, ms in (("torch", 1000.0), ("torch, flushed", 250.0), ("spectral", ours)):
            rows.append(dict(layer=layer, variant=variant, T=784, B=128, H=128, ms=ms,
                             peak_mib=1.0))  # fmt: skip
    df, verdict = bench_speed.tables(pd.DataFrame(rows), loss="last")
    v = verdict.set_index(["layer", "variant"])
    assert v.vs_flushed["gru", "spectral"] == pytest.approx(0.4)
    assert v.ratio["lstm", "spectral"] == pytest.approx(0.6)
    # gru: 0.1 <= 0.15 and 0.4 <= 0.45; lstm: 0.6 > 0.1
    assert v.meets_targets["gru", "spectral"] == "yes"
    assert v.meets_targets["lstm", "spectral"] == "no"
    assert v.meets_targets["gru", "torch"] == ""


@pytest.mark.slow
def test_tiny_grid_resumes_and_reports(tmp_path, capsys, monkeypatch):
    budget = tmp_path / "tiny.yaml"
    budget.write_text(yaml.safe_dump(TINY_BUDGET))
    out, runs_dir = tmp_path / "runs.csv", ROOT / "runs" / "test_tiny_grid"
    args = [
        "--budget",
        str(budget),
        "--out",
        str(out),
        "--runs-dir",
        str(runs_dir),
        "--allow-dirty",
    ]
    try:
        assert reproduce.main([*args, "--workers", "2"]) == 0
        rows = pd.read_csv(out)
        assert sorted(rows.run_id) == ["copy_gru_none_s0", "copy_modrelu_orthogonal_s0"]
        commit, clean = reproduce.git_state()
        for _, r in rows.iterrows():
            assert r.status == "ok", r.error
            assert r.git_commit == commit and r.git_clean == clean
            assert r.steps == 4 and r["T"] == 3 and r.hidden == 4
            assert r.run_dir == f"runs/test_tiny_grid/{r.run_id}"  # relative to the repo
            for key in ("val_loss_final", "test_loss_final", "test_loss_at_best_val"):
                assert r[key] > 0
            for key in ("decay_rate_init", "decay_rate_end", "grad_ratio_init", "grad_ratio_end"):
                assert pd.notna(r[key])
            assert 1 <= r.steps_to_criterion <= 4
            assert json.loads(r.overrides)["model.hidden_size"] == 4
            run_dir = ROOT / r.run_dir
            assert (run_dir / "probes.npz").exists()
            assert (run_dir / "cmd.txt").read_text().startswith("seqnorm fit --config")
        capsys.readouterr()

        # second invocation: nothing runs again, no row is added
        assert reproduce.main([*args, "--workers", "2"]) == 0
        log = capsys.readouterr().out
        assert "2 finished, 0 to run" in log and "start " not in log
        assert len(pd.read_csv(out)) == 2

        # the report renders the table, the figures and the README block
        res = tmp_path / "results"
        readme = tmp_path / "README.md"
        readme.write_text("# x\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nafter\n")
        assert (
            report.main(["--runs", str(out), "--out-dir", str(res), "--readme", str(readme)]) == 0
        )
        md = readme.read_text()
        assert "old" not in md and md.endswith("<!-- results:end -->\n\nafter\n")
        assert "GRU, none" in md and "modReLU RNN, orthogonal" in md
        text = (res / "RESULTS.md").read_text()
        block = md.split("<!-- results:start -->\n")[1].split("<!-- results:end -->")[0]
        assert block.split("-->\n", 1)[1].strip() in text  # the README table is RESULTS.md's
        assert "reproduce.py --budget tiny" in text and commit[:12] in text
        assert (res / "curves_copy.png").exists() and (res / "gradflow_copy.png").exists()
    finally:
        subprocess.run(["rm", "-rf", str(runs_dir)], check=False)
