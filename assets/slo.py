"""SLO burn series, budgets and per-tier checks, one day partition at a time."""

import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from assets import check_spec, require_tables, score_metadata
from assets.world import LANDING_KEY, TRUTH_KEY
from ops_platform.paths import SLO_DIR
from ops_platform.slo.alert_score import TABLE_CAPTION, TABLE_COLUMNS, score_world, table_rows
from ops_platform.slo.burn import window_name
from ops_platform.slo.daily import MAX_SILENCE, compute_day, empty_sources, history_start, lookback
from ops_platform.slo.spec import (
    SOURCE_COLUMN,
    SOURCE_TABLES,
    calendar_zone_notes,
    latency_bounds,
    load_slos,
    window_words,
)
from ops_platform.timezones import partition_bounds
from resources import DUCKDB_POOL
from resources.landing import LandingZoneResource
from resources.sli import SLISourceResource
from resources.warehouse import WarehouseResource

BURN_KEY = dg.AssetKey(["slo", "burn"])
ALERT_BACKTEST_KEY = dg.AssetKey(["slo", "alert_backtest"])


def check_name(slo: str, tier: str) -> str:
    return f"{slo.replace('-', '_')}__{tier}"


def data_check_name(slo: str) -> str:
    """The SLO's SLI data check. Three underscores: a tier name starts with a letter and an SLO
    name ends with a letter or digit, so no tier's check can be named alike."""
    return f"{slo.replace('-', '_')}___sli_data"


def budget_check_name(slo: str) -> str:
    """The SLO's error budget check (three underscores, as the data check's)."""
    return f"{slo.replace('-', '_')}___budget"


def _read(warehouse, table: str, start, end, buckets: list[float]) -> pl.DataFrame:
    cols = {"request_counters": "ts, service, cohort, build_id, requests, errors",
            "latency_buckets": "ts, service, cohort, build_id, le, \"count\"",
            "lag_samples": "ts, pipeline, lag_seconds"}[table]
    params: list = [start, end]
    extra = ""
    if table == "latency_buckets":  # only the buckets some SLO compares against, and +Inf
        extra = f" AND (isinf(le) OR le IN ({', '.join('?' * len(buckets))}))" if buckets else " AND isinf(le)"
        params += buckets
    return warehouse.query(f"SELECT {cols} FROM raw.{table} WHERE ts >= ? AND ts < ?{extra}", params)


