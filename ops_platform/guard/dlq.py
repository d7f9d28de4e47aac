"""Taking an item off the dead-letter queue without running it: a guarded action of its own.

Discarding is privileged (the request it drops may have been a pause an SRE still needs),
so it goes through the guard like any other action: the roster's roles decide who may, and
the receipt says who did and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from ..control.store import ControlStore
from ..timezones import iso_utc, utcnow
from .actions import ActionRequest, ExecutionResult, stored_request


def discard_request(dlq_id: int, actor: str, reason: str, roles: tuple[str, ...] = ()) -> ActionRequest:
    """The request to discard item ``dlq_id``; ``reason`` is its rationale (in the receipt).
    Each request is its own action (a denial, say before the actor joined the roster, blocks
    no later one); discarding twice finds the item gone and changes nothing."""
    return ActionRequest(actor=actor, roles=roles, action="dlq_discard", target_kind="dlq", target_id=str(dlq_id),
                         rationale=reason, idempotency_key=f"dlq_discard:{dlq_id}:{uuid.uuid4()}",
                         params={"dlq_id": dlq_id})


class DlqDiscardExecutor:
    """Marks the item off the queue and puts a ``dlq_discarded`` event on the dropped
    request's own target (its flag's timeline shows it). Idempotent: an item already off the
    queue is left as it is."""

    def __init__(self, store: ControlStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.store, self.clock = store, clock

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        dlq_id = int(request.params["dlq_id"])
        item = next((i for i in self.store.dlq_items() if i["dlq_id"] == dlq_id), None)
        if item is None:
            return ExecutionResult(detail={"dlq_id": dlq_id, "skipped": f"item {dlq_id} is not on the queue"})
        dropped = stored_request(item["request"])
        # A request that does not read is dropped as the text it is, on the queue's own timeline.
        what = dropped.describe() if dropped else f"unreadable request {item['request'][:200]!r}"
        kind, target = (dropped.target_kind, dropped.target_id) if dropped else ("dlq", f"item-{dlq_id}")
        now = iso_utc(self.clock())
        with self.store.write() as tx:
            self.store.mark_replayed(tx, dlq_id, now)
            self.store.add_event(tx, ts=now, kind="dlq_discarded", target_kind=kind, target_id=target,
                                 actor=request.actor, action_id=dropped.action_id if dropped else item["action_id"],
                                 payload={"dlq_id": dlq_id, "reason": request.rationale, "request": what})
        return ExecutionResult(detail={"dlq_id": dlq_id, "discarded": what, "last_error": item["last_error"]})
