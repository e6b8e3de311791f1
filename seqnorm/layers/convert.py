"""Plain torch in and out: seqnorm layers and cells from torch's, and back, in any model.

The arguments torch's modules and seqnorm's share are read off one module and given to the
other; the weights are copied by torch's names (``_flat_weights_names``), which both use.
A constrained ``weight_hh`` is written through its constraint (``setattr``, i.e. the
constraint's ``right_inverse``) and read as the constrained matrix. Nothing here draws from
the global random number generator: the modules are built under
:func:`torch.random.fork_rng`, so converting (or saving) a model in the middle of a run
leaves the run's later dropout masks and samples as they were.

* :func:`from_torch` / :func:`to_torch`: every recurrent layer and cell in a model tree.
* :func:`torch_state_dict`: a model's ``state_dict`` with the keys torch's modules use.
* :func:`load_plain_weights`: what ``load_state_dict`` of a seqnorm module does with those keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..utils import eval_mode

if TYPE_CHECKING:
    from .module import RecurrentModule

__all__ = [
    "base_class",
    "from_torch",
    "load_from_torch",
    "load_plain_weights",
    "no_global_rng",
    "set_weight",
    "to_torch",
    "torch_state_dict",
    "torch_twin",
]

#: Arguments of torch's layers (``nn.RNN/GRU/LSTM``) and cells, in the order they list them.
LAYER_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
              "bidirectional")  # fmt: skip
CELL_ARGS = ("input_size", "hidden_size", "bias")


def _seqnorm_class(torch_class: type[nn.Module]) -> type[RecurrentModule]:
    from .cells import SpectralGRUCell, SpectralLSTMCell, SpectralRNNCell
    from .sequence import SpectralGRU, SpectralLSTM, SpectralRNN

    table = {c.torch_class: c for c in (SpectralRNN, SpectralGRU, SpectralLSTM, SpectralRNNCell,
                                        SpectralGRUCell, SpectralLSTMCell)}  # fmt: skip
    return table.get(torch_class)  # type: ignore[return-value]


def base_class(module: nn.Module) -> type[nn.Module]:
    """``module``'s class, not the one torch's parametrize creates on top of it."""
    cls = type(module)
    while cls.__module__ == parametrize.__name__:
        cls = cls.__bases__[0]
    return cls


def _is_layer(module: nn.Module) -> bool:
    return hasattr(module, "num_layers")


def _torch_args(module: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a torch or seqnorm module, read off its attributes."""
    args = {a: getattr(module, a) for a in (LAYER_ARGS if _is_layer(module) else CELL_ARGS)}
    if getattr(module, "proj_size", 0):
        args["proj_size"] = module.proj_size
    if hasattr(module, "nonlinearity"):
        args["nonlinearity"] = module.nonlinearity
    return args


def _reference(module: nn.Module) -> Tensor:
    return module.weight_ih_l0 if _is_layer(module) else module.weight_ih


@contextmanager
def no_global_rng(device: torch.device | None = None) -> Iterator[None]:
    """Restore the global RNG state (CPU, and ``device``'s if it is an accelerator) on exit:
    building a module draws its initial weights, which would shift a run's later draws."""
    devices = [] if device is None or device.type in ("cpu", "meta") else [device.index or 0]
    kind = "cuda" if device is None or device.type in ("cpu", "meta") else device.type
    with torch.random.fork_rng(devices=devices, device_type=kind):
        yield


@contextmanager
def _reading(module: nn.Module) -> Iterator[None]:
    """Read the constrained weights once, in eval mode (a training-mode read would update the
    constraint's estimate), without recording gradients."""
    with eval_mode(module), torch.no_grad(), parametrize.cached():
        yield


