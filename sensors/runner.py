"""Run every job in-process against a persistent instance (used by `ops-platform demo`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ops_platform.timezones import iso_utc, utcnow

from . import CATALOG_JOB, CONTROL_JOB, DAILY_JOB, DBT_JOB, FINOPS_JOB, SCORE_JOB
from .finops import RELEASE_JOB
from .ramp import RAMP_JOB, ramp_controller_sensor
from .tags import RUN_KEY_TAG, SENSOR_NAME_TAG

INSTANCE_YAML = """# Written by ops-platform: every DuckDB writer shares one pool slot.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def prepare_dagster_home(home: Path) -> list[str]:
    """Write ``dagster.yaml`` into a new Dagster home; for one that has its own, what is wrong
    with it for this platform (its notes, to print): a home without a limit of one on the
    `duckdb` pool lets two warehouse writers run at once, and the second fails on DuckDB's
    lock. An existing file is never rewritten (it is the operator's)."""
    from resources import DUCKDB_POOL

    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(INSTANCE_YAML)
        return []
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            storage = instance.event_log_storage
            # A limit set by hand wins; one Dagster stored from the yaml's default follows the yaml.
            limit = {p.name: p.limit for p in storage.get_pool_limits() if not p.from_default}.get(
                DUCKDB_POOL, storage.get_pool_config().default_pool_limit)
    except Exception as exc:  # the operator's instance (its storage, its classes): reported, not fatal here
        return [f"cannot open the Dagster instance of {cfg} to check its '{DUCKDB_POOL}' pool limit: {exc}"]
    if limit == 1:
        return []
    now = "no limit" if limit is None else f"a limit of {limit}"
    return [f"{cfg} gives the '{DUCKDB_POOL}' pool {now}: two warehouse writers may run at once and one "
            f"fails on DuckDB's lock. Add 'concurrency: {{pools: {{default_limit: 1}}}}' to it, or run "
            f"`dagster instance concurrency set {DUCKDB_POOL} 1` with DAGSTER_HOME={home}"]


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Who runs a run in-process: a run left started by a process that died (killed mid-demo)
# holds the DuckDB pool's one slot until someone says it failed. A process is its host, pid
# and start time (a pid is reused; its start time with it is not).
RUNNER_TAG = "ops-platform/runner"
_UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]


def _runner(pid: int) -> str | None:
    """``host:pid:start`` of a live process (start: its start time in clock ticks since boot,
    from /proc); None when no such process runs."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{socket.gethostname()}:{pid}:{start}"


def release_stale_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the unfinished runs whose in-process runner (``RUNNER_TAG``) was a process
    of this host that is gone, and free their pool slots; their run ids. A run of a live
    process, of another host, a re-execution (it copies its parent's tags) or a run launched
    otherwise (``make dev``) is left alone."""
    stale = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED)):
        runner = run.tags.get(RUNNER_TAG, "")
        host, _, rest = runner.partition(":")
        pid = rest.split(":", 1)[0]
        if (not runner or host != socket.gethostname() or not pid.isdigit() or "dagster/parent_run_id" in run.tags
                or _runner(int(pid)) == runner):
            continue
        instance.report_run_failed(run, message=f"its runner ({runner}) ended before the run did")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        stale.append(run.run_id)
    return stale


