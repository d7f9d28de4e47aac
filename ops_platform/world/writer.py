"""Deterministic file writing: the same frame always gives the same bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet(df: pl.DataFrame | pa.Table, path: Path) -> int:
    """Write atomically (temp file + rename) with fixed settings; returns the row count."""
    table = df.to_arrow() if isinstance(df, pl.DataFrame) else df
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", compression_level=3, row_group_size=1_000_000)
    os.replace(tmp, path)
    return table.num_rows


def write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
