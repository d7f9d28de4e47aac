"""The retry job of the guarded action path, and the sensor that starts it when something waits."""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from assets.receipts import LEDGER_KEY
from ops_platform.control.store import StoreUnavailable
from ops_platform.executors import guarded_executors
from ops_platform.guard.protocol import retry_due
from ops_platform.guard.runtime import NoStore
from ops_platform.receipts.keys import SignerUnavailable
from ops_platform.timezones import utcnow
from resources import DUCKDB_POOL
from resources.control import ControlStoreResource, GuardResource, SignerResource, build_protocol
from resources.exports import ExportsResource
from resources.flags import FlagsResource
from resources.warehouse import WarehouseResource

RETRY_JOB = "retry_guarded_actions"
RETRY_SENSOR = "retry_guarded_actions_sensor"
RETRY_EVERY_SECONDS = 300
STUCK_AFTER = timedelta(hours=1)  # a retry run unfinished for longer is taken as dead
_UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]


# In the DuckDB pool: a retried invoice release reads the warehouse a running asset may hold.
@dg.op(description="Receipt protective actions that waited for the signer, retry failed and "
                   "abandoned actions (bounded, then DLQ), and drain the local spool.", pool=DUCKDB_POOL)
def retry_guarded_actions_op(context: dg.OpExecutionContext, control: ControlStoreResource,
                             signer: SignerResource, guard: GuardResource, flags: FlagsResource,
                             warehouse: WarehouseResource, exports: ExportsResource) -> None:
    # Every executor: a retried action may be any of them.
    store = control.store()
    executors = guarded_executors(store, lambda: flags.executor().path, Path(warehouse.path), exports.invoices(),
                                  home=Path(control.home), verifiers=signer.verifiers, keys_dir=Path(signer.keys_dir))
    report = build_protocol(control, signer, guard, executors, store=store).retry()
    context.log.info(f"retry: {report}")
    context.log_event(dg.AssetObservation(asset_key=LEDGER_KEY, metadata={
        "retry_receipted": report.receipted, "retry_retried": report.retried,
        "retry_dead_lettered": report.to_dlq, "spool_left": report.spool_left}))


@dg.job(name=RETRY_JOB, description="Complete the guarded action path after signer or store outages.")
def retry_guarded_actions_job():
    retry_guarded_actions_op()


@dg.sensor(name=RETRY_SENSOR, job=retry_guarded_actions_job, minimum_interval_seconds=RETRY_EVERY_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 minutes: starts retry_guarded_actions when a receipt waits for a signer that is "
                       "back, an action failed or was abandoned, or the spool holds requests; skips, saying so, "
                       "otherwise.")
def retry_guarded_actions_sensor(context: dg.SensorEvaluationContext, control: ControlStoreResource,
                                 signer: SignerResource):
    spool = control.spool()
    try:
        store = control.store()
        due = retry_due(store, spool, utcnow())
    except (StoreUnavailable, NoStore) as exc:
        spooled = spool.waiting()
        return dg.SkipReason(f"control store unavailable ({exc}); {spooled} spooled request(s) wait for it")
    # Receipts waiting for a signer that is still down are no work for a run: one run every
    # 5 minutes for as long as the outage lasts would sign nothing.
    signer_down = ""
    if due["pending_receipt"]:
        try:
            signer.signer_for(store)()
        except SignerUnavailable as exc:
            signer_down = f"{due.pop('pending_receipt')} receipt(s) wait for the signer, which is down ({exc})"
            context.log.warning(signer_down)
    if not any(due.values()):
        return dg.SkipReason(f"{signer_down}; nothing else to retry" if signer_down else
                             "nothing to retry: no receipt waits for the signer, no action failed or was "
                             "abandoned, the spool is empty")
    waiting = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in due.items() if n)
    # Only a recent run holds the next one back: a run left "started" by a worker that died
    # (run monitoring is off by default) must not stop every retry after it.
    since = utcnow() - STUCK_AFTER
    running = context.instance.get_runs(dg.RunsFilter(job_name=RETRY_JOB, statuses=_UNFINISHED,
                                                      created_after=since), limit=1)
    if running:
        return dg.SkipReason(f"{waiting}; a retry run is already under way ({running[0].run_id})")
    context.log.info(f"retry: {waiting}")
    return dg.RunRequest(tags={"retry/waiting": waiting})
