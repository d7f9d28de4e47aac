"""Atomic, deterministic file writing: readers see the old file or the whole new one.

Every file the platform hands to someone (landing files, invoices, exports) is written to
a temporary name in the same folder, flushed to disk, then renamed over the target, so no
partial file is ever visible, even after a crash. Fixed writer settings make the same
frame give the same bytes, so a receipt's digest (``file_sha256``) can be checked again later.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large exports need no memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _publish(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def write_parquet(df: pl.DataFrame | pa.Table, path: Path) -> int:
    """Write a Parquet file atomically with fixed settings; returns the row count."""
    table = df.to_arrow() if isinstance(df, pl.DataFrame) else df
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd", compression_level=3, row_group_size=1_000_000)
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failure: no half-written temp file is left behind
    return table.num_rows


def write_text(text: str, path: Path) -> None:
    """Write a UTF-8 text file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
