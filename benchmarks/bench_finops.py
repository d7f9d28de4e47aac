"""Attribution and reconciliation of a world's month: ours (DuckDB + polars) vs straightforward pandas.

Both read the same inputs: every usage event of the landing zone (CloudEvents Parquet,
deduplicated on (source, id), summed per UTC day, tenant and meter) and the billing rows the
FOCUS contract accepted (loaded once beforehand, not timed), then attribute every cost row
to tenants (direct, usage-weighted serving and idle, overhead by API calls, largest
remainder in micro-dollars) and reconcile per service and day. The world bills daily lines
only; ours also reads each line's period (a charge over several days is amortized), pandas
books each line on its start day. Each implementation runs in its own process, so its peak
RSS is its own. Before the first run every landing usage file is read once (not timed), so
neither side pays for bringing them from disk; with pandas, ours runs before and after it and
the ratio takes ours' mean, so a slow or quick spell of the machine in between (one run lasts
minutes) does not fall on one side only. Both return the same four outputs (tenant lines per kind with their
confidence, the day's summary, the reconciliation per service and day, the correction rows),
and they are compared: money and counts equal, floats to a relative 1e-9, or the run fails.

    python benchmarks/bench_finops.py --world DIR [--skip-pandas] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

# Landing events as exporters write them, with the usage contract's row rules (the rows it
# would quarantine are left out on both sides). The time is parsed once: behind the UNNEST,
# DuckDB cannot push "ts IS NOT NULL" into the scan, where it would parse every time a
# second time (about 1.1 s at L).
METERS = ("api_calls", "graph_queries", "policy_decisions", "receipts_issued", "metered_events",
          "switchboard_actions", "storage_gb_hours")
LANDING_EVENTS = ("SELECT source, id, subject AS tenant_id, data.meter AS meter, data.quantity AS quantity, "
                  "ts AS event_time, CAST(dt AS DATE) AS arrived "
                  "FROM (SELECT *, UNNEST([TRY_CAST(time AS TIMESTAMPTZ)]) AS ts "
                  "      FROM {relation}) "
                  "WHERE specversion = '1.0' AND subject IS NOT NULL AND data.quantity >= 0 AND data.quantity <= 1e15 "
                  f"AND data.meter IN {METERS!r} AND ts IS NOT NULL")
SPEEDUP_TARGET = 10.0
DUCKDB_MEMORY = "4GB"
MEMORY_TARGET_GIB = 8.0


def _billing_and_services(world: Path, tmp: Path) -> None:
    """The contract-accepted billing rows and the service catalog, as Parquet (not timed)."""
    from ops_platform.contracts.definitions import CONTRACTS
    from ops_platform.ingest.landing import LandingZoneReader
    from ops_platform.ingest.pipeline import ingest_partition

    reader = LandingZoneReader(world / "landing")
    billing = ingest_partition(CONTRACTS["billing_focus"], reader).accepted
    billing.select("ChargePeriodStart", "ChargePeriodEnd", "x_LineItemId", "EffectiveCost", "Tags").write_parquet(tmp / "billing.parquet")
    ingest_partition(CONTRACTS["services"], reader).accepted.select("service", "meter").write_parquet(
        tmp / "services.parquet")


def run_ours(world: Path, tmp: Path) -> dict[str, pl.DataFrame]:
    import duckdb

    from ops_platform.finops.attribution import attribute
    from ops_platform.finops.usage import usage_from

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")  # spill rather than grow past the budget
    glob = str(world / "landing" / "usage_events" / "*" / "*.parquet")
    usage, corrections, _ = usage_from(con, f"read_parquet('{glob}', hive_partitioning = true)", LANDING_EVENTS)
    billing = pl.read_parquet(tmp / "billing.parquet")
    result = attribute(billing, usage, pl.read_parquet(tmp / "services.parquet"))
    return {"tenant_day": result.tenant_day, "day": result.day, "reconciliation": result.reconciliation,
            "corrections": corrections}


def _pandas_events(path: Path):
    """One landing file's events as pandas rows, with the usage contract's row rules."""
    import pandas as pd

    df = pd.read_parquet(path, columns=["specversion", "source", "id", "subject", "time", "data"])
    df["meter"] = [d["meter"] for d in df["data"]]
    df["quantity"] = [d["quantity"] for d in df["data"]]
    df["ts"] = pd.to_datetime(df["time"], utc=True, errors="coerce", format="ISO8601")
    ok = ((df["specversion"] == "1.0") & df["subject"].notna() & (df["quantity"] >= 0) & (df["quantity"] <= 1e15)
          & df["meter"].isin(METERS) & df["ts"].notna())
    df = df[ok].drop(columns=["data", "specversion", "time"])
    df["utc_date"] = df["ts"].dt.date
    return df


def run_pandas(world: Path, tmp: Path) -> dict[str, pl.DataFrame]:
    """What a careful analyst would write in pandas: load, dedup, group, merge, allocate,
    then the same outputs as ours: tenant lines per kind with their confidence, the day's
    summary, the reconciliation per service and day, and the correction rows.

    Loading a month of L events in one frame needs about ten times the memory of a month at
    M (7 GiB there), more than this machine has, so events are read one arrival day at a
    time and each usage day is summed once no later file can count in it (files arrive in
    order, and an event that arrives after T+2 is a correction, not usage).
    """
    import numpy as np
    import pandas as pd

    from ops_platform.finops.attribution import KINDS, NOT_FINAL_WEIGHT, RULE_WEIGHT, UNALLOCATED

    window = pd.Timedelta(days=2)
    pending: dict = {}  # utc_date -> frames of its events read so far
    done, late = [], []
    as_of = None  # the last day an event arrived

    def close(day) -> None:
        ev = pd.concat(pending.pop(day), ignore_index=True).drop_duplicates(["source", "id"], keep="first")
        done.append(ev.groupby(["utc_date", "subject", "meter"], as_index=False)["quantity"].sum())

    for folder in sorted((world / "landing" / "usage_events").glob("dt=*")):
        arrived = pd.Timestamp(folder.name[3:]).date()
        for f in sorted(folder.glob("*.parquet")):
            df = _pandas_events(f)
            as_of = arrived if len(df) else as_of
            on_time = df["utc_date"] + window >= arrived
            late.append(df[~on_time].assign(arrived=arrived))
            for day, part in df[on_time].groupby("utc_date"):
                pending.setdefault(day, []).append(part)
        for day in [d for d in pending if d + window <= arrived]:
            close(day)
    for day in sorted(pending):
        close(day)
    usage = pd.concat(done, ignore_index=True)
    corrections = (pd.concat(late, ignore_index=True).drop_duplicates(["source", "id"], keep="first")
                   .groupby(["utc_date", "subject", "meter", "arrived"], as_index=False)
                   .agg(quantity=("quantity", "sum"), events=("quantity", "size")))

    bill = pd.read_parquet(tmp / "billing.parquet")
    bill["utc_date"] = pd.to_datetime(bill["ChargePeriodStart"], utc=True).dt.date
    bill["micros"] = (bill["EffectiveCost"].map(lambda d: int(d * 1_000_000)))
    tags = bill["Tags"].map(json.loads)
    bill["tenant"] = tags.map(lambda t: t.get("tenant"))
    bill["service"] = tags.map(lambda t: t.get("service"))
    bill["pool"] = tags.map(lambda t: t.get("pool"))
    bill["kind"] = np.where(bill["tenant"].notna(), "direct", np.where(
        bill["service"] == "platform", "overhead", np.where(bill["pool"] == "warm", "idle", "serving")))
    direct = bill[bill["kind"] == "direct"].groupby(["utc_date", "tenant", "kind"], as_index=False)["micros"].sum()
    shared = bill[bill["kind"] != "direct"]
    pool_keys = ["utc_date", "service", "kind"]
    pools = shared.groupby(pool_keys, as_index=False, dropna=False)["micros"].sum()
    services = pd.read_parquet(tmp / "services.parquet")
    meter_of = dict(zip(services["service"], services["meter"], strict=True)) | {"platform": "api_calls"}
    pools["meter"] = pools["service"].map(meter_of)
    w = pools.merge(usage, on=["utc_date", "meter"])
    w = w[w["quantity"] > 0]
    w["share"] = w["quantity"] / w.groupby(pool_keys)["quantity"].transform("sum")
    exact = w["micros"] * w["share"]
    w["alloc"] = np.floor(exact).astype("int64")
    w["frac"] = exact - w["alloc"]
    w["left"] = w["micros"] - w.groupby(pool_keys)["alloc"].transform("sum")
    w = w.sort_values([*pool_keys, "frac", "subject"], ascending=[True, True, True, False, False])
    w["rank"] = w.groupby(pool_keys).cumcount() + 1
    w["alloc"] += (w["rank"] <= w["left"]).astype("int64")
    shares = w.groupby(["utc_date", "subject", "kind"], as_index=False)["alloc"].sum().rename(
        columns={"subject": "tenant", "alloc": "micros"})
    # A pool whose meter saw no usage (or without a service) is the unallocated line.
    placed = w.groupby(pool_keys, as_index=False)["alloc"].sum()
    left = pools.merge(placed, on=pool_keys, how="left")
    left["micros"] -= left["alloc"].fillna(0).astype("int64")
    left = left[left["micros"] != 0].assign(tenant=UNALLOCATED)
    parts = pd.concat([direct, shares, left[["utc_date", "tenant", "kind", "micros"]]], ignore_index=True)
    wide = (parts.pivot_table(index=["utc_date", "tenant"], columns="kind", values="micros", aggfunc="sum",
                              fill_value=0).reindex(columns=list(KINDS), fill_value=0))
    wide.columns = [f"{k}_micros" for k in KINDS]
    wide = wide.reset_index()
    wide["total_micros"] = wide[[f"{k}_micros" for k in KINDS]].sum(axis=1)

    # Confidence: the evidence share of each tenant-day, times the day's source factor.
    days = bill.groupby("utc_date", as_index=False).agg(billed_micros=("micros", "sum"))
    usage_days = set(usage["utc_date"])
    days["source_factor"] = [1.0 if d in usage_days and d + window < as_of else NOT_FINAL_WEIGHT
                             for d in days["utc_date"]]
    wide = wide.merge(days[["utc_date", "source_factor"]], on="utc_date", how="left")
    evidence = (wide["direct_micros"] + wide["serving_micros"]
                + RULE_WEIGHT * (wide["idle_micros"] + wide["overhead_micros"]))
    total = wide["total_micros"]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = (evidence / total).clip(0.0, 1.0) * wide["source_factor"]
    wide["confidence"] = np.where(wide["tenant"] == UNALLOCATED, 0.0,
                                  np.where(total != 0, share, wide["source_factor"]))
    wide["weighted"] = wide["confidence"] * total.abs()
    wide["size"] = total.abs()
    wide["unallocated"] = np.where(wide["tenant"] == UNALLOCATED, total, 0)
    wide["tenants"] = (wide["tenant"] != UNALLOCATED).astype("int64")
    per_day = wide.groupby("utc_date", as_index=False).agg(
        attributed_micros=("total_micros", "sum"), unallocated_micros=("unallocated", "sum"),
        weighted=("weighted", "sum"), size=("size", "sum"), tenants=("tenants", "sum"))
    day = days.merge(per_day, on="utc_date", how="left")
    day["confidence"] = (day["weighted"] / day["size"]).fillna(day["source_factor"])

    # Reconciliation: shared cost per service and day against its meter's usage.
    # Per service: the shared cost its meter drives, its tenant-tagged cost, and both.
    cost = (bill.assign(idle=np.where(bill["kind"] == "idle", bill["micros"], 0),
                        direct=np.where(bill["kind"] == "direct", bill["micros"], 0),
                        shared=np.where(bill["kind"] != "direct", bill["micros"], 0))
            .groupby(["utc_date", "service"], as_index=False, dropna=False)
            .agg(cost_micros=("shared", "sum"), idle_micros=("idle", "sum"), direct_micros=("direct", "sum"),
                 total_micros=("micros", "sum")))
    cost["meter"] = cost["service"].map(meter_of)
    metered = usage.groupby(["utc_date", "meter"], as_index=False)["quantity"].sum()
    unexplained = (left.groupby(["utc_date", "service"], as_index=False, dropna=False)["micros"].sum()
                   .rename(columns={"micros": "unexplained_micros"}))
    rec = (cost.merge(metered, on=["utc_date", "meter"], how="left")
           .merge(unexplained, on=["utc_date", "service"], how="left"))
    rec["quantity"] = rec["quantity"].where(rec["meter"].isna(), rec["quantity"].fillna(0.0))  # no meter, no quantity
    rec["unexplained_micros"] = rec["unexplained_micros"].fillna(0).astype("int64")
    rec["unit_cost_usd"] = np.where(rec["quantity"] > 0, rec["cost_micros"] / 1e6 / rec["quantity"], np.nan)
    rec["loaded_unit_cost_usd"] = np.where(rec["quantity"] > 0, rec["total_micros"] / 1e6 / rec["quantity"], np.nan)

    wide = wide.rename(columns={"tenant": "tenant_id"})
    return {"tenant_day": pl.from_pandas(wide[["utc_date", "tenant_id", *(f"{k}_micros" for k in KINDS),
                                               "total_micros", "confidence"]]),
            "day": pl.from_pandas(day[["utc_date", "billed_micros", "attributed_micros", "unallocated_micros",
                                       "tenants", "confidence"]]),
            "reconciliation": pl.from_pandas(rec[["utc_date", "service", "meter", "cost_micros", "idle_micros",
                                                  "direct_micros", "total_micros", "quantity",
                                                  "unexplained_micros", "unit_cost_usd", "loaded_unit_cost_usd"]]),
            "corrections": pl.from_pandas(corrections.rename(columns={"subject": "tenant_id"}))}


# What both implementations must agree on: (keys, columns equal exactly, float columns
# equal to a relative 1e-9: sums of floats in another order differ in the last bits).
OUTPUTS = {
    "tenant_day": (["utc_date", "tenant_id"],
                   ["direct_micros", "serving_micros", "idle_micros", "overhead_micros", "total_micros"],
                   ["confidence"]),
    "day": (["utc_date"], ["billed_micros", "attributed_micros", "unallocated_micros", "tenants"], ["confidence"]),
    "reconciliation": (["utc_date", "service"], ["meter", "cost_micros", "idle_micros", "direct_micros",
                                                 "total_micros", "unexplained_micros"],
                       ["quantity", "unit_cost_usd", "loaded_unit_cost_usd"]),
    "corrections": (["utc_date", "tenant_id", "meter", "arrived"], ["events"], ["quantity"]),
}


def _differences(tmp: Path) -> list[str]:
    """Where ours and pandas disagree, output by output (empty: they agree)."""
    found = []
    for name, (keys, exact, approx) in OUTPUTS.items():
        a, b = (pl.read_parquet(tmp / f"{impl}_{name}.parquet") for impl in ("ours", "pandas"))
        cols = [*exact, *approx]
        a = a.select(*keys, *(pl.col(c).cast(pl.Float64) if c in approx else pl.col(c) for c in cols))
        b = b.select(*keys, *(pl.col(c).cast(a.schema[c]) for c in cols))
        a = a.with_columns(pl.col(k).cast(b.schema[k]) for k in keys)
        both = a.join(b, on=keys, how="full", coalesce=True, suffix="_pandas", nulls_equal=True)
        if both.height != a.height or both.height != b.height:
            found.append(f"{name}: {a.height} rows in ours, {b.height} in pandas, {both.height} together")
            continue
        for c in exact:
            bad = both.filter(pl.col(c).ne_missing(pl.col(f"{c}_pandas")))
            if bad.height:
                found.append(f"{name}.{c}: {bad.height} rows differ, e.g. {bad.row(0, named=True)}")
        for c in approx:
            x, y = pl.col(c), pl.col(f"{c}_pandas")
            off = (x - y).abs() > 1e-9 * pl.max_horizontal(x.abs(), y.abs(), pl.lit(1e-300))
            bad = both.filter(off.fill_null(x.is_null() != y.is_null()))
            if bad.height:
                found.append(f"{name}.{c}: {bad.height} rows differ, e.g. {bad.row(0, named=True)}")
    return found


def _child(impl: str, world: Path, tmp: Path) -> None:
    t0 = time.perf_counter()
    outputs = (run_ours if impl == "ours" else run_pandas)(world, tmp)
    wall = time.perf_counter() - t0
    for name, frame in outputs.items():
        frame.write_parquet(tmp / f"{impl}_{name}.parquet")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"impl": impl, "wall_s": round(wall, 2), "peak_rss_gib": round(peak, 2),
                      "tenant_days": outputs["tenant_day"].height}))


def _read_through(folder: Path) -> None:
    """Read every file under ``folder`` once, so the runs find them in the page cache."""
    for path in sorted(folder.rglob("*.parquet")):
        with path.open("rb") as fh:
            while fh.read(1 << 24):
                pass


def _run(impl: str, world: Path, tmp: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", impl, "--world", str(world), "--tmp", str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"impl": impl, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", choices=("ours", "pandas"), help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.world, args.tmp)
        return 0
    manifest = json.loads((args.world / "manifest.json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench_finops_") as name:
        tmp = Path(name)
        t0 = time.perf_counter()
        _billing_and_services(args.world, tmp)
        prep = time.perf_counter() - t0
        _read_through(args.world / "landing" / "usage_events")
        results = [_run("ours", args.world, tmp)]
        if not args.skip_pandas:
            results.append(_run("pandas", args.world, tmp))
            results.append(_run("ours", args.world, tmp))
        differences = None
        if all("error" not in r for r in results) and len(results) > 1:
            differences = _differences(tmp)
    facts = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
             "world": str(args.world), "config": manifest.get("config"), "billing_prep_s": round(prep, 1)}
    print(json.dumps(facts, default=str))
    for r in results:
        print(json.dumps(r))
    if differences is not None:
        before, pandas, after = results
        ours = {"wall_s": round((before["wall_s"] + after["wall_s"]) / 2, 2),
                "peak_rss_gib": max(before["peak_rss_gib"], after["peak_rss_gib"])}
        ratio = pandas["wall_s"] / ours["wall_s"]
        print(f"the same {', '.join(OUTPUTS)} (money to the micro-dollar): {not differences}")
        for d in differences:
            print(f"  differs: {d}")
        print(f"ours {ours['wall_s']} s (mean of {before['wall_s']} s before pandas and {after['wall_s']} s after) / "
              f"{ours['peak_rss_gib']} GiB; pandas {pandas['wall_s']} s / "
              f"{pandas['peak_rss_gib']} GiB; ours {ratio:.1f}x faster (target {SPEEDUP_TARGET:g}x), "
              f"memory target < {MEMORY_TARGET_GIB:g} GiB: {'met' if ours['peak_rss_gib'] < MEMORY_TARGET_GIB else 'NOT met'}")
        if differences:
            return 1
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "results": results, "same": differences == [],
                                         "differences": differences}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
