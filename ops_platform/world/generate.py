"""Generate a whole Summit world: landing zone + truth folder + manifest."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..files import file_sha256, write_parquet, write_text
from .billing import generate_billing
from .catalog import price_list_frame, services_frame, tenants_frame
from .config import WorldConfig
from .releases import flags_json, generate_releases
from .timeline import Timeline
from .traffic import generate_traffic
from .usage import generate_usage

MANIFEST = "manifest.json"
# Raised whenever the simulator writes other bytes for the same config, so a state folder can
# tell a world made by an older simulator (whose figures differ) from one made by this one.
# 2: a runaway day's counts are whole (API calls, receipts). A manifest without it is 1.
# 3: benign error blips (truth/blips.parquet).
SIMULATOR_VERSION = 3
TRUTH_README = """# Truth folder

Ground truth for scoring the platform. The platform never reads this folder.

- incidents.parquet: scripted incidents (kind, service, [start_min, end_min) from world start).
- blips.parquet: benign error blips (service, [start_min, end_min), error_rate): 1-2 minutes
  on every build and cohort of one service; no incident, nothing to alert on or pause for.
- bad_builds.parquet: builds that raise error rate or latency on the cohorts they reach.
- tenant_daily_cost.parquet: true cost per tenant and UTC day: direct (tagged) cost, plus
  each service's serving and warm-pool cost split by the tenant's share of the service's
  meter, plus platform overhead split by share of API calls.
- true_usage.parquet: usage per UTC day, tenant and meter before duplication and corruption.
- cost_anomalies.parquet: injected tenant usage spikes and service capacity spikes.
- malformed_records.parquet: every malformed landing record (source_table, record_id, event_source, reason, file).
"""


@dataclass
class WorldSummary:
    out: Path
    config: WorldConfig
    rows: dict[str, int]


def progress_steps(cfg: WorldConfig) -> int:
    """How many times `generate_world` reports progress: five stages, each usage day, billing."""
    return 6 + cfg.days


def world_exists(out: Path) -> bool:
    return (out / MANIFEST).exists()


def older_simulator(out: Path) -> int | None:
    """The simulator version that made the world at `out` when older than this one's, else None."""
    made = load_manifest(out).get("simulator_version", 1)
    return made if made < SIMULATOR_VERSION else None


def load_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no world at {out} (missing {MANIFEST}); run `ops-platform world generate`")
    return json.loads(path.read_text())


def _write_by_utc_date(df: pl.DataFrame, ts_col: str, folder: Path, name: str) -> int:
    n = 0
    keyed = df.with_columns(pl.col(ts_col).dt.date().alias("_dt"))
    for (dt,), part in keyed.group_by(["_dt"], maintain_order=True):
        n += write_parquet(part.drop("_dt"), folder / f"dt={dt:%Y-%m-%d}" / name)
    return n


_WORLD_PARTS = ("landing", "truth", MANIFEST)


def generate_world(cfg: WorldConfig, out: Path, progress: Callable[[str, int], None] | None = None) -> WorldSummary:
    """Write landing/ and truth/ under ``out``; identical bytes for identical ``cfg``.

    The world is written beside ``out`` and swapped in once whole (a few renames): a run
    interrupted halfway leaves the world that was there, not half of each."""
    target = out.resolve()
    target.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.generating-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        summary = _generate(cfg, staging, progress)
        retired = target.parent / f".{target.name}.replaced-{os.getpid()}"
        retired.mkdir(exist_ok=True)
        for part in _WORLD_PARTS:
            if (target / part).exists():
                (target / part).rename(retired / part)
        for part in _WORLD_PARTS:
            (staging / part).rename(target / part)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return WorldSummary(out, summary.config, summary.rows)


