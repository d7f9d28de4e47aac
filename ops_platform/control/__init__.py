"""The control store: receipts ledger, Switchboard events, overrides, action queue, DLQ.

One schema and one code path on SQLite (WAL, the embedded default) and PostgreSQL.
"""

from .store import ControlStore, StoreUnavailable

__all__ = ["ControlStore", "StoreUnavailable"]
