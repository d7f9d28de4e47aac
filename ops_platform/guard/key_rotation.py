"""Rotating the receipts signing key: a guarded action of its own.

Whoever rotates the key decides which key later receipts must be signed by, so it goes
through the guard like any other privileged action: the roster's roles decide who may, and
the receipt, signed by the new key, says who did and why. From that receipt on, ``receipts
verify`` refuses anything the old key signs in the ledger (``receipts.keys``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from ..control.store import ControlStore
from ..receipts import witness
from ..receipts.keys import KeyRing, keyid_of
from ..timezones import utcnow
from .actions import ActionRequest, ExecutionResult


def rotate_request(keyid: str, actor: str, reason: str, roles: tuple[str, ...] = ()) -> ActionRequest:
    """The request to retire signing key ``keyid`` (the active one) for a new key; ``reason``
    is its rationale. Each request is its own action: rotating twice makes two new keys."""
    return ActionRequest(actor=actor, roles=roles, action="key_rotate", target_kind="signing_key", target_id=keyid,
                         rationale=reason, idempotency_key=f"key_rotate:{keyid}:{uuid.uuid4()}")


def ledger_sizes(keys_dir: Path, store: ControlStore | None = None,
                 conn: sa.Connection | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """(counted, witnessed): how many entries ``store``'s ledger holds now, counted in its
    transaction ``conn`` under the ledger's lock (exact); and each other ledger the keys in
    ``keys_dir`` signed, as witnessed (``receipts.witness``: at least that many, since the
    witness is written after each commit). A retirement records both (``Retirement``)."""
    try:
        witnessed = {ledger: size for ledger, (size, _) in witness.read(keys_dir).items()}
    except ValueError:
        witnessed = {}  # an unreadable witness: those ledgers fall back to the successor rule
    counted: dict[str, int] = {}
    if store is not None and conn is not None:
        seq, _, _ = store.lock_head(conn)
        if seq >= 0 and (first := store.entry_hash_at(conn, 0)) is not None:
            counted[first] = seq + 1
    return counted, witnessed


class KeyRotateExecutor:
    """Makes a new active key in ``keys_dir`` and retires the one the request names, under
    the ledger's lock of ``store`` (no receipt is appended meanwhile, and each one after is
    signed by the new key), recording how many entries each known ledger holds. Idempotent:
    when that key is no longer the active one (a retry after the rotation was done, or
    another rotation got there first), nothing changes; a key replaced without its
    retirement recorded is retired then."""

    def __init__(self, keys_dir: Path, store: ControlStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.keys_dir, self.store, self.clock = Path(keys_dir), store, clock

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        ring, target = KeyRing(self.keys_dir), request.target_id
        with self.store.write() as tx:
            counted, witnessed = ledger_sizes(self.keys_dir, self.store, tx)
            done = ring.rotate(self.clock(), counted, expected=target, witnessed=witnessed)
            if done is not None:
                return ExecutionResult(detail={"retired": done[0], "active": done[1]})
            active = keyid_of(ring.signer().public_key())
            retired = ring.retirements().get(target)
            if retired is None and target in ring.verifiers():
                ring.retire(target, active, self.clock(), counted, witnessed)
                return ExecutionResult(detail={"retired": target, "active": active,
                                               "note": "it had been replaced without its retirement recorded"})
        why = (f"key {target[:16]} was retired at {retired.retired_at}" if retired else
               f"key {target[:16]} is no key of {self.keys_dir}")
        return ExecutionResult(detail={"skipped": f"{why}; the active key is {active[:16]}", "active": active})
