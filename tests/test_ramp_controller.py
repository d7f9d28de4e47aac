"""The ramp controller: planning from burn signals, the sensor on failed checks, the job."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

import sensors.ramp as ramp_sensors
from ops_platform.definitions import build_definitions
from ops_platform.guard.runtime import open_store
from ops_platform.ramp.controller import BurnSignal, Ramp, plan
from ops_platform.ramp.flags import FlagFile
from ops_platform.ramp.switchboard import live_flag_file
from ops_platform.warehouse import Warehouse
from resources import build_resources
from sensors import DAILY_JOB
from sensors.ramp import RAMP_JOB, ramp_controller_job, ramp_controller_sensor
from sensors.runner import QUIET

T0 = datetime(2026, 3, 8, tzinfo=UTC)
RAMPS = [Ramp("api-102", "api", T0, T0.replace(hour=5))]


def _signal(tier="fast", ramp="rollback", platform="freeze", groups=("api/canary/api-102",)):
    return BurnSignal("api-availability", tier, "2026-03-08", ramp, platform, tuple(groups), "2026-03-08 01:00")


def test_candidate_burn_rolls_back_its_flag_and_stable_burn_freezes():
    (d,) = plan([_signal()], RAMPS, lambda flag: None)
    assert (d.request.action, d.request.target_id, d.request.roles) == ("rollback", "release-api",
                                                                        ("ramp_controller",))
    (f,) = plan([_signal(groups=("api/general/api-101",))], RAMPS, lambda flag: None)
    assert f.request.action == "freeze"


def test_ticket_tiers_and_active_overrides_do_not_act():
    (t,) = plan([_signal(tier="slow", ramp="ticket")], RAMPS, lambda flag: None)
    assert t.request is None and "ticket" in t.note
    (o,) = plan([_signal()], RAMPS, lambda flag: "resume by dana")
    assert o.request is None and "override" in o.note and o.overridden == "release-api"


def test_a_hold_does_not_stop_a_rollback_and_a_freeze_from_a_verdict_holds_every_flag():
    # Dana holds the ramp to look at dashboards; the build then burns fast: the controller
    # still rolls it back (a hold keeps a ramp from advancing), but not past her resume.
    (d,) = plan([_signal()], RAMPS, lambda flag: "hold by dana")
    assert d.request is not None and d.request.action == "rollback"
    (p,) = plan([_signal(ramp="pause")], RAMPS, lambda flag: "hold by dana")
    assert p.request is None and p.overridden == "release-api"
    # A ramp's verdict asking for a freeze freezes every release flag, not its own alone; an
    # override on its flag exempts that flag, not the freeze.
    (f,) = plan([_signal(ramp="freeze")], RAMPS, lambda flag: "hold by dana" if flag == "release-api" else None,
                release_flags=("release-api", "release-graph"))
    assert (f.request.action, f.request.target_id) == ("freeze", "all-release-flags")
    assert f.request.params["exempt"] == ["release-api"]


def test_an_earlier_action_undone_by_hand_holds_nothing_back():
    # The controller paused api-102 an hour ago; someone cleared the pause in the file by hand
    # and the build burns again: the flag no longer holds it, so it pauses again (a new action,
    # saying why). A freeze 5 minutes ago that no flag still holds (lifted) does not stop a
    # new one either; one that still holds does (the cool-down).
    from datetime import timedelta

    from ops_platform.ramp.controller import history_key, since_overrides
    from ops_platform.ramp.flags import ReleaseState

    now = T0.replace(hour=6)

    def state(flag: str, *, paused=False, frozen=False, candidate="api-102") -> ReleaseState:
        return ReleaseState(flag, "api-101", candidate, {"canary": 20, "early": 0, "general": 0}, paused, frozen, ())

    paused = {history_key("pause", "release-api", "api-102"): ("pause", now - timedelta(hours=1))}
    last = since_overrides(paused, lambda f: None)
    (held,) = plan([_signal(ramp="pause")], RAMPS, lambda f: None, last, now,
                   flag_states={"release-api": state("release-api", paused=True)})
    assert held.request is None and "already pause" in held.note
    (again,) = plan([_signal(ramp="pause")], RAMPS, lambda f: None, last, now,
                    flag_states={"release-api": state("release-api")})
    assert again.request.action == "pause" and "again-after" in again.request.idempotency_key
    assert "the pause at 2026-03-08 05:00 no longer holds (release-api was changed since)" in again.note
    first = plan([_signal(ramp="pause")], RAMPS, lambda f: None)[0].request.idempotency_key
    assert again.request.idempotency_key != first  # not answered with the first pause's outcome
    # Two pause signals in one batch: one pause, though the file does not show it yet.
    both = plan([_signal(ramp="pause"), _signal(ramp="pause", tier="slow")], RAMPS, lambda f: None, last, now,
                flag_states={"release-api": state("release-api")})
    assert [d.request.action for d in both if d.request] == ["pause"]

    frozen = {history_key("freeze", "*", ""): ("freeze", now - timedelta(minutes=5))}
    stable = _signal(groups=("api/general/api-101",))
    flags = {"release-api": state("release-api"), "release-graph": state("release-graph", candidate=None)}
    (lifted,) = plan([stable], RAMPS, lambda f: None, since_overrides(frozen, lambda f: None), now,
                     release_flags=tuple(flags), flag_states=flags)
    assert lifted.request.action == "freeze" and "no release flag is frozen" in lifted.note
    flags["release-graph"] = state("release-graph", frozen=True, candidate=None)
    (cooling,) = plan([stable], RAMPS, lambda f: None, since_overrides(frozen, lambda f: None), now,
                      release_flags=tuple(flags), flag_states=flags)
    assert cooling.request is None and "cool-down" in cooling.note


def test_a_burn_after_promotion_or_without_builds_is_the_platforms():
    # api-102 was promoted at 05:00: a burn first seen at 06:00 is the stable build's.
    late = BurnSignal("api-availability", "fast", "2026-03-08", "rollback", "freeze",
                      ("api/general/api-102",), "2026-03-08T06:00:00+00:00")
    (d,) = plan([late], RAMPS, lambda flag: None)
    assert d.request.action == "freeze" and d.request.params["build_id"] == "api-102"
    # A pipeline's lag SLO names no cohort or build: its tier's platform action applies.
    lag = BurnSignal("receipt-lag", "fast", "2026-03-08", "pause", "freeze", ("receipt",), "2026-03-08 01:00")
    (f,) = plan([lag], RAMPS, lambda flag: None)
    assert f.request.action == "freeze" and f.request.params["build_id"] is None and "receipt" in f.note


def test_after_an_override_the_controller_may_act_again_and_a_freeze_spares_overridden_flags():
    from datetime import timedelta

    from ops_platform.ramp.controller import history_key, since_overrides

    now = T0.replace(hour=6)
    paused = {history_key("pause", "release-api", "api-102"): ("pause", now - timedelta(hours=3))}
    (held,) = plan([_signal(ramp="pause")], RAMPS, lambda f: None, since_overrides(paused, lambda f: None), now)
    assert held.request is None and "already pause" in held.note
    # Dana resumed the ramp two hours ago; her override has expired and the build burns again.
    resumed = now - timedelta(hours=2)
    last_override = {"release-api": resumed}.get
    (again,) = plan([_signal(ramp="pause")], RAMPS, lambda f: None, since_overrides(paused, last_override), now,
                    last_override=last_override)
    assert again.request.action == "pause" and "after-override" in again.request.idempotency_key
    before = plan([_signal(ramp="pause")], RAMPS, lambda f: None)[0].request.idempotency_key
    assert again.request.idempotency_key != before  # a new action, not the old one answered again
    # While a hold is in force, the rollback it lets through is not asked again for a build the
    # controller already rolled back: the earlier action holds until the override expires.
    rolled = {history_key("rollback", "release-api", "api-102"): ("rollback", now - timedelta(hours=3))}
    hold = {"release-api": "hold by dana"}.get
    (same,) = plan([_signal()], RAMPS, hold, since_overrides(rolled, last_override, hold), now,
                   last_override=last_override)
    assert same.request is None and "already rollback" in same.note, same.note
    (expired,) = plan([_signal()], RAMPS, lambda f: None, since_overrides(rolled, last_override), now,
                      last_override=last_override)
    assert expired.request.action == "rollback"  # once it expires, the controller acts again
    # A freeze while release-api is under an active override leaves that flag to the human.
    stable = _signal(groups=("api/general/api-101",))
    (freeze,) = plan([stable], RAMPS, lambda f: "resume by dana" if f == "release-api" else None,
                     release_flags=("release-api", "release-graph"))
    assert freeze.request.params["exempt"] == ["release-api"] and "override wins: release-api" in freeze.note


def test_a_group_is_judged_on_its_own_first_burning_minute_and_an_open_ramp_is_still_ramping():
    from ops_platform.ramp.verdicts import ramps_from_steps

    # The SLO fired once before the ramp (an incident on the stable build at 23:00); the
    # candidate's own group began burning at 01:00, inside its ramp: its ramp action applies.
    sig = BurnSignal("api-availability", "fast", "2026-03-08", "rollback", "freeze",
                     ("api/canary/api-102", "api/general/api-101"), "2026-03-07T23:00:00+00:00",
                     group_first={"api/canary/api-102": "2026-03-08T01:00:00+00:00",
                                  "api/general/api-101": "2026-03-07T23:00:00+00:00"})
    actions = {(d.request.action, d.request.target_id) for d in plan([sig], RAMPS, lambda f: None)}
    assert actions == {("rollback", "release-api"), ("freeze", "all-release-flags")}
    # A ramp whose last step is still running is open: a burn now is still the ramp's.
    steps = pl.DataFrame({"build_id": ["api-102"] * 2, "service": ["api"] * 2, "step": [1, 2], "percent": [1, 5],
                          "canary_fraction": [0.1, 0.5], "early_fraction": [0.0, 0.0], "general_fraction": [0.0, 0.0],
                          "started_at": [T0, T0.replace(hour=1)], "ended_at": [T0.replace(hour=1), None]})
    (ramp,) = ramps_from_steps(steps).iter_rows(named=True)
    assert ramp["open"] and ramp["end"] == T0.replace(hour=1)
    assert not ramps_from_steps(steps.with_columns(pl.lit(T0.replace(hour=2)).alias("ended_at"))).row(
        0, named=True)["open"]


def test_repeated_signals_share_an_idempotency_key():
    a = plan([_signal(), _signal(groups=("api/early/api-102",))], RAMPS, lambda f: None)
    assert len(a) == 1  # one build, one action, whatever the cohorts
    b = plan([_signal()], RAMPS, lambda f: None)
    assert a[0].request.idempotency_key == b[0].request.idempotency_key


def test_sensor_reacts_to_failed_burn_checks_and_the_job_acts_once(state, monkeypatch):
    defs = build_definitions(state)
    daily = defs.resolve_job_def(DAILY_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("2026-03-06", "2026-03-07"):
            daily.execute_in_process(partition_key=key, instance=instance, run_config=QUIET, raise_on_error=False)
        ctx = dg.build_sensor_context(instance=instance)
        request = ramp_controller_sensor(ctx)
        assert isinstance(request, dg.RunRequest), request
        signals = [json.loads(s) for s in request.run_config["ops"]["ramp_controller_op"]["config"]["signals"]]
        assert signals and all(s["slo"] and s["tier"] and s["partition"] for s in signals)
        # Read one evaluation per page, the sensor still sees every one of them.
        monkeypatch.setattr(ramp_sensors, "PAGE", 1)
        paged = ramp_controller_sensor(dg.build_sensor_context(instance=instance))
        assert paged.run_config == request.run_config
        monkeypatch.undo()
        # The per-ramp analysis names exactly the truth's bad builds that ramped on these days
        # (with an hour of evidence at least: the days end at 07:00 UTC).
        bad = pl.read_parquet(state.world / "truth" / "bad_builds.parquet")
        expected = set(bad.filter(pl.col("deploy_started_at") < datetime(2026, 3, 8, 6, tzinfo=UTC))["build_id"])
        assert expected
        analysed = {s["groups"][0].split("/")[2]: s["ramp_action"] for s in signals if s["slo"] == "ramp-analysis"}
        assert set(analysed) == expected and set(analysed.values()) <= {"pause", "rollback"}
        assert all("evidence" in s["evidence"] for s in signals if s["slo"] == "ramp-analysis")
        # A burn tier's signal carries the numbers that decided it, for the receipt and the timeline.
        assert all(re.fullmatch(r"burn [\d.]+x over \w+ and [\d.]+x over \w+ \(threshold [\d.]+x\), \d+ minute\(s\)",
                                s["evidence"]) for s in signals if s["slo"] != "ramp-analysis")
        verdicts = Warehouse(state.warehouse).query("SELECT * FROM ramp.verdicts")
        # Column names an analyst can use unquoted (`end` is an SQL keyword).
        spans = Warehouse(state.warehouse).query("SELECT min(epoch(ramp_end - ramp_start)) AS d FROM ramp.verdicts")
        assert spans["d"][0] > 0
        judged = verdicts.filter(pl.col("build_id").is_in(list(expected)))
        acted = verdicts.filter(pl.col("action").is_not_null())
        assert acted["build_id"].is_unique().all()  # a decision is stored on the day it was made, once
        assert judged.height == len(expected) and (judged["burn_rate"] > 0).all()
        assert (judged["requests_before_action"] < judged["requests"]).all()
        again = ramp_controller_sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor))
        assert isinstance(again, dg.SkipReason)  # the cursor moved past what it has seen
        # A day evaluated again is judged on its latest evaluations: its earlier failures are
        # not sent a second time (from no cursor, as `ops-platform demo` starts).
        daily.execute_in_process(partition_key="2026-03-07", instance=instance, run_config=QUIET, raise_on_error=False)
        rerun = ramp_controller_sensor(dg.build_sensor_context(instance=instance))
        resent = rerun.run_config["ops"]["ramp_controller_op"]["config"]["signals"]
        assert sorted(resent) == sorted(request.run_config["ops"]["ramp_controller_op"]["config"]["signals"])

        # The release pipeline has one of the bad builds on its flag, half-way through canary;
        # the others are no longer (or never were) on theirs.
        on_flag = sorted(expected)[0]
        flag = f"release-{on_flag.split('-')[0]}"
        live_path = live_flag_file(state.home, state.world)
        FlagFile.load(live_path).start_ramp(flag, on_flag).set_percent(flag, {"canary": 50}).save(live_path)
        resources = build_resources(state)
        receipts = []
        for _ in range(2):  # a second run over the same evidence must not act again
            result = ramp_controller_job.execute_in_process(run_config=request.run_config, resources=resources,
                                                            instance=instance)
            assert result.success
            receipts.append(len(open_store(state).ledger_entries()))
    assert receipts[0] >= 1 and receipts[1] == receipts[0]
    store = open_store(state)
    done = [json.loads(e["payload"]) for e in store.events(kind="action_completed", actor="ramp-controller")]
    by_build = {(d.get("params") or {}).get("build_id"): d for d in done if d["action"] in ("pause", "rollback")}
    assert set(by_build) == expected
    live = FlagFile.load(live_path).release(flag)
    assert live.paused and live.candidate == on_flag
    # The builds not on their flag: receipted, nothing held on their behalf.
    assert {b for b, d in by_build.items() if "skipped" not in d} == {on_flag}
    assert all("not " + repr(b) in d["skipped"] for b, d in by_build.items() if b != on_flag)


def test_a_ramp_decided_on_an_earlier_day_is_not_reported_again():
    from ops_platform.ramp.verdicts import VERDICT_SCHEMA, decided_since

    day2 = datetime(2026, 3, 9, tzinfo=UTC)
    rows = pl.DataFrame([
        {"build_id": "api-1", "action": "pause", "acted_at": datetime(2026, 3, 8, 23, 50, tzinfo=UTC)},
        {"build_id": "api-2", "action": "rollback", "acted_at": datetime(2026, 3, 9, 0, 10, tzinfo=UTC)},
        {"build_id": "api-3", "action": None, "acted_at": None}], schema_overrides={
            k: VERDICT_SCHEMA[k] for k in ("build_id", "action", "acted_at")})
    assert decided_since(rows, day2)["build_id"].to_list() == ["api-2", "api-3"]


def test_no_flapping_only_escalations_and_one_freeze_per_cooldown():
    from datetime import timedelta

    from ops_platform.ramp.controller import COOLDOWN, FREEZE_TARGET, history_key

    now = T0.replace(hour=6)
    paused = {history_key("pause", "release-api", "api-102"): ("pause", now - timedelta(minutes=1))}
    (up,) = plan([_signal()], RAMPS, lambda f: None, paused.get, now)  # rollback after pause: escalation
    assert up.request is not None and up.request.action == "rollback"
    rolled = {history_key("rollback", "release-api", "api-102"): ("rollback", now - timedelta(days=3))}
    (down,) = plan([_signal(ramp="pause")], RAMPS, lambda f: None, rolled.get, now)  # never back down
    assert down.request is None and "already rollback" in down.note
    # Within one batch too: a rollback then a pause for the same build gives the rollback only.
    both = plan([_signal(), _signal(tier="medium", ramp="pause")], RAMPS, lambda f: None, {}.get, now)
    assert [d.request.action for d in both if d.request] == ["rollback"]
    stable = _signal(groups=("api/general/api-101",))
    frozen = {FREEZE_TARGET: ("freeze", now - COOLDOWN / 2)}
    (held,) = plan([stable], RAMPS, lambda f: None, frozen.get, now)
    assert held.request is None and "cool-down" in held.note
    (again,) = plan([stable], RAMPS, lambda f: None, frozen.get, now + COOLDOWN)
    assert again.request is not None and again.request.action == "freeze"
    # The same freeze, done already on this evidence: a note, not a request answered with its
    # old outcome, and the next signal's cool-down counts from when it was done, not from now.
    done = {again.request.action_id: now - COOLDOWN / 2}
    other = _signal(tier="medium", groups=("api/general/api-101",))
    replayed, later = plan([stable, other], RAMPS, lambda f: None, {}.get, now + COOLDOWN, done=done.get)
    assert replayed.request is None and "done already" in replayed.note
    assert later.request is not None and later.request.action == "freeze"  # 1.5 cool-downs after the first


def test_an_override_winning_is_in_the_flags_timeline_once(state):
    from click.testing import CliRunner

    from ops_platform.cli import main
    from ops_platform.ramp.verdicts import ramps_from_steps

    from .conftest import load_warehouse

    wh = load_warehouse(state.warehouse, state.landing)
    r = ramps_from_steps(wh.query("SELECT * FROM raw.ramp_steps")).row(0, named=True)
    flag = f"release-{r['service']}"
    res = CliRunner().invoke(main, ["switchboard", "override", flag, "--action", "hold", "--rationale",
                                    "canary error spike is a known upstream DNS blip, INC-4412", "--actor", "dana"])
    assert res.exit_code == 0, res.output
    sig = json.dumps({"slo": "api-availability", "tier": "fast", "partition": "2026-03-06", "ramp_action": "pause",
                      "platform_action": "freeze", "groups": [f"{r['service']}/canary/{r['build_id']}"],
                      "first_firing": r["start"].isoformat(), "evidence": "burn 20x"})
    config = {"ops": {"ramp_controller_op": {"config": {"signals": [sig]}}}}
    for _ in range(3):  # the same evidence again (a retry, a re-run) adds nothing
        assert ramp_controller_job.execute_in_process(run_config=config, resources=build_resources(state)).success
    (won,) = open_store(state).events(flag, kind="override_wins")
    assert "active override (hold by dana) wins over pause" in json.loads(won["payload"])["reason"]
    # An override is obeyed only as its receipt says: its record edited in the store (made a
    # resume) holds nothing back, and the controller acts on the same evidence.
    import sqlite3

    con = sqlite3.connect(state.control_store)
    con.execute("UPDATE overrides SET directive = 'resume'")
    con.commit()
    con.close()
    with dg.DagsterInstance.ephemeral() as instance:
        result = ramp_controller_job.execute_in_process(run_config=config, resources=build_resources(state),
                                                        instance=instance)
        assert result.success
        said = [log.user_message for log in instance.all_logs(result.run_id)]
    assert any("the override in force is not obeyed" in m and "differs from its receipt" in m for m in said), said
    done = [json.loads(e["payload"]) for e in open_store(state).events(flag, kind="action_completed")]
    assert [d["action"] for d in done if d["action"] != "override"] == ["pause"], done
    assert len(open_store(state).events(flag, kind="override_wins")) == 1


def test_a_controller_action_that_changed_nothing_is_logged_and_counted_as_skipped(state):
    # A rollback of a build whose ramp is over completes (receipted) without touching the
    # flag: the run log and its outcomes said "completed", which reads as a rollback done.
    from ops_platform.ramp.verdicts import ramps_from_steps

    from .conftest import load_warehouse

    wh = load_warehouse(state.warehouse, state.landing)
    r = ramps_from_steps(wh.query("SELECT * FROM raw.ramp_steps")).row(0, named=True)
    sig = json.dumps({"slo": "api-availability", "tier": "fast", "partition": "2026-03-06", "ramp_action": "rollback",
                      "platform_action": "freeze", "groups": [f"{r['service']}/canary/{r['build_id']}"],
                      "first_firing": r["start"].isoformat(), "evidence": "burn 20x"})
    with dg.DagsterInstance.ephemeral() as instance:
        result = ramp_controller_job.execute_in_process(
            run_config={"ops": {"ramp_controller_op": {"config": {"signals": [sig]}}}},
            resources=build_resources(state), instance=instance)
        assert result.success
        said = [log.user_message for log in instance.all_logs(result.run_id)]
    outcomes = [m for m in said if m.startswith(f"rollback release-{r['service']}:")]
    assert outcomes and "completed, skipped: " in outcomes[0] and r["build_id"] in outcomes[0], said
    (mat,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert mat.event_specific_data.metadata["outcomes"].value == {"skipped": 1}


def _check_event(instance, run_id: str, event_type, data) -> None:
    from dagster._core.events import DagsterEvent
    from dagster._core.events.log import EventLogEntry

    event = DagsterEvent(event_type_value=event_type.value, job_name="ingest_daily", event_specific_data=data)
    instance.event_log_storage.store_event(EventLogEntry(error_info=None, level="debug", user_message="",
                                                         run_id=run_id, timestamp=time.time(), dagster_event=event))


def test_the_sensor_sees_a_failure_that_finished_after_a_later_created_one_and_resends_a_failed_run(state):
    # Dagster numbers a check's record when its run is created: a backfill run created first
    # and finishing last lies below the newest record the sensor saw. And a controller run
    # that fails for good gets its evidence sent again.
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluation,
        AssetCheckEvaluationPlanned,
    )
    from dagster._core.events import DagsterEventType

    from assets.slo import BURN_KEY
    from ops_platform.definitions import daily_partitions

    check, parts = "api_availability__fast", daily_partitions(state)

    def planned(instance, run_id, day):
        _check_event(instance, run_id, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED, AssetCheckEvaluationPlanned(
            asset_key=BURN_KEY, check_name=check,
            partitions_subset=parts.subset_with_partition_keys([day]).to_serializable_subset()))

    def failed(instance, run_id, day):
        _check_event(instance, run_id, DagsterEventType.ASSET_CHECK_EVALUATION, AssetCheckEvaluation(
            asset_key=BURN_KEY, check_name=check, passed=False, partition=day, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"partition": dg.MetadataValue.text(day), "firing_minutes": dg.MetadataValue.int(12),
                      "groups_firing": dg.MetadataValue.json(["api/canary/api-102"])}))

    def days(request):
        return sorted(json.loads(s)["partition"] for s in request.run_config["ops"]["ramp_controller_op"]["config"]["signals"])

    with dg.instance_for_test() as instance:
        early, late = "run-early", "run-late"
        planned(instance, early, "2026-03-05")
        planned(instance, late, "2026-03-06")
        failed(instance, late, "2026-03-06")
        ctx = dg.build_sensor_context(instance=instance)
        first = ramp_controller_sensor(ctx)
        assert isinstance(first, dg.RunRequest) and days(first) == ["2026-03-06"]
        failed(instance, early, "2026-03-05")  # finishes after the tick, below its newest record
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        second = ramp_controller_sensor(ctx)
        assert isinstance(second, dg.RunRequest) and days(second) == ["2026-03-05"], second
        # That controller run fails for good: the next tick sends its evidence again.
        instance.add_run(dg.DagsterRun(job_name=RAMP_JOB, run_id="controller-1", status=dg.DagsterRunStatus.FAILURE,
                                       tags={"dagster/run_key": second.run_key}))
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        third = ramp_controller_sensor(ctx)
        assert isinstance(third, dg.RunRequest) and days(third) == ["2026-03-05"] and third.run_key != second.run_key
        instance.add_run(dg.DagsterRun(job_name=RAMP_JOB, run_id="controller-2", status=dg.DagsterRunStatus.SUCCESS,
                                       tags={"dagster/run_key": third.run_key}))
        done = ramp_controller_sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor))
        assert isinstance(done, dg.SkipReason), done


def test_a_freeze_on_evidence_days_older_than_the_newest_burn_partition_freezes_nothing(state):
    # A backfill (or a day recomputed) must not freeze every flag today on an old burn; a day
    # behind the newest is still now. Ramp actions are unaffected (their flag must still carry the build).
    stable = ("api/general/api-101",)
    old = BurnSignal("api-availability", "medium", "2026-03-01", "pause", "freeze", stable, "2026-03-01 01:00")
    (noted,) = plan([old], RAMPS, lambda f: None, newest_partition="2026-03-10")
    assert noted.request is None and "9 days older than the newest burn partition (2026-03-10)" in noted.note
    recent = BurnSignal("api-availability", "medium", "2026-03-09", "pause", "freeze", stable, "2026-03-09 01:00")
    (frozen,) = plan([recent], RAMPS, lambda f: None, newest_partition="2026-03-10")
    assert frozen.request.action == "freeze"
    (ramp,) = plan([replace(_signal(), partition="2026-03-01")], RAMPS, lambda f: None, newest_partition="2026-03-10")
    assert ramp.request.action == "rollback"

    # Through the job: the newest partition is the burn asset's newest materialized one.
    from assets.slo import BURN_KEY
    from ops_platform.ramp.controller import FREEZE_TARGET

    from .conftest import load_warehouse

    load_warehouse(state.warehouse, state.landing)

    def run(signal: BurnSignal, instance) -> list:
        sig = json.dumps({"slo": signal.slo, "tier": signal.tier, "partition": signal.partition,
                          "ramp_action": signal.ramp_action, "platform_action": signal.platform_action,
                          "groups": list(signal.groups), "first_firing": signal.first_firing, "evidence": "burn 7x"})
        config = {"ops": {"ramp_controller_op": {"config": {"signals": [sig]}}}}
        assert ramp_controller_job.execute_in_process(run_config=config, resources=build_resources(state),
                                                      instance=instance).success
        return open_store(state).events(FREEZE_TARGET, kind="action_completed")

    with dg.DagsterInstance.ephemeral() as instance:
        for day in ("2026-03-01", "2026-03-10"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=BURN_KEY, partition=day))
        assert run(old, instance) == []
        assert len(run(recent, instance)) == 1


def test_slo_status_shows_each_slos_budget_left_and_the_tiers_that_fired(state, monkeypatch):
    # After two days materialized: each SLO as of the newer day, its budget left as the stored
    # days' bad and total make it, and the tiers that fired that day as its burn checks said.
    from click.testing import CliRunner

    from assets.slo import BURN_KEY, check_name
    from ops_platform.cli import main
    from ops_platform.slo.spec import load_slos

    defs = build_definitions(state)
    daily = defs.resolve_job_def(DAILY_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        def rewritten(run) -> list[str]:
            return run.asset_materializations_for_node("slo__burn")[0].metadata[
                "budget_remaining_rewritten_for"].value

        # Backfilled out of order: the earlier day changes the later day's budget, rewritten.
        first = daily.execute_in_process(partition_key="2026-03-07", instance=instance, run_config=QUIET,
                                         raise_on_error=False)
        assert rewritten(first) == []
        earlier = daily.execute_in_process(partition_key="2026-03-06", instance=instance, run_config=QUIET,
                                           raise_on_error=False)
        assert rewritten(earlier) == ["2026-03-07"]
        result = daily.execute_in_process(partition_key="2026-03-07", instance=instance, run_config=QUIET,
                                          raise_on_error=False)
        # The earlier day again, as it was: the later day's budget does not change, so it is
        # not rewritten (nor warned of).
        assert rewritten(daily.execute_in_process(partition_key="2026-03-06", instance=instance, run_config=QUIET,
                                                  raise_on_error=False)) == []
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.asset_key == BURN_KEY}
    res = CliRunner().invoke(main, ["slo", "status", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["slo"]: r for r in json.loads(res.output)["slos"]}
    daily_budget = Warehouse(state.warehouse).query("SELECT slo, sum(bad)::BIGINT AS bad, sum(total)::BIGINT AS total "
                                                    "FROM slo.budget_daily GROUP BY slo")
    for slo in load_slos(ramp_sensors.SLO_DIR):
        r = rows[slo.name]
        assert r["as_of"] == "2026-03-07" and r["days_stored"] == 2
        bad, total = daily_budget.filter(pl.col("slo") == slo.name).select("bad", "total").row(0)
        assert abs(r["budget_remaining"] - (1 - bad / total / slo.error_budget)) < 1e-12
        assert r["fired_that_day"] == [t.name for t in slo.tiers if not checks[check_name(slo.name, t.name)]]
    text = CliRunner().invoke(main, ["slo", "status"]).output
    assert "api-availability" in text and "2026-03-07" in text, text
    # A tier renamed since the burn series were stored has no column yet: every SLO is still
    # shown, and the new tier is named as not stored (it was a binder error for all of them).
    renamed = state.home / "slos"
    shutil.copytree(ramp_sensors.SLO_DIR, renamed)
    policy = renamed / "api-availability.yaml"
    policy.write_text(policy.read_text().replace("{name: slow,", "{name: ticket,"))
    with monkeypatch.context() as m:
        m.setattr("ops_platform.paths.SLO_DIR", renamed)
        res = CliRunner().invoke(main, ["slo", "status", "--json"])
        assert res.exit_code == 0, res.output
        after = {r["slo"]: r for r in json.loads(res.output)["slos"]}
        assert after["api-availability"]["tiers_not_stored"] == ["ticket"]
        assert all(not r["tiers_not_stored"] and r["as_of"] == "2026-03-07" for n, r in after.items()
                   if n != "api-availability")
        assert after["api-latency"]["fired_that_day"] == rows["api-latency"]["fired_that_day"]
        assert "api-availability (ticket)" in CliRunner().invoke(main, ["slo", "status"]).output
        # Another SLO with a tier of that name stored: the column exists, yet this SLO's
        # newest day holds no value in it; not stored still, not "did not fire".
        with Warehouse(state.warehouse).connect() as con:
            con.execute("ALTER TABLE slo.burn_service ADD COLUMN firing_ticket BOOLEAN")
            con.execute("UPDATE slo.burn_service SET firing_ticket = false WHERE slo = 'receipt-lag'")
        res = CliRunner().invoke(main, ["slo", "status", "--json"])
        assert res.exit_code == 0, res.output
        assert {r["slo"]: r["tiers_not_stored"] for r in json.loads(res.output)["slos"]}["api-availability"] == ["ticket"]
    # `ramp verdicts`: each ramp once, with its newest day's verdict (a ramp undecided on the
    # first day and judged again on the second is listed with the second's).
    stored = Warehouse(state.warehouse).query("SELECT build_id, action, partition_key FROM ramp.verdicts")
    newest = stored.sort("partition_key").group_by("build_id").agg(pl.col("action").last())
    res = CliRunner().invoke(main, ["ramp", "verdicts", "--all", "--json"])
    assert res.exit_code == 0, res.output
    every = {r["build_id"]: r["action"] for r in json.loads(res.output)["ramps"]}
    assert every == dict(newest.rows()) and len(every) < stored.height  # some ramp spans both days
    acted = json.loads(CliRunner().invoke(main, ["ramp", "verdicts", "--json"]).output)["ramps"]
    assert acted and {r["build_id"] for r in acted} == {b for b, a in every.items() if a}
    assert all(r["acted_at"] and r["reason"] for r in acted)
    typo = CliRunner().invoke(main, ["ramp", "verdicts", "--service", "nope"])  # not a quiet service: a typo
    services = sorted(stored.join(Warehouse(state.warehouse).query("SELECT build_id, service FROM ramp.verdicts"),
                                  on="build_id")["service"].unique().to_list())
    assert typo.exit_code == 2 and f"no ramp of service 'nope' in the warehouse (services: {', '.join(services)})" \
        in " ".join(typo.output.split()), typo.output


def test_a_request_holding_the_controllers_key_is_said_loudly_once(state):
    # A person's request under the key the controller derives for a freeze (squatted in a
    # ledger written before such keys were refused) would make the freeze a silent conflict.
    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.runtime import build_protocol
    from ops_platform.ramp.controller import _key

    from .conftest import load_warehouse

    load_warehouse(state.warehouse, state.landing)
    key = _key("platform:api-availability:fast:2026-03-06:freeze")
    squat = ActionRequest(actor="dana", roles=("oncall",), action="override", target_kind="flag",
                          target_id="release-api", rationale="a hold typed with a key copied from a receipt",
                          idempotency_key=key, ttl_seconds=3600, params={"directive": "hold"})
    build_protocol(state, executors={})._process(squat)  # as a version before the rule took it
    sig = json.dumps({"slo": "api-availability", "tier": "fast", "partition": "2026-03-06", "ramp_action": "rollback",
                      "platform_action": "freeze", "groups": ["api/general/"], "first_firing": "2026-03-06T12:00:00",
                      "evidence": "burn 20x"})
    for _ in range(2):  # a second tick on the same evidence meets the same taken key
        with dg.DagsterInstance.ephemeral() as instance:
            result = ramp_controller_job.execute_in_process(
                run_config={"ops": {"ramp_controller_op": {"config": {"signals": [sig]}}}},
                resources=build_resources(state), instance=instance)
            errors = [log.user_message for log in instance.all_logs(result.run_id) if log.level >= 40]
        # A succeeded run (a failed one would be sent again every tick), with the error said.
        assert result.success and any("key is taken" in m and "freeze all-release-flags" in m for m in errors), errors
        (mat,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        assert "freeze all-release-flags" in mat.event_specific_data.metadata["conflicts"].value[0]
    (event,) = open_store(state).events(kind="action_conflict")  # once in the timeline
    assert event["target_id"] == "all-release-flags"


def test_a_person_cannot_take_a_key_the_platform_uses(state):
    import pytest

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.runtime import build_protocol

    proto = build_protocol(state, executors={})
    for key in ("platform:api-availability:fast:2026-03-06:freeze#a56e3df4", "ramp:api-102:rollback#00000000",
                "export_release:2026-03:alice:finops"):
        with pytest.raises(ValueError, match="platform's own"):
            proto.submit(ActionRequest(actor="dana", roles=("oncall",), action="override", target_kind="flag",
                                       target_id="release-api", rationale="x" * 30, idempotency_key=key))
    assert not open_store(state).count_actions()


def test_the_controllers_error_budget_is_the_error_slos():
    # One budget in two places: the ramp thresholds (BURN_H0/H1, FAST_BURN) are multiples of it.
    import math
    from pathlib import Path

    from ops_platform.ramp.analysis import ERROR_MARGIN
    from ops_platform.slo.spec import load_slos

    slos = {s.name: s for s in load_slos(Path(__file__).resolve().parent.parent / "slos")}
    assert math.isclose(ERROR_MARGIN, slos["api-availability"].error_budget, rel_tol=1e-9)


def test_a_checks_first_firing_reads_as_a_time_whether_stored_as_timestamp_or_text():
    from sensors.ramp import _when

    at = datetime(2026, 3, 6, 12, 30, tzinfo=UTC)
    assert _when(at.timestamp()) == at.isoformat()  # how a check stores it now
    assert _when(at.isoformat()) == at.isoformat()  # how evaluations stored before kept it
    assert _when("") is None and _when(None) is None


def test_a_ticket_tier_records_a_ticket_once_and_bad_signals_fail_without_retries(state):
    # A slow tier's burn (a ticket) left nothing but a log line; now a ticket event in the
    # ramping flag's timeline (or the SLO's), once per evidence, and the run counts it.
    from ops_platform.ramp.verdicts import ramps_from_steps

    from .conftest import load_warehouse

    wh = load_warehouse(state.warehouse, state.landing)
    r = ramps_from_steps(wh.query("SELECT * FROM raw.ramp_steps")).row(0, named=True)
    flag = f"release-{r['service']}"
    ramping = json.dumps({"slo": "api-availability", "tier": "slow", "partition": "2026-03-06",
                          "ramp_action": "ticket", "platform_action": "ticket",
                          "groups": [f"{r['service']}/canary/{r['build_id']}"], "first_firing": r["start"].isoformat(),
                          "evidence": "burn 1.4x over 3d and 2.2x over 6h"})
    lag = json.dumps({"slo": "receipt-lag", "tier": "slow", "partition": "2026-03-06", "ramp_action": "ticket",
                      "platform_action": "ticket", "groups": ["receipt"], "first_firing": None, "evidence": "burn 1.1x"})
    config = {"ops": {"ramp_controller_op": {"config": {"signals": [ramping, lag]}}}}
    for _ in range(2):  # the same evidence again adds nothing
        result = ramp_controller_job.execute_in_process(run_config=config, resources=build_resources(state))
        assert result.success
    (ticket,) = open_store(state).events(flag, kind="ticket")
    assert "api-availability slow burn" in json.loads(ticket["payload"])["reason"]
    assert "2.2x over 6h" in json.loads(ticket["payload"])["reason"]
    (slo_ticket,) = open_store(state).events("receipt-lag", kind="ticket")
    assert slo_ticket["target_kind"] == "slo"
    from click.testing import CliRunner

    from ops_platform.cli import main

    for target in (flag, "receipt-lag"):  # both timelines show it
        shown = CliRunner().invoke(main, ["switchboard", "log", target])
        assert shown.exit_code == 0 and "ticket" in shown.output and "slow burn" in shown.output, shown.output
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = output.event_specific_data.metadata
    assert meta["outcomes"].value == {"no_action": 2} and len(meta["no_action"].value) == 2  # counted, and why
    # A signal that is not one fails at once, naming it, and is not retried.
    bad = {"ops": {"ramp_controller_op": {"config": {"signals": [ramping, "not json"]}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        result = ramp_controller_job.execute_in_process(run_config=bad, resources=build_resources(state),
                                                        instance=instance, raise_on_error=False)
        assert not result.success
        failure = result.failure_data_for_node("ramp_controller_op").user_failure_data
        restarts = [e for e in instance.all_logs(result.run_id) if e.dagster_event and
                    e.dagster_event.event_type_value == "STEP_RESTARTED"]
    assert failure.description.startswith("signals[1] is not a burn signal") and not restarts
    # Types too: a string of groups was read letter by letter (a freeze of every ramp), a time
    # that does not read failed later, retried.
    from sensors.ramp import _signals

    good = json.loads(ramping)
    for change, said in (({"groups": "api/canary/b-1"}, "groups must be a list"),
                         ({"first_firing": "yesterday"}, "first_firing 'yesterday' is not an ISO 8601 time"),
                         ({"ramp_action": "promote"}, "ramp_action 'promote': one of"),
                         ({"group_first": {"api/canary/b-1": 5}}, "must be an ISO 8601 time or null")):
        with pytest.raises(dg.Failure, match=re.escape(said)):
            _signals([json.dumps(good | change)])
    assert _signals([ramping])[0].groups == (f"{r['service']}/canary/{r['build_id']}",)
