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
from reporting import archive, figures, literature, tables  # noqa: E402

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
            "config": "configs/copy_gru.yaml",
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


TINY_EPOCH_BUDGET = {
    "name": "tiny-epochs",
    "seeds": [0],
    "probe_batch": 4,
    "overrides": {"model.hidden_size": 4, "trainer.log_every_n_steps": 1},
    "variants": {
        "gru_none": TINY_BUDGET["variants"]["gru_none"],
        "recipe": TINY_BUDGET["variants"]["modrelu_orthogonal"],
    },
    "tasks": {
        "ecopy": {  # copy by epochs, as the MNIST rows run: validation and test every epoch
            "config": "configs/copy_gru.yaml",
            "metric": "symbol_acc",
            "monitor": "val/symbol_acc",
            "monitor_mode": "max",
            "test_every_epoch": True,
            "seeds_for": {"recipe": [0, 1]},
            "seed_overrides": {"recipe": {0: {"trainer.max_epochs": 3}}},
            "overrides": {
                "data.seq_len": 3,
                "data.batch_size": 4,
                "data.num_train": 16,
                "data.num_val": 8,
                "data.num_test": 8,
                "trainer.max_steps": -1,
                "trainer.max_epochs": 2,
                "trainer.val_check_interval": 1.0,
                "trainer.check_val_every_n_epoch": 1,
            },  # fmt: skip
        }
    },
}


def test_budgets_expand_and_filter(tmp_path):
    for name in ("cpu", "paper", "lru", "mnist"):
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


def test_mnist_budget_is_the_issue_grid(tmp_path):
    runs = {r["run_id"]: r for r in reproduce.expand(reproduce.load_budget("mnist"), tmp_path)}
    first = next(iter(runs.values()))
    assert first["run_id"] == "psmnist_exprnn_s0"  # the longest row starts first
    assert first["overrides"]["trainer.max_epochs"] == 70
    assert first["config"] == "configs/psmnist_exprnn.yaml" and first["test_every_epoch"]
    assert runs["psmnist_exprnn_s1"]["overrides"]["trainer.max_epochs"] == 10
    epochs = {k: r["overrides"].get("trainer.max_epochs") for k, r in runs.items()}
    assert epochs["smnist_exprnn_s0"] == 20 and epochs["smnist_lstm_none_s0"] == 5
    assert runs["smnist_exprnn_s0"]["config"] == "configs/smnist_exprnn.yaml"
    assert {k for k in runs if k.endswith("_s1")} == {
        "psmnist_exprnn_s1",
        "psmnist_gru_spectral_s1",
    }
    for k, r in runs.items():
        if k.startswith("copy"):
            assert r["overrides"]["trainer.max_steps"] >= 2000 and not r["test_every_epoch"]
    assert runs["copy2000_exprnn_s0"]["overrides"]["data.seq_len"] == 2000
    assert runs["copy2000_lstm_none_s0"]["overrides"]["model.constrained_lr"] is None
    assert len(runs) == 20


def test_runs_csv_gains_new_columns_without_losing_rows(tmp_path):
    out = tmp_path / "runs.csv"
    old = [c for c in reproduce.FIELDS if c not in ("curve", "epochs", "verdict")]
    pd.DataFrame([{"run_id": "a", "status": "ok", "steps": 4}], columns=old).to_csv(
        out, index=False
    )
    assert reproduce.header(out) == list(reproduce.FIELDS)
    df = pd.read_csv(out)
    assert df.columns.tolist() == list(reproduce.FIELDS)
    assert df.run_id.tolist() == ["a"] and df.steps.tolist() == [4] and df.curve.isna().all()


def test_clock_sums_the_invocations_of_a_run(tmp_path):
    path = tmp_path / "clock.json"
    first = reproduce.Clock(path, every_s=3600)
    first.fit_started()
    first.fit_ended()
    a = first.save()
    second = reproduce.Clock(path, every_s=3600)  # a resumed run: its count goes on
    b = second.totals()
    assert b["invocations"] == 2 and b["wall_s"] >= a["wall_s"] and b["fit_s"] >= a["fit_s"]


