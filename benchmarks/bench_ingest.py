"""Raw ingestion throughput (rows/s) at a preset, against a no-validation baseline.

For every landing source and every daily partition: read, normalise, validate with Great
Expectations, quarantine, deduplicate, and write to DuckDB, exactly as the raw assets do.
The baseline, in the same run, is DuckDB copying the same Parquet files into tables with
no validation at all; the ratio is the price of the data contracts.

    python benchmarks/bench_ingest.py --preset M [--world DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb

from ops_platform.contracts.definitions import CONTRACTS
from ops_platform.ingest.landing import LandingZoneReader
from ops_platform.ingest.partitioning import PartitionSpace
from ops_platform.ingest.pipeline import ingest_partition
from ops_platform.warehouse import Warehouse
from ops_platform.world import WorldConfig, generate_world, load_manifest, preset, world_exists


def ingest_all(world: Path, wh_path: Path) -> tuple[int, float]:
    cfg = WorldConfig.from_json(load_manifest(world)["config"])
    keys = [(cfg.start_date + timedelta(days=i)).isoformat() for i in range(cfg.days)]
    space = PartitionSpace.from_keys(keys[0], keys[-1], cfg.tz)
    reader = LandingZoneReader(world / "landing")
    wh = Warehouse(wh_path)
    rows = 0
    t0 = time.perf_counter()
    for table, contract in CONTRACTS.items():
        t1 = time.perf_counter()
        n = 0
        for key in ([None] if contract.partition_rule == "static" else keys):
            res = ingest_partition(contract, reader, space, key)
            wh.replace_partition(table, key, res.accepted, res.quarantine)
            n += res.accepted.height + res.quarantine.height + res.duplicates_removed
        rows += n
        print(f"  {table:18s} {n:>12,} rows {time.perf_counter() - t1:7.1f}s", flush=True)
    return rows, time.perf_counter() - t0


def baseline_copy(world: Path, wh_path: Path) -> tuple[int, float]:
    con = duckdb.connect(str(wh_path))
    rows = 0
    t0 = time.perf_counter()
    for table in CONTRACTS:
        files = sorted(str(p) for p in (world / "landing").rglob("*.parquet")
                       if table in p.parts or p.stem == table)
        if not files:
            continue
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_parquet(?, union_by_name=true)", [files])
        rows += con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    con.close()
    return rows, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="M")
    ap.add_argument("--world", type=Path, default=None, help="reuse an existing world folder")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = args.world or Path(tmp) / "world"
        if not world_exists(world):
            print(f"generating preset {args.preset} ...", flush=True)
            generate_world(preset(args.preset), world)
        base_rows, base_s = baseline_copy(world, Path(tmp) / "baseline.duckdb")
        print(f"baseline (DuckDB copy, no validation): {base_rows:,} rows in {base_s:.1f}s", flush=True)
        rows, secs = ingest_all(world, Path(tmp) / "wh.duckdb")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {"preset": args.preset, "rows": rows, "seconds": secs, "rows_per_second": rows / secs,
              "baseline_rows_per_second": base_rows / base_s, "ratio_to_baseline": (rows / secs) / (base_rows / base_s),
              "peak_rss_gib": peak}
    print(f"ingestion: {rows:,} rows in {secs:.1f}s = {rows / secs:,.0f} rows/s; "
          f"baseline {base_rows / base_s:,.0f} rows/s; ratio {result['ratio_to_baseline']:.3f}; peak {peak:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
