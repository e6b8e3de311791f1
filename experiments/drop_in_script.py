"""A word-level LM training script written for ``torch.nn.LSTM``, run with one line changed.

The script is the usual one (in the manner of PyTorch's word_language_model example):
truncated BPTT with the hidden state carried and detached between windows, gradient
clipping, ``torch.save(model)`` at every best validation epoch, then a separate step that
``torch.load``s the saved model (``weights_only=True``, allowing the user's classes as for
torch's own layers) and generates text, and an ONNX export checked in onnx's reference
evaluator. The one seqnorm line is ``model = seqnorm.from_torch(model, constraint=...)``.

Run: ``python experiments/drop_in_script.py`` (tiny synthetic text, a few seconds per
variant); ``--constraint none`` runs the unchanged torch script only.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import seqnorm


class RNNModel(nn.Module):
    """Embedding -> LSTM -> Linear, with dropout, as in torch's example."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nhid, self.nlayers = nhid, nlayers

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]):
        emb = self.drop(self.encoder(x))  # (T, B, ninp)
        out, hidden = self.rnn(emb, hidden)  # (T, B, nhid)
        return self.decoder(self.drop(out)), hidden  # (T, B, ntoken)

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = next(self.parameters())
        return (
            w.new_zeros(self.nlayers, bsz, self.nhid),
            w.new_zeros(self.nlayers, bsz, self.nhid),
        )


def synthetic_corpus(n_words: int, seed: int) -> tuple[list[str], list[str]]:
    """Sentences from a tiny grammar: learnable structure, a vocabulary of ~20 words."""
    g = torch.Generator().manual_seed(seed)
    subj, verb, obj = ["the cat", "a dog", "the bird"], ["sees", "chases", "likes"], [
        "the fish", "a mouse", "the ball"]  # fmt: skip
    words: list[str] = []
    while len(words) < n_words:
        pick = [int(torch.randint(0, 3, (), generator=g)) for _ in range(3)]
        words += f"{subj[pick[0]]} {verb[pick[1]]} {obj[pick[2]]} .".split()
    cut = int(0.8 * len(words))
    return words[:cut], words[cut:]


def batchify(ids: torch.Tensor, bsz: int) -> torch.Tensor:
    n = ids.numel() // bsz
    return ids[: n * bsz].view(bsz, n).t().contiguous()  # (N, B)


def repackage(h):
    return tuple(t.detach() for t in h)


def evaluate(model: nn.Module, data: torch.Tensor, bptt: int, ntoken: int) -> float:
    model.eval()
    total, hidden = 0.0, model.init_hidden(data.shape[1])
    with torch.no_grad():
        for i in range(0, data.shape[0] - 1, bptt):
            x, y = data[i : i + bptt], data[i + 1 : i + 1 + bptt]
            x = x[: y.shape[0]]
            out, hidden = model(x, hidden)
            total += (
                len(x) * nn.functional.cross_entropy(out.view(-1, ntoken), y.reshape(-1)).item()
            )
    return total / (data.shape[0] - 1)


def train_and_save(constraint: str, path: Path, epochs: int = 4, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    train_words, val_words = synthetic_corpus(6000, seed)
    vocab = sorted(set(train_words) | set(val_words))
    idx = {w: i for i, w in enumerate(vocab)}
    train = batchify(torch.tensor([idx[w] for w in train_words]), 16)
    val = batchify(torch.tensor([idx[w] for w in val_words]), 8)
    ntoken, bptt, clip = len(vocab), 20, 0.25
    model = RNNModel(ntoken, 16, 32, 2, dropout=0.2)
    if constraint != "none":
        model = seqnorm.from_torch(model, constraint=constraint)  # the one changed line
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    best = math.inf
    for _epoch in range(epochs):
        model.train()
        hidden = model.init_hidden(train.shape[1])
        for i in range(0, train.shape[0] - 1, bptt):
            x, y = train[i : i + bptt], train[i + 1 : i + 1 + bptt]
            x = x[: y.shape[0]]
            hidden = repackage(hidden)  # truncated BPTT
            opt.zero_grad()
            out, hidden = model(x, hidden)
            loss = nn.functional.cross_entropy(out.view(-1, ntoken), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        val_loss = evaluate(model, val, bptt, ntoken)
        if val_loss < best:
            best = val_loss
            with open(path, "wb") as f:
                torch.save(model, f)  # the whole model, at every best epoch
    return {"vocab": vocab, "best_val_ppl": math.exp(best), "val": val, "bptt": bptt}


def load_and_generate(path: Path, vocab: list[str], n_words: int = 12) -> tuple[nn.Module, str]:
    """The separate generation step: torch.load with weights_only=True (the default)."""
    allowed = [RNNModel, nn.Dropout, nn.Embedding, nn.LSTM, nn.Linear]  # as for torch's layers
    with torch.serialization.safe_globals(allowed), open(path, "rb") as f:
        model = torch.load(f)
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.tensor([[vocab.index("the")]])
    hidden, words = model.init_hidden(1), []
    with torch.no_grad():
        for _ in range(n_words):
            out, hidden = model(x, hidden)
            w = torch.multinomial(out[-1, 0].softmax(-1), 1, generator=g)
            words.append(vocab[int(w)])
            x = w.view(1, 1)
    return model, " ".join(words)


def export_onnx(model: nn.Module, path: Path) -> float:
    """Export with torch.onnx.export and compare in onnx's reference evaluator."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model.eval()
    x = torch.zeros(5, 1, dtype=torch.long)
    hidden = model.init_hidden(1)
    torch.onnx.export(model, (x, hidden), str(path), dynamo=False)
    ev = ReferenceEvaluator(onnx.load(str(path)))
    names = ev.input_names
    feeds = dict(zip(names, [x.numpy(), hidden[0].numpy(), hidden[1].numpy()], strict=False))
    got = torch.from_numpy(ev.run(None, feeds)[0])
    with torch.no_grad():
        want = model(x, hidden)[0]
    return float((got - want).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constraint", nargs="*", default=["none", "spectral"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for constraint in args.constraint:
            t0 = time.perf_counter()
            path = Path(tmp) / f"model-{constraint}.pt"
            res = train_and_save(constraint, path)
            model, text = load_and_generate(path, res["vocab"])
            err = export_onnx(model, Path(tmp) / f"model-{constraint}.onnx")
            sig = ""
            if constraint != "none":
                W = model.rnn.recurrent_maps()  # (units, gates, H, H)
                sig = f" max gate sigma {torch.linalg.matrix_norm(W, 2).max().item():.6f}"
            name = type(model.rnn).__name__.removeprefix("Parametrized")
            print(
                f"{constraint:>10}: best val ppl {res['best_val_ppl']:.2f}, reloaded {name}, "
                f"onnx max |diff| {err:.1e},{sig} ({time.perf_counter() - t0:.1f} s)\n"
                f"            generated: {text}"
            )


if __name__ == "__main__":
    main()
