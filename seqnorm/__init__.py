"""seqnorm: recurrent layers whose hidden-to-hidden matrices stay spectrally well-behaved.

>>> import torch, seqnorm
>>> gru = seqnorm.SpectralGRU(4, 16, batch_first=True)          # drop-in for torch.nn.GRU
>>> out, h = gru(torch.randn(2, 7, 4))
>>> s = torch.linalg.svdvals(gru.weight_hh_l0.reshape(3, 16, 16))  # one row per gate
>>> bool(torch.allclose(s[:, 0], torch.ones(3), atol=1e-4))
True
"""

from torch.nn.utils.parametrize import cached

from .constraints import CONSTRAINTS, constrain, is_constrained
from .denormal import denormals_flushed, flush_denormal
from .layers import (
    LRU,
    LRUStack,
    SpectralGRU,
    SpectralGRUCell,
    SpectralLSTM,
    SpectralLSTMCell,
    SpectralRNN,
    SpectralRNNCell,
)
from .layers.convert import from_torch, to_torch, torch_state_dict
from .optim import constrained_parameters, param_groups

__version__ = "0.1.0"

__all__ = [
    "CONSTRAINTS",
    "LRU",
    "LRUStack",
    "SpectralGRU",
    "SpectralGRUCell",
    "SpectralLSTM",
    "SpectralLSTMCell",
    "SpectralRNN",
    "SpectralRNNCell",
    "__version__",
    "cached",
    "constrain",
    "constrained_parameters",
    "denormals_flushed",
    "flush_denormal",
    "from_torch",
    "is_constrained",
    "param_groups",
    "to_torch",
    "torch_state_dict",
]
