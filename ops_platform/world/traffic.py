"""Per-minute request/error counters, latency histograms, lag samples and tenant SLIs.

Counters follow Prometheus conventions: per-minute increases of `requests` and `errors`
and cumulative latency buckets (`le`, +Inf last) per service x cohort x build. Scripted
incidents and bad builds show up in these series exactly as the truth folder says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import ndtr

from .catalog import COHORT_WEIGHTS, COHORTS, LATENCY_BUCKETS, SERVICES
from .config import WorldConfig
from .releases import Releases
from .timeline import Timeline

BASE_ERROR_RATE = 0.0008
LATENCY_SIGMA = 0.55
PIPELINES = ("receipt", "approval", "metering")


@dataclass
class Traffic:
    counters: pl.DataFrame
    latency_buckets: pl.DataFrame
    lag_samples: pl.DataFrame
    tenant_slis: pl.DataFrame
    incidents: pl.DataFrame  # truth
    blips: pl.DataFrame  # truth


def generate_incidents(tl: Timeline, rng: np.random.Generator) -> pl.DataFrame:
    """Error spikes, latency regressions and receipt-pipeline stalls at random times."""
    n = max(3, tl.minutes // (3 * 1440))
    kinds = ["error_spike", "latency_regression", "receipt_stall"]
    rows = []
    for i in range(n):
        kind = kinds[i % 3]
        dur = int(rng.integers(15, 61))
        start = int(rng.integers(120, tl.minutes - dur - 120))
        service = "receipts" if kind == "receipt_stall" else SERVICES[int(rng.integers(0, len(SERVICES)))].name
        magnitude = {"error_spike": rng.uniform(0.03, 0.10), "latency_regression": rng.uniform(2.5, 4.0),
                     "receipt_stall": 1.0}[kind]
        rows.append({"incident_id": f"inc-{i + 1:03d}", "kind": kind, "service": service,
                     "start_min": start, "end_min": start + dur, "magnitude": round(float(magnitude), 4)})
    return pl.DataFrame(rows)


def generate_blips(tl: Timeline, per_day: int, rng: np.random.Generator) -> pl.DataFrame:
    """``per_day`` short error bursts a day on average (over the world's days, whatever DST
    makes of their length), at uniform times, each on every build and cohort of one service."""
    n = per_day * max(1, round(tl.minutes / 1440))
    start = rng.integers(0, tl.minutes - 2, n)
    frame = pl.DataFrame({
        "service": [SERVICES[int(i)].name for i in rng.integers(0, len(SERVICES), n)],
        "start_min": start.astype(np.int64), "end_min": (start + rng.integers(1, 3, n)).astype(np.int64),
        "error_rate": np.round(rng.uniform(0.2, 0.4, n), 3)}, schema_overrides={"service": pl.String})
    frame = frame.sort("start_min", "service")
    return frame.select(pl.format("blip-{}", pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(4)).alias("blip_id"),
                        pl.all())


def add_blips(blips: pl.DataFrame, svc: np.ndarray, minute: np.ndarray, requests: np.ndarray,
              errors: np.ndarray, rng: np.random.Generator) -> None:
    """Fail each request a blip covers that had not failed already with the blip's rate (in place).

    Its own generator: the counters of a world with blips differ from the same world's without
    them only inside the blips' minutes. ``benchmarks/eval_blips.py`` adds more with it."""
    for b in blips.iter_rows(named=True):
        hit = np.flatnonzero((svc == b["service"]) & (minute >= b["start_min"]) & (minute < b["end_min"]))
        errors[hit] += rng.binomial(requests[hit] - errors[hit], b["error_rate"])


