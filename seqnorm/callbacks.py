"""Lightning callbacks that run the probes during training and log what they find.

* :class:`GradientFlowMonitor` -- ``||dL/dh[t]||`` on a fixed probe batch every N steps:
  scalars (``probe/decay_rate``, ``probe/grad_ratio``, ``probe/sigma_max/l{k}/{gate}``,
  ``probe/lipschitz_bound``), a heatmap over training and the current curve.
* :class:`SpectrumMonitor` -- singular values of every ``weight_hh`` gate block over training.

They log to whatever loggers the trainer has. Scalars go to every logger
(``logger.log_metrics``). Figures and the per-step table are written, on rank 0, as PNG and
CSV files into ``dirpath``: by default ``<log dir>/gradient_flow/`` (``spectrum/``), where the
log dir is the first logger's ``log_dir`` (CSV, TensorBoard) or ``save_dir`` (others), else
``trainer.default_root_dir`` (the ``seqnorm`` CLI sets ``dirpath`` inside the run
directory). Every CSV row starts with the run's id (``run_id``: the argument, else the W&B
run id, else the first logger's version), so tables of several runs can be stacked. A
resumed run (``ckpt_path``) first drops its own rows from the checkpoint's step on -- it
records those steps again -- so a run killed after its last checkpoint has no row twice. With a
``WandbLogger`` the figures and table are logged as images and a table as well. W&B is never
imported here: a W&B logger is recognised by its class name.

The probes change nothing in training: they run in eval mode (no dropout, no update of the
constraints' power-iteration vectors; every module's mode is restored afterwards), take
gradients with :func:`torch.autograd.grad` (no ``.grad`` is touched), restore buffers, and
fetch the probe batch with the CPU RNG state saved and restored, so a run with a monitor
ends with the same weights as one without.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from matplotlib.image import imsave
from pytorch_lightning.utilities import move_data_to_device
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import Tensor

from . import plots
from .linalg import check_int
from .probes import below_range, find_layers, hidden_grad_norms, summarize, weight_spectrum
from .rundir import RunDirOutput, append_run_rows, drop_run_rows_from
from .utils import eval_mode

__all__ = ["EpochTest", "GradientFlowMonitor", "SpectrumMonitor"]


def _is_wandb(logger: Any) -> bool:
    return any(c.__name__ == "WandbLogger" for c in type(logger).__mro__)


@contextmanager
def _probing(pl_module: pl.LightningModule) -> Iterator[None]:
    """Eval mode, gradients on, CPU RNG saved; every module's mode restored on exit."""
    with eval_mode(pl_module), torch.random.fork_rng(devices=[]), torch.enable_grad():
        yield