@torch.no_grad()
def set_weight(module: nn.Module, name: str, value: Tensor) -> None:
    """Set ``module.<name>`` to ``value`` (a plain matrix), through its constraint if any.

    The value is first moved to the parameter's device and dtype. A constrained weight is
    set with ``setattr``, which runs the constraint's ``right_inverse``: the module then
    computes with the constrained version of ``value`` (exactly ``value`` where it already
    satisfies the constraint, e.g. a matrix read off a constrained module).
    """
    if not parametrize.is_parametrized(module, name):
        getattr(module, name).copy_(value)
        return
    plist = module.parametrizations[name]
    ref = next(plist.parameters())  # a stored tensor: where and in what dtype the weight lives
    value = value.to(device=ref.device, dtype=ref.dtype)
    setattr(module, name, value)  # every constraint's right_inverse


def torch_twin(module: RecurrentModule) -> nn.Module:
    """The torch module with ``module``'s arguments and its constrained weights copied in.

    Built under :func:`no_global_rng`: the global RNG is left as it was.
    """
    if not module.spec.has_torch_twin:
        raise ValueError(
            f"{base_class(module).__name__} with nonlinearity='modrelu' has no torch equivalent "
            f"(torch's RNNs know tanh and relu only)"
        )
    ref = _reference(module)
    with no_global_rng(ref.device):
        twin = module.torch_class(**_torch_args(module), device=ref.device, dtype=ref.dtype)
    with _reading(module):
        for name in module._flat_weights_names:
            getattr(twin, name).copy_(getattr(module, name))
    return twin.train(module.training)


def load_from_torch(
    cls: type[RecurrentModule], module: nn.Module, **kwargs: Any
) -> RecurrentModule:
    """A ``cls`` with ``module``'s arguments, device, dtype, weights and training flag (see
    ``RecurrentModule.from_torch``); the global RNG is left as it was."""
    if type(module) is not cls.torch_class:
        raise TypeError(
            f"{cls.__name__}.from_torch takes a {cls.torch_class.__module__}."
            f"{cls.torch_class.__name__}, got {type(module).__name__}"
        )
    ref = _reference(module)
    with no_global_rng(ref.device):
        out = cls(**_torch_args(module), device=ref.device, dtype=ref.dtype, **kwargs)
    for name in out._flat_weights_names:
        set_weight(out, name, getattr(module, name).detach().clone())
    return out.train(module.training)


def _replace(model: nn.Module, convert: Any, want: Any) -> nn.Module:
    """Replace every submodule ``m`` with ``want(m)`` by ``convert(path, m)``; the root too.

    All conversions are made before any module is replaced, so a failure leaves ``model``
    as it was. A module held in two places is converted once and stays shared.
    """
    if want(model):
        return convert("<root>", model)
    sites, done = [], {}
    for parent_path, parent in model.named_modules(remove_duplicate=False):
        for name, child in parent.named_children():
            if want(child):
                path = f"{parent_path}.{name}" if parent_path else name
                if id(child) not in done:
                    done[id(child)] = convert(path, child)
                sites.append((parent, name, done[id(child)]))
    for parent, name, new in sites:
        setattr(parent, name, new)
    return model


def from_torch(model: nn.Module, constraint: str = "spectral", **options: Any) -> nn.Module:
    """Replace every ``nn.RNN/GRU/LSTM`` and ``nn.RNNCell/GRUCell/LSTMCell`` in ``model``
    with seqnorm's, keeping the weights, device, dtype and training flags.

    The one-line change that constrains an existing model:
    ``model = seqnorm.from_torch(model, constraint="spectral")``. Submodules are replaced in
    place (nested, in ``Sequential``/``ModuleList``/``ModuleDict``) and ``model`` is
    returned; when ``model`` is itself one of torch's recurrent modules the new module is
    returned (``model`` is left as it is). Only those exact classes are replaced (a subclass
    of ``nn.LSTM`` may have its own ``forward``). The global RNG is left as it was.

    Args:
        model: any module tree.
        constraint: the constraint of the new modules (see :func:`seqnorm.constrain`).
        **options: further seqnorm arguments of every new module (``constraint_options``,
            ``constrained_gates``, ...).

    Returns:
        ``model`` (or the new module, for a recurrent root).

    >>> import torch, seqnorm
    >>> lm = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LSTM(4, 8))
    >>> lm = seqnorm.from_torch(lm, constraint="spectral")
    >>> isinstance(lm[1], seqnorm.SpectralLSTM)
    True
    """

    def convert(path: str, m: nn.Module) -> nn.Module:
        return _seqnorm_class(type(m)).from_torch(m, constraint=constraint, **options)

    return _replace(model, convert, lambda m: _seqnorm_class(type(m)) is not None)


