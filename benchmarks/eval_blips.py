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
from pathlib import Path

import numpy as np
import polars as pl

from ops_platform.world.config import WorldConfig
from ops_platform.world.timeline import Timeline
from ops_platform.world.traffic import add_blips, generate_blips

ALERT_FIGURES = ("alerts", "false_alerts", "caught", "events")
# A freeze holds every ramp of the platform: one a blip causes is as false as a pause.
RAMP_FIGURES = ("caught_before_general", "false_pauses", "median_minutes_to_pause", "blast_radius_bad_requests",
                "freezes", "freezes_during_true_incident")


def add_more_blips(world: Path, per_day: int, rng: np.random.Generator) -> pl.DataFrame:
    """Add ``per_day`` blips a day to the request counters of ``world`` (in place), drawn and
    applied as the simulator draws and applies its own; return them as its truth lists them."""
    tl = Timeline.build(WorldConfig.from_json(json.loads((world / "manifest.json").read_text())["config"]))
    blips = generate_blips(tl, per_day, rng).with_columns(pl.col("blip_id").str.replace("blip-", "extra-"))
    start_ms = int(tl.start.timestamp() * 1000)
    for path in sorted((world / "landing" / "request_counters").glob("dt=*/*.parquet")):
        counters = pl.read_parquet(path)
        errors = counters["errors"].to_numpy().copy()
        minute = (counters["ts"].dt.epoch("ms").to_numpy() - start_ms) // 60_000
        add_blips(blips, counters["service"].to_numpy(), minute, counters["requests"].to_numpy(), errors, rng)
        counters.with_columns(pl.Series("errors", errors)).write_parquet(path)
    at = {e: (pl.col(f"{e}_min") * 60_000 + start_ms).cast(pl.Datetime("ms", "UTC")) for e in ("start", "end")}
    return blips.with_columns(**at)


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
        blips = add_more_blips(copy, args.per_day, np.random.default_rng(args.seed))
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
