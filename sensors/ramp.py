"""The ramp controller (a sensor on failed burn checks and the job it launches) and the
Switchboard override job."""

import json
from datetime import UTC, datetime
from functools import cache
from typing import Literal

import dagster as dg
from pydantic import Field

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
from ops_platform.ramp.switchboard import OverrideExecutor, check_override, replaced_overrides
from ops_platform.ramp.verdicts import ramps_from_steps
from ops_platform.slo.burn import window_name
from ops_platform.slo.spec import PLATFORM_ACTIONS, RAMP_ACTIONS, load_slos
from ops_platform.timezones import iso_utc, utcnow
from resources import DUCKDB_POOL
from resources.control import ControlStoreResource, GuardResource, SignerResource, build_protocol
from resources.flags import FlagsResource
from resources.warehouse import WarehouseResource

from .tags import RUN_KEY_TAG

RAMP_JOB = "ramp_controller"
PAGE = 100  # failed check evaluations read per query
OVERRIDE_JOB = "switchboard_override"


class RampControllerConfig(dg.Config):
    signals: list[str] = Field(description=(
        "One JSON object per failed burn check evaluation, as the ramp_controller_sensor sends them: slo, tier, "
        "partition, ramp_action, platform_action, groups (service/cohort/build), first_firing, group_first, "
        "evidence. Launched by hand, copy a tick's run config rather than writing one."))


def _signals(texts: list[str]) -> list[BurnSignal]:
    """The config's signals, or a failure naming the first that is not one (not retried: the
    same text fails the same way)."""
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(_signal(json.loads(text)))
        except (ValueError, TypeError, KeyError) as exc:
            problem = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise dg.Failure(description=f"signals[{i}] is not a burn signal ({problem}): each is a JSON object "
                                         f"with the keys {', '.join(BurnSignal.__dataclass_fields__)}",
                             allow_retries=False) from None
    return out


def _signal(raw) -> BurnSignal:
    """One burn signal, its types checked: a string of groups would be read letter by letter
    (and a lone letter names no build: a freeze of every ramp), a time that does not read
    would fail later, retried."""
    if not isinstance(raw, dict):
        raise TypeError(f"a JSON {type(raw).__name__}, not an object")
    groups = raw["groups"]
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise TypeError("groups must be a list of 'service/cohort/build' strings")
    for what, action, allowed in (("ramp_action", raw["ramp_action"], (*RAMP_ACTIONS, "freeze")),
                                  ("platform_action", raw["platform_action"], PLATFORM_ACTIONS)):
        if action not in allowed:
            raise ValueError(f"{what} {action!r}: one of {', '.join(allowed)}")
    firsts = raw.get("group_first") or {}
    if not isinstance(firsts, dict):
        raise TypeError("group_first must be an object of group -> time")
    for what, when in {"first_firing": raw.get("first_firing"),
                       **{f"group_first[{g!r}]": t for g, t in firsts.items()}}.items():
        if when is None:
            continue
        if not isinstance(when, str):
            raise TypeError(f"{what} must be an ISO 8601 time or null")
        try:
            datetime.fromisoformat(when)
        except ValueError:
            raise ValueError(f"{what} {when!r} is not an ISO 8601 time") from None
    return BurnSignal(**{**raw, "groups": tuple(groups)})


def _ramps(warehouse: WarehouseResource) -> list[Ramp]:
    steps = ramps_from_steps(warehouse.get().query("SELECT * FROM raw.ramp_steps"), open_until=utcnow())
    return [Ramp(r["build_id"], r["service"], r["start"], r["end"]) for r in steps.iter_rows(named=True)]


# In the DuckDB pool, like the assets that write the warehouse it reads (a reader beside a
# writer fails on the file lock), and retried; a run that fails all the same gets its
# signals sent again by the sensor's next tick.
@dg.op(description="Turn failed burn checks and ramp verdicts into guarded pause/rollback/freeze actions on "
                   "release flags.",
       pool=DUCKDB_POOL, retry_policy=dg.RetryPolicy(max_retries=3, delay=10))