def build_slo_assets(partitions_def: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    slos = load_slos(SLO_DIR)
    zone_notes = calendar_zone_notes(slos, partitions_def.timezone)
    specs = [check_spec(check_name(s.name, t.name), BURN_KEY,
                        f"{s.display_name}: {t.name} burn ({t.burn_rate:g}x over {window_name(t.long_window)} and "
                        f"{window_name(t.short_window)}) -> {_acts(s, t)}", partitions_def)
             for s in slos for t in s.tiers]
    specs += [check_spec(data_check_name(s.name), BURN_KEY,
                         f"{s.display_name}: its SLI source ({s.source[0]}, {SOURCE_COLUMN[s.source[0]]} "
                         f"{s.source[1]}) reports through the day, silent for {_minutes(MAX_SILENCE)} at most "
                         "(minutes without data burn nothing, so a gap would pass every tier)", partitions_def)
              for s in slos]
    specs += [check_spec(budget_check_name(s.name), BURN_KEY,
                         f"{s.display_name}: error budget left over its {window_words(s.window)} window as of the day "
                         "(warns once it is spent: by an error budget policy, releases wait while it is)", partitions_def)
              for s in slos]
    # The longest burn window decides how many earlier days each day reads.
    lookback_days = math.ceil(lookback(slos) / timedelta(days=1))
    mapping = dg.TimeWindowPartitionMapping(start_offset=-lookback_days)
    buckets = latency_bounds(slos)

    @dg.asset(
        key=BURN_KEY, partitions_def=partitions_def, group_name="slo", owners=["team:sre"],
        kinds={"duckdb", "polars"}, pool=DUCKDB_POOL, check_specs=specs,
        deps=[dg.AssetDep(dg.AssetKey(["raw", t]), partition_mapping=mapping) for t in SOURCE_TABLES],
        description="Per-minute SLI events, multi-window burn rates (5m..3d) and tier states per "
                    "SLO x service x cohort x build (warehouse slo.burn_minutes) and per SLO as a "
                    "whole (slo.burn_service), each day's error budget use (slo.budget_daily) and the budget "
                    "left over each SLO's window (slo.budget_remaining; a day stored out of order rewrites the "
                    "later days'). One check per SLO and burn tier, judged on the SLO as a whole once the "
                    "tier's long window lies whole in the ingested history.",
    )
    def slo_burn(context: dg.AssetExecutionContext, warehouse: WarehouseResource, sli: SLISourceResource):
        wh = warehouse.get()
        key = context.partition_key
        start, end = partition_bounds(key, partitions_def.timezone)
        since = start - timedelta(days=lookback_days)
        prom = sli.prometheus()
        # With Prometheus configured, the request series come from its HTTP API instead.
        stored = SOURCE_TABLES if prom is None else ("lag_samples",)
        first = (date.fromisoformat(key) - timedelta(days=lookback_days)).isoformat()
        earlier = [k for k in partitions_def.get_partition_keys() if first <= k < key]
        gaps = _days_not_stored(wh, stored, earlier, key)
        frames = {t: _read(wh, t, since, end, buckets) for t in stored}
        if prom is not None:
            frames["request_counters"] = prom.request_counters(since, end)
            lat = prom.latency_buckets(since, end)
            frames["latency_buckets"] = lat.filter(pl.col("le").is_infinite() | pl.col("le").is_in(buckets))
            context.log.info(f"SLIs from Prometheus at {sli.prometheus_url}")
        missing = empty_sources(slos, start, end, frames)
        if missing:
            where = f"Prometheus at {sli.prometheus_url}" if prom is not None else "the warehouse's raw tables"
            raise dg.Failure(description=f"no SLI data for {key} in {where}: {'; '.join(missing)}. A day without "
                                         "data is not a healthy day: is the source right, and was the day ingested?")
        # Days of the burn windows not ingested yet (a backfill out of order): a window that
        # reaches into them is not whole, so a tier is judged only once it lies after them,
        # as at the start of the history, rather than passing on part of its evidence.
        history = history_start(*frames.values())
        if gaps:
            after_gap = partition_bounds(gaps[-1], partitions_def.timezone)[1]
            history = max(history, after_gap) if history else after_gap
            context.log.warning(f"slo burn {key}: its burn windows reach into day(s) not ingested yet "
                                f"({', '.join(gaps)}); tiers whose windows reach into them are not judged. "
                                "Materialize this day again once they are.")
        day = compute_day(slos, start, end, counters=frames["request_counters"],
                          latency=frames["latency_buckets"], lag=frames["lag_samples"], since=history)
        day_of = date.fromisoformat(key)
        budget = day.budget.with_columns(pl.lit(key).alias("partition_key"), pl.lit(day_of).alias("day"))
        wh.replace_partition_tables("slo", key, {
            "burn_minutes": day.minutes.with_columns(pl.lit(key).alias("partition_key")),
            "burn_service": day.service.with_columns(pl.lit(key).alias("partition_key")),
            "budget_daily": budget})
        metadata: dict = {"dagster/row_count": day.minutes.height,
                          "lookback_days_not_ingested": dg.MetadataValue.json(gaps)}
        for note in zone_notes:
            context.log.warning(note)
        if zone_notes:
            metadata["calendar_zone_notes"] = dg.MetadataValue.json(zone_notes)
        rows = _budget_rows(wh, slos, day_of)
        wh.replace_partitions("slo", "budget_remaining", {
            d.isoformat(): frame.with_columns(pl.lit(d.isoformat()).alias("partition_key")) for d, frame in rows.items()})
        later = [d.isoformat() for d in rows if d != day_of]
        metadata["budget_remaining_rewritten_for"] = dg.MetadataValue.json(later)
        if later:  # their table rows are current; their plot points are what their own runs computed
            context.log.warning(f"budget_remaining rewritten for {len(later)} later stored day(s) whose window "
                                f"holds {key} ({later[0]}..{later[-1]}): the table and `slo status` have it; their "
                                "plotted budget_remaining is refreshed when they are materialized again")
        remaining = rows[day_of]
        for slo in slos:
            left = remaining.filter(pl.col("slo") == slo.name)["budget_remaining"][0]
            metadata[f"budget_remaining/{slo.name}"] = round(left, 4)
            row = day.budget.filter(pl.col("slo") == slo.name).row(0, named=True)
            # The day's burn rate (1 = spending the budget exactly at the pace the window allows),
            # not a share of the window's budget: that is what budget_remaining tracks.
            metadata[f"burn_rate_today/{slo.name}"] = round(row["burn_rate"], 4)
            mx = day.peak_burn(slo.name, timedelta(hours=1))
            if mx is not None:  # no traffic in any hour of the day: no burn, not a burn of 0 (a gap in the plot)
                metadata[f"max_burn_1h/{slo.name}"] = round(mx, 3)
        context.log.info(f"slo burn {key}: {day.minutes.height} series-minutes, "
                         f"{sum(not t.passed for t in day.tiers)} tier(s) fired")
        yield dg.MaterializeResult(metadata=metadata)
        for slo in slos:
            yield _data_check(slo, day.silences.get(slo.name, []), partitions_def.timezone, key)
            yield _budget_check(slo, remaining.filter(pl.col("slo") == slo.name).row(0, named=True), key)
        lags = {slo.name for slo in slos if slo.source[0] == "lag_samples"}  # a lag names no build
        for t in day.tiers:
            judged_from = datetime.fromisoformat(t.judged_from) if t.judged_from else None
            yield dg.AssetCheckResult(
                check_name=check_name(t.slo, t.tier), passed=t.passed,
                severity=dg.AssetCheckSeverity.ERROR if t.severity == "critical" else dg.AssetCheckSeverity.WARN,
                description=_check_description(t, gaps, end),
                metadata={"partition": key, "firing_minutes": t.firing_minutes,
                          # Timestamps the UI shows in the viewer's zone; no first firing, no key.
                          **({"first_firing": dg.MetadataValue.timestamp(datetime.fromisoformat(t.first_firing))}
                             if t.first_firing else {}),
                          "judged_from": dg.MetadataValue.timestamp(judged_from or start),
                          # False when the tier's long window could not be whole anywhere in the day:
                          # its pass is no evidence (the description says why).
                          "judged": not (judged_from and end is not None and judged_from >= end),
                          "groups_firing": dg.MetadataValue.json(t.groups_firing[:50]),
                          "groups_first_firing": dg.MetadataValue.json(
                              {g: t.groups_first[g] for g in t.groups_firing[:50]}),
                          # No traffic over a window all day: no burn to show, rather than a burn of 0.
                          **{f"max_burn_{w}": v for w, v in ((t.long_window, t.max_burn_long),
                                                             (t.short_window, t.max_burn_short)) if v is not None},
                          "threshold": t.burn_rate, "platform_action": t.platform_action,
                          # A lag names no build, so its burn never acts on one ramp (``_acts``).
                          **({} if t.slo in lags else {"ramp_action": t.ramp_action})})

    return [slo_burn]


def _minutes(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 60)} min"


