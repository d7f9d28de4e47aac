"""The ramp controller (a sensor on failed burn checks and the job it launches) and the
Switchboard override job."""

import json
from datetime import datetime
from functools import cache

import dagster as dg

from assets.ramp import VERDICT_CHECK, VERDICTS_KEY
from assets.slo import BURN_KEY, check_name
from ops_platform.guard.actions import ActionRequest
from ops_platform.guard.roster import CONTROLLER_ACTOR
from ops_platform.paths import SLO_DIR
from ops_platform.ramp.controller import (
    BurnSignal,
    Ramp,
    history_key,
    plan,
    since_overrides,
)
from ops_platform.ramp.flags import FlagFile
from ops_platform.ramp.switchboard import OverrideExecutor, check_override
from ops_platform.ramp.verdicts import ramps_from_steps
from ops_platform.slo.burn import window_name
from ops_platform.slo.spec import load_slos
from ops_platform.timezones import iso_utc, utcnow
from resources import DUCKDB_POOL
from resources.control import ControlStoreResource, GuardResource, SignerResource, build_protocol
from resources.flags import FlagsResource
from resources.warehouse import WarehouseResource

RAMP_JOB = "ramp_controller"
PAGE = 100  # failed check evaluations read per query
OVERRIDE_JOB = "switchboard_override"


class RampControllerConfig(dg.Config):
    signals: list[str]  # BurnSignal as JSON, one per failed burn check evaluation


def _ramps(warehouse: WarehouseResource) -> list[Ramp]:
    steps = ramps_from_steps(warehouse.get().query("SELECT * FROM raw.ramp_steps"), open_until=utcnow())
    return [Ramp(r["build_id"], r["service"], r["start"], r["end"]) for r in steps.iter_rows(named=True)]


# In the DuckDB pool, like the assets that write the warehouse it reads (a reader beside a
# writer fails on the file lock), and retried: its signals are not re-sent once the sensor's
# cursor has moved past them.
@dg.op(description="Turn failed burn checks into guarded pause/rollback/freeze actions on release flags.",
       pool=DUCKDB_POOL, retry_policy=dg.RetryPolicy(max_retries=3, delay=10))
def ramp_controller_op(context: dg.OpExecutionContext, config: RampControllerConfig, control: ControlStoreResource,
                       signer: SignerResource, guard: GuardResource, flags: FlagsResource,
                       warehouse: WarehouseResource) -> None:
    signals = []
    for text in config.signals:
        raw = json.loads(text)
        signals.append(BurnSignal(**{**raw, "groups": tuple(raw["groups"])}))
    ex = flags.executor()
    proto = build_protocol(control, signer, guard, {"pause": ex, "rollback": ex, "freeze": ex})
    store = proto.store

    # Read once per flag and run: plan asks for each group of each signal, and nothing in
    # this run adds an override.
    @cache
    def override(flag: str) -> str | None:
        active = store.active_overrides(flag, iso_utc(utcnow()))
        return f"{active[-1]['directive']} by {active[-1]['actor']}" if active else None

    @cache
    def last_override(flag: str) -> datetime | None:
        every = store.overrides(flag)
        return datetime.fromisoformat(every[-1]["created_at"]) if every else None

    @cache
    def wins_recorded(flag: str) -> set[str]:
        return {json.loads(e["payload"]).get("reason") for e in store.events(flag, kind="override_wins")}

    history: dict[str, tuple[str, datetime]] = {}
    for e in store.events(kind="action_completed", actor=CONTROLLER_ACTOR):  # the controller's own, oldest first
        payload = json.loads(e["payload"])
        key = history_key(payload["action"], e["target_id"], (payload.get("params") or {}).get("build_id") or "")
        history[key] = (payload["action"], datetime.fromisoformat(e["ts"]))

    outcomes: dict[str, int] = {}
    release_flags = FlagFile.load(ex.path, lenient=True).release_flags
    for decision in plan(signals, _ramps(warehouse), override, since_overrides(history, last_override), utcnow(),
                         release_flags, last_override):
        if decision.request is None:
            context.log.info(f"no action: {decision.note}")
            flag = decision.overridden
            if flag and decision.note not in wins_recorded(flag):  # once per evidence, in the flag's timeline
                with store.write() as tx:
                    store.add_event(tx, ts=iso_utc(utcnow()), kind="override_wins", target_kind="flag",
                                    target_id=flag, actor=CONTROLLER_ACTOR, action_id=None, receipt_id=None,
                                    payload={"reason": decision.note})
                wins_recorded(flag).add(decision.note)
            continue  # other notes are logged, not stored: re-reading the same evidence must not add rows
        out = proto.submit(decision.request)
        outcomes[out.status] = outcomes.get(out.status, 0) + 1
        context.log.info(f"{decision.request.action} {decision.request.target_id}: {out.status} ({decision.note})")
    context.add_output_metadata({"outcomes": dg.MetadataValue.json(outcomes), "signals": len(signals)})


@dg.job(name=RAMP_JOB, description="Apply the action matrix to burning ramps, through the guard.")
def ramp_controller_job():
    ramp_controller_op()


