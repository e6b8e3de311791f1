"""Read an offline W&B run (``run-*.wandb``) back, for tests: no network, no wandb server.

The file is a LevelDB-style log (32 KiB blocks of records with a 7-byte header: crc32c,
length, type) after a 7-byte ``:W&B`` header; each record is a ``wandb.proto`` ``Record``.
wandb 0.31 ships no Python reader for it, hence this small one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _chunks(raw: bytes) -> Iterator[bytes]:
    pos, buf = 7, b""
    while pos + 7 <= len(raw):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        data = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield data
        elif kind == _FIRST:
            buf = data
        elif kind == _MIDDLE:
            buf += data
        elif kind == _LAST:
            yield buf + data


def read_offline_run(run_root: Path) -> dict:
    """Return ``{"config": {key: json}, "history_keys": set, "summary": {key: json},
    "files": [paths]}`` of the one offline run under ``run_root`` (a folder holding
    ``wandb/offline-run-*``); ``summary`` holds the last value written for each key."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = sorted(Path(run_root).glob("**/offline-run-*/run-*.wandb"))[-1:]
    out: dict = {"config": {}, "history_keys": set(), "summary": {}, "files": []}
    for chunk in _chunks(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(chunk)
        kind = rec.WhichOneof("record_type")
        if kind == "config":
            out["config"].update({u.key: u.value_json for u in rec.config.update})
        elif kind == "history":
            out["history_keys"].update(i.key or "/".join(i.nested_key) for i in rec.history.item)
        elif kind == "summary":
            out["summary"].update(
                {u.key or "/".join(u.nested_key): u.value_json for u in rec.summary.update}
            )
        elif kind == "files":
            out["files"].extend(f.path for f in rec.files.files)
    out["run_dir"] = path.parent
    return out
