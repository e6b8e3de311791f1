import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

#: The real MNIST files: $SEQNORM_MNIST_DIR, else ../shared/data/mnist beside this checkout
#: (tests that need them skip when absent; tests never download).
MNIST_DIR = Path(
    os.environ.get("SEQNORM_MNIST_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