@dataclass
class RunReport:
    runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    failure_reasons: dict[str, str] = field(default_factory=dict)  # a failed run's first error, by label
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)  # ERROR severity
    checks_warned: list[str] = field(default_factory=list)  # WARN severity
    controller_signals: int = 0
    invoice_period: str | None = None
    release_pipeline: str | None = None  # what the release pipeline had on a flag when the controller ran
    controller_since: str | None = None  # when this run's controller started (its events are those after)

    def add(self, label: str, result: dg.ExecuteInProcessResult, partition: str | None = None) -> None:
        self.runs += 1
        if not result.success:
            self.failed_runs.append(label)
            # Why, in the run's own words (its first failed step), not only that it failed.
            errors = [e.step_failure_data.error for e in result.get_step_failure_events()
                      if e.step_failure_data and e.step_failure_data.error]
            if errors:
                error = errors[0]
                while error.cause is not None:  # Dagster wraps the op's own error: say that one
                    error = error.cause
                self.failure_reasons[label] = (error.message.strip().splitlines() or [""])[0]
        for ev in result.get_asset_check_evaluations():
            if ev.passed:
                self.checks_passed += 1
            else:
                part = f"[{partition}]" if partition else ""
                name = f"{ev.asset_key.to_user_string()}{part}:{ev.check_name}"
                warn = ev.severity == dg.AssetCheckSeverity.WARN
                (self.checks_warned if warn else self.checks_failed).append(name)


def run_everything(defs: dg.Definitions, instance: dg.DagsterInstance,
                   on_step: Callable[[str], None] | None = None,
                   release_pipeline: Callable[[], str | None] | None = None) -> RunReport:
    """Catalog, every daily partition, dbt staging, the ramp controller on the failed burn
    and ramp verdict checks, the backtest, cost attribution, the invoice release, then the
    control snapshot; all recorded in `instance`. ``release_pipeline`` runs just before the
    controller, to put on the flags what the pipeline that ramps builds would have there."""
    step = on_step or (lambda label: None)
    report = RunReport()

    def run(job: str, label: str, run_config: dict | None = None, partition: str | None = None,
            tags: dict[str, str] | None = None) -> None:
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, raise_on_error=False, partition_key=partition,
            run_config={**(run_config or {}), **QUIET},
            tags={**(tags or {}), RUNNER_TAG: _runner(os.getpid()) or f"{socket.gethostname()}:{os.getpid()}:?"})
        report.add(label, result, partition)
        step(label)

    run(CATALOG_JOB, "catalog")
    for key in defs.resolve_job_def(DAILY_JOB).partitions_def.get_partition_keys():
        run(DAILY_JOB, key, partition=key)
    run(DBT_JOB, "staging")
    # The ramp story: the controller's sensor reads the failed burn checks and acts through the guard.
    # From the start of the history every time: the controller's idempotency keys make a re-run a no-op.
    if release_pipeline is not None:
        report.release_pipeline = release_pipeline()
    report.controller_since = iso_utc(utcnow())
    request = ramp_controller_sensor(dg.build_sensor_context(instance=instance))
    if isinstance(request, dg.RunRequest):
        report.controller_signals = len(request.run_config["ops"]["ramp_controller_op"]["config"]["signals"])
        # Tagged as the sensor's own run of that key: when the daemon (`make dev`) first ticks,
        # with no cursor, it finds the run its request would make and launches no second one.
        run(RAMP_JOB, "controller", request.run_config,
            tags={SENSOR_NAME_TAG: ramp_controller_sensor.name, RUN_KEY_TAG: request.run_key or ""})
    else:
        step("controller")
    run(SCORE_JOB, "backtest")
    run(FINOPS_JOB, "finops")
    # Release the invoices of the days whose usage is final (the demo world ends mid-month,
    # so its calendar month is held by the release sensor, with the reason).
    period = _final_period(defs)
    if period is not None:
        report.invoice_period = period
        run(RELEASE_JOB, "invoices", {"ops": {"release_invoices_op": {"config": {
            "period": period, "actor": "finops-analyst",
            "rationale": "demo: releasing the reconciled, final days of the world"}}}})
    else:
        step("invoices")
    run(CONTROL_JOB, "control")
    return report



def _final_period(defs: dg.Definitions) -> str | None:
    """The days whose usage is final, as a billing period (None before any)."""
    from ops_platform.finops.pipeline import final_period

    try:  # no table when the finops run failed: then there is nothing to release
        usage = defs.resources["warehouse"].get().query("SELECT utc_date, final FROM finops.usage_daily")
        return final_period(usage).name
    except Exception:  # noqa: BLE001 - ValueError (no final day) or a missing table
        return None
