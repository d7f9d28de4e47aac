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

from ..receipts.keys import KeyRing, keyid_of
from ..timezones import utcnow
from .actions import ActionRequest, ExecutionResult


def rotate_request(keyid: str, actor: str, reason: str, roles: tuple[str, ...] = ()) -> ActionRequest:
    """The request to retire signing key ``keyid`` (the active one) for a new key; ``reason``
    is its rationale. Each request is its own action: rotating twice makes two new keys."""
    return ActionRequest(actor=actor, roles=roles, action="key_rotate", target_kind="signing_key", target_id=keyid,
                         rationale=reason, idempotency_key=f"key_rotate:{keyid}:{uuid.uuid4()}")


class KeyRotateExecutor:
    """Makes a new active key in ``keys_dir`` and retires the one the request names.
    Idempotent: when that key is no longer the active one (a retry after the rotation was
    done, or another rotation got there first), nothing changes."""

    def __init__(self, keys_dir: Path, clock: Callable[[], datetime] = utcnow) -> None:
        self.keys_dir, self.clock = Path(keys_dir), clock

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        ring = KeyRing(self.keys_dir)
        active = keyid_of(ring.signer().public_key())
        if active != request.target_id:
            retired = ring.retirements().get(request.target_id)
            why = (f"key {request.target_id[:16]} was retired at {retired.retired_at}" if retired else
                   f"key {request.target_id[:16]} is not the active key")
            return ExecutionResult(detail={"skipped": f"{why}; the active key is {active[:16]}", "active": active})
        old, new = ring.rotate(self.clock())
        return ExecutionResult(detail={"retired": old, "active": new})
