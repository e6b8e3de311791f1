"""The base class of the layers and the cells: parameters, initialisation, constraints.

A layer holds one *unit* of weights per (stacked layer, direction), named as torch names
them (``weight_ih_l0``, ``weight_hh_l0_reverse``, ``weight_hr_l1``, ...); a cell holds one
unit with no suffix (``weight_ih``, ``weight_hh``, ...). Both are built here, the same way.
The base class knows none of its subclasses: each declares its torch class and its
constructor arguments, and registers itself (:mod:`.registry`) for conversion and pickling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..constraints import constrain
from ..linalg import as_blocks
from ..steps import Unit
from . import export, registry, serialize
from .checks import check_flag, check_proj_size, check_recurrent_init, check_size, gate_indices
from .init import chrono_init_, init_recurrent_
from .projection import constrain_projected
from .spec import CellSpec, spec_of
from .weights import load_from_torch, load_plain_weights, torch_twin

__all__ = ["RecurrentModule"]

M = TypeVar("M", bound="RecurrentModule")


class RecurrentModule(nn.Module):
    """What the layers and the cells share: parameters, initialisation and constraints.

    Parameters are created, named and initialised as torch does (``U(-1/sqrt(H), 1/sqrt(H))``
    for every weight, drawn in torch's order, so one seed gives torch's weights); then per
    unit the modReLU bias, the recurrent ``init`` and ``chrono_init``, and the constraint on
    ``weight_hh`` (per gate block) are applied.

    Args:
        mode: ``rnn_tanh``, ``rnn_relu``, ``rnn_modrelu``, ``gru`` or ``lstm``.
        input_size: features of the input.
        hidden_size: features of the hidden state.
        bias: whether there are ``bias_ih`` and ``bias_hh``.
        constraint: ``none``, ``spectral``, ``scaled``, ``bound``, ``band`` or
            ``orthogonal`` (see :func:`seqnorm.constrain`), on every ``weight_hh``.
        constraint_options: options of the constraint, e.g. ``{"gamma": 0.9}``.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.
        init: initialisation of the recurrent gate blocks, applied before the constraint
            (so ``orthogonal`` starts exactly there): ``torch`` (default, torch's uniform),
            ``identity`` (IRNN), ``orthogonal`` (random), ``henaff`` or ``cayley``.
        chrono_init: ``T_max`` of the chrono initialisation of the gate biases (Tallec &
            Ollivier 2018; GRU and LSTM only), ``None`` for torch's.
        constrained_gates: names of the gate blocks the constraint applies to (``None``:
            all): GRU ``r, z, n``, LSTM ``i, f, g, o``; e.g. ``["n"]``.
    """

    #: The torch module with the same arguments and parameters (``nn.GRU``, ``nn.GRUCell``...).
    #: A subclass that declares it is registered as that module's stand-in (:mod:`.registry`).
    torch_class: ClassVar[type[nn.Module]]
    #: The constructor arguments that :attr:`torch_class` takes too, in torch's order; both
    #: modules keep each as an attribute of that name (converting reads them off one module
    #: and gives them to the other).
    torch_args: ClassVar[tuple[str, ...]] = ()
    #: The constructor arguments seqnorm adds to torch's.
    seqnorm_args: ClassVar[tuple[str, ...]] = (
        "constraint", "constraint_options", "init", "chrono_init", "constrained_gates",
    )  # fmt: skip
    #: Smallest ``input_size``/``hidden_size`` (torch: 1 for a layer, 0 for a cell).
    min_size: ClassVar[int] = 1
    #: ``proj_size`` of an LSTM with projections; 0 otherwise.
    proj_size: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "torch_class" in cls.__dict__:
            registry.register(cls)

    @classmethod
    def constructor_args(cls) -> tuple[str, ...]:
        """Every constructor argument (``device`` and ``dtype`` aside), each kept as an
        attribute of that name: what rebuilds the module (pickling, :mod:`.serialize`)."""
        return cls.torch_args + cls.seqnorm_args

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        constraint: str = "spectral",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        init: str = "torch",
        chrono_init: int | None = None,
        constrained_gates: Sequence[str] | None = None,
    ) -> None:
        spec = spec_of(mode)  # the one check of mode: the rest reads the spec
        check_proj_size(spec, self.proj_size, hidden_size)
        check_size("input_size", input_size, self.min_size)
        check_size("hidden_size", hidden_size, self.min_size)
        check_flag("bias", bias)
        options = dict(constraint_options or {})
        check_recurrent_init(spec, init, chrono_init, bias, constraint, options)
        gate_idx = gate_indices(spec, constrained_gates)
        if self.proj_size and init != "torch":
            raise ValueError(
                f"init={init!r} draws square gate blocks, but with proj_size={self.proj_size} "
                f"the gate blocks of weight_hh are {hidden_size} x {self.proj_size}: use "
                f"init='torch'"
            )
        super().__init__()
        self.register_load_state_dict_post_hook(export.after_load)
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.bias = bias
        self.constraint, self.constraint_options = constraint, options
        self.init, self.chrono_init = init, chrono_init
        self.constrained_gates = None if constrained_gates is None else list(constrained_gates)
        self._make_parameters(torch.empty(0, device=device, dtype=dtype))
        if hidden_size == 0:  # a cell with no units: nothing to initialise or constrain
            return
        G = spec.num_gates
        like = torch.empty(0, device=device, dtype=dtype)
        for suffix, _ in self._units():
            for extra in spec.extras:  # parameters seqnorm adds to torch's (modReLU's bias)
                if extra.init is not None:
                    p = nn.Parameter(extra.init(hidden_size, like))
                    self.register_parameter(extra.name + suffix, p)
            if init != "torch":  # torch's draw is already there
                init_recurrent_(getattr(self, f"weight_hh{suffix}"), init, blocks=G)
            if chrono_init is not None:
                b_ih, b_hh = getattr(self, f"bias_ih{suffix}"), getattr(self, f"bias_hh{suffix}")
                chrono_init_(b_ih, b_hh, mode, chrono_init)
            if self.proj_size:
                constrain_projected(self, f"weight_hh{suffix}", f"weight_hr{suffix}", constraint,
                                    blocks=G, gates=gate_idx, **options)  # fmt: skip
            else:
                constrain(self, f"weight_hh{suffix}", constraint, blocks=G, gates=gate_idx,
                          **options)  # fmt: skip

    def _units(self) -> list[tuple[str, int]]:
        """``(name suffix, input features)`` of every unit, in torch's order."""
        raise NotImplementedError

    def _make_parameters(self, like: Tensor) -> None:
        H, P = self.hidden_size, self.proj_size
        GH = self.num_gates * H  # rows: the gate blocks stacked
        self._all_weights: list[list[str]] = []
        for suffix, in_size in self._units():
            shapes = {"weight_ih": (GH, in_size), "weight_hh": (GH, P or H)}
            if self.bias:
                shapes.update(bias_ih=(GH,), bias_hh=(GH,))
            elif not suffix:  # torch's cells register absent biases as None
                self.register_parameter("bias_ih", None)
                self.register_parameter("bias_hh", None)
            if P:
                shapes["weight_hr"] = (P, H)
            for name, shape in shapes.items():
                self.register_parameter(name + suffix, nn.Parameter(like.new_empty(shape)))
            self._all_weights.append([name + suffix for name in shapes])
        self._flat_weights_names = [n for unit in self._all_weights for n in unit]
        stdv = 1.0 / math.sqrt(H) if H else 0.0  # torch's initialisation, in its order
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-stdv, stdv)

    @property
    def spec(self) -> CellSpec:
        """What this module's cell type is (:data:`seqnorm.layers.spec.SPECS`)."""
        return spec_of(self.mode)

    @property
    def num_gates(self) -> int:
        """Number of gate blocks stacked in each ``weight_hh`` (1, 3 or 4)."""
        return self.spec.num_gates

    @property
    def gate_names(self) -> tuple[str, ...]:
        """Names of the gate blocks of ``weight_hh`` in torch's order (``("r", "z", "n")``)."""
        return self.spec.gate_names

    def recurrent_maps(self) -> Tensor:
        """The recurrent matrix of every gate of every unit, ``(units, gates, H, H)``: the
        gate blocks of ``weight_hh`` (constrained), in ``h_n``'s unit order. With
        ``proj_size`` the map of a gate is ``W_hh^g @ W_hr``, which the constraint acts on."""
        maps = []
        for suffix, _ in self._units():
            W = getattr(self, f"weight_hh{suffix}")  # (G*H, R)
            Wb = as_blocks(W, self.num_gates)  # (G, H, R)
            maps.append(Wb @ getattr(self, f"weight_hr{suffix}") if self.proj_size else Wb)
        return torch.stack(maps)  # (units, G, H, H)

    def units(self) -> list[Unit]:
        """The weights of every unit in ``h_n``'s order, as the steps read them: ``weight_hh``
        constrained (read it inside ``seqnorm.cached()`` to compute the constraint once), and
        the extra tensors of the cell's spec that the unit has (``weight_hr``, modReLU's bias)."""
        flat = self._flat_weights  # torch's weights as the layer computes with them
        out, i = [], 0
        for suffix, _ in self._units():
            w_ih, w_hh = flat[i], flat[i + 1]
            b_ih, b_hh = (flat[i + 2], flat[i + 3]) if self.bias else (None, None)
            i += 4 if self.bias else 2
            extras = []
            for e in self.spec.extras:
                if e.init is None and (e.when is None or getattr(self, e.when)):
                    extras.append(flat[i])  # one of torch's flat weights (weight_hr)
                    i += 1
                elif e.init is not None:
                    extras.append(getattr(self, e.name + suffix))  # seqnorm's own parameter
            out.append(Unit(w_ih, w_hh, b_ih, b_hh, tuple(extras)))
        return out

    @property
    def _flat_weights(self) -> list[Tensor]:
        """The weights in torch's flat order; ``weight_hh`` is the constrained matrix (a
        constant computed outside the graph when traced or exported: :mod:`.export`)."""
        if export.capturing():
            return export.constant_weights(self, self._flat_weights_names)
        return [getattr(self, n) for n in self._flat_weights_names]

    # -- pickling, copying, loading ---------------------------------------------------------
    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        """Pickle (and ``torch.save``) as a rebuild from the constructor arguments and the
        ``state_dict`` (see :mod:`.serialize`): torch cannot pickle a parametrized module."""
        return serialize.reduce_module(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> RecurrentModule:
        return serialize.deepcopy_module(self, memo)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any) -> None:  # fmt: skip
        load_plain_weights(self, state_dict, prefix)  # torch's keys: weight_hh_l0, ...
        super()._load_from_state_dict(state_dict, prefix, *args)

    def train(self: M, mode: bool = True) -> M:
        super().train(mode)
        if not mode:
            export.remember(self)
        return self

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Per unit ``[weight_ih, weight_hh, bias_ih, bias_hh, weight_hr]`` as torch lists
        them (biases and ``weight_hr`` when present); ``weight_hh`` is the constrained matrix."""
        return [[getattr(self, n) for n in unit] for unit in self._all_weights]

    def __prepare_scriptable__(self) -> nn.Module:
        raise RuntimeError(
            f"{type(self).__name__} cannot be scripted: torch.jit.script does not support "
            f"parametrized modules (the constraint on weight_hh is a parametrization). "
            f"In eval mode, torch.jit.trace, torch.export.export and torch.onnx.export "
            f"work on the module; or script module.to_torch(), a plain "
            f"{self.torch_class.__name__} with the constrained weights"
        )

    def to_torch(self) -> nn.Module:
        """A plain torch module (``nn.GRU`` for a ``SpectralGRU``...) with the same arguments
        and the constrained weights copied in, for pickling, TorchScript, ONNX or cuDNN
        inference. The copy is independent; the constraint is not carried over.

        Raises:
            ValueError: for ``nonlinearity="modrelu"``, which torch does not have.
        """
        return torch_twin(self)

    @classmethod
    def from_torch(
        cls: type[M], module: nn.Module, constraint: str = "spectral", **kwargs: Any
    ) -> M:
        """Build a seqnorm module from a torch one (``nn.GRU`` for ``SpectralGRU``...): the
        same arguments (incl. ``bidirectional``, ``proj_size``), device, dtype and weights.

        The loaded ``weight_hh`` is set through the constraint (its ``right_inverse`` where it
        has one): with ``constraint="none"`` the module computes exactly what ``module`` does;
        with a constraint it computes with the constrained version of the trained weights.

        Args:
            module: an instance of :attr:`torch_class`.
            constraint: the constraint of the new module.
            **kwargs: other seqnorm arguments (``constraint_options``, ``constrained_gates``).
        """
        return load_from_torch(cls, module, constraint=constraint, **kwargs)

    def extra_repr(self) -> str:
        s = f", constraint={self.constraint!r}"
        if self.constraint_options:
            s += f", constraint_options={self.constraint_options}"
        if self.init != "torch":
            s += f", init={self.init!r}"
        if self.chrono_init is not None:
            s += f", chrono_init={self.chrono_init}"
        if self.constrained_gates is not None:
            s += f", constrained_gates={self.constrained_gates}"
        return s
