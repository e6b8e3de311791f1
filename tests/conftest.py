import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from seqnorm import SpectralGRU, SpectralLSTM, SpectralRNN

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

#: The real MNIST files: $SEQNORM_DATA/mnist, else ../shared/data/mnist beside this checkout
#: (tests that need them skip when absent; tests never download).
MNIST_DIR = Path(
    (os.environ.get("SEQNORM_DATA") and Path(os.environ["SEQNORM_DATA"]) / "mnist")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)


#: seqnorm's layers beside torch's, with the keyword arguments that pick a mode: the oracle pairs.
LAYER_PAIRS = [
    (SpectralRNN, nn.RNN, {}),
    (SpectralRNN, nn.RNN, {"nonlinearity": "relu"}),
    (SpectralGRU, nn.GRU, {}),
    (SpectralLSTM, nn.LSTM, {}),
]
LAYER_IDS = ["rnn", "rnn_relu", "gru", "lstm"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one intra-op thread, restoring the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child seqnorm process: offline W&B, one thread, and no
    ``WANDB_SERVICE`` (an in-process W&B run earlier in the session sets it; a child that
    inherits it hands its run to that service instead of writing it itself)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **extra}
