"""Plain torch in and out of whole models: seqnorm layers and cells from torch's, and back.

* :func:`from_torch` / :func:`to_torch`: every recurrent layer and cell in a model tree.
* :func:`torch_state_dict`: a model's ``state_dict`` with the keys torch's modules use.

One module at a time is :mod:`.weights`' job (``torch_twin``, ``load_from_torch``); which
seqnorm class stands in for which torch class is :mod:`.registry`'s. Nothing here draws from
the global random number generator.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

from . import registry
from .module import RecurrentModule
from .weights import base_class, reading, torch_twin

__all__ = ["from_torch", "to_torch", "torch_state_dict"]


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
        return registry.stand_in_for(type(m)).from_torch(m, constraint=constraint, **options)

    return _replace(model, convert, lambda m: registry.stand_in_for(type(m)) is not None)


def to_torch(model: nn.Module) -> nn.Module:
    """Replace every seqnorm layer and cell in ``model`` with torch's own module holding
    the constrained weights (the reverse of :func:`from_torch`).

    In place, returning ``model``; a seqnorm root is returned converted. The copies are
    independent of the originals and carry no constraint. The global RNG is left as it was.

    Raises:
        ValueError: for a ``nonlinearity="modrelu"`` module (torch has no modReLU RNN),
            naming its path in ``model``; ``model`` is then left unchanged.
    """

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
        with reading(m):
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