def _data_check(slo, silent: list[tuple[datetime, datetime]], zone: str, key: str) -> dg.AssetCheckResult:
    """Whether the SLO's source reported through the day, at the severity of its fastest tier
    (as the exported SLOData<Name>Missing alert); each silence named in the partition's zone."""
    fastest = slo.tiers[0].severity  # every SLO has a tier, fastest first
    missing = sum(((b - a) for a, b in silent), timedelta(0))
    tz = ZoneInfo(zone)

    def shown(a: datetime, b: datetime) -> str:
        return f"{a.astimezone(tz):%Y-%m-%d %H:%M}..{b.astimezone(tz):%H:%M} {zone}"

    spans = [shown(a, b) for a, b in silent]
    description = (f"SLI data reported through the day (no silence over {_minutes(MAX_SILENCE)})" if not silent else
                   f"no {slo.source[0]} of {SOURCE_COLUMN[slo.source[0]]} {slo.source[1]} for {_minutes(missing)} "
                   f"in {len(silent)} silence(s) ({', '.join(spans[:3])}{', ...' if len(spans) > 3 else ''}): "
                   "minutes without data burn nothing, so the tiers' checks could not see a burn there; "
                   "is the exporter up, and did every file of the day load?")
    return dg.AssetCheckResult(
        check_name=data_check_name(slo.name), passed=not silent, description=description,
        severity=dg.AssetCheckSeverity.ERROR if fastest == "critical" else dg.AssetCheckSeverity.WARN,
        metadata={"partition": key, "minutes_without_data": int(missing.total_seconds() // 60),
                  "silences": dg.MetadataValue.json(spans[:50])})


def _budget_check(slo, left: dict, key: str) -> dg.AssetCheckResult:
    """Whether the SLO's error budget over its window (as of the day, over the days stored) is
    not spent: a warning, with the numbers, for whoever holds releases to an error budget
    policy (the burn tiers act on how fast it goes; this says where it stands)."""
    share = left["budget_remaining"]
    over = f"{left['days_stored']} day(s) stored of its {window_words(slo.window)} window (from {left['window_first_day']})"
    numbers = f"{left['bad']:,} bad of {left['total']:,}"
    description = (f"{share:.1%} of the error budget left over {over}: {numbers}" if share > 0 else
                   f"error budget spent: {(-share if share < 0 else 0.0):.1%} over it, {1 - share:.2f}x the budget over {over}: {numbers}; "
                   "by an error budget policy, releases wait (only fixes ship) until it recovers")
    return dg.AssetCheckResult(
        check_name=budget_check_name(slo.name), passed=share > 0, severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={"partition": key, "budget_remaining": round(share, 4), "bad": left["bad"], "total": left["total"],
                  "window_first_day": str(left["window_first_day"]), "days_stored": left["days_stored"]})


def _acts(slo, tier) -> str:
    """What the ramp controller does on a failed check of the tier (ramp/controller.py): a
    ramping build's burn acts on its flag, any other burn (a lag names no build) on every ramp."""
    words = {"freeze": "freeze every ramp", "pause": "pause its ramp", "rollback": "roll its ramp back",
             "ticket": "a ticket"}
    platform = words.get(tier.platform_action, tier.platform_action)
    if slo.source[0] == "lag_samples":
        return f"{platform} (a lag names no build)"
    return f"a ramping build: {words.get(tier.ramp_action, tier.ramp_action)}; other builds: {platform}"


def _check_description(t, gaps: list[str] = (), end: datetime | None = None) -> str:
    """What decided a tier's check: the SLO as a whole; groups burning on their own (which
    ``ramp/verdicts`` judges per ramping build) are named beside a pass so it does not read as
    all clear; and
    the part of the day the tier could not judge (its long window not yet whole), so a pass
    there does not read as evidence."""
    if not t.passed:
        return (f"{t.firing_minutes} minute(s) burning over {t.burn_rate:g}x on both {t.long_window} "
                f"and {t.short_window}")
    said = "not burning"
    if t.groups_firing:
        shown = ", ".join(t.groups_firing[:3]) + (", ..." if len(t.groups_firing) > 3 else "")
        said = (f"not burning as a whole; {len(t.groups_firing)} group(s) burning on their own over "
                f"{t.burn_rate:g}x: {shown}")
    if t.judged_from:
        where = (f"reaches into day(s) not ingested yet ({', '.join(gaps)}): materialize this day again once they are"
                 if gaps else "reaches before the SLI history starts")
        said = (f"not judged before {t.judged_from} (its {t.long_window} window {where}); "
                f"from then on, {said}" if end is None or datetime.fromisoformat(t.judged_from) < end else
                f"not judged this day: its {t.long_window} window {where}")
    return said


def _days_not_stored(wh, tables: tuple[str, ...], days: list[str], key: str) -> list[str]:
    """The `days` (partition keys) some of `tables` holds no row of, sorted. A table not in
    the warehouse at all is a failure naming the job that loads it."""
    require_tables(wh, [f"raw.{t}" for t in tables], f"run the ingest_daily job for {key} (it loads the raw "
                                                     "tables before the burn)")
    if not days:
        return []
    missing: set[str] = set()
    for table in tables:
        held = set(wh.query(f"SELECT DISTINCT partition_key FROM raw.{table} WHERE partition_key BETWEEN ? AND ?",
                            [min(days), max(days)])["partition_key"].to_list())
        missing |= {d for d in days if d not in held}
    return sorted(missing)


def _budget_rows(wh, slos, day: date) -> dict[date, pl.DataFrame]:
    """The rows of `slo.budget_remaining` to write once `day`'s budget is stored: that day's,
    and each later stored day whose window holds `day` (a backfill out of order would
    otherwise leave those days' remaining budget without it). One read of the stored days:
    a later day's window never starts before `day`'s."""
    stored = wh.query("SELECT slo, day, bad, total FROM slo.budget_daily WHERE day >= ?",
                      [min(slo.window.first_day(day) for slo in slos)])
    later = sorted(d for d in set(stored["day"].to_list()) if d > day)
    days = [day] + [d for d in later if any(slo.window.first_day(d) <= day for slo in slos)]
    rows = {d: pl.DataFrame([_budget_left(stored, slo, d) for slo in slos]) for d in days}
    if len(days) > 1 and not wh.missing_tables(["slo.budget_remaining"]):
        # A later day whose stored row is already this (days run again in order) is left as it
        # is: only a day whose budget changes is rewritten, and said to be.
        cols = list(rows[day].columns)
        written = wh.query(f"SELECT {', '.join(cols)} FROM slo.budget_remaining WHERE day > ?", [day])
        for d in days[1:]:
            if rows[d].sort("slo").equals(written.filter(pl.col("day") == d).sort("slo")):
                del rows[d]
    return rows


def _budget_left(stored: pl.DataFrame, slo, day: date) -> dict:
    """The SLO's error budget over its window (rolling, or the calendar period) up to `day`,
    from the days stored so far (`stored`: slo, day, bad, total; a row of `slo.budget_remaining`)."""
    first = slo.window.first_day(day)
    rows = stored.filter((pl.col("slo") == slo.name) & pl.col("day").is_between(first, day))
    bad, total = int(rows["bad"].sum() or 0), int(rows["total"].sum() or 0)
    return {"slo": slo.name, "day": day, "window_first_day": first, "days_stored": rows["day"].n_unique(),
            "bad": bad, "total": total,
            "budget_remaining": 1.0 - (bad / total) / slo.error_budget if total else 1.0}


@dg.asset(
    key=ALERT_BACKTEST_KEY, group_name="slo", owners=["team:sre"], kinds={"polars", "duckdb"}, pool=DUCKDB_POOL,
    deps=[LANDING_KEY, TRUTH_KEY],
    description="Every SLO's burn alerts over the world's whole history, scored per tier against its "
                "truth folder (warehouse slo.alert_backtest): incidents and bad builds caught, minutes to "
                "alert, alerts with no cause. The same figures as `ops-platform backtest alerts`.",
)
def slo_alert_backtest(context: dg.AssetExecutionContext, landing: LandingZoneResource,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
    results = score_world(landing.scored_world(), load_slos(SLO_DIR))
    table = pl.DataFrame([{"slo": s, "tier": t, "metric": m, "value": float(v) if v is not None else None}
                          for s, tiers in results.items() for t, figures in tiers.items() for m, v in figures.items()],
                         schema={"slo": pl.String, "tier": pl.String, "metric": pl.String, "value": pl.Float64})
    warehouse.get().replace_partition_tables("slo", "all", {
        "alert_backtest": table.with_columns(pl.lit("all").alias("partition_key"))})
    metadata: dict = {f"all/{t}/{m}": score_metadata(v) for t, figures in results["all"].items()
                      for m, v in figures.items()}
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|---" * len(TABLE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    lines += ["", TABLE_CAPTION.replace("\n", " ")]
    metadata["scores"] = dg.MetadataValue.md("\n".join(lines))
    fast = results["all"].get("fast")
    if fast:
        context.log.info(f"alert backtest: fast tier caught {fast['caught']}/{fast['events']}, "
                         f"{fast['false_alerts']} of {fast['alerts']} alerts without cause")
    return dg.MaterializeResult(metadata=metadata)