def ramp_controller_op(context: dg.OpExecutionContext, config: RampControllerConfig, control: ControlStoreResource,
                       signer: SignerResource, guard: GuardResource, flags: FlagsResource,
                       warehouse: WarehouseResource) -> None:
    signals = _signals(config.signals)
    ex = flags.executor()
    proto = build_protocol(control, signer, guard, {"pause": ex, "rollback": ex, "freeze": ex})
    store = proto.store

    # Read once per flag and run: plan asks for each group of each signal, and nothing in
    # this run adds an override.
    @cache
    def public_keys() -> dict:  # read once per run, and only when some override is in force
        return signer.verifiers()

    @cache
    def override(flag: str) -> str | None:
        active = store.active_overrides(flag, iso_utc(utcnow()))
        if active and (problem := store.override_problem(active[-1], public_keys())):
            # Obeyed only as its receipt says: a record edited in the store holds nothing back.
            context.log.warning(f"{flag}: the override in force is not obeyed: {problem}")
            return None
        return f"{active[-1]['directive']} by {active[-1]['actor']}" if active else None

    @cache
    def last_override(flag: str) -> datetime | None:
        """When the flag's newest obeyed override took over; one not obeyed (see ``override``)
        never did, so it neither clears the history nor hides an earlier one that did."""
        for o in reversed(store.overrides(flag)):
            if not store.override_problem(o, public_keys()):
                return datetime.fromisoformat(o["created_at"])
        return None

    @cache
    def recorded(target: str, kind: str) -> set[str]:
        return {json.loads(e["payload"]).get("reason") for e in store.events(target, kind=kind)}

    def record_once(kind: str, target_kind: str, target: str, reason: str) -> None:
        """An event in the target's timeline, once per evidence: re-reading the same failed
        checks must not add rows."""
        if reason in recorded(target, kind):
            return
        with store.write() as tx:
            store.add_event(tx, ts=iso_utc(utcnow()), kind=kind, target_kind=target_kind, target_id=target,
                            actor=CONTROLLER_ACTOR, action_id=None, receipt_id=None, payload={"reason": reason})
        recorded(target, kind).add(reason)

    history: dict[str, tuple[str, datetime]] = {}
    completed: dict[str, datetime] = {}  # action id -> when it was done
    for e in store.events(kind="action_completed", actor=CONTROLLER_ACTOR):  # the controller's own, oldest first
        payload = json.loads(e["payload"])
        key = history_key(payload["action"], e["target_id"], (payload.get("params") or {}).get("build_id") or "")
        history[key] = (payload["action"], datetime.fromisoformat(e["ts"]))
        completed.setdefault(e["action_id"], datetime.fromisoformat(e["ts"]))

    outcomes: dict[str, int] = {}
    no_action: list[str] = []  # why each decision acted on nothing (shown in the run's metadata)
    conflicts: list[str] = []  # the controller's requests whose key another request holds
    flag_file = FlagFile.load(ex.path, lenient=True)
    # The newest day of burn evidence: a freeze on a much older day (a backfill) freezes nothing.
    newest = max(context.instance.get_materialized_partitions(BURN_KEY), default=None)
    for decision in plan(signals, _ramps(warehouse), override, since_overrides(history, last_override, override),
                         utcnow(), flag_file.release_flags, last_override, newest, completed.get, flag_file.releases()):
        if decision.request is None:
            context.log.info(f"no action: {decision.note}")
            outcomes["no_action"] = outcomes.get("no_action", 0) + 1
            no_action.append(decision.note)
            if decision.overridden:  # in the flag's timeline: the override kept the controller's hands off
                record_once("override_wins", "flag", decision.overridden, decision.note)
            elif decision.ticket:  # a ticket tier: for a person to follow up, in the flag's or the SLO's timeline
                record_once("ticket", *decision.ticket, decision.note)
            continue  # other notes are logged, not stored: re-reading the same evidence must not add rows
        out = proto.submit(decision.request)
        # A completed action that changed nothing (the build's ramp is over) is counted and
        # logged as skipped: "completed" alone reads as a rollback done.
        status = "skipped" if out.said.get("skipped") else out.status
        outcomes[status] = outcomes.get(status, 0) + 1
        why = f"completed, skipped: {out.said['skipped']}" if status == "skipped" else out.status
        context.log.info(f"{decision.request.action} {decision.request.target_id}: {why} ({decision.note})")
        if out.status == "conflict":  # another request holds the controller's key: its action never runs
            said = f"{decision.request.action} {decision.request.target_id}: {out.reason}"
            conflicts.append(said)
            # Said loudly, and once in the flag's timeline (a failed run would be sent again by
            # the sensor each tick, and a taken key stays taken).
            context.log.error(f"the controller's own key is taken by another request, so this did not run: {said}")
            if not any(e["action_id"] == out.action_id for e in store.events(kind="action_conflict")):
                with store.write() as tx:
                    store.add_event(tx, ts=iso_utc(utcnow()), kind="action_conflict", target_kind="flag",
                                    target_id=decision.request.target_id, actor=CONTROLLER_ACTOR,
                                    action_id=out.action_id, receipt_id=None,
                                    payload={"action": decision.request.action, "reason": out.reason})
    context.add_output_metadata({"outcomes": dg.MetadataValue.json(outcomes), "signals": len(signals),
                                 "no_action": dg.MetadataValue.json(no_action[:100]),
                                 "conflicts": dg.MetadataValue.json(conflicts)})


