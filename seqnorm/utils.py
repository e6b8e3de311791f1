"""Small helpers with no dependency inside seqnorm (anything may import them).

* :func:`eval_mode` -- a module and all its submodules in eval mode for a block, each
  submodule's own ``training`` flag restored afterwards, also when the block raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` and every submodule in eval mode; restore each one's flag on exit.

    ``module.train(mode)`` on exit would set every submodule to one flag; this restores the
    flag each submodule had (a frozen, eval-mode submodule inside a training model stays in
    eval mode), and does so when the block raises too.

    Args:
        module: the module to switch.

    Yields:
        ``module`` itself.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    >>> _ = net[1].eval()  # a submodule the user keeps in eval mode
    >>> with eval_mode(net):
    ...     [m.training for m in net.modules()]
    [False, False, False]
    >>> [m.training for m in net.modules()]
    [True, True, False]
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode
