"""Atomic, deterministic file writing: readers see the old file or the whole new one.

Every file the platform hands to someone (landing files, invoices, exports) is written to
a temporary name in the same folder, flushed to disk, then renamed over the target, so no
partial file is ever visible, even after a crash. Fixed writer settings make the same
frame give the same bytes, so a receipt's digest (``file_sha256``) can be checked again later.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

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


@contextmanager
def open_atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file in `path`'s folder that replaces `path` (keeping
    its permissions) only when the block completes: flushed, renamed, the rename made
    durable. After an error `path` is untouched and no temporary file is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # Created like any new file (0666 less the umask); a rewrite then takes the old file's mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from <fcntl.h> and <linux/fs.h>


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``), so a reader never finds either missing; False where the system
    or the file system cannot (the caller then renames in two steps)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    # Not supported here (an old kernel, a file system without it, a sandbox refusing the call
    # with EPERM): two renames do it, and a real permission problem fails there as well.
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A hidden staging folder beside `path` that takes its place only when the block
    completes, so the folder is seen whole or not at all (a reader never meets part of a
    release). After an error `path` is untouched and the staging folder is gone. A `path`
    that exists is replaced in one step where the system can swap two folders (Linux), so
    it is never missing either; elsewhere it is moved aside, then removed once the new one
    is in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    staging, old = path.with_name(f".{path.name}.{token}.partial"), path.with_name(f".{path.name}.{token}.old")
    staging.mkdir()
    swapped = False
    try:
        yield staging
        # After a swap the old folder is at `staging`, removed below.
        if not (path.exists() and _exchange(staging, path)):
            if path.exists():
                os.replace(path, old)
            os.replace(staging, path)
        swapped = True
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the renames survive a crash
        finally:
            os.close(dir_fd)
    finally:
        if not swapped and old.exists() and not path.exists():
            os.replace(old, path)  # the new folder never took its place: the old one goes back
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_parquet(df: pl.DataFrame | pa.Table, path: Path) -> int:
    """Write a Parquet file atomically with fixed settings; returns the row count."""
    table = df.to_arrow() if isinstance(df, pl.DataFrame) else df
    with open_atomic(path) as fh:
        pq.write_table(table, fh, compression="zstd", compression_level=3, row_group_size=1_000_000)
    return table.num_rows


def write_bytes(data: bytes, path: Path) -> None:
    """Write a file atomically."""
    with open_atomic(path) as fh:
        fh.write(data)


def write_text(text: str, path: Path) -> None:
    """Write a UTF-8 text file atomically."""
    write_bytes(text.encode("utf-8"), path)


@contextmanager
def exclusive_lock(lock: Path, *, timeout_seconds: float = 30.0) -> Iterator[None]:
    """An exclusive ``flock`` on the file ``lock`` (created if absent), across processes; the
    kernel drops it when its holder dies, so a crash never wedges it. ``TimeoutError`` after
    ``timeout_seconds``."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{lock} held by another process for {timeout_seconds:g}s") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
