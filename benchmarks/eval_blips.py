"""How the burn alerts and the ramp policies take benign error blips, scored on a world's truth.

A copy of the world gets short, sharp error bursts that are no incident (a deploy hiccup, a
garbage-collection pause: 1-2 minutes at 20-40% errors on every build and cohort of one
service). A single-window alert would page on them; a multi-window one should not, and no ramp
policy should pause a candidate for what its stable build suffers too, nor freeze every ramp. `ops-platform backtest
alerts` and `backtest ramps` then run on the world and on its copy, and the figures that moved
are printed. The blips are added to the copy's `truth/blips.parquet` (beside the world's own,
4 a day by default); they are in no truth table the scoring reads, so an alert or a pause
they cause counts as having no cause.

    python benchmarks/eval_blips.py --world .ops_platform/world [--per-day 4] [--seed 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

ALERT_FIGURES = ("alerts", "false_alerts", "caught", "events")
# A freeze holds every ramp of the platform: one a blip causes is as false as a pause.
RAMP_FIGURES = ("caught_before_general", "false_pauses", "median_minutes_to_pause", "blast_radius_bad_requests",
                "freezes", "freezes_during_true_incident")


def add_blips(world: Path, per_day: int, rng: np.random.Generator) -> pl.DataFrame:
    """Add ``per_day`` blips to each day's request counters of ``world`` (in place); return them."""
    blips = []
    for path in sorted((world / "landing" / "request_counters").glob("dt=*/*.parquet")):
        counters = pl.read_parquet(path)
        if not counters.height:
            continue
        services = sorted(counters["service"].unique().to_list())
        first, last = counters["ts"].min(), counters["ts"].max()
        minutes = int((last - first).total_seconds() // 60)
        today = []
        for _ in range(per_day):
            start = first + timedelta(minutes=int(rng.integers(0, max(1, minutes - 2))))
            today.append({"service": services[int(rng.integers(0, len(services)))], "start": start,
                          "end": start + timedelta(minutes=int(rng.integers(1, 3))),
                          "error_rate": round(float(rng.uniform(0.2, 0.4)), 3)})
        blips += today
        hit = pl.lit(None, pl.Float64)
        for b in today:
            inside = (pl.col("service") == b["service"]) & (pl.col("ts") >= b["start"]) & (pl.col("ts") < b["end"])
            hit = pl.when(inside).then(pl.lit(b["error_rate"])).otherwise(hit)
        rate = counters.select(hit.alias("r"))["r"].to_numpy()
        burst = np.where(np.isnan(rate), 0, rng.binomial(counters["requests"].to_numpy(), np.nan_to_num(rate)))
        counters.with_columns(pl.max_horizontal(pl.col("errors"), pl.Series(burst)).alias("errors")).write_parquet(path)
    return pl.DataFrame(blips)


def backtest(kind: str, world: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "ops_platform", "backtest", kind, "--world", str(world), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--per-day", type=int, default=4, help="blips added to each day (default 4)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="blips_") as tmp:
        copy = Path(tmp) / "world"
        shutil.copytree(args.world, copy)
        blips = add_blips(copy, args.per_day, np.random.default_rng(args.seed))
        own = copy / "truth" / "blips.parquet"  # a world's own blips, if it has any, stay listed
        listed = pl.concat([pl.read_parquet(own), blips], how="diagonal_relaxed") if own.exists() else blips
        listed.write_parquet(own)
        result = {"blips": blips.height, "alerts": {}, "ramps": {}}
        # Alerts: the per-tier totals over every SLO (key "all"); ramps: per policy.
        for kind, figures, pick in (("alerts", ALERT_FIGURES, lambda r: r["all"]), ("ramps", RAMP_FIGURES, lambda r: r)):
            before, after = pick(backtest(kind, args.world)), pick(backtest(kind, copy))
            result[kind] = {name: {f: [row.get(f), after[name].get(f)] for f in figures} for name, row in before.items()}
    print(f"{result['blips']} blips added ({args.per_day} a day, seed {args.seed}); each figure: without -> with")
    for kind in ("alerts", "ramps"):
        for name, figures in result[kind].items():
            print(f"  {kind:6s} {name:16s} " + ", ".join(f"{f} {a} -> {b}" for f, (a, b) in figures.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
