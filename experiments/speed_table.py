"""The README's speed tables, from the files ``make bench`` writes (no timing here).

The headline: the loss the benchmarks train on, the last step's output (``--loss last``),
from ``experiments/results/speed_last.md`` (T=784, B=128, H=128) and ``speed_last_h512.md``
(T=100, B=64, H=512): torch as users run it, torch with subnormals flushed, seqnorm's native
``spectral`` layer and the GEMM floor, as times and ratios, the targets in brackets, and a link
to the loss over every step (``speed.md``, ``speed_h512.md``). Written between the README's
speed markers with the machine, commit, date and load of the runs.

    .venv/bin/python experiments/speed_table.py           # README.md
    .venv/bin/python experiments/speed_table.py --print   # prints only
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bench_speed import TARGETS_LAST

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
START, END = "<!-- speed:start -->", "<!-- speed:end -->"
LAST = {"h128": "speed_last.md", "h512": "speed_last_h512.md"}
MEAN = {"h128": "speed.md", "h512": "speed_h512.md"}
SHAPES = {"h128": (784, 128, 128), "h512": (100, 64, 512)}
NAMES = {"gru": "SpectralGRU", "lstm": "SpectralLSTM", "rnn": "SpectralRNN tanh",
         "modrelu": "SpectralRNN modReLU"}  # fmt: skip


def _rows(text: str, section: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.split(f"## {section}")[1].split("## ")[0].splitlines()
             if ln.startswith("|")]  # fmt: skip
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(cols, (c.strip() for c in ln.strip("|").split("|")), strict=True))
            for ln in lines[2:]]  # fmt: skip


def parse(path: Path) -> tuple[dict[tuple[str, str], dict[str, str]], list[str]]:
    """The Verdicts rows of one bench file, keyed by (layer, variant), each with its training
    step's median time ``ms`` from the Measurements; and the file's header bullets."""
    text = path.read_text()
    header = [ln[2:] for ln in text.split("## Verdicts")[0].splitlines() if ln.startswith("- ")]
    rows = {(r["layer"], r["variant"]): r for r in _rows(text, "Verdicts")}
    if "## Measurements" in text:
        for m in _rows(text, "Measurements"):
            if m.get("pass", "train") == "train" and (m["layer"], m["variant"]) in rows:
                rows[m["layer"], m["variant"]]["ms"] = m["ms"]
    return rows, header


def _num(rows: dict, layer: str, variant: str, column: str) -> float | None:
    value = rows.get((layer, variant), {}).get(column, "nan")
    return None if value in ("nan", "") else float(value)


def _cell(value: float | None, target: float | None = None) -> str:
    if value is None:
        return "not run"
    if target is None or target != target:  # no target (NaN)
        return f"{value:.2f}"
    return f"{value:.2f} ({'≤' if value <= target else 'above'} {target})"


def _provenance(header: list[str]) -> str:
    when = re.search(r"git (\S+); (\d{4}-\d\d-\d\d) [\d:]+ UTC", header[0]) if header else None
    cpu = re.search(r"CPU: (.+?); allocator: ([^;]+);", header[1]) if len(header) > 1 else None
    load = re.search(r"1-min load (\S+)", header[0]) if header else None
    return (
        f"{re.sub(' +', ' ', cpu.group(1)) if cpu else 'this CPU'}; allocator: "
        f"{cpu.group(2) if cpu else '?'}; git {when.group(1) if when else '?'}, "
        f"{when.group(2) if when else '?'}; 1-min load {load.group(1) if load else '?'} at the "
        "start (above the thread count, other work shared the cores: same-run ratios, noisier)"
    )


def last_table(results: Path = RESULTS) -> list[str]:
    """The headline: the last-step loss, both shapes, one row per layer."""
    got = {k: parse(results / f)[0] for k, f in LAST.items() if (results / f).exists()}
    if "h128" not in got:
        raise FileNotFoundError(f"no {results / LAST['h128']}: run `make bench` first")
    lines = [
        f"Measured by `make bench` ({_provenance(parse(results / LAST['h128'])[1])}; one "
        "thread, torch's oneDNN/MKL CPU build). One training step with the loss the benchmarks "
        "use, the last step's output: torch's own layer as users run it, the same under "
        "`torch.set_flush_denormal(True)` (*flushed*), seqnorm's native "
        '`constraint="spectral"` layer (exact sigma at every call included; the kernels '
        "flush subnormals themselves) and the GEMM floor (the recurrence's GEMMs alone). "
        "Ratios are times over torch's (modReLU: over torch's tanh RNN), targets in brackets.",
        "",
        "| layer | T=784, B=128, H=128: torch (s) | torch flushed | seqnorm | seqnorm / flushed "
        "| GEMM floor | T=100, B=64, H=512: seqnorm | seqnorm / flushed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    h128, h512 = got["h128"], got.get("h512", {})
    t128, t512 = TARGETS_LAST.get(SHAPES["h128"], {}), TARGETS_LAST.get(SHAPES["h512"], {})
    for layer, name in NAMES.items():
        (a, b), (c, d) = t128.get(layer, (None, None)), t512.get(layer, (None, None))
        ms = _num(h128, layer, "torch", "ms")
        lines.append(
            f"| {name} | {_cell(ms / 1e3 if ms else None)} "
            f"| {_cell(_num(h128, layer, 'torch, flushed', 'ratio'))} "
            f"| {_cell(_num(h128, layer, 'spectral', 'ratio'), a)} "
            f"| {_cell(_num(h128, layer, 'spectral', 'vs_flushed'), b)} "
            f"| {_cell(_num(h128, layer, 'GEMM floor', 'ratio'))} "
            f"| {_cell(_num(h512, layer, 'spectral', 'ratio'), c)} "
            f"| {_cell(_num(h512, layer, 'spectral', 'vs_flushed'), d)} |"
        )
    return lines


def table(results: Path = RESULTS) -> str:
    """The README block."""
    tail = [
        "",
        "The loss over every step (no gradient decays into subnormals: the kernels' arithmetic "
        "alone, with forward-only and memory columns): "
        + ", ".join(f"[`{f}`](experiments/results/{f})" for f in MEAN.values())
        + "; what each row means: [docs/speed.md](docs/speed.md).",
    ]
    return "\n".join(last_table(results) + tail)


def write_readme(block: str, readme: Path = ROOT / "README.md") -> bool:
    """Put ``block`` between the README's speed markers; False when it has none."""
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    note = "<!-- generated by experiments/speed_table.py from make bench; do not edit by hand -->"
    readme.write_text(f"{head}{START}\n{note}\n\n{block}\n{END}{rest.split(END, 1)[1]}")
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--print", action="store_true", help="print the table, write nothing")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    block = table()
    print(block)
    if not args.print and not write_readme(block, args.readme):
        raise SystemExit(f"{args.readme} has no {START} ... {END} markers")


if __name__ == "__main__":
    main()
