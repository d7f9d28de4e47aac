"""Append signed receipts to the stored ledger, with a signed tree head per append.

Runs inside the caller's transaction, so a receipt and the state change it proves commit
together or not at all. The Merkle tree's right edge lives in the ledger head, so each
append costs O(log n) however long the ledger grows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from ..receipts.keys import Signer
from ..receipts.ledger import LedgerEntry, build_entry, leaf_data, sign_tree_head
from ..receipts.merkle import CompactRange
from .store import ControlStore

_CHUNK = 64  # receipts per insert; small enough to overlap, large enough to batch


class LedgerCorrupt(Exception):
    """The stored head does not match the last entry: refuse to append to a broken chain."""


def append_receipts(store: ControlStore, conn: sa.Connection, statements: list[dict], signer: Signer,
                    now: str) -> list[LedgerEntry]:
    if not statements:
        return []
    seq, head_hash, frontier = store.lock_head(conn)
    stored = store.entry_hash_at(conn, seq) if seq >= 0 else "0" * 64
    if stored != head_hash:
        raise LedgerCorrupt(f"ledger head (seq={seq}) does not match the last stored entry; "
                            "run `ops-platform receipts verify`")
    # build_entry only needs the predecessor's seq and chain hash, which the head holds.
    prev = LedgerEntry(seq, "", "", "", head_hash) if seq >= 0 else None
    tree = CompactRange.from_state(frontier)
    entries: list[LedgerEntry] = []
    # Sign chunk k+1 while the database stores chunk k: the driver releases the GIL while
    # it waits on the server or the disk, so signing and storing overlap on two cores.
    # The connection is only ever used by one thread at a time (we join before reuse).
    if len(statements) <= _CHUNK:  # a single chunk: no overlap to win, skip the thread
        entries = _chain(prev, statements, signer, tree)
        store.insert_entries(conn, entries)
    else:
        _build_and_store_overlapped(store, conn, statements, signer, prev, tree, entries)
    store.move_head(conn, entries[-1], tree.state())
    store.insert_checkpoint(conn, sign_tree_head(tree.size, tree.root().hex(), signer, now,
                                                 store.last_checkpoint(conn)))
    return entries


def _build_and_store_overlapped(store: ControlStore, conn: sa.Connection, statements: list[dict], signer: Signer,
                                prev: LedgerEntry | None, tree: CompactRange, entries: list[LedgerEntry]) -> None:
    with ThreadPoolExecutor(max_workers=1) as db:
        pending = None
        for start in range(0, len(statements), _CHUNK):
            chunk = _chain(prev, statements[start:start + _CHUNK], signer, tree)
            prev = chunk[-1]
            if pending is not None:
                pending.result()
            pending = db.submit(store.insert_entries, conn, chunk)
            entries += chunk
        pending.result()


def _chain(prev: LedgerEntry | None, statements: list[dict], signer: Signer,
           tree: CompactRange) -> list[LedgerEntry]:
    """Sign and chain `statements` after `prev`, growing the Merkle frontier as we go."""
    out = []
    for statement in statements:
        prev = build_entry(prev, statement, signer)
        out.append(prev)
        tree.append(leaf_data(prev))
    return out
