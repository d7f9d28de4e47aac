"""The receipts ledger in Dagster: asset metadata, the verification check, the retry job."""

from __future__ import annotations

import sqlite3

import dagster as dg

from assets.receipts import ledger_verifies, receipts_ledger
from ops_platform.guard.runtime import build_protocol
from ops_platform.warehouse import Warehouse
from resources import build_resources
from sensors.retry import retry_guarded_actions_job

from .guard_support import FileExecutor
from .test_guard_protocol import req


def _materialize(state):
    return dg.materialize([receipts_ledger, ledger_verifies], resources=build_resources(state),
                          raise_on_error=False)


def test_ledger_asset_check_and_retry_job(state, tmp_path):
    effects = FileExecutor(tmp_path / "effects")
    proto = build_protocol(state, executors={"pause": effects, "freeze": effects})
    proto.submit(req("pause", key="a"))
    proto.submit(req("resume", key="b"))  # denied, still receipted
    key = state.keys_dir / "active.key"
    key.rename(tmp_path / "away.key")
    pending = proto.submit(req("freeze", key="c"))
    assert pending.status == "pending_receipt"
    (tmp_path / "away.key").rename(key)

    # The scheduled retry job completes the pending receipt (it needs no executor for that).
    result = retry_guarded_actions_job.execute_in_process(resources=build_resources(state))
    assert result.success
    obs = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert obs and obs[0].event_specific_data.asset_observation.metadata["retry_receipted"].value == 1

    res = _materialize(state)
    assert res.success
    meta = res.asset_materializations_for_node("control__receipts_ledger")[0].metadata
    assert meta["receipts"].value == 3 and meta["pending_receipt"].value == 0
    assert meta["last_verification_ok"].value is True
    (check,) = res.get_asset_check_evaluations()
    assert check.passed
    wh = Warehouse(state.warehouse)
    receipts = wh.query("SELECT action, allow FROM control.receipts ORDER BY seq")
    assert receipts.rows() == [("pause", True), ("resume", False), ("freeze", True)]
    events = wh.query("SELECT count(*) AS n FROM control.switchboard_events")["n"][0]
    assert events >= 6
    # Instants are timestamps an analyst can subtract, not text.
    span = wh.query("SELECT epoch(max(receipted_at) - min(receipted_at)) AS d, "
                    "typeof(min(receipted_at)) AS t FROM control.receipts").row(0)
    assert span[1] == "TIMESTAMP WITH TIME ZONE" and span[0] >= 0
    kinds = wh.query("SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = 'control' "
                     "AND (column_name = 'ts' OR column_name LIKE '%\\_at' ESCAPE '\\')")["data_type"].to_list()
    assert kinds == ["TIMESTAMP WITH TIME ZONE"], kinds
    # Each signed tree head: when and by which key, linked to the head before it.
    heads = wh.query("SELECT tree_size, signed_at, keyid, prev_head FROM control.checkpoints ORDER BY tree_size")
    assert heads["tree_size"].to_list()[-1] == 3 and heads["signed_at"].null_count() == 0
    assert set(heads["keyid"]) == set(wh.query("SELECT keyid FROM control.receipts")["keyid"])
    assert heads["prev_head"][0] == "0" * 64 and heads["prev_head"].n_unique() == heads.height

    con = sqlite3.connect(state.control_store)
    con.execute("UPDATE ledger SET prev_hash = ? WHERE seq = 1", ["0" * 64])
    con.commit()
    con.close()
    (bad,) = _materialize(state).get_asset_check_evaluations()
    assert not bad.passed and "entry seq=1" in bad.description
