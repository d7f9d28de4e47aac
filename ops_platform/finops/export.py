"""Releasing a period's invoices: a guarded ``export_release`` whose receipt pins every file.

The release runs only when the period's reconciliation holds (``release_blockers``); the
guard then lets a FinOps identity release it, the executor writes the files atomically,
and the receipt carries each file's sha256, which `ops-platform receipts verify` checks
against the files on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from ..guard.actions import ActionRequest, ExecutionResult
from .invoices import Period, parse_period, write_invoices

FINOPS_ROLES = ("finops",)

BuildInvoices = Callable[[Period], tuple[pl.DataFrame, pl.DataFrame]]


class InvoiceExportExecutor:
    """Writes a period's invoice files under ``out_root/<period>``; the same inputs give the
    same bytes, so applying an action id twice leaves the same files."""

    def __init__(self, out_root: Path, build: BuildInvoices) -> None:
        self.out_root = Path(out_root)
        self.build = build

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        period = parse_period(str(request.params["period"]))
        lines, summary = self.build(period)
        files = write_invoices(lines, summary, self.out_root / period.name)
        return ExecutionResult(detail={"period": period.name, "tenants": summary.height, "lines": lines.height,
                                       "total_minor": int(summary["total_minor"].sum() or 0)},
                               files=tuple(files))


def release_request(period: Period, actor: str, rationale: str) -> ActionRequest:
    return ActionRequest(actor=actor, roles=FINOPS_ROLES, action="export_release", target_kind="invoice_period",
                         target_id=period.name, rationale=rationale,
                         idempotency_key=f"export_release:{period.name}", params={"period": period.name})
