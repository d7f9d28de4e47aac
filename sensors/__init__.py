"""Jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg

from assets.ramp import BACKTEST_KEY, VERDICTS_KEY
from assets.slo import ALERT_BACKTEST_KEY

from .finops import invoice_release_sensor, release_invoices_job
from .ramp import ramp_controller_job, ramp_controller_sensor, switchboard_override_job
from .retry import RETRY_JOB as RETRY_JOB
from .retry import retry_guarded_actions_job, retry_guarded_actions_sensor

CATALOG_JOB = "ingest_catalog"
DAILY_JOB = "ingest_daily"
SCORE_JOB = "score_decisions"
FINOPS_JOB = "reconcile_costs"
DBT_JOB = "build_staging"
CONTROL_JOB = "refresh_control"


def build_jobs() -> list:
    catalog = dg.define_asset_job(
        CATALOG_JOB, selection=_static_raw(),
        description="Load the catalog sources (tenants, services, price list, builds).")
    daily = dg.define_asset_job(
        DAILY_JOB, selection=((dg.AssetSelection.groups("raw") - _static_raw())
                              | (dg.AssetSelection.groups("slo") - dg.AssetSelection.assets(ALERT_BACKTEST_KEY))
                              | dg.AssetSelection.assets(VERDICTS_KEY)),
        description="Ingest one day of every partitioned landing source, then its SLO burn series and "
                    "ramp verdicts.")
    score = dg.define_asset_job(SCORE_JOB, selection=dg.AssetSelection.assets(BACKTEST_KEY, ALERT_BACKTEST_KEY),
                                description="Replay the world's history and score the platform's decisions "
                                            "against its truth folder.")
    staging = dg.define_asset_job(DBT_JOB, selection=dg.AssetSelection.groups("staging"),
                                  description="Build the dbt staging models and run their tests.")
    control = dg.define_asset_job(CONTROL_JOB, selection=dg.AssetSelection.groups("control"),
                                  description="Verify the receipts ledger and copy the control store to DuckDB.")
    finops = dg.define_asset_job(FINOPS_JOB, selection=dg.AssetSelection.groups("finops"),
                                 description="Attribute the bill to tenants, reconcile it with metering, flag "
                                             "cost anomalies.")
    return [catalog, daily, staging, control, score, finops, release_invoices_job, retry_guarded_actions_job, ramp_controller_job,
            switchboard_override_job]


def build_sensors(jobs: list) -> list:
    return [ramp_controller_sensor, invoice_release_sensor, retry_guarded_actions_sensor, *_books_after_loads(jobs)]


def _books_after_loads(jobs: list) -> list[dg.SensorDefinition]:
    """Reconcile the costs again after every load of the raw tables they read, a run that
    failed later on (in SLO burn, say) included: the release sensor holds a period whose raw
    rows changed since the last attribution, so the books must follow the loads without anyone
    running the job by hand. One reconcile at a time: a backfill of thirty days queues one."""
    by_name = {j.name: j for j in jobs}
    loads = [by_name[DAILY_JOB], by_name[CATALOG_JOB]]

    def request(context: dg.RunStatusSensorContext):
        pending = context.instance.get_runs(dg.RunsFilter(job_name=FINOPS_JOB, statuses=[
            dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]), limit=1)
        if pending:
            return dg.SkipReason(f"a reconcile_costs run is already waiting ({pending[0].run_id})")
        return dg.RunRequest(run_key=f"after-{context.dagster_run.run_id}")

    return [dg.run_status_sensor(run_status=status, name=f"reconcile_after_{word}_loads", monitored_jobs=loads,
                                 request_job=by_name[FINOPS_JOB], default_status=dg.DefaultSensorStatus.RUNNING,
                                 description=f"Runs reconcile_costs after each {word} ingest_daily or ingest_catalog "
                                             "run (what it loaded is in the warehouse either way).")(request)
            for status, word in ((dg.DagsterRunStatus.SUCCESS, "successful"), (dg.DagsterRunStatus.FAILURE, "failed"))]


def _static_raw() -> dg.AssetSelection:
    from ops_platform.contracts.definitions import STATIC_TABLES

    return dg.AssetSelection.assets(*[dg.AssetKey(["raw", t]) for t in STATIC_TABLES])


def build_schedules(jobs: list) -> list:
    daily = next(j for j in jobs if j.name == DAILY_JOB)
    return [dg.build_schedule_from_partitioned_job(
        daily, hour_of_day=2, minute_of_hour=15, name="ingest_daily_schedule",
        description="Each night at 02:15 (the partitions' time zone), ingest_daily for the day before: its raw "
                    "sources, SLO burn series and ramp verdicts.")]