def to_torch(model: nn.Module) -> nn.Module:
    """Replace every seqnorm layer and cell in ``model`` with torch's own module holding
    the constrained weights (the reverse of :func:`from_torch`).

    In place, returning ``model``; a seqnorm root is returned converted. The copies are
    independent of the originals and carry no constraint. The global RNG is left as it was.

    Raises:
        ValueError: for a ``nonlinearity="modrelu"`` module (torch has no modReLU RNN),
            naming its path in ``model``; ``model`` is then left unchanged.
    """
    from .module import RecurrentModule

    def convert(path: str, m: nn.Module) -> nn.Module:
        if not m.spec.has_torch_twin:
            raise ValueError(
                f"{path} ({base_class(m).__name__}, nonlinearity='modrelu') has no torch "
                f"equivalent (torch's RNNs know tanh and relu only): it cannot be converted"
            )
        return torch_twin(m)

    return _replace(model, convert, lambda m: isinstance(m, RecurrentModule))


def torch_state_dict(model: nn.Module) -> OrderedDict[str, Tensor]:
    """``model.state_dict()`` with the keys and values torch's own modules would have.

    Every seqnorm layer's and cell's entries are replaced by torch's (``weight_hh_l0`` is
    the constrained matrix; the constraint's stored tensors and buffers are left out), so
    the result loads into the model :func:`to_torch` gives, or into the torch model the
    seqnorm one was converted from. Other entries are kept as they are. The model is not
    changed (the weights are read in eval mode).

    Raises:
        ValueError: for a modReLU module, which torch's modules have no place for.
    """
    from .module import RecurrentModule

    plain: dict[str, dict[str, Tensor]] = {}  # prefix -> torch's entries, in torch's order
    for path, m in model.named_modules():
        if not isinstance(m, RecurrentModule):
            continue
        if not m.spec.has_torch_twin:
            raise ValueError(
                f"{path or '<root>'} ({base_class(m).__name__}, nonlinearity='modrelu') has no "
                f"torch equivalent: its state has no torch keys"
            )
        prefix = f"{path}." if path else ""
        with _reading(m):
            plain[prefix] = {prefix + n: getattr(m, n).detach().clone()
                             for n in m._flat_weights_names}  # fmt: skip
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in model.state_dict().items():
        owner = max((p for p in plain if key.startswith(p)), key=len, default=None)
        if owner is None:
            out[key] = value
        elif plain[owner]:  # the module's first key: all of its entries, once
            out.update(plain[owner])
            plain[owner] = {}
    return out


def load_plain_weights(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Turn torch's plain keys for ``module``'s constrained weights into its own.

    ``state_dict`` is what ``load_state_dict`` hands to ``_load_from_state_dict``. Each
    ``prefix + weight_hh...`` (as torch's module or :func:`torch_state_dict` names it) is
    set through the constraint (:func:`set_weight`) and replaced by the constraint's
    stored tensors and buffers, so the rest of ``load_state_dict`` loads them as usual.
    """
    if not parametrize.is_parametrized(module):
        return
    for name in list(module.parametrizations.keys()):
        key = prefix + name
        if key not in state_dict:
            continue
        value = state_dict.pop(key)
        if not isinstance(value, Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a Tensor, got {type(value).__name__}")
        set_weight(module, name, value)
        for k, v in module.parametrizations[name].state_dict().items():
            state_dict.setdefault(f"{prefix}parametrizations.{name}.{k}", v)