class _Monitor(pl.Callback, RunDirOutput):
    """Shared schedule, output folder and logging of the monitors."""

    #: The CSV files this monitor appends to (in its output folder).
    csv_names: tuple[str, ...] = ()

    def __init__(
        self,
        every_n_steps: int,
        log_images: bool,
        image_every_n_steps: int | None,
        dirpath: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.every_n_steps = check_int("every_n_steps", every_n_steps, 1)
        self.dirpath = dirpath
        self.run_id = run_id
        self.log_images = bool(log_images)
        if image_every_n_steps is None:
            image_every_n_steps = 10 * every_n_steps
        self.image_every_n_steps = check_int("image_every_n_steps", image_every_n_steps, 1)
        self._last_step: int | None = None
        self._last_image_step: int | None = None

    # -- schedule ------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = self._last_image_step = None
        if trainer.ckpt_path is not None:  # a resume: forget what the lost steps recorded
            self._forget_from(trainer, trainer.global_step)
        if trainer.is_global_zero and self._ready(trainer, pl_module):
            self._run(trainer, pl_module, trainer.global_step)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if (
            trainer.is_global_zero
            and step % self.every_n_steps == 0
            and step != self._last_step
            and self._ready(trainer, pl_module)
        ):
            self._run(trainer, pl_module, step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self._last_step is not None:
            if self._last_image_step != self._last_step:
                self._images(trainer, self._last_step)

    def _ready(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        return True

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        self._last_step = step
        self._probe(trainer, pl_module, step)
        last = self._last_image_step
        if last is None or step - last >= self.image_every_n_steps:
            self._images(trainer, step)

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        raise NotImplementedError

    def _draw(self, step: int) -> dict[str, Figure]:
        raise NotImplementedError

    def _images(self, trainer: pl.Trainer, step: int) -> None:
        self._last_image_step = step
        if not self.log_images:
            return
        out = self.output_dir(trainer)
        wandb = [lg for lg in trainer.loggers if _is_wandb(lg)]
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in self._draw(step).items():
            img = plots.to_rgb_array(fig)  # (h, w, 3): drawn once, written and logged
            imsave(out / f"{name}.png", img)
            for lg in wandb:
                lg.log_image(key=f"probe/{self.run_subdir()}/{name}", images=[img], step=step)

    # -- output ----------------------------------------------------------------------------
    def output_dir(self, trainer: pl.Trainer) -> Path:
        """Where the files go: ``dirpath``, else ``<log dir>/<run_subdir()>`` (module
        docstring)."""
        if self.dirpath is not None:
            return Path(self.dirpath)
        root = None
        if trainer.loggers:
            lg = trainer.loggers[0]
            root = getattr(lg, "log_dir", None) or getattr(lg, "save_dir", None)
        return Path(root or trainer.default_root_dir) / self.run_subdir()

    @staticmethod
    def _log_metrics(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)

    def run_name(self, trainer: pl.Trainer) -> str:
        """The ``run_id`` column: ``run_id``, else the W&B run id, else the first logger's
        version (``""`` without a logger)."""
        if self.run_id is not None:
            return str(self.run_id)
        loggers = sorted(trainer.loggers, key=lambda lg: not _is_wandb(lg))
        if not loggers:
            return ""
        version = loggers[0].version
        return f"version_{version}" if isinstance(version, int) else str(version)

    def _append_csv(self, trainer: pl.Trainer, name: str, header: list[str], rows: list) -> None:
        append_run_rows(self.output_dir(trainer) / name, self.run_name(trainer), header, rows)

    def _forget_from(self, trainer: pl.Trainer, step: int) -> None:
        """Drop this run's rows and history from ``step`` on: a resumed run restarts at its
        checkpoint's step and records those steps again (after a kill they were written
        once already), so no row is written twice. Other runs' rows are kept."""
        self.history = [entry for entry in self.history if entry[0] < step]
        if not trainer.is_global_zero:
            return
        for name in self.csv_names:
            drop_run_rows_from(self.output_dir(trainer) / name, self.run_name(trainer), step)

    @staticmethod
    def _row_labels(pl_module: pl.LightningModule) -> list[tuple[str, Any]]:
        """``(prefix, layer)`` per seqnorm layer: ``""`` for one layer, ``"name/"`` else."""
        layers = find_layers(pl_module)
        if not layers:
            raise ValueError(
                f"pl_module must contain a seqnorm layer, found none in {type(pl_module).__name__}"
            )
        if len(layers) == 1:
            return [("", layers[0][1])]
        return [(f"{name}/", layer) for name, layer in layers]

    def _spectra(self, pl_module: pl.LightningModule) -> list[tuple[str, Any, dict[str, Tensor]]]:
        return [(p, layer, {k: v.cpu() for k, v in weight_spectrum(layer).items()})
                for p, layer in self._row_labels(pl_module)]  # fmt: skip


class GradientFlowMonitor(_Monitor):
    """Track how the gradient flows back through time while training.

    On a fixed probe batch -- the first ``num_samples`` samples of the first validation
    batch, or of the first training batch when there is no validation data, taken once at
    the start of training and kept on the model's device -- it computes
    :func:`seqnorm.probes.hidden_grad_norms` at step 0 and every ``every_n_steps``
    optimizer steps, with ``pl_module.loss(output, target)`` as the loss, and logs:

    * scalars ``probe/decay_rate``, ``probe/grad_ratio``, ``probe/fit_steps`` and
      ``probe/below_range_steps`` (top layer; ``/l{k}`` per layer when stacked, see
      :func:`seqnorm.probes.summarize`: a negative rate means the gradient vanishes going
      back in time; the rate is fitted over the ``fit_steps`` steps whose norm is within
      float range, and a rate or ratio that is not defined there is not logged at that
      step), ``probe/sigma_max/l{k}/{gate}`` and ``probe/lipschitz_bound`` (see
      :func:`seqnorm.probes.weight_spectrum`);
    * ``gradient_flow/grad_norms.csv`` (``run_id, step, layer, t, norm, below_range``;
      appended every probe): ``norm`` is the measured norm, or, where it is below float
      range (zero, flushed or subnormal: :func:`seqnorm.probes.below_range`), the floor
      ``finfo.tiny`` (1.1754944e-38 for a float32 model) with ``below_range`` 1 -- never
      0, so its ``log10`` is finite and equals the figures' floor;
    * figures ``gradient_flow/heatmap.png`` (``log10 ||dL/dh[t]||`` over training steps,
      norms below float range in grey) and ``curve.png`` (the current curve, those steps
      marked at the floor), redrawn at most every
      ``image_every_n_steps`` and at the end of training (drawing a figure costs more
      than a probe); with a ``WandbLogger`` also logged as images
      ``probe/gradient_flow/heatmap`` and ``.../curve``, and, at the same moments, the
      rows since the last table as the table ``probe/gradient_flow/grad_norms``.

    Scalars go through ``logger.log_metrics(..., step=global_step)`` of every logger
    rather than ``pl_module.log``, which Lightning does not allow per step in
    ``on_train_start`` (the step-0 probe) and which would drop values between
    ``log_every_n_steps``.

    Args:
        every_n_steps: probe every this many optimizer steps.
        num_samples: samples of the probe batch.
        log_images: draw and log the figures (the CSV and scalars are always logged).
        image_every_n_steps: redraw the figures at most this often (default
            ``10 * every_n_steps``).
        dirpath: folder of the CSV and figures (default ``<log dir>/gradient_flow``).
        run_id: the ``run_id`` column of the CSV (default: the W&B run id, else the first
            logger's version).
    """

    csv_names = ("grad_norms.csv",)
    #: The columns of ``grad_norms.csv`` (after ``run_id``) and of the W&B table.
    CSV_COLUMNS = ("step", "layer", "t", "norm", "below_range")

    @classmethod
    def run_subdir(cls) -> str:
        """``gradient_flow``: the folder of the CSV and figures (see :class:`RunDirOutput`)."""
        return "gradient_flow"

    def __init__(
        self,
        every_n_steps: int = 100,
        num_samples: int = 32,
        log_images: bool = True,
        image_every_n_steps: int | None = None,
        dirpath: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(every_n_steps, log_images, image_every_n_steps, dirpath, run_id)
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.history: list[tuple[int, Tensor]] = []
        self._batch: tuple[Tensor, Tensor] | None = None
        self._labels: list[str] = []
        self._pending_table: list[list[Any]] = []  # CSV rows not yet logged as a W&B table

    # -- probe batch -----------------------------------------------------------------------
    def _take(self, batch: Any, pl_module: pl.LightningModule) -> tuple[Tensor, Tensor]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError(
                f"GradientFlowMonitor needs batches (inputs, targets), got {type(batch).__name__}"
            )
        pair = tuple(t[: self.num_samples].detach().clone() for t in batch)
        return move_data_to_device(pair, pl_module.device)

    @staticmethod
    def _first_val_batch(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        loaders = trainer.val_dataloaders
        if loaders is None:
            for owner in (trainer.datamodule, pl_module):
                if owner is not None and is_overridden("val_dataloader", owner):
                    loaders = owner.val_dataloader()
                    break
        if isinstance(loaders, dict):
            loaders = next(iter(loaders.values()), None)
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        if loaders is None:
            return None
        # A new DataLoader iterator draws a seed from the global RNG: keep training's stream.
        with torch.random.fork_rng(devices=[]):
            return next(iter(loaders), None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batch = None
        if trainer.is_global_zero:
            batch = self._first_val_batch(trainer, pl_module)
            if batch is not None:
                self._batch = self._take(batch, pl_module)
        super().on_train_start(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.is_global_zero and self._batch is None:  # no validation data: train batch
            self._batch = self._take(batch, pl_module)
            self._run(trainer, pl_module, trainer.global_step)

    def _ready(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        return self._batch is not None

    # -- probe -------------------------------------------------------------------------------
    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        loss_fn = getattr(pl_module, "loss", None)
        if not callable(loss_fn):
            raise TypeError(
                f"GradientFlowMonitor needs pl_module.loss(output, target), "
                f"{type(pl_module).__name__} has none"
            )
        with _probing(pl_module):
            norms = hidden_grad_norms(pl_module, self._batch, loss_fn).cpu()  # (rows, T)
            spectra = self._spectra(pl_module)
        # A summary that is not defined (no two steps within float range) is left out.
        metrics = {f"probe/{k}": v for k, v in summarize(norms).items() if v is not None}
        bound = 1.0
        self._labels = []
        for prefix, layer, spec in spectra:
            gates = layer.gate_names
            for unit, sigmas in zip(layer.unit_names, spec["sigma_max"].tolist(), strict=True):
                self._labels.append(f"{prefix}{unit}")
                for gate, s in zip(gates, sigmas, strict=True):
                    metrics[f"probe/sigma_max/{prefix}{unit}/{gate}"] = s
            bound *= float(spec["lipschitz_bound"])
        metrics["probe/lipschitz_bound"] = bound
        self.history.append((step, norms))
        self._log_metrics(trainer, metrics, step)
        # Below float range (zero, flushed, subnormal): the floor, flagged (see CSV_COLUMNS).
        below = below_range(norms)  # (rows, T)
        floored = norms.masked_fill(below, torch.finfo(norms.dtype).tiny)  # (rows, T)
        rows = [[step, k, t, v, int(b)]
                for k, (row, flags) in enumerate(zip(floored.tolist(), below.tolist(), strict=True))
                for t, (v, b) in enumerate(zip(row, flags, strict=True))]  # fmt: skip
        self._append_csv(trainer, "grad_norms.csv", list(self.CSV_COLUMNS), rows)
        self._pending_table += rows

    def _draw(self, step: int) -> dict[str, Figure]:
        return {
            "heatmap": plots.grad_norm_heatmap(self.history, labels=self._labels),
            "curve": plots.grad_norm_curve(self.history[-1][1], step=step, labels=self._labels),
        }

    def _images(self, trainer: pl.Trainer, step: int) -> None:
        super()._images(trainer, step)
        for lg in trainer.loggers:
            if _is_wandb(lg) and self._pending_table:
                lg.log_table(key="probe/gradient_flow/grad_norms", columns=list(self.CSV_COLUMNS),
                             data=self._pending_table, step=step)  # fmt: skip
        self._pending_table = []

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [(s, n.tolist()) for s, n in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [(int(s), torch.tensor(n)) for s, n in state_dict.get("history", [])]


class SpectrumMonitor(_Monitor):
    """Record the singular values of every gate block of every ``weight_hh_l{k}``.

    At step 0 and every ``every_n_steps`` optimizer steps it logs scalars
    ``probe/sigma_min/l{k}/{gate}`` and ``probe/stable_rank/l{k}/{gate}``, appends every
    singular value to ``spectrum/singular_values.csv`` (``run_id, step, layer, gate, index,
    sigma``), and draws ``spectrum/spectrum.png`` (one line per recorded step in each
    gate's panel; :func:`seqnorm.plots.spectrum_figure`) at most every
    ``image_every_n_steps`` and at the end of training; with a ``WandbLogger`` the figure
    is also logged as the image ``probe/spectrum/spectrum``.

    For an ``LRU`` or ``LRUStack`` (diagonal recurrences, one "gate" ``lambda`` per unit) the
    singular values are the moduli ``|lambda|``, so the CSV and ``spectrum.png`` show their
    distribution over training; the phases are added: ``spectrum/eigenvalues.csv`` (``run_id,
    step, layer, index, modulus, phase``, phase ``arg lambda`` in ``[0, 2 pi)``) and
    ``spectrum/eigenvalues.png`` (:func:`seqnorm.plots.eigenvalue_figure`; W&B image
    ``probe/spectrum/eigenvalues``).

    Args:
        every_n_steps: record every this many optimizer steps.
        log_images: draw and log the figure.
        image_every_n_steps: redraw the figure at most this often (default
            ``10 * every_n_steps``).
        dirpath: folder of the CSV and figure (default ``<log dir>/spectrum``).
        run_id: the ``run_id`` column of the CSV (default: the W&B run id, else the first
            logger's version).
    """

    csv_names = ("singular_values.csv", "eigenvalues.csv")

    @classmethod
    def run_subdir(cls) -> str:
        """``spectrum``: the folder of the CSV and figure (see :class:`RunDirOutput`)."""
        return "spectrum"

    def __init__(
        self,
        every_n_steps: int = 100,
        log_images: bool = True,
        image_every_n_steps: int | None = None,
        dirpath: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(every_n_steps, log_images, image_every_n_steps, dirpath, run_id)
        #: ``(step, [singular values (num_layers, gates, H) per seqnorm layer])``.
        self.history: list[tuple[int, list[Tensor]]] = []
        #: ``(step, [(moduli, phases) (units, P) per diagonal layer])`` (LRU layers only).
        self.eigen_history: list[tuple[int, list[tuple[Tensor, Tensor]]]] = []
        self._names: list[tuple[str, tuple[str, ...]]] = []
        self._eigen_names: list[tuple[str, list[str]]] = []

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        with _probing(pl_module):
            spectra = self._spectra(pl_module)
        metrics: dict[str, float] = {}
        rows = []
        self._names = []
        for prefix, layer, spec in spectra:
            gates = layer.gate_names
            self._names.append((prefix, gates))
            s = spec["singular_values"]  # (units, G, H)
            for k, unit in enumerate(layer.unit_names):
                for g, gate in enumerate(gates):
                    key = f"{prefix}{unit}/{gate}"
                    metrics[f"probe/sigma_min/{key}"] = float(s[k, g, -1])
                    metrics[f"probe/stable_rank/{key}"] = float(spec["stable_rank"][k, g])
                    rows += [[step, f"{prefix}{unit}", gate, i, v] for i, v in
                             enumerate(s[k, g].tolist())]  # fmt: skip
        self.history.append((step, [spec["singular_values"] for _, _, spec in spectra]))
        self._log_metrics(trainer, metrics, step)
        header = ["step", "layer", "gate", "index", "sigma"]
        self._append_csv(trainer, "singular_values.csv", header, rows)
        diagonal = [(p, layer, spec) for p, layer, spec in spectra if "phases" in spec]
        if diagonal:  # diagonal recurrences: the phases beside the moduli
            self._eigen_names = [(p, list(layer.unit_names)) for p, layer, _ in diagonal]
            pairs = [(spec["singular_values"][:, 0], spec["phases"][:, 0]) for *_, spec in diagonal]
            self.eigen_history.append((step, pairs))
            rows = []
            for (prefix, units), (mods, phases) in zip(self._eigen_names, pairs, strict=True):
                for k, unit in enumerate(units):
                    values = zip(mods[k].tolist(), phases[k].tolist(), strict=True)
                    rows += [
                        [step, f"{prefix}{unit}", i, m, ph] for i, (m, ph) in enumerate(values)
                    ]
            header = ["step", "layer", "index", "modulus", "phase"]
            self._append_csv(trainer, "eigenvalues.csv", header, rows)

    def _draw(self, step: int) -> dict[str, Figure]:
        figs = {}
        for i, (prefix, gates) in enumerate(self._names):
            name = "spectrum" if not prefix else f"spectrum_{prefix.strip('/').replace('.', '_')}"
            hist = [(s, svs[i]) for s, svs in self.history if i < len(svs)]
            figs[name] = plots.spectrum_figure(hist, gate_names=gates)
        for i, (prefix, units) in enumerate(self._eigen_names):
            tag = prefix.strip("/").replace(".", "_")
            name = f"eigenvalues_{tag}" if tag else "eigenvalues"
            hist = [(s, *pairs[i]) for s, pairs in self.eigen_history if i < len(pairs)]
            if hist:
                figs[name] = plots.eigenvalue_figure(hist, unit_names=units)
        return figs

    def _forget_from(self, trainer: pl.Trainer, step: int) -> None:
        self.eigen_history = [entry for entry in self.eigen_history if entry[0] < step]
        super()._forget_from(trainer, step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [(s, [v.tolist() for v in svs]) for s, svs in self.history],
            "eigenvalues": [(s, [(m.tolist(), p.tolist()) for m, p in pairs])
                            for s, pairs in self.eigen_history],
        }  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [
            (int(s), [torch.tensor(v) for v in svs]) for s, svs in state_dict.get("history", [])
        ]
        self.eigen_history = [
            (int(s), [(torch.tensor(m), torch.tensor(p)) for m, p in pairs])
            for s, pairs in state_dict.get("eigenvalues", [])
        ]


class EpochTest(pl.Callback):
    """Evaluate the test set after every validation and log it as ``test_epoch/<metric>``.

    The expRNN and scoRNN papers report the best test accuracy over the epochs of a run; a
    run that reports it beside the test accuracy at its best validation epoch needs the test
    set at every epoch. With validation once per epoch (Lightning's default for epoch-based
    training) this logs one value per epoch, at the step of that epoch's validation, under
    ``test_epoch/`` (``trainer.test`` logs ``test/``). The module's
    ``evaluate(dataloader) -> dict`` computes it (:meth:`seqnorm.SeqModel.evaluate`) on the
    DataModule's ``test_dataloader()``, limited by ``trainer.limit_test_batches`` as
    ``trainer.test`` is; the sanity check is skipped.

    These numbers are for reporting a published protocol: choosing a checkpoint or a setting
    by them is choosing on the test set.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.datamodule is None or not callable(getattr(pl_module, "evaluate", None)):
            raise ValueError(
                "EpochTest needs a DataModule (its test_dataloader) and a module with an "
                f"evaluate(dataloader) method, got datamodule={type(trainer.datamodule).__name__}"
                f" and module {type(pl_module).__name__}"
            )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loader = trainer.datamodule.test_dataloader()
        limit = trainer.limit_test_batches  # as trainer.test would see the test set
        if limit is not None and (isinstance(limit, int) or limit < 1.0):
            n = limit if isinstance(limit, int) else int(len(loader) * limit)
            loader = itertools.islice(loader, n)
        results = pl_module.evaluate(loader)
        for name, value in results.items():
            pl_module.log(f"test_epoch/{name}", value, on_step=False, on_epoch=True)