def test_curve_from_the_logged_metrics():
    m = pd.DataFrame({"step": [9, 19, 29], "epoch": [0, 1, 1],
                      "val/acc": [0.1, float("nan"), 0.3],
                      "test_epoch/acc": [0.2, float("nan"), 0.25]})  # fmt: skip
    assert reproduce.curve(m, "acc") == {"epoch": [1, 2], "step": [10, 30], "val": [0.1, 0.3],
                                         "test": [0.2, 0.25]}  # fmt: skip
    assert reproduce.curve(m.drop(columns="test_epoch/acc"), "acc")["test"] == [None, None]


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
    table = tables.task_table(df)
    assert table["seeds"].tolist() == [2, 2]
    assert table["test MSE (final)"].tolist() == ["0.161 ± 0.00071", "0.0015 ± 0.00071"]
    assert table["steps to criterion (reached)"].tolist() == ["never (0/2)", "200 (2/2)"]
    assert table["below baseline (seeds)"].tolist() == ["0/2", "2/2"]
    head = tables.headline(df)
    assert head.columns.tolist() == ["variant", "adding: test MSE", "adding: steps to criterion"]
    proj = tables.projection_table(df)
    assert len(proj) == 1 and "200 (2/2)" in proj["input projection"].iloc[0]
    checks = dict(tables.check(df))
    assert checks["each budget at one commit, clean"] and checks["no absolute paths"]
    assert not checks["a copy run at T=100 reaches the criterion"]
    dirty = df.assign(git_clean=[True, False, True, True], run_dir="/abs/path")
    checks = dict(tables.check(dirty))
    assert not checks["each budget at one commit, clean"] and not checks["no absolute paths"]
    two = df.assign(budget=["cpu", "cpu", "mnist", "mnist"], git_commit=["a", "a", "b", "b"])
    assert dict(tables.check(two))["each budget at one commit, clean"]
    assert not dict(tables.check(two.assign(budget="cpu")))["each budget at one commit, clean"]


def _epoch_runs(root) -> pd.DataFrame:
    """psMNIST-like rows: the recipe at 3 epochs (seed 0) and 2 (seed 1), a GRU at 2, with
    probes.npz under ``root``."""
    import numpy as np

    curves = {
        ("recipe", 0): ([0.5, 0.8, 0.7], [0.55, 0.75, 0.9]),
        ("recipe", 1): ([0.6, 0.7], [0.5, 0.72]),
        ("gru", 0): ([0.2, 0.3], [0.25, 0.2]),
    }
    rows = []
    for (variant, seed), (val, test) in curves.items():
        run_dir = f"runs/psmnist_{variant}_s{seed}"
        (root / run_dir).mkdir(parents=True)
        z = np.log10(np.linspace(1e-3, 1.0, 8, dtype=np.float32))[None]  # (layers, T)
        np.savez(root / run_dir / "probes.npz", init=z, end=z - seed)
        n = len(val)
        curve = {"epoch": list(range(1, n + 1)), "step": [10 * e for e in range(1, n + 1)],
                 "val": val, "test": test}  # fmt: skip
        rows.append(dict(run_id=f"psmnist_{variant}_s{seed}", status="ok", task="psmnist",
                         task_name="psMNIST", variant=variant, label=variant.upper(), seed=seed,
                         metric="acc", T=784, batch=128, epochs=n, steps=10 * n,
                         curve=json.dumps(curve), wall_time_s=60.0 * n, decay_rate_init=-1.0,
                         decay_rate_end=-2.0, run_dir=run_dir))  # fmt: skip
    return pd.DataFrame(rows)


def test_report_epoch_tables_read_a_longer_run_at_a_shorter_rows_epochs(tmp_path):
    df = _epoch_runs(tmp_path)
    assert tables.is_epoch_task(df) and not tables.is_epoch_task(_fake_runs())
    c = tables.parse_curve(df.curve[0])
    assert tables.at_epoch(c, 2) == {"val_final": 0.8, "test_at_best_val": 0.75,
                                     "test_best": 0.75, "best_epoch": 2}  # fmt: skip
    assert tables.at_epoch(c, 3)["test_at_best_val"] == 0.75  # best val stays epoch 2
    assert tables.at_epoch(c, 3)["test_best"] == 0.9  # expRNN's protocol: best test epoch
    assert tables.at_epoch(c, 4) is None
    table = tables.epoch_table(df)
    assert table[["variant", "epochs", "seeds"]].values.tolist() == [
        ["RECIPE", 2, "2 (1 from a longer run)"], ["RECIPE", 3, "1"], ["GRU", 2, "1"]]  # fmt: skip
    assert table["test acc % at best val epoch"].tolist() == ["73.5 ± 2.1", "75", "20"]
    assert table["best test acc % over epochs"].tolist() == ["73.5 ± 2.1", "90", "25"]
    assert table["wall min"].tolist() == ["2", "3", "2"]  # the runs that ended there
    head = tables.headline(df)
    assert head.columns.tolist() == ["variant", "psmnist: test acc % at best val epoch",
                                     "psmnist: epochs", "psmnist: wall min"]  # fmt: skip
    assert head.iloc[0].tolist() == ["RECIPE", "73.5 ± 2.1 (2); 75 (1)", "2; 3", "2; 3"]
    fig = figures.plot_epoch_curves("psmnist", df, tmp_path)
    assert fig.name == "epochs_psmnist.png" and fig.stat().st_size > 0
    gmap = figures.plot_gradflow_map("psmnist", df, [tmp_path], tmp_path / "gradmap_psmnist.png")
    assert gmap.name == "gradmap_psmnist.png" and gmap.stat().st_size > 0
    nowhere = figures.plot_gradflow_map("psmnist", df, [tmp_path / "elsewhere"], tmp_path / "x.png")
    assert nowhere is None and not (tmp_path / "x.png").exists()
    # several roots: a run's directory is found under whichever has it
    found = figures.plot_gradflow_map("psmnist", df, [tmp_path / "elsewhere", tmp_path],
                                     tmp_path / "y.png")  # fmt: skip
    assert found is not None and found.stat().st_size > 0
    assert set(literature.LITERATURE["psMNIST"]) == {"LEM (published log)", "coRNN (published log)"}
    assert literature.LITERATURE["psMNIST"]["LEM (published log)"][1] == 63.9


