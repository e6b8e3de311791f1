"""The LightningModule: input encoding, a seqnorm recurrent layer, a task readout.

The task wiring (``input_kind``, ``input_dim``, ``output_kind``, ``num_classes``,
``baseline``) comes from the DataModule: the CLI links those attributes into the model, and
:meth:`SeqModel.from_datamodule` does the same in Python, so a user never types them twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn
from torch.nn import functional as F

from .constraints import check_constraint
from .guards import FlushDenormals, NonFiniteGuard, NonFiniteLossError
from .heads import HEADS, TaskHead
from .layers import DiagonalRecurrentLayer, LRUStack, SpectralGRU, SpectralLSTM, SpectralRNN
from .layers.lru import check_lru_constraint
from .linalg import check_int, compute_dtype
from .optim import param_groups
from .utils import eval_mode

__all__ = ["CELLS", "NonFiniteLossError", "SeqModel"]

CELLS = {"rnn": SpectralRNN, "gru": SpectralGRU, "lstm": SpectralLSTM, "lru": LRUStack}
#: ``lru_options`` keys (:class:`~seqnorm.layers.LRUStack`'s own arguments).
LRU_OPTIONS = ("state_size", "r_min", "r_max", "max_phase", "norm", "glu")
#: How a last-step task reads the recurrent layer's output: its last step, or the mean.
POOLINGS = ("last", "mean")


_INPUT_KINDS = ("tokens", "features")
_OUTPUT_KINDS = tuple(HEADS)


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class SeqModel(pl.LightningModule):
    """Any seqnorm layer on any benchmark: encode, recur, read out.

    Args:
        cell: ``rnn``, ``gru``, ``lstm`` or ``lru`` (the deep LRU of Orvieto et al. 2023,
            :class:`~seqnorm.layers.LRUStack`: a linear encoder, then ``num_layers`` blocks
            norm -> LRU -> GELU -> dropout -> GLU -> dropout -> residual, ``hidden_size``
            wide; its options in ``lru_options``; ``docs/lru.md``).
        hidden_size: hidden units per layer (``lru``: the blocks' width).
        num_layers: stacked recurrent layers (``lru``: blocks).
        constraint: constraint on every ``weight_hh`` (see :func:`seqnorm.constrain`);
            ``lru``: ``none`` or ``bound`` (caps every ``|lambda|`` at ``gamma``), the others
            do not fit a diagonal recurrence and raise ``ValueError``.
        constraint_options: its options, e.g. ``{"gamma": 0.9}``.
        nonlinearity: ``tanh``, ``relu`` or ``modrelu`` (``cell: rnn`` only).
        dropout: dropout between stacked layers (``lru``: in every block).
        input_kind: ``tokens`` (one-hot encoded, as the copy-task papers do) or ``features``.
        input_dim: vocabulary size (tokens) or features per step.
        output_kind: ``per_step_class``, ``last_class`` or ``last_regression``.
        num_classes: classes of the readout (1 for regression).
        baseline: loss of the memoryless predictor, logged beside the loss (or ``None``).
        optimizer: optimizer factory (``Adam`` with lr 1e-3 by default; YAML:
            ``class_path: torch.optim.RMSprop``).
        lr_scheduler: optional scheduler factory; ``ReduceLROnPlateau`` monitors ``val/loss``.
        spectral_penalty: weight of ``sum((sigma_max - 1)^2)`` over all gate blocks, a soft
            alternative to a hard constraint (0 disables it).
        unroll: use the unrolled per-step path for training (slower; the probes switch it
            on by themselves when they need it).
        stop_on_nonfinite: stop with :class:`NonFiniteLossError` (naming the step) as soon as
            the loss or a gradient is NaN/inf, before the optimiser applies it, so the last
            checkpoint stays good and the loggers are flushed: the model adds a
            :class:`seqnorm.guards.NonFiniteGuard` to the trainer's callbacks
            (:meth:`configure_callbacks`).
        flush_denormal: run fit, validate and test with subnormal floats (below 1.2e-38 in
            float32) flushed to zero, on every thread that computes, and restore the previous
            mode afterwards (:class:`seqnorm.guards.FlushDenormals`). With a last-step loss
            the gradients of early steps decay into subnormals, on which x86 cores compute
            many times slower; flushing changes nothing above that range. ``False``: leave
            the floating-point mode alone.
        tbptt_steps: truncated backpropagation through time: split each sequence into
            chunks of this many steps with an optimiser step per chunk (manual
            optimisation; ``trainer.gradient_clip_val`` is then not available). ``None``:
            full backpropagation through time. The ``spectral_penalty`` is added to the
            loss of every chunk that has one. Not with ``bidirectional``.
        init: initialisation of the recurrent gate blocks (``torch``, ``identity``,
            ``orthogonal``, ``henaff``, ``cayley``), applied before the constraint.
        chrono_init: ``T_max`` of the chrono initialisation of the gate biases (GRU, LSTM).
        constrained_gates: gate blocks the constraint applies to (``None``: all), e.g.
            ``["n"]`` for the GRU's candidate block only.
        constrained_lr: learning rate of the constrained recurrent parameters (the stored
            tensors behind each constrained ``weight_hh`` and the constraint's own
            parameters), in a parameter group of their own; ``None``: the optimizer's lr.
        input_projection: a learned ``Linear(input_dim, hidden_size)`` before the recurrent
            layer (for feature inputs, the analogue of an embedding for tokens).
        bidirectional: a bidirectional recurrent layer. Last-step tasks read the forward
            direction's last output beside the backward direction's first (each has then
            read the whole sequence); per-step tasks read both directions at every step.
        proj_size: ``cell: lstm`` only: project the hidden state to this many features
            (0: none); the readout then reads ``proj_size`` features per direction.
        pooling: what a last-step task (``last_class``, ``last_regression``) reads of the
            layer's output: ``last`` (the last step; bidirectional: see above) or ``mean``
            (the mean over steps, the LRU paper's decoder), for every cell. Per-step tasks
            read every step: ``mean`` is refused there.
        lru_options: ``cell: lru`` only: the LRU blocks' options, any of ``state_size``
            (complex state entries, default ``hidden_size``), ``r_min``, ``r_max``,
            ``max_phase`` (the ring initialisation), ``norm`` (``layer``, ``batch``,
            ``none``) and ``glu`` (see :class:`~seqnorm.layers.LRUStack`).

    Attributes:
        current_batch: the batch the training step in progress works on (``None`` between
            steps); :class:`~seqnorm.guards.NonFiniteGuard` inspects it.
    """

    def __init__(
        self,
        cell: str = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        input_kind: str = "features",
        input_dim: int = 1,
        output_kind: str = "last_class",
        num_classes: int = 10,
        baseline: float | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        spectral_penalty: float = 0.0,
        unroll: bool = False,
        stop_on_nonfinite: bool = True,
        flush_denormal: bool = True,
        tbptt_steps: int | None = None,
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: list[str] | None = None,
        constrained_lr: float | None = None,
        input_projection: bool = False,
        bidirectional: bool = False,
        proj_size: int = 0,
        pooling: str = "last",
        lru_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if cell == "lru":
            check_lru_constraint(constraint, constraint_options)
            _check_lru_arguments(
                bidirectional=bidirectional,
                input_projection=input_projection,
                init=init,
                chrono_init=chrono_init,
                constrained_gates=constrained_gates,
                lru_options=lru_options,
            )
        else:
            check_constraint(constraint, constraint_options)
            if lru_options is not None:
                raise ValueError(f"lru_options is for cell 'lru' only, got cell {cell!r}")
        if cell != "rnn" and nonlinearity != "tanh":  # would be silently ignored
            raise ValueError(
                f"nonlinearity {nonlinearity!r} is for cell 'rnn' only; cell {cell!r} has its "
                f"own gate nonlinearities: leave nonlinearity at 'tanh' (the default), e.g. "
                f"--model.nonlinearity tanh over a config written for the modReLU RNN"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if input_kind not in _INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {_INPUT_KINDS}, got {input_kind!r}")
        if output_kind not in _OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {_OUTPUT_KINDS}, got {output_kind!r}")
        if pooling != "last" and HEADS[output_kind].per_step:
            raise ValueError(
                f"pooling={pooling!r} is for last-step tasks; output_kind {output_kind!r} "
                f"reads every step (use pooling='last')"
            )
        for name, val in (("input_dim", input_dim), ("num_classes", num_classes)):
            check_int(name, val, minimum=1)
        check_int("hidden_size", hidden_size, minimum=1, expected="a positive int")
        if not spectral_penalty >= 0:
            raise ValueError(f"spectral_penalty must be >= 0, got {spectral_penalty!r}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.cell = cell
        self.input_kind, self.input_dim = input_kind, input_dim
        self.output_kind, self.num_classes = output_kind, num_classes
        self.head: TaskHead = HEADS[output_kind]  # loss, metrics and output of the task
        self.baseline = baseline
        self.spectral_penalty = float(spectral_penalty)
        self.stop_on_nonfinite = stop_on_nonfinite
        if not isinstance(flush_denormal, bool):
            raise ValueError(f"flush_denormal must be a bool, got {flush_denormal!r}")
        self.flush_denormal = flush_denormal
        if tbptt_steps is not None and (not isinstance(tbptt_steps, int) or tbptt_steps < 1):
            raise ValueError(f"tbptt_steps must be None or an int >= 1, got {tbptt_steps!r}")
        if tbptt_steps is not None and bidirectional:
            raise ValueError(
                "tbptt_steps needs a unidirectional layer (the backward direction would start "
                "again in every chunk), got bidirectional=True"
            )
        if proj_size and cell != "lstm":
            raise ValueError(f"proj_size is for cell 'lstm' only, got cell {cell!r}")
        self.tbptt_steps = tbptt_steps
        self.automatic_optimization = tbptt_steps is None
        if constrained_lr is not None and not (
            isinstance(constrained_lr, (int, float)) and constrained_lr > 0
        ):
            raise ValueError(
                f"constrained_lr must be None or a positive number, got {constrained_lr!r}"
            )
        self.constrained_lr = constrained_lr
        extra: dict[str, Any] = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        if chrono_init is not None:
            extra["chrono_init"] = chrono_init
        if cell == "lstm":
            extra["proj_size"] = proj_size
        self.input_proj = nn.Linear(input_dim, hidden_size) if input_projection else None
        self.pooling = pooling
        if cell == "lru":  # its own encoder: Linear(input_dim, hidden_size)
            self.rnn: nn.Module = LRUStack(
                input_dim,
                hidden_size,
                num_layers,
                dropout=dropout,
                batch_first=True,
                constraint=constraint,
                constraint_options=constraint_options,
                **(lru_options or {}),
            )
        else:
            self.rnn = CELLS[cell](
                hidden_size if input_projection else input_dim,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=dropout,
                constraint=constraint,
                constraint_options=constraint_options,
                init=init,
                constrained_gates=constrained_gates,
                bidirectional=bidirectional,
                **extra,
            )
        self.rnn.unroll = unroll
        self.bidirectional = bool(bidirectional)
        width = (2 if bidirectional else 1) * (proj_size or hidden_size)  # features per step
        self.readout = nn.Linear(width, num_classes)
        self.current_batch: Any = None
        self.train_metrics = self._make_metrics()  # one set of torchmetrics per split
        self.val_metrics = self._make_metrics()
        self.test_metrics = self._make_metrics()

    @classmethod
    def from_datamodule(cls, datamodule: pl.LightningDataModule, **kwargs: Any) -> SeqModel:
        """Build a model wired to ``datamodule`` (its input/output kinds, sizes, baseline)."""
        task = {k: getattr(datamodule, k) for k in ("input_kind", "input_dim", "output_kind")}
        task.update(num_classes=datamodule.num_classes, baseline=datamodule.baseline)
        return cls(**task, **kwargs)

    @property
    def is_classification(self) -> bool:
        return self.head.classification

    def _make_metrics(self) -> nn.ModuleDict:
        """The head's metrics (:meth:`seqnorm.heads.TaskHead.metrics`)."""
        return nn.ModuleDict(self.head.metrics(self.num_classes))

    # -- forward and loss -----------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Batch-first inputs to the recurrent layer's input features ``(B, T, input_dim)``."""
        if self.input_kind == "tokens":
            if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
                raise ValueError(
                    f"token inputs must be (B, T) integers, got {tuple(x.shape)} {x.dtype}"
                )
            return F.one_hot(x.long(), self.input_dim).to(self.readout.weight.dtype)
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"feature inputs must be (B, T, {self.input_dim}), got {tuple(x.shape)}"
            )
        return x.to(self.readout.weight.dtype)

    def features(self, x: Tensor) -> Tensor:
        """What the recurrent layer reads: :meth:`encode`, then the input projection if any."""
        inputs = self.encode(x)  # (B, T, input_dim)
        return inputs if self.input_proj is None else self.input_proj(inputs)  # (B, T, H)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, T, C)`` (per-step), ``(B, C)`` (last step) or predictions ``(B,)``."""
        out, _ = self.rnn(self.features(x))  # (B, T, D * R)
        return self.decode(out)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The task loss: cross-entropy (over every step for per-step tasks) or MSE."""
        return self.head.loss(output, target)

    def sigma_max(self) -> dict[str, Tensor]:
        """Exact largest singular value of every gate's recurrent map, differentiable.

        Keys ``"{unit}/{gate}"`` (``l0/z``, ``l0_reverse/z``, ...: the layer's
        ``unit_names`` and ``gate_names``); the maps are the layer's ``recurrent_maps()``,
        the ones :func:`seqnorm.probes.weight_spectrum` reports (which is detached).

        Reading the weights here does not advance the constraints' power iteration (in
        training mode a read would): logging or a penalty must not change the training
        trajectory, nor the buffers of one DDP rank only.
        """
        if isinstance(self.rnn, DiagonalRecurrentLayer):  # diag(lambda): sigma_max = max|lambda|
            with eval_mode(self.rnn):
                s = self.rnn.recurrent_eigenvalues().abs().amax(dim=-1)  # (units,)
            return {f"{unit}/lambda": s[k] for k, unit in enumerate(self.rnn.unit_names)}
        with eval_mode(self.rnn):
            maps = self.rnn.recurrent_maps()  # (units, G, H, H)
        s = torch.linalg.matrix_norm(maps.to(compute_dtype(maps.dtype)), ord=2)  # (units, G)
        return {
            f"{unit}/{gate}": s[k, g]
            for k, unit in enumerate(self.rnn.unit_names)
            for g, gate in enumerate(self.rnn.gate_names)
        }

    def penalty(self) -> Tensor:
        """``sum((sigma_max - 1)^2)`` over all gate blocks, differentiable."""
        return sum((s - 1) ** 2 for s in self.sigma_max().values())

    # -- steps ---------------------------------------------------------------------------------
    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        x, y = batch
        output = self(x)
        loss = self.loss(output, y)
        self._log_metrics(output, y, loss, split)
        return loss

    def _metric_inputs(self, output: Tensor, y: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``(preds, target)`` of each metric but ``loss`` for one batch."""
        return self.head.metric_inputs(output, y)

    def _log_metrics(self, output: Tensor, y: Tensor, loss: Tensor, split: str) -> None:
        metrics: nn.ModuleDict = getattr(self, f"{split}_metrics")
        bs = y.shape[0]
        # Calling a metric (not .update) also caches the batch value Lightning logs per step.
        metrics["loss"](loss.detach(), weight=bs)
        for name, (preds, target) in self._metric_inputs(output, y).items():
            metrics[name](preds, target)
        on_step = split == "train"
        for name, metric in metrics.items():
            self.log(
                f"{split}/{name}",
                metric,
                on_step=on_step,
                on_epoch=True,
                batch_size=bs,
                prog_bar=name == "loss",
            )
        if self.baseline is not None and split == "train":
            self.log("train/baseline", float(self.baseline), on_step=True, on_epoch=False)

    @torch.no_grad()
    def evaluate(self, dataloader: Iterable[Any]) -> dict[str, float]:
        """The metrics of the current weights over ``dataloader``, outside a trainer's loops.

        In eval mode (each module's mode restored afterwards), without gradients, with metrics
        of its own (the ones the model logs, untouched). For a callback that evaluates a
        split Lightning is not running, e.g. the test set at every validation
        (:class:`seqnorm.callbacks.EpochTest`).

        Args:
            dataloader: batches ``(x, y)`` as the DataModule's loaders give them.

        Returns:
            ``{"loss": ..., <metric>: ...}``, the names the model logs under ``val/`` and
            ``test/`` (``acc``; ``symbol_acc`` and ``acc_all_steps``; or ``mse``).
        """
        metrics = self._make_metrics().to(self.device)
        with eval_mode(self):
            for batch in dataloader:
                x, y = move_data_to_device(batch, self.device)
                output = self(x)
                metrics["loss"].update(self.loss(output, y), weight=y.shape[0])
                for name, (preds, target) in self._metric_inputs(output, y).items():
                    metrics[name].update(preds, target)
        return {name: float(m.compute()) for name, m in metrics.items() if m.update_count}

    def decode(self, out: Tensor) -> Tensor:
        """The task's output from the recurrent layer's output ``out`` ``(B, t, D * R)``.

        Per-step tasks: logits ``(B, t, C)`` at every step; last-step tasks: logits
        ``(B, C)`` or predictions ``(B,)`` from the last step (bidirectional: the forward
        direction's last step beside the backward direction's first), or from the mean over
        steps with ``pooling="mean"``.
        """
        if self.head.per_step:
            return self.readout(out)  # (B, t, C)
        if self.pooling == "mean":
            return self.head.prediction(self.readout(out.mean(dim=1)))  # (B, C) or (B,)
        last = out[:, -1]  # (B, D * R)
        if self.bidirectional:
            R = out.shape[-1] // 2
            last = torch.cat([out[:, -1, :R], out[:, 0, R:]], dim=-1)  # (B, 2R)
        return self.head.prediction(self.readout(last))  # (B, C) or (B,)

    def _penalized(self, loss: Tensor) -> Tensor:
        """``loss`` plus ``spectral_penalty * penalty()`` (logged), or ``loss`` unchanged."""
        if not self.spectral_penalty:
            return loss
        pen = self.penalty()
        self.log("train/spectral_penalty", pen.detach(), on_step=True, on_epoch=False)
        return loss + self.spectral_penalty * pen

    def _tbptt_step(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Truncated BPTT: chunks of ``tbptt_steps``, state carried but detached between
        chunks, one optimiser step per chunk that has a loss. For last-step tasks only the
        last chunk has a loss: earlier chunks run without a graph (gradient truncated to the
        last ``tbptt_steps`` steps)."""
        x, y = batch
        opt = self.optimizers()
        chunks = x.split(self.tbptt_steps, dim=1)  # each chunk encoded on its own graph
        per_step = self.head.per_step
        targets = y.split(self.tbptt_steps, dim=1) if per_step else [y] * len(chunks)
        state, outputs, losses = None, [], []
        for i, (chunk, target) in enumerate(zip(chunks, targets, strict=True)):
            if not per_step and i < len(chunks) - 1:
                with torch.no_grad():
                    _, state = self.rnn(self.features(chunk), state)
                continue
            out, state = self.rnn(self.features(chunk), state)  # (B, t, D * R)
            output = self.decode(out)
            loss = self.loss(output, target)
            opt.zero_grad()
            self.manual_backward(self._penalized(loss))
            opt.step()
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            outputs.append(output.detach())
            losses.append(loss.detach() * (target.numel() if per_step else 1))
        output = torch.cat(outputs, dim=1) if per_step else outputs[-1]
        loss = torch.stack(losses).sum() / (y.numel() if per_step else 1)
        self._log_metrics(output, y, loss, "train")
        return loss

    def on_train_epoch_end(self) -> None:
        if self.automatic_optimization:
            return
        sched = self.lr_schedulers()
        if sched is not None and not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step()

    def on_validation_epoch_end(self) -> None:
        if self.automatic_optimization or self.trainer.sanity_checking:
            return
        sched = self.lr_schedulers()
        val = self.trainer.callback_metrics.get("val/loss")
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and val is not None:
            sched.step(val)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self.current_batch = batch  # a guard tells a bad batch from a bad update with it
        if self.tbptt_steps:
            return self._tbptt_step(batch)
        return self._penalized(self._step(batch, "train"))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.current_batch = None

    def configure_callbacks(self) -> list[pl.Callback]:
        """A :class:`~seqnorm.guards.NonFiniteGuard` when ``stop_on_nonfinite`` and a
        :class:`~seqnorm.guards.FlushDenormals` when ``flush_denormal`` (each replaces one
        the trainer already has)."""
        callbacks: list[pl.Callback] = [NonFiniteGuard()] if self.stop_on_nonfinite else []
        if self.flush_denormal:
            callbacks.append(FlushDenormals())
        return callbacks

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        params: Any = self.parameters()
        if self.constrained_lr is not None:
            params = param_groups(self, constrained_lr=self.constrained_lr)
        opt = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}


def _check_lru_arguments(**args: Any) -> None:
    """``ValueError`` for an argument of the gated cells given with ``cell: lru``, or bad
    ``lru_options`` keys (their values are checked by the LRU blocks themselves)."""
    if args["bidirectional"]:
        raise ValueError("cell 'lru' runs forward in time only, got bidirectional=True")
    if args["input_projection"]:
        raise ValueError(
            "cell 'lru' has its own encoder (Linear(input_dim, hidden_size)), got "
            "input_projection=True"
        )
    for name, default in (("init", "torch"), ("chrono_init", None), ("constrained_gates", None)):
        if args[name] != default:
            raise ValueError(
                f"{name} is for the gated cells (rnn, gru, lstm); cell 'lru' initialises its "
                f"ring with lru_options r_min, r_max, max_phase; got {name}={args[name]!r}"
            )
    options = args["lru_options"]
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"lru_options must be a dict, got {type(options).__name__}")
    if bad := sorted(set(options or {}) - set(LRU_OPTIONS)):
        raise ValueError(
            f"unknown lru_options key(s) {bad}; allowed: {', '.join(LRU_OPTIONS)} (width, "
            f"blocks, dropout and the constraint are hidden_size, num_layers, dropout and "
            f"constraint)"
        )
