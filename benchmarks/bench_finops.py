"""Attribution and reconciliation of a world's month: ours (DuckDB + polars) vs straightforward pandas.

Both read the same inputs: every usage event of the landing zone (CloudEvents Parquet,
deduplicated on (source, id), summed per UTC day, tenant and meter) and the billing rows the
FOCUS contract accepted (loaded once beforehand, not timed), then attribute every cost row
to tenants (direct, usage-weighted serving and idle, overhead by API calls, largest
remainder in micro-dollars) and reconcile per service and day. The world bills daily lines
only; ours also reads each line's period (a charge over several days is amortized), pandas
books each line on its start day. Each implementation runs in its own process, so its peak
RSS is its own. The outputs are compared: the same tenant-day totals, to the micro-dollar,
or the run fails.

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
                  "WHERE specversion = '1.0' AND subject IS NOT NULL AND data.quantity >= 0 "
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


def run_ours(world: Path, tmp: Path) -> pl.DataFrame:
    import duckdb

    from ops_platform.finops.attribution import attribute
    from ops_platform.finops.usage import usage_from

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")  # spill rather than grow past the budget
    glob = str(world / "landing" / "usage_events" / "*" / "*.parquet")
    usage, _, _ = usage_from(con, f"read_parquet('{glob}', hive_partitioning = true)", LANDING_EVENTS)
    billing = pl.read_parquet(tmp / "billing.parquet")
    result = attribute(billing, usage, pl.read_parquet(tmp / "services.parquet"))
    return result.tenant_day.select("utc_date", "tenant_id", "total_micros")


def _pandas_events(path: Path):
    """One landing file's events as pandas rows, with the usage contract's row rules."""
    import pandas as pd

    df = pd.read_parquet(path, columns=["specversion", "source", "id", "subject", "time", "data"])
    df["meter"] = [d["meter"] for d in df["data"]]
    df["quantity"] = [d["quantity"] for d in df["data"]]
    df["ts"] = pd.to_datetime(df["time"], utc=True, errors="coerce", format="ISO8601")
    ok = ((df["specversion"] == "1.0") & df["subject"].notna() & (df["quantity"] >= 0)
          & df["meter"].isin(METERS) & df["ts"].notna())
    df = df[ok].drop(columns=["data", "specversion", "time"])
    df["utc_date"] = df["ts"].dt.date
    return df


def run_pandas(world: Path, tmp: Path) -> pl.DataFrame:
    """What a careful analyst would write in pandas: load, dedup, group, merge, allocate.

    Loading a month of L events in one frame needs about ten times the memory of a month at
    M (7 GiB there), more than this machine has, so events are read one arrival day at a
    time and each usage day is summed once no later file can count in it (files arrive in
    order, and an event that arrives after T+2 is a correction, not usage).
    """
    import numpy as np
    import pandas as pd

    pending: dict = {}  # utc_date -> frames of its events read so far
    done = []

    def close(day) -> None:
        ev = pd.concat(pending.pop(day), ignore_index=True).drop_duplicates(["source", "id"], keep="first")
        done.append(ev.groupby(["utc_date", "subject", "meter"], as_index=False)["quantity"].sum())

    days = sorted((world / "landing" / "usage_events").glob("dt=*"))
    for folder in days:
        arrived = pd.Timestamp(folder.name[3:]).date()
        for f in sorted(folder.glob("*.parquet")):
            df = _pandas_events(f)
            df = df[df["utc_date"] + pd.Timedelta(days=2) >= arrived]  # later: a correction
            for day, part in df.groupby("utc_date"):
                pending.setdefault(day, []).append(part)
        for day in [d for d in pending if d + pd.Timedelta(days=2) <= arrived]:
            close(day)
    for day in sorted(pending):
        close(day)
    usage = pd.concat(done, ignore_index=True)

    bill = pd.read_parquet(tmp / "billing.parquet")
    bill["utc_date"] = pd.to_datetime(bill["ChargePeriodStart"], utc=True).dt.date
    bill["micros"] = (bill["EffectiveCost"].map(lambda d: int(d * 1_000_000)))
    tags = bill["Tags"].map(json.loads)
    bill["tenant"] = tags.map(lambda t: t.get("tenant"))
    bill["service"] = tags.map(lambda t: t.get("service"))
    bill["pool"] = tags.map(lambda t: t.get("pool"))
    direct = bill[bill["tenant"].notna()].groupby(["utc_date", "tenant"], as_index=False)["micros"].sum()
    shared = bill[bill["tenant"].isna()].copy()
    shared["kind"] = np.where(shared["service"] == "platform", "overhead",
                              np.where(shared["pool"] == "warm", "idle", "serving"))
    pools = shared.groupby(["utc_date", "service", "kind"], as_index=False)["micros"].sum()
    services = pd.read_parquet(tmp / "services.parquet")
    meter_of = dict(zip(services["service"], services["meter"], strict=True)) | {"platform": "api_calls"}
    pools["meter"] = pools["service"].map(meter_of)
    w = pools.merge(usage, on=["utc_date", "meter"])
    w = w[w["quantity"] > 0]
    w["share"] = w["quantity"] / w.groupby(["utc_date", "service", "kind"])["quantity"].transform("sum")
    exact = w["micros"] * w["share"]
    w["alloc"] = np.floor(exact).astype("int64")
    w["frac"] = exact - w["alloc"]
    w["left"] = w["micros"] - w.groupby(["utc_date", "service", "kind"])["alloc"].transform("sum")
    w = w.sort_values(["utc_date", "service", "kind", "frac", "subject"], ascending=[True, True, True, False, False])
    w["rank"] = w.groupby(["utc_date", "service", "kind"]).cumcount() + 1
    w["alloc"] += (w["rank"] <= w["left"]).astype("int64")
    shares = w.groupby(["utc_date", "subject"], as_index=False)["alloc"].sum().rename(
        columns={"subject": "tenant", "alloc": "micros"})
    total = pd.concat([direct, shares]).groupby(["utc_date", "tenant"], as_index=False)["micros"].sum()
    return pl.from_pandas(total.rename(columns={"tenant": "tenant_id", "micros": "total_micros"}))


def _child(impl: str, world: Path, tmp: Path) -> None:
    t0 = time.perf_counter()
    out = (run_ours if impl == "ours" else run_pandas)(world, tmp)
    wall = time.perf_counter() - t0
    out.write_parquet(tmp / f"{impl}.parquet")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"impl": impl, "wall_s": round(wall, 2), "peak_rss_gib": round(peak, 2), "rows": out.height}))


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
        results = [_run("ours", args.world, tmp)]
        if not args.skip_pandas:
            results.append(_run("pandas", args.world, tmp))
        same = None
        if all("error" not in r for r in results) and len(results) == 2:
            a = pl.read_parquet(tmp / "ours.parquet").filter(pl.col("tenant_id") != "(unallocated)")
            b = pl.read_parquet(tmp / "pandas.parquet")
            keys = ["utc_date", "tenant_id"]
            same = a.sort(keys).select(keys + ["total_micros"]).equals(b.sort(keys).select(keys + ["total_micros"]))
    facts = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
             "world": str(args.world), "config": manifest.get("config"), "billing_prep_s": round(prep, 1)}
    print(json.dumps(facts, default=str))
    for r in results:
        print(json.dumps(r))
    if same is not None:
        ours, pandas = results
        ratio = pandas["wall_s"] / ours["wall_s"]
        print(f"same tenant-day totals to the micro-dollar: {same}")
        print(f"ours {ours['wall_s']} s / {ours['peak_rss_gib']} GiB; pandas {pandas['wall_s']} s / "
              f"{pandas['peak_rss_gib']} GiB; ours {ratio:.1f}x faster (target {SPEEDUP_TARGET:g}x), "
              f"memory target < {MEMORY_TARGET_GIB:g} GiB: {'met' if ours['peak_rss_gib'] < MEMORY_TARGET_GIB else 'NOT met'}")
        if not same:
            return 1
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "results": results, "same": same}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