@dg.sensor(job=ramp_controller_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reacts to failed SLO burn checks and ramp verdict checks (a failed non-blocking check "
                       "does not fail its run, so the sensor reads the evaluations themselves).")
def ramp_controller_sensor(context: dg.SensorEvaluationContext):
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    last = int(context.cursor or 0)
    newest, signals = last, []

    def failed(key: dg.AssetCheckKey):
        """The failed evaluations newer than the cursor that are still their partition's
        latest evaluation, newest first, page by page (a backfill can fail more than a page
        of them between two ticks). A partition evaluated again is judged on its latest
        evaluation only: an older failure it replaced is not sent again, and one that now
        passes sends nothing."""
        before, seen = None, set()
        done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
        while True:
            page = context.instance.event_log_storage.get_asset_check_execution_history(
                key, limit=PAGE, cursor=before, status=done)
            for rec in page:
                if rec.id <= last:
                    return
                if rec.event is None or rec.event.dagster_event is None:
                    continue
                ev = rec.event.dagster_event.asset_check_evaluation_data
                meta = {k: v.value for k, v in ev.metadata.items()}
                partition = rec.partition or ev.partition or meta.get("partition") or ""
                if partition in seen:
                    continue
                seen.add(partition)
                if rec.status == AssetCheckExecutionRecordStatus.FAILED:
                    yield rec, ev, meta
            if len(page) < PAGE:
                return
            before = page[-1].id

    for slo in load_slos(SLO_DIR):
        for tier in slo.tiers:
            lw, sw = window_name(tier.long_window), window_name(tier.short_window)
            for rec, ev, meta in failed(dg.AssetCheckKey(BURN_KEY, check_name(slo.name, tier.name))):
                newest = max(newest, rec.id)
                evidence = (f"burn {meta.get(f'max_burn_{lw}', '?')}x over {lw} and {meta.get(f'max_burn_{sw}', '?')}x "
                            f"over {sw} (threshold {tier.burn_rate:g}x), {meta.get('firing_minutes', '?')} minute(s)")
                signals.append(json.dumps({
                    "slo": slo.name, "tier": tier.name, "partition": rec.partition or ev.partition or meta.get("partition") or "",
                    "ramp_action": tier.ramp_action, "platform_action": tier.platform_action,
                    "groups": list(meta.get("groups_firing") or []), "first_firing": meta.get("first_firing") or None,
                    "group_first": dict(meta.get("groups_first_firing") or {}), "evidence": evidence}))
    # The per-ramp analysis: each verdict names its build, the action and the cohorts reached.
    for rec, _ev, meta in failed(dg.AssetCheckKey(VERDICTS_KEY, VERDICT_CHECK)):
        newest = max(newest, rec.id)
        for v in meta.get("verdicts") or []:
            signals.append(json.dumps({
                "slo": "ramp-analysis", "tier": v["action"], "partition": rec.partition or meta.get("partition") or "",
                "ramp_action": v["action"], "platform_action": "freeze",
                "groups": [f"{v['service']}/{v['cohorts'][-1]}/{v['build_id']}"], "first_firing": v["acted_at"],
                "evidence": v.get("reason", "")}))
    if not signals:
        return dg.SkipReason(f"no new failed burn checks since evaluation {last}")
    context.update_cursor(str(newest))
    return dg.RunRequest(run_key=f"burn-{newest}", run_config=dg.RunConfig(
        ops={"ramp_controller_op": RampControllerConfig(signals=signals)}))


class OverrideConfig(dg.Config):
    flag: str
    action: str  # resume | hold | rollback
    rationale: str
    ttl_seconds: int = 4 * 3600
    actor: str  # a human in the actor roster (policies/roster.yaml), not the controller's name


@dg.op(description="A human override of the ramp controller, through the guard (rationale and TTL required).")
def switchboard_override_op(context: dg.OpExecutionContext, config: OverrideConfig, control: ControlStoreResource,
                            signer: SignerResource, guard: GuardResource, flags: FlagsResource) -> None:
    from ops_platform.guard.roster import human_actor, load_roster

    ex = flags.executor()
    try:
        actor = human_actor(config.actor)
        roster = load_roster(policy_dir=guard.policy_dir)  # the roster beside the guard's policies
        check_override(ex.path, config.flag, config.action)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    store = control.store()
    proto = build_protocol(control, signer, guard, {"override": OverrideExecutor(store, ex)}, store=store)
    out = proto.submit(ActionRequest(
        actor=actor, roles=roster.roles(actor), action="override", target_kind="flag", target_id=config.flag,
        rationale=config.rationale, idempotency_key=f"override-{context.run_id}", ttl_seconds=config.ttl_seconds,
        params={"directive": config.action}))
    context.log.info(f"override {config.action} on {config.flag}: {out.status} {out.reason}")
    if out.status != "completed":
        raise dg.Failure(description=f"override {out.status}: {out.reason}")


@dg.job(name=OVERRIDE_JOB, description="Override a ramp (resume, hold, rollback) with a rationale and a TTL.")
def switchboard_override_job():
    switchboard_override_op()


