"""The reproduction grid (experiments/reproduce.py) and its report, on a two-run tiny grid."""

import csv
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import report  # noqa: E402
import reproduce  # noqa: E402

TINY_BUDGET = {
    "name": "tiny",
    "layers": ["gru"],
    "constraints": ["none", "spectral"],
    "seeds": [0],
    "probe_batch": 4,
    "overrides": {"model.hidden_size": 4, "trainer.log_every_n_steps": 1},
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


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_budgets_expand_and_filter(tmp_path):
    for name in ("cpu", "paper"):
        runs = reproduce.expand(reproduce.load_budget(name), tmp_path)
        assert runs and len({r.run_id for r in runs}) == len(runs)
        for run in runs:
            assert (ROOT / run.config).exists()
    runs = reproduce.expand(reproduce.load_budget("cpu"), tmp_path)
    copy = reproduce.apply_filters(runs, ["task=copy", "seed=0"])
    assert {r.task for r in copy} == {"copy"} and {r.seed for r in copy} == {0}
    with pytest.raises(SystemExit, match="--only expects key=value"):
        reproduce.apply_filters(runs, ["colour=red"])


def test_bad_budget_fails_early(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        reproduce.load_budget(str(tmp_path / "nope.yaml"))
    budget = {**TINY_BUDGET, "tasks": {"copy": {**TINY_BUDGET["tasks"]["copy"]}}}
    budget["tasks"]["copy"]["overrides"] = {"trainer.max_steps": 5, "trainer.val_check_interval": 2}
    with pytest.raises(SystemExit, match="multiple of"):
        reproduce.expand(budget, tmp_path)


@pytest.mark.slow
def test_tiny_grid_resumes_and_reports(tmp_path, capsys):
    budget = tmp_path / "tiny.yaml"
    budget.write_text(yaml.safe_dump(TINY_BUDGET))
    out, runs_dir = tmp_path / "runs.csv", tmp_path / "runs"
    args = ["--budget", str(budget), "--out", str(out), "--runs-dir", str(runs_dir)]

    assert reproduce.main([*args, "--workers", "2"]) == 0
    rows = _rows(out)
    assert sorted(r["run_id"] for r in rows) == ["copy_gru_none_s0", "copy_gru_spectral_s0"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert int(r["steps"]) == 4 and r["T"] == "3" and r["hidden"] == "4"
        for key in ("val_loss_final", "test_loss_final", "test_loss_at_best_val"):
            assert float(r[key]) > 0
        for key in ("decay_rate_init", "decay_rate_end", "grad_ratio_init", "grad_ratio_end"):
            assert r[key] != ""
        assert 1 <= int(r["steps_to_criterion"]) <= 4
        run_dir = Path(r["run_dir"])
        assert run_dir.parent == runs_dir and (run_dir / "probes.npz").exists()
        assert (run_dir / "cmd.txt").read_text().startswith("seqnorm fit --config")
    capsys.readouterr()

    # second invocation: nothing runs again, no row is added
    assert reproduce.main([*args, "--workers", "2"]) == 0
    log = capsys.readouterr().out
    assert "2 finished, 0 to run" in log and "start " not in log
    assert len(_rows(out)) == 2

    # dry run marks both as done
    reproduce.main([*args, "--dry-run"])
    assert capsys.readouterr().out.count("done  copy_gru_") == 2

    # the report renders the table, the figures and the published anchors
    res = tmp_path / "results"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nafter\n")
    assert report.main(["--runs", str(out), "--out-dir", str(res), "--readme", str(readme)]) == 0
    md = readme.read_text()
    assert "old" not in md and md.endswith("<!-- results:end -->\n\nafter\n")
    assert "| layer | constraint | copy: test symbol acc % |" in md and "| gru | spectral |" in md
    text = (res / "RESULTS.md").read_text()
    assert "| gru | none | 1 |" in text and "| gru | spectral | 1 |" in text
    assert "reproduce.py --budget tiny" in text and "not comparable" in text.lower()
    assert "98.7" in text and "0.0204" in text
    assert (res / "curves_copy.png").exists() and (res / "gradflow_copy.png").exists()


def test_steps_to_criterion_and_series():
    rows = [
        {"step": 9.0, "train/loss_step": 0.5, "train/baseline": 0.2},
        {"step": 19.0, "train/loss_step": 0.019},
        {"step": 29.0, "train/loss_step": 0.01},
        {"step": 19.0, "train/loss_step": 0.03},  # a resumed run logs step 19 again: it wins
    ]
    assert reproduce.series(rows, "train/loss_step") == [(9, 0.5), (19, 0.03), (29, 0.01)]
    crit = {"metric": "train/loss_step", "baseline_fraction": 0.1}
    assert reproduce.steps_to_criterion(rows, crit) == 30
    strict = {"metric": "train/loss_step", "threshold": 0.001}
    assert reproduce.steps_to_criterion(rows, strict) is None
    assert reproduce.steps_to_criterion(rows, None) is None


def test_grid_elapsed_sums_invocations(tmp_path):
    log = tmp_path / "reproduce.log"
    log.write_text(
        "reproduce [08:00:00]: 4 runs, 0 finished, 4 to run\n"
        "reproduce [08:05:00]: done a [ok] in 300 s (1/4, 5.0 min elapsed)\n"
        "reproduce [08:06:00]: 4 runs, 1 finished, 3 to run\n"
        "reproduce [08:08:00]: done b [ok] in 120 s (1/3, 2.5 min elapsed)\n"
        "reproduce [08:10:00]: done c [ok] in 120 s (2/3, 4.0 min elapsed)\n"
    )
    assert report.grid_elapsed(log) == "9 min over 2 invocations (stopped and resumed)"
