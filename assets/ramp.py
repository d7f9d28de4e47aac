"""Ramp verdicts (the controller's per-ramp analysis, one day at a time) and the backtest
that scores them against the world's truth."""

from datetime import UTC

import dagster as dg
import polars as pl

from assets import check_spec, require_tables, score_metadata
from assets.world import LANDING_KEY, TRUTH_KEY
from ops_platform.ramp.backtest import run_backtest
from ops_platform.ramp.verdicts import decided_since, ramps_from_steps, verdict_rows
from ops_platform.timezones import partition_bounds
from resources import DUCKDB_POOL
from resources.landing import LandingZoneResource
from resources.warehouse import WarehouseResource

VERDICTS_KEY = dg.AssetKey(["ramp", "verdicts"])
BACKTEST_KEY = dg.AssetKey(["ramp", "backtest"])
VERDICT_CHECK = "no_regressing_ramps"
_SOURCES = ("ramp_steps", "request_counters", "latency_buckets")
_BACKTEST_FIGURES = ("caught_before_general_rate", "false_pause_rate", "median_minutes_to_pause",
                     "p95_minutes_to_pause", "blast_radius_bad_requests", "error_budget_spent_per_bad_ramp")


def _rejected_before(wh, key: str) -> set[str]:
    """Builds the controller paused or rolled back in earlier partitions (no longer baselines)."""
    exists = wh.query("SELECT count(*) AS n FROM information_schema.tables "
                      "WHERE table_schema = 'ramp' AND table_name = 'verdicts'")["n"][0]
    if not exists:
        return set()
    got = wh.query("SELECT DISTINCT build_id FROM ramp.verdicts WHERE partition_key < ? "
                   "AND action IN ('pause', 'rollback')", [key])
    return set(got["build_id"].to_list())


