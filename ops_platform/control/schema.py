"""Tables of the control store and their versioned migrations.

Migrations are append-only: a new version adds a function, never edits an old one. The
applied versions are recorded in `schema_migrations`, so every process can migrate safely
at start-up (the first one wins, the others see the version already applied).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)

actions = sa.Table(
    "actions", metadata,
    sa.Column("action_id", sa.String(64), primary_key=True),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("target_kind", sa.String(60), nullable=False),
    sa.Column("target_id", sa.String(200), nullable=False),
    sa.Column("rationale", sa.Text, nullable=False, default=""),
    sa.Column("params", sa.Text, nullable=False, default="{}"),
    # requested -> executing -> completed | pending_receipt -> completed; denied; dlq
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("decision", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("lease_expires_at", sa.String(40)),
    sa.Column("receipt_seq", sa.Integer),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)
sa.Index("ix_actions_status", actions.c.status)

ledger = sa.Table(
    "ledger", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("receipt_id", sa.String(64), nullable=False, unique=True),
    sa.Column("envelope", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.String(64), nullable=False),
    sa.Column("envelope", sa.Text, nullable=False),
)

# One row; writers lock it (SELECT ... FOR UPDATE / BEGIN IMMEDIATE) to serialise appends.
ledger_head = sa.Table(
    "ledger_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False),
    # Right edge of the Merkle tree (perfect subtree roots), so a new tree head costs O(log n).
    sa.Column("frontier", sa.Text, nullable=False),
)

switchboard_events = sa.Table(
    "switchboard_events", metadata,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("target_kind", sa.String(60), nullable=False),
    sa.Column("target_id", sa.String(200), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action_id", sa.String(64)),
    sa.Column("receipt_id", sa.String(64)),
    sa.Column("payload", sa.Text, nullable=False, default="{}"),
)
sa.Index("ix_events_target", switchboard_events.c.target_kind, switchboard_events.c.target_id)

overrides = sa.Table(
    "overrides", metadata,
    sa.Column("override_id", sa.String(64), primary_key=True),
    sa.Column("target_kind", sa.String(60), nullable=False),
    sa.Column("target_id", sa.String(200), nullable=False),
    sa.Column("directive", sa.String(30), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("rationale", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=False),
    sa.Column("action_id", sa.String(64), nullable=False),
)

dlq = sa.Table(
    "dlq", metadata,
    sa.Column("dlq_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("action_id", sa.String(64)),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("replayed_at", sa.String(40)),
)


def _v1_initial(conn: sa.Connection) -> None:
    for table in (actions, ledger, checkpoints, ledger_head, switchboard_events, overrides, dlq):
        table.create(conn, checkfirst=True)
    conn.execute(ledger_head.insert().values(id=1, seq=-1, entry_hash="0" * 64,
                                             frontier='{"size": 0, "stack": []}'))


MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial", _v1_initial),
]
