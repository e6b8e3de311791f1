"""The IDX file format (LeCun's, the format of the MNIST files): a reader.

An IDX file is a big-endian header, the magic number ``0x0000TTDD`` (``TT`` the element
type, ``DD`` the number of dimensions) and one 32-bit size per dimension, followed by the
elements. :func:`read_idx` reads one, raw or gzip-compressed, into a numpy array.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx"]

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a writable, native-endian array.

    The magic number is ``0x0000TTDD``: ``TT`` the element type (``0x08`` uint8 for MNIST)
    and ``DD`` the number of dimensions, so MNIST labels are ``0x00000801`` and images
    ``0x00000803``. Compression is detected from the gzip magic bytes, not the suffix.

    Args:
        path: the file to read.

    Returns:
        An array of the stored shape, e.g. ``(60000, 28, 28)`` uint8 for training images.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not valid gzip, has a bad magic number, is truncated or
            has trailing bytes; the message names the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err
    return _parse_idx(raw, path)


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated IDX file, {len(data)} bytes is too short for the magic number"
        )
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08X}; expected 0x00000801 (labels), "
            "0x00000803 (images) or another 0x0000TTDD with a known type TT and DD >= 1"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX header, expected {header} bytes for {ndim} dimensions, "
            f"got {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    count = math.prod(shape)
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated IDX file" if len(data) < expected else "IDX file with trailing bytes"
        raise ValueError(
            f"{path}: {what}, expected {expected} bytes for shape {shape}, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # writable, native order
