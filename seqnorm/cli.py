"""The ``seqnorm`` console script: Lightning's CLI over :class:`SeqModel` and any DataModule.

``seqnorm fit --config configs/copy.yaml`` trains; ``validate``, ``test`` and
``--print_config`` work as in any LightningCLI, and every option can be overridden on the
command line (``--model.constraint orthogonal --data.seq_len 500``). Resume a run with
``--ckpt_path last``.
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from .model import SeqModel

__all__ = ["SeqnormCLI", "main"]

#: DataModule attributes that wire the model (linked, so never typed twice).
TASK_LINKS = ("input_kind", "input_dim", "output_kind", "num_classes", "baseline")


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` beside the logs and record the full config in the logger's run
    (the W&B run config, the CSV logger's ``hparams.yaml``)."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": self.config.as_dict()})


class SeqnormCLI(LightningCLI):
    """LightningCLI with the task attributes of the DataModule linked into the model."""

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here; name the file when it can't.
        try:
            super()._parse_ckpt_path()
        except (OSError, RuntimeError, EOFError, ValueError, KeyError) as err:
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise ValueError(
                f"cannot read checkpoint {path} ({type(err).__name__}: {err}); is it truncated "
                "or not a seqnorm/Lightning checkpoint?"
            ) from None

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
        for name in TASK_LINKS:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``seqnorm`` console script; returns None (exit code 0) on success.

    Errors that come from the user's input (a bad option value, a missing data file, a
    corrupt checkpoint) end the process with exit code 2 and a one-line reason.
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        SeqnormCLI(
            SeqModel,
            pl.LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
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
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, KeyError) as err:
        _fail(f"{type(err).__name__}: {_condense(str(err))}")


def _condense(message: str) -> str:
    """One line out of jsonargparse's nested multi-line messages: keep the informative parts."""
    noise = ("Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")
    lines = [ln.strip().lstrip("- ") for ln in message.strip().splitlines()]
    keep = [
        ln for ln in lines if ln and not any(ln.lstrip().startswith(n.lstrip("- ")) for n in noise)
    ]
    keep = [ln for ln in keep if "Does not validate against any of the Union" not in ln]
    return " ".join(keep)[:500]


def _fail(message: str) -> None:
    print(f"seqnorm: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
