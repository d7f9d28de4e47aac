"""The receipts ledger in Dagster: asset metadata, the verification check, the retry job and its sensor."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.test_utils import freeze_time

from assets.receipts import ledger_verifies, receipts_ledger
from ops_platform.guard.runtime import build_protocol
from ops_platform.guard.spool import Spool
from ops_platform.warehouse import Warehouse
from resources import build_resources
from resources.control import build_protocol as resources_protocol
from sensors.retry import retry_guarded_actions_job, retry_guarded_actions_sensor

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

    # The retry job completes the pending receipt (it needs no executor for that).
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


def test_retry_sensor_starts_a_run_only_when_something_waits(state, tmp_path):
    resources = build_resources(state)
    with dg.instance_for_test() as instance:
        def tick():
            with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
                return retry_guarded_actions_sensor(ctx)

        idle = tick()
        assert isinstance(idle, dg.SkipReason) and idle.skip_message.startswith("nothing to retry")
        proto = build_protocol(state, executors={"freeze": FileExecutor(tmp_path / "effects")})
        key = state.keys_dir / "active.key"
        key.rename(tmp_path / "away.key")
        assert proto.submit(req("freeze", key="c")).status == "pending_receipt"
        # While the signer is down, a waiting receipt starts no run (it would sign nothing),
        # and no new key is made in the old one's place.
        down = tick()
        assert isinstance(down, dg.SkipReason), down
        assert down.skip_message.startswith("1 receipt(s) wait for the signer, which is down (signing key")
        assert "nothing else to retry" in down.skip_message and not key.exists()
        (tmp_path / "away.key").rename(key)
        Spool(state.spool_file).append(req("pause", key="s"), "control store unavailable")

        due = tick()
        assert isinstance(due, dg.RunRequest) and due.tags["retry/waiting"] == "1 pending receipt, 1 spooled"
        # One retry at a time: while a run is under way, the next tick waits for it.
        busy = instance.create_run_for_job(retry_guarded_actions_job, status=dg.DagsterRunStatus.STARTED)
        held = tick()
        assert isinstance(held, dg.SkipReason) and busy.run_id in held.skip_message
        instance.report_run_canceled(busy)
        # A run left started long ago by a worker that died holds nothing back.
        with freeze_time(datetime.now(UTC) - timedelta(hours=2)):
            instance.create_run_for_job(retry_guarded_actions_job, status=dg.DagsterRunStatus.STARTED)
        assert isinstance(tick(), dg.RunRequest)

        ran = retry_guarded_actions_job.execute_in_process(resources=resources, instance=instance)
        assert ran.success
        assert Spool(state.spool_file).waiting() == 0
        assert tick().skip_message.startswith("nothing to retry")


def test_dagster_path_with_its_key_away_waits_for_the_signer_and_makes_no_new_key(state, tmp_path):
    """The resources' guarded path, as sensors and jobs build it: once the ledger holds
    receipts, a missing key is the signer being down (protective actions wait for their
    receipt, expanding ones fail closed), not a reason to start a new key."""
    resources = build_resources(state)
    effects = FileExecutor(tmp_path / "effects")

    def protocol():
        return resources_protocol(resources["control"], resources["signer"], resources["guard"],
                                  {"pause": effects, "freeze": effects})

    assert protocol().submit(req("pause", key="first")).status == "completed"  # makes the first key
    key = state.keys_dir / "active.key"
    first = key.read_bytes()
    key.rename(tmp_path / "away.key")
    assert protocol().submit(req("freeze", key="f")).status == "pending_receipt"
    expanding = protocol().submit(req("resume", key="r", actor="dana", roles=("oncall",)))
    assert expanding.status == "requested" and "signer unavailable: signing key" in expanding.reason
    assert _materialize(state).success  # the ledger asset reads public keys only
    assert not key.exists() and len(list((state.keys_dir / "public").glob("*.pub"))) == 1
    (tmp_path / "away.key").rename(key)
    report = protocol().retry()
    assert report.receipted == 1 and report.retried == 1 and key.read_bytes() == first
    (check,) = _materialize(state).get_asset_check_evaluations()
    assert check.passed
