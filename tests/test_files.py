"""Atomic writes: readers see the old file or the whole new one, with its permissions kept."""

from __future__ import annotations

import os
import stat

import pytest

from ops_platform.files import open_atomic, write_bytes


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "flags.json"
    write_bytes(b"old", target)
    with pytest.raises(RuntimeError), open_atomic(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["flags.json"]


@pytest.fixture
def umask():
    """``os.umask``, with the process's umask put back afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_a_new_file_follows_the_umask(tmp_path, umask):
    umask(0o077)  # an operator who keeps invoices private
    write_bytes(b"v1", tmp_path / "private.csv")
    umask(0o022)
    write_bytes(b"v1", tmp_path / "shared.csv")
    assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "shared.csv").stat().st_mode) == 0o644


def test_a_rewrite_keeps_the_file_permissions(tmp_path):
    target = tmp_path / "flags.json"
    write_bytes(b"v1", target)
    target.chmod(0o640)
    write_bytes(b"v2", target)
    assert target.read_bytes() == b"v2" and stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_folder_swap_that_fails_half_way_puts_the_old_folder_back(tmp_path, monkeypatch):
    # The old folder is moved aside, then the new one cannot take its place (an I/O error):
    # the old one is back where it was, whole, and nothing else is left beside it.
    from ops_platform import files
    from ops_platform.files import atomic_folder

    target = tmp_path / "2026-03"
    with atomic_folder(target) as staging:
        write_bytes(b"released", staging / "invoice_lines.csv")
    real = os.replace

    def staging_rename_fails(src, dst):  # the old folder was moved aside just before
        if str(src).endswith(".partial"):
            raise OSError(5, "EIO on rename")
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", staging_rename_fails)
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)  # a system that cannot swap in one step
    with pytest.raises(OSError, match="EIO"), atomic_folder(target) as staging:
        write_bytes(b"new", staging / "invoice_lines.csv")
    assert (target / "invoice_lines.csv").read_bytes() == b"released"
    assert [p.name for p in tmp_path.iterdir()] == ["2026-03"]


def test_a_released_folder_replaced_is_never_missing(tmp_path, monkeypatch):
    # Where the system swaps two folders in one step (Linux), a reader of the released folder
    # never finds it gone: no rename of the swap leaves the path empty.
    from ops_platform import files
    from ops_platform.files import atomic_folder

    target = tmp_path / "2026-03"
    with atomic_folder(target) as staging:
        write_bytes(b"v1", staging / "invoice_lines.csv")
    seen, real = [], os.replace

    def watched(src, dst):
        real(src, dst)
        seen.append(target.exists())

    monkeypatch.setattr(files.os, "replace", watched)
    with atomic_folder(target) as staging:
        write_bytes(b"v2", staging / "invoice_lines.csv")
    assert (target / "invoice_lines.csv").read_bytes() == b"v2"
    assert all(seen) and [p.name for p in tmp_path.iterdir()] == ["2026-03"]
