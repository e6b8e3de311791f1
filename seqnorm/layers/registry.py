"""seqnorm's layer and cell classes, found by the torch class each stands in for or by name.

:class:`~seqnorm.layers.module.RecurrentModule` fills the table as its subclasses are
defined: a class that declares its own ``torch_class`` (``nn.GRU`` for ``SpectralGRU``) is
registered, the first one per torch class, so seqnorm's six classes (defined when
``seqnorm.layers`` is imported) keep their places and a user's subclass takes none.
:mod:`.convert` reads it to replace torch's modules, :mod:`.serialize` to rebuild pickled
ones. It imports nothing of seqnorm: the base class fills it, the modules above read it.
"""

from __future__ import annotations

from torch import nn

__all__ = ["by_name", "register", "stand_in_for"]

_BY_TORCH_CLASS: dict[type[nn.Module], type[nn.Module]] = {}


def register(cls: type[nn.Module]) -> None:
    """Register ``cls`` as the stand-in for its ``torch_class``, unless one already is."""
    _BY_TORCH_CLASS.setdefault(cls.torch_class, cls)  # type: ignore[attr-defined]


def stand_in_for(torch_class: type[nn.Module]) -> type[nn.Module] | None:
    """The seqnorm class that replaces ``torch_class`` (``SpectralGRU`` for ``nn.GRU``), or
    ``None`` for a class that has none (a subclass of ``nn.GRU`` is not ``nn.GRU``)."""
    return _BY_TORCH_CLASS.get(torch_class)


def by_name() -> dict[str, type[nn.Module]]:
    """The registered classes by their names (``"SpectralGRU"``...)."""
    return {cls.__name__: cls for cls in _BY_TORCH_CLASS.values()}
