"""Usage (metering) events as CloudEvents, with the mess real pipelines see.

Events are generated per local day, then routed to landing files by the UTC date they
*arrive*: most within seconds, some late by hours or days. Some are re-delivered
(duplicates with the same source and id) and a few are malformed; the truth folder
lists every malformed id and the true usage behind the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ..files import write_parquet
from ..timezones import local_day_bounds
from .catalog import METERS, SERVICES
from .config import WorldConfig
from .timeline import diurnal_weight

EVENT_TYPE = "com.summit.usage.recorded.v1"
METER_SERVICE = {s.meter: s.name for s in SERVICES} | {"storage_gb_hours": "storage"}
METER_SCALE = {"api_calls": 2000.0, "graph_queries": 300.0, "policy_decisions": 3000.0, "receipts_issued": 400.0,
               "metered_events": 2000.0, "switchboard_actions": 5.0, "storage_gb_hours": 40.0}
MALFORMED_KINDS = ("missing_subject", "negative_quantity", "bad_time", "unknown_meter", "bad_specversion")


@dataclass
class UsageResult:
    true_usage: pl.DataFrame  # utc_date, tenant_id, meter, quantity
    malformed: pl.DataFrame  # truth: source, record_id, reason, file
    anomalies: pl.DataFrame  # truth: tenant usage spikes
    rows_written: int = 0
    files: list[Path] = field(default_factory=list)


def meter_mix(n_tenants: int, rng: np.random.Generator) -> np.ndarray:
    """Per-tenant probability of each meter per event (Dirichlet around service shares)."""
    base = np.array([s.traffic_share for s in SERVICES] + [0.08])
    return rng.dirichlet(base * 40, size=n_tenants)


def plan_usage_anomalies(cfg: WorldConfig, tenants: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Runaway usage: one tenant's meter multiplied for one UTC day."""
    pool = np.arange(1, max(2, cfg.days - 1))
    days = rng.choice(pool, size=min(max(2, cfg.days // 4), len(pool)), replace=False)
    # Pick active tenants so the spike is material, as real runaway jobs are.
    act = tenants["activity"].to_numpy()
    candidates = np.argsort(-act)[: max(3, len(act) // 3)]
    rows = []
    for i, d in enumerate(sorted(days)):
        t = int(rng.choice(candidates))
        meter = METERS[int(rng.integers(0, len(METERS) - 1))]
        rows.append({"anomaly_id": f"anom-u{i + 1:02d}", "kind": "tenant_usage_spike",
                     "date": cfg.start_date + timedelta(days=int(d)),
                     "tenant_id": tenants["tenant_id"][t], "service": METER_SERVICE[meter], "meter": meter,
                     "factor": round(float(rng.uniform(6, 12)), 3)})
    return pl.DataFrame(rows)


def _as_metered(qty: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Quantities as a meter reports them: measured ones to 3 places, counts whole and at least 1."""
    return np.where(measured, np.round(qty, 3), np.maximum(1.0, np.round(qty)))


def generate_usage(cfg: WorldConfig, tenants: pl.DataFrame, landing: Path, rng: np.random.Generator,
                   progress: Callable[[int], None] | None = None) -> UsageResult:
    n_t = len(tenants)
    act = tenants["activity"].to_numpy()
    act = act / act.mean()
    mix_cum = np.cumsum(meter_mix(n_t, rng), axis=1)
    tenant_ids = tenants["tenant_id"].to_numpy().astype(str)
    regions = tenants["region"].to_numpy().astype(str)
    anomalies = plan_usage_anomalies(cfg, tenants, rng)
    meters = np.array(METERS)
    scale = np.array([METER_SCALE[m] for m in METERS])
    svc_of_meter = np.array([METER_SERVICE[m] for m in METERS])
    true_parts, malformed_parts = [], []
    rows_written, files = 0, []

    for d in range(cfg.days):
        day = cfg.start_date + timedelta(days=d)
        start, end = local_day_bounds(day, cfg.tz)
        n_hours = int((end - start).total_seconds() // 3600)
        weekly = 0.6 if day.weekday() >= 5 else 1.0
        counts = rng.poisson(cfg.events_per_tenant_day * act * weekly)
        t_idx = np.repeat(np.arange(n_t, dtype=np.int32), counts)
        n = len(t_idx)
        m_idx = (rng.random(n)[:, None] > mix_cum[t_idx]).sum(axis=1).clip(0, len(METERS) - 1)
        hw = diurnal_weight(np.arange(n_hours) + 0.5)
        hour = rng.choice(n_hours, size=n, p=hw / hw.sum())
        t_ms = int(start.timestamp() * 1000) + hour.astype(np.int64) * 3_600_000 + rng.integers(0, 3_600_000, n)
        qty = scale[m_idx] * rng.lognormal(0.0, 0.5, n)
        measured = m_idx == len(METERS) - 1  # storage GB-hours; every other meter counts whole things
        qty = _as_metered(qty, measured)
        utc_date = (t_ms // 86_400_000).astype(np.int64)
        for a in anomalies.iter_rows(named=True):
            a_day = (np.datetime64(a["date"]) - np.datetime64("1970-01-01")).astype(np.int64)
            ti = int(np.flatnonzero(tenant_ids == a["tenant_id"])[0])
            hit = (t_idx == ti) & (meters[m_idx] == a["meter"]) & (utc_date == a_day)
            qty[hit] = _as_metered(qty[hit] * a["factor"], measured[hit])

        order = rng.permutation(n)
        ids = pl.select(pl.format("ev-{}-{}", pl.lit(day.strftime("%Y%m%d")),
                                  pl.Series(order).cast(pl.String).str.zfill(8))).to_series()
        delay = rng.exponential(30_000, n).astype(np.int64)
        late = rng.random(n) < cfg.late_rate
        delay[late] = rng.integers(2 * 3_600_000, 47 * 3_600_000, int(late.sum()))
        frame = pl.DataFrame({
            "id": ids,
            "source": pl.select(pl.format("//summit/{}/{}", pl.Series(regions[t_idx]),
                                          pl.Series(svc_of_meter[m_idx]))).to_series(),
            "t_ms": t_ms, "arrival_ms": t_ms + delay,
            "subject": tenant_ids[t_idx], "meter": meters[m_idx], "quantity": qty,
        })
        # Aggregate on integer codes: string views of a group-by result would keep the whole
        # day's string buffers alive, and memory would grow day after day.
        true_parts.append(pl.DataFrame({"utc_day": utc_date, "t": t_idx, "m": m_idx.astype(np.int8), "q": qty})
                          .group_by(["utc_day", "t", "m"]).agg(pl.col("q").sum()))

        # Re-deliveries: the same event again, a little later.
        dup = rng.random(n) < cfg.duplicate_rate
        dups = frame.filter(pl.Series(dup)).with_columns(
            pl.col("arrival_ms") + pl.Series(rng.exponential(600_000, int(dup.sum())).astype(np.int64)))
        # Malformed records, chosen among events that are not re-delivered.
        bad = (rng.random(n) < cfg.malformed_rate) & ~dup
        kinds = np.array(MALFORMED_KINDS)[rng.integers(0, len(MALFORMED_KINDS), n)]
        kind = pl.Series("kind", np.where(bad, kinds, ""))
        frame = pl.concat([frame.with_columns(kind), dups.with_columns(pl.lit("").alias("kind"))])
        ts_str = pl.col("t_ms").cast(pl.Datetime("ms", "UTC")).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ")
        k = pl.col("kind")
        events = frame.with_columns(
            pl.when(k == "bad_specversion").then(pl.lit("0.3")).otherwise(pl.lit("1.0")).alias("specversion"),
            pl.lit(EVENT_TYPE).alias("type"),
            pl.when(k == "bad_time").then(
                pl.format("{}T25:61:00Z", pl.col("t_ms").cast(pl.Datetime("ms", "UTC")).dt.to_string("%Y-%m-%d"))
            ).otherwise(ts_str).alias("time"),
            pl.when(k == "missing_subject").then(None).otherwise(pl.col("subject")).alias("subject"),
            pl.lit("application/json").alias("datacontenttype"),
            pl.struct(
                pl.when(k == "unknown_meter").then(pl.col("meter") + "_v0").otherwise(pl.col("meter")).alias("meter"),
                pl.when(k == "negative_quantity").then(-pl.col("quantity")).otherwise(pl.col("quantity"))
                .alias("quantity"),
            ).alias("data"),
            (pl.col("arrival_ms") // 86_400_000).alias("arrival_day"),
        )
        cols = ["specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"]
        for (arrival_day,), part in events.sort(["arrival_ms", "id"]).group_by(["arrival_day"], maintain_order=True):
            dt = (np.datetime64("1970-01-01") + np.timedelta64(int(arrival_day), "D")).astype(str)
            path = landing / "usage_events" / f"dt={dt}" / f"events-{day:%Y%m%d}.parquet"
            rows_written += write_parquet(part.select(cols), path)
            files.append(path)
            m = part.filter(pl.col("kind") != "")
            if len(m):  # rebuilt from Python values so no view pins the file's buffers
                malformed_parts.append(pl.DataFrame(m.select(
                    pl.lit("usage_events").alias("source_table"), pl.col("id").alias("record_id"),
                    pl.col("source").alias("event_source"), pl.col("kind").alias("reason"),
                    pl.lit(str(path.relative_to(landing))).alias("file")).to_dicts()))
        if progress:
            progress(len(events))

    true_usage = (pl.concat(true_parts).group_by(["utc_day", "t", "m"]).agg(pl.col("q").sum())
                  .select(pl.col("utc_day").cast(pl.Date).alias("utc_date"),
                          pl.col("t").replace_strict(list(range(n_t)), list(tenant_ids)).alias("tenant_id"),
                          pl.col("m").replace_strict(list(range(len(METERS))), list(METERS)).alias("meter"),
                          pl.col("q").alias("quantity"))
                  .sort(["utc_date", "tenant_id", "meter"]))
    malformed = pl.concat(malformed_parts) if malformed_parts else pl.DataFrame(
        schema={"source_table": pl.String, "record_id": pl.String, "event_source": pl.String,
                "reason": pl.String, "file": pl.String})
    return UsageResult(true_usage, malformed.sort(["record_id"]), anomalies, rows_written, files)