def test_report_gradflow_keeps_steps_below_float_range_below_it():
    """probes.npz holds log10_norms curves; a step at the floor in every seed must come back
    as below float range (drawn as such), not 10**floor, a hair above it."""
    import numpy as np
    import torch

    from seqnorm.probes import below_range, log10_norms

    seeds = [log10_norms(torch.tensor(c)).numpy() for c in
             ([0.0, 0.0, 1e-3, 1e-1], [0.0, 1e-5, 1e-3, 1e-1])]  # fmt: skip
    norms = figures.seed_mean_norms(seeds)
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


@pytest.mark.slow
def test_tiny_epoch_grid_tests_every_epoch_and_reports(tmp_path):
    """Epoch-based rows as the MNIST grid runs them (copy here, to need no data): the test set
    at every epoch, both test numbers, the curve, the verdict, the report's figures."""
    budget = tmp_path / "tiny-epochs.yaml"
    budget.write_text(yaml.safe_dump(TINY_EPOCH_BUDGET))
    out, runs_dir = tmp_path / "runs.csv", ROOT / "runs" / "test_tiny_epoch_grid"
    args = ["--budget", str(budget), "--out", str(out), "--runs-dir", str(runs_dir)]
    try:
        assert reproduce.main([*args, "--allow-dirty", "--workers", "2"]) == 0
        rows = pd.read_csv(out).set_index("run_id")
        assert sorted(rows.index) == ["ecopy_gru_none_s0", "ecopy_recipe_s0", "ecopy_recipe_s1"]
        for run_id, r in rows.iterrows():
            assert r.status == "ok", r.error
            epochs = 3 if run_id == "ecopy_recipe_s0" else 2
            assert r.epochs == epochs and r.steps == 4 * epochs and r.invocations == 1
            curve = json.loads(r.curve)
            assert curve["epoch"] == list(range(1, epochs + 1)) and None not in curve["test"]
            # trainer.test on the best checkpoint == the test set at the best validation epoch
            best = curve["val"].index(max(curve["val"]))
            assert r.best_val_epoch == best + 1
            assert r.test_metric_at_best_val == pytest.approx(curve["test"][best], rel=1e-6)
            assert r.test_metric_best_over_epochs == max(curve["test"])
            verdict = json.loads((ROOT / r.run_dir / "verdict.json").read_text())
            assert r.verdict == verdict["line"] and r.verdict.startswith("copy T=3: val loss")
            assert r.wall_time_s >= r.fit_time_s > 0
        res = tmp_path / "results"
        readme = tmp_path / "README.md"
        readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
        assert (
            report.main(["--runs", str(out), "--out-dir", str(res), "--readme", str(readme)]) == 0
        )
        text = (res / "RESULTS.md").read_text()
        assert "test symbol acc % at best val epoch" in text and "over epochs" in text
        assert (res / "epochs_ecopy.png").exists() and (res / "gradmap_ecopy.png").exists()
        assert "ecopy: epochs" in readme.read_text()
    finally:
        subprocess.run(["rm", "-rf", str(runs_dir)], check=False)