@dg.job(name=RAMP_JOB, description="Apply the action matrix to burning ramps, through the guard.")
def ramp_controller_job():
    ramp_controller_op()


@dg.sensor(job=ramp_controller_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reacts to failed SLO burn checks and ramp verdict checks (a failed non-blocking check "
                       "does not fail its run, so the sensor reads the evaluations themselves).")
def ramp_controller_sensor(context: dg.SensorEvaluationContext):
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    # The cursor: per check and partition, the evaluation last handled (not a highest record
    # id: a record is numbered when its run is created, so a run created earlier that finishes
    # later would hide below it), and the controller run last requested with what it carried,
    # sent again if that run failed (the op's own retries spent).
    state = _cursor(context.cursor)
    seen: dict[str, dict[str, int]] = state["seen"]
    pending = state.get("pending")
    attempt = state.get("attempt", 0)
    if pending:
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: pending["run_key"]}), limit=1)
        status = runs[0].status if runs else None
        if status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                      dg.DagsterRunStatus.STARTED):
            return dg.SkipReason(f"the controller run {pending['run_key']} is still in progress")
        if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):  # its evidence again
            for check, partition, _ in pending["entries"]:
                seen.get(check, {}).pop(partition, None)
            attempt += 1
        pending = None
    legacy = state.get("legacy", 0)  # a cursor of the earlier kind: record ids up to it were handled
    entries, signals = [], []

    def failed(key: dg.AssetCheckKey):
        """The failed evaluations not handled yet that are their partition's latest
        evaluation, page by page. A partition evaluated again is judged on its latest
        evaluation only: an older failure it replaced is not sent again, and one that now
        passes sends nothing."""
        name = key.to_user_string()
        handled = seen.setdefault(name, {})
        before, latest = None, set()
        done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
        while True:
            page = context.instance.event_log_storage.get_asset_check_execution_history(
                key, limit=PAGE, cursor=before, status=done)
            for rec in page:
                if rec.event is None or rec.event.dagster_event is None:
                    continue
                ev = rec.event.dagster_event.asset_check_evaluation_data
                meta = {k: v.value for k, v in ev.metadata.items()}
                partition = rec.partition or ev.partition or meta.get("partition") or ""
                if partition in latest:
                    continue
                latest.add(partition)
                new = handled.get(partition) != rec.id and rec.id > legacy
                handled[partition] = rec.id
                if new and rec.status == AssetCheckExecutionRecordStatus.FAILED:
                    entries.append((name, partition, rec.id))
                    yield rec, ev, meta
            if len(page) < PAGE:
                return
            before = page[-1].id

    for slo in load_slos(SLO_DIR):
        for tier in slo.tiers:
            lw, sw = window_name(tier.long_window), window_name(tier.short_window)
            for rec, ev, meta in failed(dg.AssetCheckKey(BURN_KEY, check_name(slo.name, tier.name))):
                evidence = (f"burn {meta.get(f'max_burn_{lw}', '?')}x over {lw} and {meta.get(f'max_burn_{sw}', '?')}x "
                            f"over {sw} (threshold {tier.burn_rate:g}x), {meta.get('firing_minutes', '?')} minute(s)")
                signals.append(json.dumps({
                    "slo": slo.name, "tier": tier.name, "partition": rec.partition or ev.partition or meta.get("partition") or "",
                    "ramp_action": tier.ramp_action, "platform_action": tier.platform_action,
                    "groups": list(meta.get("groups_firing") or []), "first_firing": _when(meta.get("first_firing")),
                    "group_first": dict(meta.get("groups_first_firing") or {}), "evidence": evidence}))
    # The per-ramp analysis: each verdict names its build, the action and the cohorts reached.
    for rec, _ev, meta in failed(dg.AssetCheckKey(VERDICTS_KEY, VERDICT_CHECK)):
        for v in meta.get("verdicts") or []:
            signals.append(json.dumps({
                "slo": "ramp-analysis", "tier": v["action"], "partition": rec.partition or meta.get("partition") or "",
                "ramp_action": v["action"], "platform_action": "freeze",
                "groups": [f"{v['service']}/{v['cohorts'][-1]}/{v['build_id']}"], "first_firing": v["acted_at"],
                "evidence": v.get("reason", "")}))
    if not signals:
        context.update_cursor(json.dumps({"seen": seen, "attempt": attempt}, sort_keys=True))
        return dg.SkipReason("no new failed burn checks or ramp verdicts")
    newest = max(i for _, _, i in entries)
    run_key = f"burn-{newest}-{len(entries)}" + (f"-retry{attempt}" if attempt else "")
    context.update_cursor(json.dumps({"seen": seen, "attempt": attempt,
                                      "pending": {"run_key": run_key, "entries": entries}}, sort_keys=True))
    return dg.RunRequest(run_key=run_key, run_config=dg.RunConfig(
        ops={"ramp_controller_op": RampControllerConfig(signals=signals)}))


