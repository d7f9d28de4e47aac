"""Every executor of the guarded path, wired to one state folder.

A command or job that submits an action builds only the executor it needs; a retry or a
dead-letter replay may meet any action, so it gets them all from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .control.store import ControlStore
from .finops.export import InvoiceExportExecutor, altered_releases, released_periods
from .finops.pipeline import StoredFinOps
from .guard.actions import ActionRequest, ExecutionResult, Executor
from .guard.dlq import DlqDiscardExecutor
from .guard.key_rotation import KeyRotateExecutor
from .ramp.flag_executor import ACTIONS as FLAG_ACTIONS
from .ramp.flag_executor import FlagFileExecutor
from .ramp.switchboard import LaterOverrideWins, OverrideExecutor
from .warehouse import Warehouse


class _BuiltWhenNeeded:
    """An executor built at its first action: the invoice executor reads the warehouse's
    books, which a retry that meets no release should not have to open."""

    def __init__(self, build: Callable[[], Executor]) -> None:
        self._build, self._executor = build, None

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        if self._executor is None:
            self._executor = self._build()
        return self._executor.apply(action_id, request)


def guarded_executors(store: ControlStore, flag_file: Callable[[], Path], warehouse: Path | None = None,
                      invoices: Path | None = None, home: Path | None = None,
                      verifiers: Callable[[], Mapping[str, Any]] = dict,
                      keys_dir: Path | None = None) -> dict[str, Executor]:
    """Discarding dead-lettered items; the flag actions and overrides on the live flag file
    (``flag_file`` finds or seeds it, at the first such action); with ``warehouse`` and
    ``invoices``, the invoice release too (from the books the warehouse stored), held while
    a released period's files under ``home`` do not match their receipts (checked with the
    public keys ``verifiers`` gives); with ``keys_dir``, the signing key's rotation."""
    flags = _BuiltWhenNeeded(lambda: LaterOverrideWins(FlagFileExecutor(flag_file()), store, verifiers))
    executors: dict[str, Executor] = {
        "override": _BuiltWhenNeeded(lambda: OverrideExecutor(store, FlagFileExecutor(flag_file()))),
        **dict.fromkeys(FLAG_ACTIONS, flags), "dlq_discard": DlqDiscardExecutor(store)}
    if warehouse is not None and invoices is not None:
        executors["export_release"] = _BuiltWhenNeeded(lambda: InvoiceExportExecutor(
            invoices, StoredFinOps.from_warehouse(Warehouse(warehouse)), lambda: released_periods(store),
            lambda period: altered_releases(store, home, verifiers(), but=period)))
    if keys_dir is not None:
        executors["key_rotate"] = KeyRotateExecutor(keys_dir, store)
    return executors