def _generate(cfg: WorldConfig, out: Path, progress: Callable[[str, int], None] | None) -> WorldSummary:
    tick = progress or (lambda stage, n: None)
    landing, truth = out / "landing", out / "truth"
    rng = np.random.default_rng(cfg.seed)
    rows: dict[str, int] = {}

    tl = Timeline.build(cfg)
    tenants = tenants_frame(cfg, rng)
    rows["tenants"] = write_parquet(tenants.drop("activity"), landing / "catalog" / "tenants.parquet")
    rows["services"] = write_parquet(services_frame(), landing / "catalog" / "services.parquet")
    rows["price_list"] = write_parquet(price_list_frame(), landing / "catalog" / "price_list.parquet")
    tick("catalog", rows["tenants"])

    rel = generate_releases(tl, np.random.default_rng([cfg.seed, 1]))
    rows["builds"] = write_parquet(rel.builds, landing / "releases" / "builds.parquet")
    rows["ramp_steps"] = _write_by_utc_date(rel.ramp_steps, "started_at", landing / "ramp_steps", "steps.parquet")
    write_text(flags_json(rel.flags), landing / "flags" / "flags.flagd.json")
    tick("releases", rows["builds"])

    tr = generate_traffic(cfg, tl, rel, tenants, np.random.default_rng([cfg.seed, 2]))
    rows["request_counters"] = _write_by_utc_date(tr.counters, "ts", landing / "request_counters", "counters.parquet")
    tick("request_counters", rows["request_counters"])
    rows["latency_buckets"] = _write_by_utc_date(tr.latency_buckets, "ts", landing / "latency_buckets",
                                                 "buckets.parquet")
    tick("latency_buckets", rows["latency_buckets"])
    rows["lag_samples"] = _write_by_utc_date(tr.lag_samples, "ts", landing / "lag_samples", "lag.parquet")
    rows["tenant_slis"] = _write_by_utc_date(tr.tenant_slis, "hour", landing / "tenant_slis", "slis.parquet")
    tick("slis", rows["tenant_slis"])

    usage = generate_usage(cfg, tenants, landing, np.random.default_rng([cfg.seed, 3]),
                           progress=lambda n: tick("usage_events", n))
    rows["usage_events"] = usage.rows_written
    bill = generate_billing(cfg, tenants, usage.true_usage, landing, np.random.default_rng([cfg.seed, 4]))
    rows["billing_focus"] = bill.rows_written
    tick("billing_focus", bill.rows_written)

    start_ms = int(tl.start.timestamp() * 1000)
    # Minutes from the world's start, and the UTC times they stand for.
    at = {e: (pl.col(f"{e}_min") * 60_000 + start_ms).cast(pl.Datetime("ms", "UTC")) for e in ("start", "end")}
    write_parquet(tr.incidents.with_columns(**at), truth / "incidents.parquet")
    write_parquet(tr.blips.with_columns(**at), truth / "blips.parquet")
    write_parquet(rel.bad_builds, truth / "bad_builds.parquet")
    write_parquet(bill.tenant_daily_cost, truth / "tenant_daily_cost.parquet")
    write_parquet(usage.true_usage, truth / "true_usage.parquet")
    write_parquet(pl.concat([usage.anomalies, bill.anomalies], how="vertical_relaxed"),
                  truth / "cost_anomalies.parquet")
    write_parquet(pl.concat([usage.malformed, bill.malformed], how="vertical_relaxed").sort(
        ["source_table", "record_id"]), truth / "malformed_records.parquet")
    write_text(TRUTH_README, truth / "README.md")

    # Only what this run wrote: another file beside them would make the manifest's bytes differ.
    files = sorted(p for sub in (landing, truth) for p in sub.rglob("*") if p.is_file())
    manifest = {
        "config": cfg.to_json(),
        "simulator_version": SIMULATOR_VERSION,
        "start_utc": tl.start.isoformat(),
        "end_utc": tl.end.isoformat(),
        "rows": rows,
        "files": {str(p.relative_to(out)): file_sha256(p) for p in files},
    }
    write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", out / MANIFEST)
    return WorldSummary(out, cfg, rows)