def _when(value) -> str | None:
    """A check's first-firing time as the controller reads it (ISO 8601): a check stores it as
    a timestamp; older evaluations hold ISO text (an empty text: none)."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat()
    return value or None


def _cursor(text: str | None) -> dict:
    """The sensor's cursor as a dict; one of the earlier kind (a highest record id) reads as
    every record up to it handled."""
    if not text:
        return {"seen": {}}
    if text.strip().isdigit():
        return {"seen": {}, "legacy": int(text)}
    state = json.loads(text)
    state.setdefault("seen", {})
    return state


DEFAULT_TTL_SECONDS = 4 * 3600
MAX_TTL_SECONDS = 86400  # the guard's policy allows an override a day at most


class OverrideConfig(dg.Config):
    flag: str = Field(description="The release flag to override, e.g. release-api.")
    action: Literal["resume", "hold", "rollback"] = Field(description="What the override does to the ramp.")
    rationale: str = Field(description="Why (at least 20 non-blank characters; it goes into the receipt).")
    # Checked in the op, not by pydantic: the launchpad does not show pydantic's bounds, and a
    # value out of them failed the run with a validation traceback instead of a message.
    ttl_seconds: int | None = Field(default=None,
                                    description="How long the override wins over the controller, in seconds "
                                                f"(default {DEFAULT_TTL_SECONDS}; the guard's policy allows at "
                                                "most a day).")
    actor: str = Field(description="A human in the actor roster (policies/roster.yaml), not the controller.")


@dg.op(description="A human override of the ramp controller, through the guard (rationale and TTL required).")
def switchboard_override_op(context: dg.OpExecutionContext, config: OverrideConfig, control: ControlStoreResource,
                            signer: SignerResource, guard: GuardResource, flags: FlagsResource) -> None:
    from ops_platform.guard.roster import human_actor, load_roster

    ex = flags.executor()
    ttl = DEFAULT_TTL_SECONDS if config.ttl_seconds is None else config.ttl_seconds
    try:
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl_seconds {ttl}: give a number of seconds above 0 and at most {MAX_TTL_SECONDS} "
                             f"(a day, the most the guard's policy allows; {DEFAULT_TTL_SECONDS} is 4h)")
        if not config.rationale.strip():
            raise ValueError("the rationale is blank: say why, in words the receipt will keep")
        actor = human_actor(config.actor)
        roster = load_roster(policy_dir=guard.policy_dir)  # the roster beside the guard's policies
        notes = check_override(ex.path, config.flag, config.action)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    store = control.store()
    proto = build_protocol(control, signer, guard, {"override": OverrideExecutor(store, ex)}, store=store)
    # Keyed by the first run of a re-execution chain: re-executing a run the guard could not
    # decide (kept, retried by the retry job) must not make a second request.
    root = context.run.root_run_id or context.run_id
    notes += replaced_overrides(store, config.flag)
    out = proto.submit(ActionRequest(
        actor=actor, roles=roster.roles(actor), action="override", target_kind="flag", target_id=config.flag,
        rationale=config.rationale, idempotency_key=f"override-{root}", ttl_seconds=ttl,
        params={"directive": config.action}))
    context.log.info(f"override {config.action} on {config.flag}: {out.status} {out.reason}")
    if out.status == "completed" and out.created:
        for note in notes:
            context.log.warning(f"note: {note}")
    if out.status != "completed":
        kept = "" if out.status in ("denied", "conflict") else (
            "; the request is kept: the retry_guarded_actions job runs it once the cause is fixed (re-executing "
            "this run asks for the same request, not a second one)")
        if out.status == "denied" and not roster.roles(actor):  # a roster slip, said with its fix
            kept = (f"; {actor!r} is not in the actor roster {roster.path}: an override needs the oncall role "
                    "there, or set OPS_PLATFORM_ROSTER to another roster")
        reason = out.reason.removeprefix(f"{out.status}: ")  # the policy's reasons start with "denied: "
        raise dg.Failure(description=f"override {out.status}: {reason}{kept}")


@dg.job(name=OVERRIDE_JOB, description="Override a ramp (resume, hold, rollback) with a rationale and a TTL.")
def switchboard_override_job():
    switchboard_override_op()


