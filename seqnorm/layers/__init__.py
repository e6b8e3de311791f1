"""Spectrally constrained recurrent layers and cells with ``torch.nn`` call conventions.

``SpectralRNN/GRU/LSTM`` take the constructor arguments and inputs of ``torch.nn.RNN/GRU/
LSTM`` (``bidirectional``, ``proj_size`` and ``PackedSequence`` input included; parameters
are named the same, so their ``state_dict`` keys match when ``constraint="none"``), plus
seqnorm's ``constraint``, ``constraint_options``, ``init``, ``chrono_init`` and
``constrained_gates``. The constraint is a parametrization of every ``weight_hh_l{k}`` (and
``..._reverse``), applied per gate block. ``from_torch``/``to_torch`` convert from and to
torch's own modules.

Two paths compute the same thing:

* the fused path (default) calls torch's own RNN kernels (cuDNN on a GPU) with the
  constrained matrices computed once per call;
* the unrolled path (``layer.unroll = True``) steps the cell equations one time step at a
  time, so that every hidden state is its own autograd node (the gradient probes need
  ``dL/dh_t`` for every ``t``; ``layer.recording()`` hands them out). The cells
  ``Spectral*Cell`` use the same step functions.

``LRU`` (and ``LRUStack``, the paper's deep model around it) is the linear recurrent unit of
Orvieto et al. (2023): a diagonal complex recurrence with ``|lambda| < 1`` by construction,
called like torch's layers (:mod:`seqnorm.layers.lru`).
"""

from .cells import RecurrentCell, SpectralGRUCell, SpectralLSTMCell, SpectralRNNCell
from .checks import InputError
from .layer import RecurrentLayer
from .lru import LRU, DiagonalRecurrentLayer
from .lru_stack import LRUStack
from .module import RecurrentModule
from .sequence import SpectralGRU, SpectralLSTM, SpectralRNN

__all__ = [
    "DiagonalRecurrentLayer",
    "InputError",
    "LRU",
    "LRUStack",
    "RecurrentCell",
    "RecurrentLayer",
    "RecurrentModule",
    "SpectralGRU",
    "SpectralGRUCell",
    "SpectralLSTM",
    "SpectralLSTMCell",
    "SpectralRNN",
    "SpectralRNNCell",
]
