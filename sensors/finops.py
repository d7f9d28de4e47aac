"""Invoice release: a sensor that releases a billing period when its reconciliation holds
(and says why it holds it otherwise), and the guarded job that writes the files."""

import functools
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from ops_platform.finops.export import (
    altered_releases,
    release_holds,
    release_invoices,
    released_periods,
    unreleased_parts,
)
from ops_platform.finops.invoices import Period, parse_period
from ops_platform.finops.pipeline import BooksUnavailable, StoredFinOps
from ops_platform.guard.roster import RELEASE_SENSOR_ACTOR, human_actor, load_roster
from resources import DUCKDB_POOL
from resources.control import ControlStoreResource, GuardResource, SignerResource, build_protocol
from resources.exports import ExportsResource
from resources.warehouse import WarehouseResource

from .tags import SENSOR_NAME_TAG

RELEASE_JOB = "release_invoices"
SENSOR_ACTOR = RELEASE_SENSOR_ACTOR


DEFAULT_RATIONALE = "reconciliation checks pass for the period; releasing invoices"


class ReleaseConfig(dg.Config):
    period: str = Field(description="The billing period: YYYY-MM, or YYYY-MM-DD..YYYY-MM-DD (end exclusive).")
    # No default: launched from the UI, the launchpad asks who releases (the sensor names itself).
    actor: str = Field(description="Who releases: a person with the finops role in the actor roster "
                                   f"(the release sensor's own runs name {SENSOR_ACTOR}).")
    rationale: str | None = Field(default=None, description=f"Why; it goes into the release's receipt (default: "
                                                            f"{DEFAULT_RATIONALE!r}).")


# In the DuckDB pool: it reads the warehouse, which a running asset may hold for writing.
@dg.op(description="Release a period's invoices through the guard: check the reconciliation, write the "
                   "Parquet/CSV files atomically, receipt their sha256.", pool=DUCKDB_POOL)
def release_invoices_op(context: dg.OpExecutionContext, config: ReleaseConfig, warehouse: WarehouseResource,
                        control: ControlStoreResource, signer: SignerResource, guard: GuardResource,
                        exports: ExportsResource) -> None:
    rationale = DEFAULT_RATIONALE if config.rationale is None else config.rationale
    try:
        period = parse_period(config.period)
        if not rationale.strip():
            raise ValueError("the rationale is blank: say why, in words the receipt will keep (or leave it out "
                             "for the default)")
        # The sensor's identity only on the sensor's own runs (Dagster tags them with its name);
        # a human launching the job from the UI acts under their own name, checked as the CLI
        # checks it. Roles come from the roster beside the guard's policies.
        if config.actor == SENSOR_ACTOR:
            if context.run.tags.get(SENSOR_NAME_TAG) != invoice_release_sensor.name:
                raise ValueError(f"actor {SENSOR_ACTOR!r} is the release sensor's own; a run launched by hand "
                                 "names its human actor (one with the finops role in the actor roster)")
            actor = SENSOR_ACTOR
        else:
            actor = human_actor(config.actor)
        roster = load_roster(policy_dir=guard.policy_dir)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    stored = StoredFinOps.from_warehouse(warehouse.get())  # what finops/attribution's checks passed
    held, out = release_invoices(stored, period, exports.invoices(),
                                 lambda executors: build_protocol(control, signer, guard, executors),
                                 actor, rationale, signer.verifiers, roster)
    if out is None:  # the sensor checked too, but the books may have changed since
        raise dg.Failure(description=f"held: {period.name}: " + "; ".join(held))
    context.log.info(f"export_release {period.name}: {out.status} {out.reason} receipt {out.receipt_id}")
    if out.status != "completed":
        raise dg.Failure(description=f"export_release {out.status}: {out.reason}")
    context.add_output_metadata({"period": period.name, "receipt_id": out.receipt_id or "",
                                 "folder": str(exports.invoices() / period.name)})


@dg.job(name=RELEASE_JOB, description="Release one billing period's invoices (guarded, receipted).")
def release_invoices_job():
    release_invoices_op()


def _months(days: pl.DataFrame) -> list[str]:
    return sorted({f"{d:%Y-%m}" for d in days["utc_date"].to_list()})


@dg.sensor(job=release_invoices_job, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Releases each calendar month's invoices (or what of it a release by hand left) once "
                       "its reconciliation checks pass; a held period is reported with its reasons in the tick.")
def invoice_release_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                           control: ControlStoreResource, signer: SignerResource, exports: ExportsResource):
    try:
        stored = StoredFinOps.from_warehouse(warehouse.get())
    except BooksUnavailable as exc:
        return dg.SkipReason(str(exc))
    store = control.store()
    released = released_periods(store)
    keys = functools.cache(signer.verifiers)  # read once, and only if a released period is checked

    def altered(period: Period) -> list[str]:
        return altered_releases(store, Path(control.home), keys(), but=period)

    requests, held = [], []
    # Each month, or what of it is not out yet (a range released by hand leaves the rest).
    for period in (part for month in _months(stored.day) for part in unreleased_parts(parse_period(month), released)):
        reasons = release_holds(stored, period, exports.invoices(), released, altered)
        if reasons:
            held.append(f"{period.name}: " + "; ".join(reasons))
            continue
        # Keyed by the books too: a release run that failed (held by a load since, denied, the
        # signer down) is asked for again once the attribution has run again.
        requests.append(dg.RunRequest(run_key=f"invoices-{period.name}-{stored.stamp}", run_config=dg.RunConfig(
            ops={"release_invoices_op": ReleaseConfig(period=period.name, actor=SENSOR_ACTOR)})))
    if not requests:
        if held:
            return dg.SkipReason("held: " + " | ".join(held))
        if stored.day.height:
            return dg.SkipReason("every period of the books is released (up to "
                                 f"{max(p.end for p in released) - timedelta(days=1) if released else '-'})")
        return dg.SkipReason("no billing period yet")
    for line in held:
        context.log.info(f"held: {line}")
    return requests
