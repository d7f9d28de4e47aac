"""Copy the control store into the DuckDB warehouse for ad hoc analysis.

Readers get receipts flattened (action, actor, target, decision, policy version) next to
the Switchboard events and the action queue, without touching the live control store.
"""

from __future__ import annotations

import json

import polars as pl
import sqlalchemy as sa

from ..receipts.dsse import envelope_statement
from ..warehouse import Warehouse
from . import schema as s
from .store import ControlStore

SCHEMA = "control"


def _receipts(store: ControlStore) -> pl.DataFrame:
    rows = []
    for e in store.ledger_entries():
        env = json.loads(e.envelope)
        st = envelope_statement(env)
        p = st.get("predicate", {})
        rows.append({
            "seq": e.seq, "receipt_id": e.receipt_id, "predicate_type": st.get("predicateType"),
            "action": p.get("action"), "actor": p.get("actor"),
            "target_kind": (p.get("target") or {}).get("kind"), "target_id": (p.get("target") or {}).get("id"),
            "allow": (p.get("decision") or {}).get("allow"), "reason": (p.get("decision") or {}).get("reason"),
            "policy_version": (p.get("decision") or {}).get("policy_version"),
            "action_id": p.get("action_id"), "receipted_at": p.get("receipted_at"),
            "keyid": env["signatures"][0]["keyid"], "entry_hash": e.entry_hash,
            "subjects": json.dumps(st.get("subject", [])),
        })
    schema = {"seq": pl.Int64, "receipt_id": pl.String, "predicate_type": pl.String, "action": pl.String,
              "actor": pl.String, "target_kind": pl.String, "target_id": pl.String, "allow": pl.Boolean,
              "reason": pl.String, "policy_version": pl.String, "action_id": pl.String,
              "receipted_at": pl.String, "keyid": pl.String, "entry_hash": pl.String, "subjects": pl.String}
    return pl.DataFrame(rows, schema=schema)


def _checkpoints(store: ControlStore) -> pl.DataFrame:
    """The signed tree heads: size, root, when and by which key they were signed, and the
    head each links to (the envelope itself stays in the store, where verify checks it)."""
    rows = []
    for r in _table(store, s.checkpoints).iter_rows(named=True):
        env = json.loads(r["envelope"])
        head = envelope_statement(env)
        rows.append({"tree_size": r["tree_size"], "root_hash": r["root_hash"], "signed_at": head.get("timestamp"),
                     "keyid": env["signatures"][0]["keyid"], "prev_head": head.get("prev_head")})
    return pl.DataFrame(rows, schema={"tree_size": pl.Int64, "root_hash": pl.String, "signed_at": pl.String,
                                      "keyid": pl.String, "prev_head": pl.String})


def _table(store: ControlStore, table: sa.Table) -> pl.DataFrame:
    with store.read() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(table)).mappings()]
    schema = {c.name: (pl.Int64 if isinstance(c.type, sa.Integer) else pl.String) for c in table.columns}
    return pl.DataFrame(rows, schema=schema)


def _instants(frame: pl.DataFrame) -> pl.DataFrame:
    """Instants (``ts`` and ``*_at`` columns, stored as ISO 8601 text with ``Z``) as UTC
    timestamps, so an analyst can subtract and compare them. Parsed strictly: the store
    writes one spelling (``timezones.iso_utc``), and anything else is an error, not a null."""
    cols = [c for c in frame.columns if (c == "ts" or c.endswith("_at")) and frame.schema[c] == pl.String]
    return frame.with_columns(pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC")
                              for c in cols)


def export_to_warehouse(store: ControlStore, warehouse: Warehouse) -> dict[str, int]:
    frames = {
        "receipts": _receipts(store),
        "actions": _table(store, s.actions),
        "switchboard_events": _table(store, s.switchboard_events),
        "overrides": _table(store, s.overrides),
        "dlq": _table(store, s.dlq),
        "checkpoints": _checkpoints(store),
    }
    frames = {name: _instants(frame) for name, frame in frames.items()}
    with warehouse.connect() as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        for name, frame in frames.items():
            con.register("incoming", frame.to_arrow())
            con.execute(f"CREATE OR REPLACE TABLE {SCHEMA}.{name} AS SELECT * FROM incoming")
            con.unregister("incoming")
    return {name: frame.height for name, frame in frames.items()}