def _expand_segments(segments: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(segment index, minute) for every minute each segment covers, vectorised."""
    start = segments["start_min"].to_numpy()
    lengths = (segments["end_min"] - segments["start_min"]).to_numpy()
    seg_idx = np.repeat(np.arange(len(segments)), lengths)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    minute = start[seg_idx] + (np.arange(lengths.sum()) - offsets)
    return seg_idx, minute


def generate_traffic(cfg: WorldConfig, tl: Timeline, rel: Releases, tenants: pl.DataFrame,
                     rng: np.random.Generator) -> Traffic:
    incidents = generate_incidents(tl, rng)
    segs = rel.segments.sort(["service", "cohort", "start_min", "build_id"])
    seg_idx, minute = _expand_segments(segs)
    svc = segs["service"].to_numpy()[seg_idx]
    cohort = segs["cohort"].to_numpy()[seg_idx]
    build = segs["build_id"].to_numpy()[seg_idx]
    frac = segs["fraction"].to_numpy()[seg_idx]

    share = {s.name: s.traffic_share for s in SERVICES}
    cshare = dict(zip(COHORTS, COHORT_WEIGHTS, strict=True))
    total_rpm = cfg.tenants * cfg.requests_per_tenant_minute
    svc_share = np.vectorize(share.get, otypes=[float])(svc)
    coh_share = np.vectorize(cshare.get, otypes=[float])(cohort)
    season = tl.seasonality()[minute]
    lam = total_rpm * svc_share * coh_share * season * frac * rng.lognormal(0, 0.05, len(minute))
    requests = rng.poisson(lam).astype(np.int64)

    # Error probability and latency multiplier: baseline, incidents, bad builds.
    p_err = np.full(len(minute), BASE_ERROR_RATE) * rng.lognormal(0, 0.2, len(minute))
    lat_mult = np.ones(len(minute))
    for inc in incidents.iter_rows(named=True):
        hit = (svc == inc["service"]) & (minute >= inc["start_min"]) & (minute < inc["end_min"])
        if inc["kind"] == "error_spike":
            p_err[hit] += inc["magnitude"]
        elif inc["kind"] == "latency_regression":
            lat_mult[hit] *= inc["magnitude"]
        else:  # a stalled receipts pipeline also times out some receipt requests
            p_err[hit] += 0.01
    for bad in rel.bad_builds.iter_rows(named=True):
        hit = build == bad["build_id"]
        if bad["effect"] == "error_rate":
            p_err[hit] += bad["magnitude"]
        else:
            lat_mult[hit] *= bad["magnitude"]
    errors = rng.binomial(requests, np.clip(p_err, 0, 1))
    blip_rng = np.random.default_rng([cfg.seed, 5])
    blips = generate_blips(tl, cfg.blips_per_day, blip_rng)
    plain_errors = errors.copy()  # the tenant SLIs are drawn from these, the blips added after
    add_blips(blips, svc, minute, requests, errors, blip_rng)

    ts_ms = tl.minute_ts_ms()[minute]
    counters = pl.DataFrame({
        "ts": pl.Series(ts_ms).cast(pl.Datetime("ms", "UTC")),
        "service": svc, "cohort": cohort, "build_id": build,
        "requests": requests, "errors": errors,
    })

    # Latency histogram: sequential binomials split requests into buckets exactly.
    median = np.vectorize({s.name: s.median_latency_s for s in SERVICES}.get, otypes=[float])(svc) * lat_mult
    edges = np.array(LATENCY_BUCKETS[:-1])
    cdf = ndtr((np.log(edges)[None, :] - np.log(median)[:, None]) / LATENCY_SIGMA)
    probs = np.diff(np.concatenate([np.zeros((len(minute), 1)), cdf, np.ones((len(minute), 1))], axis=1), axis=1)
    remaining = requests.copy()
    rem_p = np.ones(len(minute))
    counts = np.zeros((len(minute), len(LATENCY_BUCKETS)), dtype=np.int64)
    for b in range(len(LATENCY_BUCKETS) - 1):
        p = np.clip(np.divide(probs[:, b], rem_p, out=np.zeros_like(rem_p), where=rem_p > 0), 0, 1)
        counts[:, b] = rng.binomial(remaining, p)
        remaining -= counts[:, b]
        rem_p -= probs[:, b]
    counts[:, -1] = remaining
    cumulative = np.cumsum(counts, axis=1)
    nb = len(LATENCY_BUCKETS)
    latency = pl.DataFrame({
        "ts": pl.Series(np.repeat(ts_ms, nb)).cast(pl.Datetime("ms", "UTC")),
        "service": np.repeat(svc, nb), "cohort": np.repeat(cohort, nb), "build_id": np.repeat(build, nb),
        "le": np.tile(np.array(LATENCY_BUCKETS), len(minute)),
        "count": cumulative.reshape(-1),
    })

    lag = _lag_samples(tl, incidents, rng)
    slis = _tenant_slis(cfg, tl, tenants, minute, cohort, svc, requests, plain_errors, lat_mult, rng)
    slis = _blips_in_slis(slis, tl, tenants, minute, cohort, svc, requests, errors - plain_errors, blip_rng)
    return Traffic(counters.sort(["ts", "service", "cohort", "build_id"]),
                   latency.sort(["ts", "service", "cohort", "build_id", "le"]), lag, slis, incidents, blips)


def _lag_samples(tl: Timeline, incidents: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One lag sample per pipeline per minute; a receipt stall makes receipt lag climb."""
    base = {"receipt": 2.0, "approval": 45.0, "metering": 20.0}
    sigma = {"receipt": 0.4, "approval": 0.8, "metering": 0.5}
    frames = []
    mins = np.arange(tl.minutes)
    for p in PIPELINES:
        lag = base[p] * rng.lognormal(0, sigma[p], tl.minutes)
        if p == "receipt":
            for inc in incidents.filter(pl.col("kind") == "receipt_stall").iter_rows(named=True):
                s, e = inc["start_min"], inc["end_min"]
                during = (mins >= s) & (mins < e)
                lag[during] += (mins[during] - s + 1) * 60.0
                drain = (mins >= e) & (mins < e + 10)  # backlog drains over ten minutes
                lag[drain] += (e - s) * 60.0 * (1 - (mins[drain] - e + 1) / 10.0)
        jitter = rng.integers(0, 60_000, tl.minutes)
        frames.append(pl.DataFrame({
            "sample_id": pl.select(pl.format("{}-{}", pl.lit(p), pl.Series(mins).cast(pl.String).str.zfill(7)))
            .to_series(),
            "ts": pl.Series(tl.minute_ts_ms() + jitter).cast(pl.Datetime("ms", "UTC")),
            "pipeline": p, "lag_seconds": np.round(lag, 3),
        }))
    return pl.concat(frames).sort(["ts", "pipeline"])


def _blips_in_slis(slis: pl.DataFrame, tl: Timeline, tenants: pl.DataFrame, minute: np.ndarray, cohort: np.ndarray,
                   svc: np.ndarray, requests: np.ndarray, added: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    """The tenant SLIs with the blips' errors: in an hour a blip touched, a tenant's requests
    fail at the rate the blips added to its cohort's API counters that hour. Drawn after the
    SLIs, from the blips' generator, so every other hour is as in the world without blips."""
    api = svc == "api"
    if not (added[api] > 0).any():
        return slis
    start_ms = int(tl.start.timestamp() * 1000)
    rates = (pl.DataFrame({"hour": minute[api] // 60, "cohort": cohort[api], "requests": requests[api],
                           "added": added[api]})
             .group_by("hour", "cohort").agg((pl.col("added").sum() / pl.col("requests").sum().clip(1)).alias("rate"))
             .filter(pl.col("rate") > 0)
             .with_columns((start_ms + pl.col("hour") * 3_600_000).cast(pl.Datetime("ms", "UTC")).alias("hour")))
    rate = (slis.with_row_index("_row").join(tenants.select("tenant_id", "cohort"), on="tenant_id")
            .join(rates, on=["hour", "cohort"], how="left").sort("_row")["rate"].fill_null(0.0).to_numpy())
    errors = slis["errors"].to_numpy().copy()
    hit = np.flatnonzero(rate > 0)
    errors[hit] += rng.binomial(slis["requests"].to_numpy()[hit] - errors[hit], rate[hit])
    return slis.with_columns(pl.Series("errors", errors, dtype=pl.Int64))


def _tenant_slis(cfg, tl, tenants, minute, cohort, svc, requests, errors, lat_mult, rng) -> pl.DataFrame:
    """Hourly per-tenant API SLIs, consistent with the cohort-level API counters."""
    hour_of_min = minute // 60
    is_api = svc == "api"
    api = pl.DataFrame({"hour": hour_of_min[is_api], "cohort": cohort[is_api], "requests": requests[is_api],
                        "errors": errors[is_api], "lat": lat_mult[is_api] * requests[is_api]})
    agg = api.group_by(["hour", "cohort"]).agg(
        (pl.col("errors").sum() / pl.col("requests").sum().clip(1)).alias("err_rate"),
        (pl.col("lat").sum() / pl.col("requests").sum().clip(1)).alias("lat_mult"),
    )
    n_hours = (tl.minutes + 59) // 60
    season = tl.seasonality()
    hourly_season = np.add.reduceat(season, np.arange(0, tl.minutes, 60)) / 60.0
    act = tenants["activity"].to_numpy()
    act = act / act.mean()
    t_idx = np.repeat(np.arange(len(tenants)), n_hours)
    h_idx = np.tile(np.arange(n_hours), len(tenants))
    per_hour = cfg.requests_per_tenant_minute * 60 * 0.4  # API share of a tenant's requests
    req = rng.poisson(per_hour * act[t_idx] * hourly_season[h_idx])
    frame = pl.DataFrame({"hour": h_idx.astype(np.int64), "tenant_idx": t_idx,
                          "cohort": tenants["cohort"].to_numpy()[t_idx], "requests": req})
    frame = frame.join(agg, on=["hour", "cohort"], how="left").with_columns(
        pl.col("err_rate").fill_null(BASE_ERROR_RATE), pl.col("lat_mult").fill_null(1.0)
    ).sort(["hour", "tenant_idx"])
    err = rng.binomial(frame["requests"].to_numpy(), np.clip(frame["err_rate"].to_numpy(), 0, 1))
    api_median = next(s.median_latency_s for s in SERVICES if s.name == "api")
    p95 = api_median * frame["lat_mult"].to_numpy() * np.exp(1.645 * LATENCY_SIGMA) * rng.lognormal(0, 0.1, len(frame))
    start_ms = int(tl.start.timestamp() * 1000)
    return pl.DataFrame({
        "hour": pl.Series(start_ms + frame["hour"].to_numpy() * 3_600_000).cast(pl.Datetime("ms", "UTC")),
        "tenant_id": tenants["tenant_id"].to_numpy()[frame["tenant_idx"].to_numpy()],
        "requests": frame["requests"].to_numpy().astype(np.int64),
        "errors": err.astype(np.int64),
        "latency_p95_ms": np.round(p95 * 1000, 1),
    })
