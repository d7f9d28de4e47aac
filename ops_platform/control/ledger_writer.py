"""Append signed receipts to the stored ledger, with a signed tree head per append.

Runs inside the caller's transaction, so a receipt and the state change it proves commit
together or not at all. The Merkle tree's right edge lives in the ledger head, so each
append costs O(log n) however long the ledger grows.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from ..receipts.chain import GENESIS
from ..receipts.keys import Signer, SignerUnavailable
from ..receipts.ledger import LedgerEntry, SignMany, build_entries, leaf_data, sign_tree_head
from ..receipts.merkle import CompactRange
from .store import ControlStore, edge_problem

CHUNK = 256  # receipts signed, then stored, at a time: small enough to overlap, large enough to batch


class LedgerCorrupt(Exception):
    """The stored head does not match the last entry: refuse to append to a broken chain."""


def refusal(store: ControlStore, conn: sa.Connection, head: tuple[int, str, dict] | None = None) -> str | None:
    """Why the ledger would refuse a receipt now (None: it takes them). ``head``: the ledger
    head as locked by the caller (default: read without a lock, to ask before acting)."""
    seq, head_hash, frontier = head or store.lock_head(conn, lock=False)
    stored = store.entry_hash_at(conn, seq) if seq >= 0 else GENESIS.hex()
    if stored != head_hash:
        return f"ledger head (seq={seq}) does not match the last stored entry"
    return edge_problem(frontier, seq, store.last_checkpoint(conn))


def append_receipts(store: ControlStore, conn: sa.Connection, statements: list[dict], signer: Signer,
                    now: str) -> list[LedgerEntry]:
    if not statements:
        return []
    head = store.lock_head(conn)
    if problem := refusal(store, conn, head):
        raise LedgerCorrupt(f"{problem}; run `ops-platform receipts verify`")
    if signer.is_retired():  # rotated since it was read: what it signs now would not verify
        raise SignerUnavailable(f"signing key {signer.keyid[:16]} was retired while this action ran")
    seq, head_hash, frontier = head
    # build_entries only needs the predecessor's seq and chain hash, which the head holds.
    prev = LedgerEntry(seq, "", "", "", head_hash) if seq >= 0 else None
    tree = CompactRange.from_state(frontier)
    entries: list[LedgerEntry] = []
    if len(statements) <= CHUNK:  # a single small chunk: threads would cost more than they win
        entries = _chain(prev, statements, signer, tree, None)
        store.insert_entries(conn, entries)
    else:
        _build_and_store_overlapped(store, conn, statements, signer, prev, tree, entries)
    store.move_head(conn, entries[-1], tree.state())
    store.insert_checkpoint(conn, sign_tree_head(tree.size, tree.root().hex(), signer, now,
                                                 store.last_checkpoint(conn)))
    return entries


def _build_and_store_overlapped(store: ControlStore, conn: sa.Connection, statements: list[dict], signer: Signer,
                                prev: LedgerEntry | None, tree: CompactRange, entries: list[LedgerEntry]) -> None:
    """Two helper threads: one shares the signing of each chunk, one stores the previous chunk.

    Ed25519 signing and the database driver both release the GIL, so on two cores the
    signatures of chunk k+1 are made in parallel while chunk k is written. The connection
    is only ever used by one thread at a time (each insert is joined before the next).
    """
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ledger") as pool:
        sign_many = two_thread_signing(signer, pool)
        pending = None
        for start in range(0, len(statements), CHUNK):
            chunk = _chain(prev, statements[start:start + CHUNK], signer, tree, sign_many)
            prev = chunk[-1]
            if pending is not None:
                pending.result()
            pending = pool.submit(store.insert_entries, conn, chunk)
            entries += chunk
        pending.result()


def two_thread_signing(signer: Signer, pool: ThreadPoolExecutor) -> SignMany:
    """Sign a list of messages on this thread and one of ``pool``'s at the same time.

    Both threads take the next unsigned message until none is left, so neither idles when
    the other is slowed down (next() on an itertools.count is atomic under the GIL).
    """
    def sign_many(messages: list[bytes]) -> list[bytes]:
        sigs: list[bytes] = [b""] * len(messages)
        claim = itertools.count()

        def work() -> None:
            for i in claim:
                if i >= len(messages):
                    return
                sigs[i] = signer.sign(messages[i])

        helper = pool.submit(work)
        work()
        helper.result()
        return sigs

    return sign_many


def _chain(prev: LedgerEntry | None, statements: list[dict], signer: Signer, tree: CompactRange,
           sign_many: SignMany | None) -> list[LedgerEntry]:
    """Sign and chain `statements` after `prev`, growing the Merkle frontier as we go."""
    out = build_entries(prev, statements, signer, sign_many)
    for entry in out:
        tree.append(leaf_data(entry))
    return out