def test_report_draws_figures_per_budget_from_several_roots(tmp_path):
    """Two budgets on one task, run in two checkouts: the first budget's run directories are
    gone (its figure, drawn earlier, is kept as it is), the second's are under the second
    root (its figure gets the budget's name); RESULTS.md shows both."""
    import numpy as np

    df = _fake_runs().assign(budget=["older", "older", "newer", "newer"],
                             git_commit=["a" * 40] * 2 + ["b" * 40] * 2, hidden=8, batch=4,
                             steps=20, wall_time_s=60.0, machine="m")  # fmt: skip
    old_root, new_root, out = tmp_path / "gone", tmp_path / "wt", tmp_path / "results"
    out.mkdir()
    (out / "curves_adding.png").write_bytes(b"drawn earlier")
    for run_dir in df.run_dir[df.budget == "newer"]:
        logs = new_root / run_dir / "logs" / "version_0"
        logs.mkdir(parents=True)
        pd.DataFrame({"step": range(10), "train/loss_step": np.linspace(0.2, 0.01, 10)}).to_csv(
            logs / "metrics.csv", index=False
        )
        z = np.log10(np.linspace(1e-3, 1.0, 8, dtype=np.float32))[None]
        np.savez(new_root / run_dir / "probes.npz", init=z, end=z)
    text = report.render(df, [old_root, new_root], out, log=tmp_path / "no.log")
    assert (out / "curves_adding.png").read_bytes() == b"drawn earlier"
    assert (out / "curves_adding_newer.png").stat().st_size > 0
    assert (out / "gradflow_adding_newer.png").stat().st_size > 0
    assert not (out / "gradflow_adding.png").exists()  # never drawn, nothing to keep
    assert "(curves_adding.png)" in text and "(curves_adding_newer.png)" in text
    assert "(gradflow_adding_newer.png)" in text


def test_report_markdown_escapes_pipes_in_labels():
    table = pd.DataFrame({"variant": ["LRU, bound (max |lambda| <= 0.99)", "GRU"], "seeds": [1, 3]})
    lines = tables.markdown(table).splitlines()
    # every line has the table's own 3 separators; the label's bars are escaped
    assert all(line.replace("\\|", "").count("|") == 3 for line in lines)
    assert "max \\|lambda\\| <= 0.99" in lines[2]


def test_report_archives_small_run_files_and_draws_from_them(tmp_path):
    """The small files of each finished run are copied by run id (no checkpoints), and a
    figure can be drawn from the copies once the checkout that ran the grid is gone."""
    import shutil

    import numpy as np

    wt, out = tmp_path / "wt", tmp_path / "results"
    df = _epoch_runs(wt).assign(status="ok")
    for run_dir in df.run_dir:
        (wt / run_dir / "checkpoints").mkdir()
        (wt / run_dir / "checkpoints" / "last.ckpt").write_bytes(b"big")
        (wt / run_dir / "logs" / "version_0").mkdir(parents=True)
        (wt / run_dir / "logs" / "version_0" / "metrics.csv").write_text("step,val/acc\n1,0.5\n")
        (wt / run_dir / "verdict.json").write_text("{}")
    assert archive.archive_runs(df.assign(status=["ok", "ok", "failed"]), [wt], out / "runs") == 2
    first = out / "runs" / df.run_id[0]
    assert sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file()) == [
        "logs/version_0/metrics.csv", "probes.npz", "verdict.json"]  # fmt: skip
    assert not (out / "runs" / df.run_id[2]).exists()  # a failed run: nothing kept
    shutil.rmtree(wt)  # the worktree goes; the archive draws the map (two runs of three)
    gmap = figures.plot_gradflow_map("psmnist", df, [wt, out / "runs"], out / "gradmap.png")
    assert gmap is not None and gmap.stat().st_size > 0
    found = archive.locate([wt, out / "runs"], df.iloc[0])
    assert found == first and np.load(found / "probes.npz")["init"].shape == (1, 8)


@pytest.mark.slow
@pytest.mark.parametrize(
    "budget", sorted(p.stem for p in (ROOT / "experiments/budgets").glob("*.yaml"))
)
def test_every_budget_row_builds_its_model(budget, tmp_path, monkeypatch):
    """Each (task, variant) of every budget parses through the CLI and builds its model, so a
    grid never stops hours in on a row whose options the model refuses (nothing trains)."""
    import pytorch_lightning as pl

    from seqnorm.cli import SeqnormCLI
    from seqnorm.model import SeqModel

    monkeypatch.setattr(sys, "argv", ["seqnorm"])
    runs = reproduce.expand(
        reproduce.load_budget(str(ROOT / "experiments/budgets" / f"{budget}.yaml")), tmp_path
    )
    rows = {(r["task"], r["variant"]): r for r in runs}
    for (task, variant), run in rows.items():
        cli = SeqnormCLI(SeqModel, pl.LightningDataModule, subclass_mode_data=True, run=False,
                         args=reproduce.cli_args(run))  # fmt: skip
        assert isinstance(cli.model, SeqModel), (task, variant)
