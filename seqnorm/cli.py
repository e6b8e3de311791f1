"""The ``seqnorm`` console script: Lightning's CLI over :class:`SeqModel` and any DataModule.

``seqnorm fit --config configs/copy.yaml`` trains; ``validate``, ``test`` and
``--print_config`` work as in any LightningCLI, and every option can be overridden on the
command line (``--model.constraint orthogonal --data.seq_len 500``).

One run, one directory. Each ``fit`` writes everything it makes -- ``config.yaml``,
``checkpoints/``, the W&B offline run (``wandb/``), CSV logs, the monitors' figures and
tables (``gradient_flow/``, ``spectrum/``) -- under its run directory, which is
``--run_dir`` when given, else a new ``<root>/version_N``: ``root`` is
``trainer.default_root_dir`` when the config sets it, else ``runs/<config file name>``.
``run.json`` there holds the run's id (its W&B run id, and the ``run_id`` column of the
monitors' CSV files). Resume a run by naming it::

    seqnorm fit --config configs/copy.yaml --run_dir runs/copy/version_3 --ckpt_path last

Every ``fit`` ends with one line that says how the model did against its task's reference
(:mod:`seqnorm.verdict`: the memoryless baseline for copy and adding, chance for MNIST), e.g.
``copy T=100: val loss 0.0018 = 0.010x the memoryless baseline: learned``; the same line is in
``verdict.json`` in the run directory and in the W&B run's summary (``verdict``).

``validate`` / ``test`` with a checkpoint of a run log into that run. How the paths of
loggers and callbacks are placed: unset (or ``.``) -> derived from the run directory
(``save_dir`` = the run directory, a ModelCheckpoint's ``dirpath`` = ``checkpoints/``, a
monitor's = its folder); inside ``root`` -> moved into the run directory; elsewhere -> as
given. A relative ``data.init_args.data_dir`` is looked for in ``$SEQNORM_DATA``, beside the
config file, then in the working directory (:mod:`seqnorm.data.paths`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from .data import resolve_data_dir
from .model import SeqModel
from .rundir import (
    RUN_FILE,
    RunDirError,
    check_checkpoint_file,
    check_fit_into,
    checkpoint_dirs,
    checkpoints_in,
    default_root,
    find_run_dir,
    last_checkpoint,
    new_version_dir,
    newest_run_hint,
    open_run,
    place_outputs,
    read_run_id,
)
from .verdict import Verdict, verdict

__all__ = ["VERDICT_FILE", "SeqnormCLI", "fit_verdict", "main"]

#: DataModule attributes that wire the model (linked, so never typed twice).
TASK_LINKS = ("input_kind", "input_dim", "output_kind", "num_classes", "baseline")
#: Hands the run directory to the processes Lightning's ``ddp`` launcher starts.
_INHERITED_RUN_DIR = "SEQNORM_CLI_RUN_DIR"
_CKPT_KEYWORDS = ("last", "best", "hpc")
#: The file in the run directory that holds the verdict of the run's last fit.
VERDICT_FILE = "verdict.json"


def fit_verdict(trainer: pl.Trainer, datamodule: Any) -> Verdict:
    """The verdict of a finished fit: the trainer's last validation against the task's
    reference, read from the DataModule (``task_name``, ``baseline``, ``num_classes``,
    ``output_kind``; a DataModule without them gets its class name and no reference)."""
    return verdict(
        getattr(datamodule, "task_name", None) or type(datamodule).__name__,
        trainer.callback_metrics,
        baseline=getattr(datamodule, "baseline", None),
        num_classes=getattr(datamodule, "num_classes", None),
        output_kind=getattr(datamodule, "output_kind", None),
    )


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save the config into the run directory (``config.yaml``; a later session of the same
    run, a resume or a test, adds ``config-2.yaml``, ...) and record it in the logger's run
    (the W&B run config, the CSV logger's ``hparams.yaml``)."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path, n = run_dir / self.config_filename, 1
        while path.exists():
            n += 1
            path = run_dir / f"{Path(self.config_filename).stem}-{n}.yaml"
        self.parser.save(self.config, path, skip_none=False, multifile=self.multifile)
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": self.config.as_dict()})


class SeqnormCLI(LightningCLI):
    """LightningCLI with the task attributes of the DataModule linked into the model, one
    directory per run (see the module docstring) and one-line errors for bad checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_dir: Path | None = None
        self.run_id: str | None = None
        self.verdict_line: str | None = None
        self._root: Path | None = None
        self._created: Path | None = None
        self._exported = False
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self._discard_unused_run_dir()
            raise
        finally:
            if self._exported:
                os.environ.pop(_INHERITED_RUN_DIR, None)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
        for name in TASK_LINKS:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="The run's directory: every output goes there. Default: a new "
            "<trainer.default_root_dir or runs/<config name>>/version_N. Name an existing "
            "run to resume it (with --ckpt_path last).",
        )

    # -- the run directory -------------------------------------------------------------------
    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (jsonargparse types)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:  # not for run=False (building the objects only)
            self._prepare_run(subcommand, self.config[subcommand])

    def _prepare_run(self, subcommand: str, cfg: Any) -> None:
        ckpt = cfg.get("ckpt_path")
        if ckpt and ckpt not in _CKPT_KEYWORDS:
            check_checkpoint_file(ckpt)
        self._root = root = default_root(cfg)
        inherited = os.environ.get(_INHERITED_RUN_DIR)
        if inherited:  # a process started by Lightning's ddp launcher: the parent's run
            self.run_dir, self.run_id = Path(inherited), read_run_id(Path(inherited))
            return
        if cfg.get("run_dir"):
            run_dir = Path(cfg.run_dir).expanduser().absolute()
        elif ckpt == "last":
            raise RunDirError(
                "--ckpt_path last resumes a named run: add --run_dir <its directory>"
                + newest_run_hint(root)
            )
        elif ckpt and subcommand != "fit" and (owner := find_run_dir(ckpt)) is not None:
            run_dir = owner  # validate / test a run's checkpoint: log into that run
        else:
            run_dir = new_version_dir(root)
        if subcommand == "fit":
            check_fit_into(run_dir, ckpt)
        if not (run_dir / RUN_FILE).exists() and not checkpoints_in(run_dir):
            self._created = run_dir  # removed again if the run stops before writing anything
        self.run_dir, self.run_id = run_dir, open_run(run_dir)
        os.environ[_INHERITED_RUN_DIR] = str(run_dir)
        self._exported = True
        cfg.run_dir = None  # the saved config starts a new run when used again
        if ckpt == "last":
            cfg.ckpt_path = str(last_checkpoint(run_dir, checkpoint_dirs(cfg, run_dir, root)))

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        if self.run_dir is not None:
            self._config_to_save = self.config.clone()
            cfg.trainer.default_root_dir = str(self.run_dir)
            place_outputs(cfg, self.run_dir, self._root or self.run_dir, self.run_id)
        data_dir = cfg.get("data.init_args.data_dir")
        if isinstance(data_dir, str):  # relative to $SEQNORM_DATA, the config files, the cwd
            configs = [Path(str(getattr(c, "absolute", c))) for c in cfg.get("config") or []]
            config_dirs = [c.parent for c in reversed(configs)]
            cfg.data.init_args.data_dir = str(resolve_data_dir(data_dir, config_dirs))

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        saved = getattr(self, "_config_to_save", None)
        if saved is None or self.trainer is None:
            return
        for cb in self.trainer.callbacks:
            if isinstance(cb, LoggerSaveConfigCallback):
                cb.config = saved[self.subcommand]  # the paths as the user wrote them

    def _discard_unused_run_dir(self) -> None:
        """Remove the run directory this call created if nothing but ``run.json`` is in it
        (the run stopped before it wrote anything)."""
        d = self._created
        if d is None or not d.is_dir():
            return
        files = [p for p in d.rglob("*") if p.is_file()]
        if [p.name for p in files] == [RUN_FILE]:
            (d / RUN_FILE).unlink()
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True):
                sub.rmdir()
            d.rmdir()

    # -- the end of a fit ----------------------------------------------------------------------
    def after_fit(self) -> None:
        """Record the fit's verdict (:func:`fit_verdict`) as ``verdict_line``, in
        ``verdict.json`` in the run directory and in the summary of every W&B logger (rank 0
        only; :func:`main` prints the line last)."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        v = fit_verdict(trainer, self.datamodule)
        line = v.line
        if trainer.interrupted:
            line += f" (fit interrupted at step {trainer.global_step})"
        record = {**v.as_dict(), "line": line, "step": trainer.global_step,
                  "epoch": trainer.current_epoch}  # fmt: skip
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / VERDICT_FILE).write_text(json.dumps(record, indent=1) + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(
                    {"verdict": line, "verdict/outcome": v.outcome, "verdict/ratio": v.ratio}
                )
        self.verdict_line = line

    # -- checkpoints -------------------------------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here; name the file when it can't.
        try:
            super()._parse_ckpt_path()
        except Exception as err:  # noqa: BLE001 (any failure to read is the file's fault)
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise ValueError(
                f"cannot read checkpoint {path} ({type(err).__name__}); is it truncated, or not "
                "a seqnorm/Lightning checkpoint?"
            ) from None


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``seqnorm`` console script; returns None (exit code 0) on success.

    A ``fit`` ends with its verdict line (:meth:`SeqnormCLI.after_fit`), printed last.

    Errors that come from the user's input (a bad option value, a missing data file, a
    corrupt checkpoint, a run directory that cannot be used) end the process with exit code
    2 and a one-line reason.
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        cli = SeqnormCLI(
            SeqModel,
            pl.LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"save_to_log_dir": False},
            args=args,
            parser_kwargs={"exit_on_error": False},
        )
    except ArgumentError as err:  # bad config: unknown key, wrong type, malformed YAML
        _fail(f"invalid configuration: {_condense(str(err))}")
    except MisconfigurationException as err:  # options Lightning rejects together
        msg = _condense(str(err))
        if "manual optimization" in msg:
            msg += " (model.tbptt_steps trains with manual optimization)"
        _fail(f"invalid configuration: {msg}")
    except RunDirError as err:
        _fail(_condense(str(err)))
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, KeyError) as err:
        _fail(f"{type(err).__name__}: {_condense(str(err))}")
    if cli.verdict_line is not None:  # a fit's last word: after W&B's closing messages
        for logger in cli.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
        print(cli.verdict_line, flush=True)


def _condense(message: str) -> str:
    """One line out of a multi-line message (jsonargparse's nested ones, a missing-data
    hint): drop jsonargparse's noise, keep every informative part in full."""
    noise = ("Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")
    lines = [re.sub(r"^- ", "", ln.strip()) for ln in message.strip().splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith(noise)]
    keep = [ln for ln in keep if "Does not validate against any of the Union" not in ln]
    return " ".join(keep)


def _fail(message: str) -> None:
    print(f"seqnorm: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
