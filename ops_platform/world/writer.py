"""Exact decimals for world files (writing and hashing are in `ops_platform.files`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def micros_to_decimal(micros: np.ndarray, precision: int = 18) -> pa.Array:
    """Exact Decimal(precision, 6) array from integer millionths, without float rounding."""
    lo = np.asarray(micros, dtype=np.int64)
    words = np.empty((len(lo), 2), dtype=np.int64)
    words[:, 0] = lo
    words[:, 1] = np.where(lo < 0, -1, 0)  # sign-extend to 128 bits
    buf = pa.py_buffer(words.tobytes())
    return pa.Array.from_buffers(pa.decimal128(precision, 6), len(lo), [None, buf])