def build_ramp_assets(partitions_def: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    mapping = dg.TimeWindowPartitionMapping(start_offset=-1)  # a ramp may start the day before

    @dg.asset(
        key=VERDICTS_KEY, partitions_def=partitions_def, group_name="ramp", owners=["team:release"],
        kinds={"duckdb", "polars"}, pool=DUCKDB_POOL,
        # Its own day before too: a build paused or rolled back on an earlier day is no baseline
        # (_rejected_before), so an asset backfill runs the days in order (a job backfill does not).
        deps=[*(dg.AssetDep(dg.AssetKey(["raw", t]), partition_mapping=mapping) for t in _SOURCES),
              dg.AssetDep(VERDICTS_KEY, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))],
        check_specs=[check_spec(
            VERDICT_CHECK, VERDICTS_KEY,
            "No ramp active this day regresses against its stable build or burns the error budget 6x; a "
            "failure names each ramp, its action (pause, rollback, freeze) and the evidence, and the ramp "
            "controller acts on it.", partitions_def)],
        description="The ramp controller's analysis of every ramp active this day and not decided on an "
                    "earlier day (warehouse ramp.verdicts): its verdict and evidence, the cohorts it had reached, and the error "
                    "budget it consumed over the ramp and before the action.",
    )
    def ramp_verdicts(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        wh = warehouse.get()
        key = context.partition_key
        require_tables(wh, ["raw.ramp_steps", "raw.request_counters", "raw.latency_buckets"],
                       f"run ingest_catalog (ramp steps) and ingest_daily for {key}")
        start, end = partition_bounds(key, partitions_def.timezone)
        # A ramp whose last step is still running is judged up to the end of the day.
        ramps = ramps_from_steps(wh.query("SELECT * FROM raw.ramp_steps WHERE started_at < ?", [end]), open_until=end)
        active = ramps.filter((pl.col("start") < end) & (pl.col("end") > start))
        # Each ramp's window and the pre-ramp window as long as it, for the services ramping.
        since = (active["start"] - (active["end"] - active["start"])).min() if active.height else start
        services = sorted(set(active["service"].to_list())) or [""]
        where = f"WHERE ts >= ? AND ts < ? AND service IN ({', '.join('?' * len(services))})"
        params = [since, end, *services]
        counters = wh.query(f"SELECT ts, service, cohort, build_id, requests, errors FROM raw.request_counters {where}",
                            params)
        latency = wh.query(f'SELECT ts, service, cohort, build_id, le, "count" FROM raw.latency_buckets {where}',
                           params)
        rows = decided_since(verdict_rows(counters, latency, active.to_dicts(), _rejected_before(wh, key), until=end),
                             start)
        wh.replace_partition_tables("ramp", key, {"verdicts": rows.with_columns(pl.lit(key).alias("partition_key"))})
        acted = rows.filter(pl.col("action").is_not_null())
        context.log.info(f"ramp verdicts {key}: {rows.height} ramp(s), {acted.height} acted on")
        yield dg.MaterializeResult(metadata={
            "dagster/row_count": rows.height,
            "ramps_active": rows.height,
            "paused": int((rows["action"] == "pause").sum()),
            "rolled_back": int((rows["action"] == "rollback").sum()),
            "frozen": int((rows["action"] == "freeze").sum()),
            "max_burn_rate": round(float(rows["burn_rate"].max() or 0.0), 3),
            "verdicts": dg.MetadataValue.md(_markdown(rows)),
        })
        verdicts = [{"build_id": r["build_id"], "service": r["service"], "action": r["action"],
                     "acted_at": r["acted_at"].isoformat(), "cohorts": r["cohorts_reached"].split(","),
                     "reason": r["reason"]} for r in acted.iter_rows(named=True)]
        yield dg.AssetCheckResult(
            check_name=VERDICT_CHECK, passed=not verdicts, severity=dg.AssetCheckSeverity.ERROR,
            description=(f"{len(verdicts)} ramp(s) to act on: "
                         + ", ".join(f"{v['build_id']} {v['action']}" for v in verdicts)) if verdicts
            else f"{rows.height} ramp(s), none regressing",
            metadata={"partition": key, "verdicts": dg.MetadataValue.json(verdicts)})

    return [ramp_verdicts]


def _markdown(rows: pl.DataFrame) -> str:
    lines = ["| build | action | at | cohorts | burn rate (ramp / before action) | evidence |",
             "|---|---|---|---|---|---|"]
    for r in rows.iter_rows(named=True):
        at = r["acted_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if r["acted_at"] is not None else ""
        lines.append(f"| {r['build_id']} | {r['action'] or 'none'} | {at} | {r['cohorts_reached']} | "
                     f"{r['burn_rate']:.2f}x / {r['burn_rate_before_action']:.2f}x | {r['reason']} |")
    return "\n".join(lines)


@dg.asset(
    key=BACKTEST_KEY, group_name="ramp", owners=["team:release"], kinds={"polars", "duckdb"}, pool=DUCKDB_POOL,
    deps=[LANDING_KEY, TRUTH_KEY],
    description="The ramp controller and two baselines (Flagger-style thresholds, SRE Workbook "
                "multi-window alerts) replayed over the world's whole history and scored against its "
                "truth folder (warehouse ramp.backtest: policy, metric, value): bad builds caught before the "
                "general cohort, false pauses, time to pause, blast radius, error budget spent. The same "
                "figures as `ops-platform backtest ramps`.",
)
def ramp_backtest(context: dg.AssetExecutionContext, landing: LandingZoneResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    results = run_backtest(landing.scored_world())
    table = pl.DataFrame([{"policy": p, "metric": m, "value": float(v) if v is not None else None}
                          for p, figures in results.items() for m, v in figures.items()])
    warehouse.get().replace_partition_tables("ramp", "all", {
        "backtest": table.with_columns(pl.lit("all").alias("partition_key"))})
    metadata: dict = {f"{p}/{m}": score_metadata(results[p][m]) for p in results for m in _BACKTEST_FIGURES}
    header = "| metric | " + " | ".join(results) + " |"
    lines = [header, "|---" * (len(results) + 1) + "|"]
    for m in next(iter(results.values())):
        lines.append(f"| {m} | " + " | ".join(_fmt(results[p][m]) for p in results) + " |")
    metadata["scores"] = dg.MetadataValue.md("\n".join(lines))
    context.log.info(f"backtest: controller caught {results['controller']['caught_before_general']}/"
                     f"{results['controller']['bad_builds']} before general")
    return dg.MaterializeResult(metadata=metadata)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
