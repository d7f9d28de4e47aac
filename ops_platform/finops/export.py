"""Releasing a period's invoices: a guarded ``export_release`` whose receipt pins every file.

The release runs only when the period's reconciliation holds (``StoredFinOps.blockers``); the
guard then lets a FinOps identity release it, the executor writes the files atomically,
and the receipt carries each file's sha256, which `ops-platform receipts verify` checks
against the files on disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

from ..guard.actions import ActionRequest, ExecutionResult, Executor, Outcome
from ..guard.protocol import ActionProtocol
from .invoices import Period, parse_period, write_invoices
from .pipeline import StoredFinOps

FINOPS_ROLES = ("finops",)


class HeldRelease(Exception):
    """The period's reconciliation does not hold: its invoices may not be released."""


class InvoiceExportExecutor:
    """Writes a period's invoice files under ``out_root/<period>``; the same inputs give the
    same bytes, so applying an action id twice leaves the same files.

    The release check lives here, where the files are written, so every path to a release
    (CLI, job, a retry or a DLQ replay) passes it.
    """

    def __init__(self, out_root: Path, books: StoredFinOps,
                 released: Callable[[], list[Period]] = lambda: []) -> None:
        self.out_root = Path(out_root)
        self.books = books
        self.released = released

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        period = parse_period(str(request.params["period"]))
        held = self.books.blockers(period) + overlaps(period, self.released())
        if held:
            raise HeldRelease(f"held: {period.name}: " + "; ".join(held))
        lines, summary = self.books.invoices(period)
        files = write_invoices(lines, summary, self.out_root / period.name)
        return ExecutionResult(detail={"period": period.name, "tenants": summary.height, "lines": lines.height,
                                       "total_minor": int(summary["total_minor"].sum() or 0)},
                               files=tuple(files))


def release_request(period: Period, actor: str, rationale: str) -> ActionRequest:
    return ActionRequest(actor=actor, roles=FINOPS_ROLES, action="export_release", target_kind="invoice_period",
                         target_id=period.name, rationale=rationale,
                         idempotency_key=f"export_release:{period.name}", params={"period": period.name})


def released_periods(store) -> list[Period]:
    """The periods whose invoices went out (completed ``export_release`` actions)."""
    payloads = (json.loads(e["payload"]) for e in store.events(kind="action_completed"))
    return [parse_period(p["params"]["period"]) for p in payloads if p["action"] == "export_release"]


def overlaps(period: Period, released: list[Period]) -> list[str]:
    """Why ``period`` may not go out beside ``released``: a day invoiced twice is billed twice.
    (Releasing the same period again is the same action, which the guard answers once.)"""
    return [f"overlaps {p.name}, already released ({max(p.start, period.start)} to "
            f"{min(p.end, period.end) - timedelta(days=1)} invoiced there)"
            for p in released if p.name != period.name and p.start < period.end and period.start < p.end]


def release_invoices(books: StoredFinOps, period: Period, out_root: Path,
                     protocol: Callable[[Mapping[str, Executor]], ActionProtocol],
                     actor: str, rationale: str) -> tuple[list[str], Outcome | None]:
    """Release a period's invoices through the guard: ``(reasons, None)`` when the books hold
    it, or it overlaps a period already released (nothing is submitted, so no receipt), else
    ``([], outcome)``. ``protocol`` builds the caller's guarded path (CLI or Dagster
    resources) around the executors it is given."""
    executor = InvoiceExportExecutor(out_root, books)
    guarded = protocol({"export_release": executor})
    executor.released = lambda: released_periods(guarded.store)  # the store is the protocol's own
    held = books.blockers(period) + overlaps(period, executor.released())
    if held:
        return held, None
    return [], guarded.submit(release_request(period, actor, rationale))
