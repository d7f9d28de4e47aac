"""The blip evaluation's world change: the simulator's own blips, errors added only inside each
blip, never removed."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ops_platform.world.catalog import SERVICES
from ops_platform.world.config import WorldConfig

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("eval_blips", ROOT / "benchmarks" / "eval_blips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blips_add_errors_inside_their_window_and_service_only(tmp_path):
    # A one-day world in UTC: its timeline starts at midnight, where the counters do.
    config = WorldConfig(days=1, tz="UTC", start_date=datetime(2026, 3, 1).date()).to_json()
    (tmp_path / "manifest.json").write_text(json.dumps({"config": config}))
    start, services = datetime(2026, 3, 1, tzinfo=UTC), [s.name for s in SERVICES]
    rows = [{"ts": start + timedelta(minutes=m), "service": s, "cohort": c, "build_id": f"{s}-1",
             "requests": 1000, "errors": 3} for m in range(1440) for s in services for c in ("canary", "general")]
    folder = tmp_path / "landing" / "request_counters" / "dt=2026-03-01"
    folder.mkdir(parents=True)
    before = pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    before.write_parquet(folder / "counters.parquet")
    blips = _module().add_more_blips(tmp_path, 3, np.random.default_rng(5))
    after = pl.read_parquet(folder / "counters.parquet")
    assert blips.height == 3 and blips["blip_id"].str.starts_with("extra-").all()  # apart from the world's own
    assert after.select("ts", "service", "cohort", "requests").equals(
        before.select("ts", "service", "cohort", "requests"))
    inside = pl.any_horizontal((pl.col("service") == b["service"]) & (pl.col("ts") >= b["start"])
                               & (pl.col("ts") < b["end"]) for b in blips.iter_rows(named=True))
    hit, rest = after.filter(inside), after.filter(~inside)
    assert (rest["errors"] == 3).all()  # nothing outside a blip moves
    assert hit.height and (hit["errors"] >= 150).all()  # 20-40% of 1,000 requests, on every build and cohort
