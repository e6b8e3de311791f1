"""Published per-epoch accuracies that the MNIST figures and tables put beside the grid's rows."""

from __future__ import annotations

__all__ = ["LITERATURE"]


#: Published per-epoch validation accuracy (%) of other models, by task name: {model: {epoch:
#: accuracy}}. Read off the per-epoch logs the authors committed ("eval accuracy" lines, one
#: per epoch, on their own 57k/3k split, with Adam, their hidden sizes and their permutation):
#: LEM, Rusch et al. 2022, github.com/tk-rusch/LEM src/psMNIST/result/psMNIST_log.txt (commit
#: 6226186); coRNN, Rusch & Mishra 2021, github.com/tk-rusch/coRNN
#: psMNIST/result/psMNIST_log.txt (3295813) and sMNIST/result/sMNIST_log.txt (7febe11).
#: Epochs 1, 5, 10 and 20 only (the points the grid's budget quotes); LEM's repository
#: has no sMNIST log.
LITERATURE = {
    "psMNIST": {
        "LEM (published log)": {1: 63.9, 5: 86.5, 10: 91.63, 20: 92.97},
        "coRNN (published log)": {1: 10.27, 5: 49.03, 10: 87.67, 20: 91.77},
    },
    "sMNIST": {
        "coRNN (published log)": {1: 52.23, 5: 85.53, 10: 94.37, 20: 97.77},
    },
}
