"""World generation throughput and peak memory per preset.

Each preset runs in a fresh child process so its peak RSS is its own. The baseline, in the
same run, is DuckDB rewriting the generated landing zone (read + write the same rows to
Parquet): the ratio says how much generation costs over plain columnar I/O. Usage:

    python benchmarks/bench_world.py S M L [--out DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
from ops_platform.world import generate_world, preset
t0 = time.perf_counter()
s = generate_world(preset(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": sum(s.rows.values()), "by_table": s.rows}))
"""


def run(preset: str, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, preset, str(out)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"preset {preset} failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(preset=preset, wall_seconds=wall, peak_rss_gib=max(peak_kib, before) / 2**20,
               rows_per_second=res["rows"] / res["seconds"])
    return res


def baseline_rewrite(world: Path) -> float:
    """Seconds for DuckDB to read every landing Parquet file and write it back out."""
    import duckdb

    con = duckdb.connect()
    t0 = time.perf_counter()
    for folder in sorted(p for p in (world / "landing").iterdir() if p.is_dir()):
        files = sorted(str(f) for f in folder.rglob("*.parquet"))
        if files:
            out = world.parent / f"rewrite-{folder.name}.parquet"
            con.execute(f"COPY (SELECT * FROM read_parquet({files!r}, union_by_name=true)) TO '{out}' "
                        "(FORMAT parquet, COMPRESSION zstd)")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    for p in args.presets:
        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            r = run(p, Path(tmp) / "world")
            r["baseline_rewrite_seconds"] = baseline_rewrite(Path(tmp) / "world")
        r["ratio_to_rewrite"] = r["seconds"] / r["baseline_rewrite_seconds"]
        results.append(r)
        print(f"{p}: {r['rows']:,} rows in {r['seconds']:.1f}s ({r['rows_per_second']:,.0f} rows/s), "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB; DuckDB rewrite of the output {r['baseline_rewrite_seconds']:.1f}s "
              f"(generation = {r['ratio_to_rewrite']:.2f}x rewrite)", flush=True)
    machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": __import__("os").cpu_count()}
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
