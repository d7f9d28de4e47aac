"""Deterministic world files: exact decimals and digests (writing is `ops_platform.files`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..files import write_parquet as write_parquet
from ..files import write_text as write_text


def micros_to_decimal(micros: np.ndarray, precision: int = 18) -> pa.Array:
    """Exact Decimal(precision, 6) array from integer millionths, without float rounding."""
    lo = np.asarray(micros, dtype=np.int64)
    words = np.empty((len(lo), 2), dtype=np.int64)
    words[:, 0] = lo
    words[:, 1] = np.where(lo < 0, -1, 0)  # sign-extend to 128 bits
    buf = pa.py_buffer(words.tobytes())
    return pa.Array.from_buffers(pa.decimal128(precision, 6), len(lo), [None, buf])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
