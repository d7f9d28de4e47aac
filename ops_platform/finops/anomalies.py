"""Cost anomalies: per tenant x meter usage and per service idle capacity, two detectors.

Both work on seasonal residuals: the log of a daily value minus its series' median, minus
the day-of-week effect shared by every series of the same meter (or service), so a quiet
Sunday is not an anomaly. Then:

- **baseline**: a robust z-score of each residual against its own series' MAD.
- **model**: scikit-learn's IsolationForest over the robust z-scores of several residuals
  per point: for a tenant's meter, its volume, its event count and its mean event size
  (so ordinary busy days, which move count and volume together, do not stand out); for a
  service, its idle cost and its idle-to-serving ratio. Only upward points it isolates
  are kept.

Each anomaly carries its score, the expected range (the seasonal median +- 3 MADs, back in
units), the impact in money (the excess over the expected value at the day's unit cost)
and its likely driver (tenant, service, meter). Both detectors only flag moves of at least
``MIN_RATIO`` times the expected value.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
from sklearn.ensemble import IsolationForest

from .attribution import ACCOUNT_SERVICE

Z_THRESHOLD = 4.0  # robust z-score above which the baseline flags a point
MIN_RATIO = 2.0  # and at least this many times the expected value: smaller moves are not worth a page
MIN_MAD = 0.05  # log-units: series flatter than this are not made hair-trigger
FOREST_SEED = 0
# Points per tree. With scikit-learn's default (256) the scores of 10^5 tenant-days saturate:
# a 10x spike scored like ordinary noise at preset M (F1 0.52). 2048 keeps them apart.
FOREST_SAMPLES = 2048
SAMPLE_FRACTION = 4  # a quarter of the points per tree, at least 256: small worlds keep the default
# decision_function below this is an anomaly: tenant usage set on presets S (seeds 7, 2, 5)
# and M (seed 7); service capacity (a few hundred points) on S seeds 7, 2, 42.
FOREST_THRESHOLD = -0.21
SERVICE_THRESHOLD = -0.175


def _residuals(frame: pl.DataFrame, value: str, series: list[str], season: str, prefix: str = "") -> pl.DataFrame:
    """Add <prefix>resid, <prefix>mad and <prefix>z for ``value`` against its series and the
    weekday effect shared by all series of the same ``season`` key."""
    lv = pl.col(value).clip(lower_bound=0).log1p()
    d = lv - lv.median().over(series)
    f = frame.with_columns(d.alias("_d"), pl.col("utc_date").dt.weekday().alias("_dow"))
    f = f.with_columns((pl.col("_d") - pl.col("_d").median().over([season, "_dow"])).alias(f"{prefix}resid"))
    r = pl.col(f"{prefix}resid")
    mad = (r - r.median().over(series)).abs().median().over(series) * 1.4826
    f = f.with_columns(pl.max_horizontal(mad, pl.lit(MIN_MAD)).alias(f"{prefix}mad"))
    return f.with_columns((r / pl.col(f"{prefix}mad")).alias(f"{prefix}z")).drop("_d", "_dow")


def _expected(f: pl.DataFrame) -> pl.DataFrame:
    """Expected value and range (median +- 3 MADs of the seasonal model), back in units."""
    lexp = pl.col("value").clip(lower_bound=0).log1p() - pl.col("resid")
    return f.with_columns((lexp.exp() - 1).alias("expected"),
                          ((lexp - 3 * pl.col("mad")).exp() - 1).clip(lower_bound=0).alias("expected_low"),
                          ((lexp + 3 * pl.col("mad")).exp() - 1).alias("expected_high"))


def _samples(n: int) -> int:
    """Points per tree: a quarter of the points, within [256, FOREST_SAMPLES] (and n)."""
    return min(n, max(256, min(FOREST_SAMPLES, n // SAMPLE_FRACTION)))


def _detect(f: pl.DataFrame, features: list[str], threshold: float) -> pl.DataFrame:
    """Baseline flag on the value's own robust z-score; model flag from IsolationForest."""
    out = f.with_columns((pl.col("resid") >= float(np.log(MIN_RATIO))).alias("_big"))
    out = out.with_columns(((pl.col("z") > Z_THRESHOLD) & pl.col("_big")).alias("baseline_flag"))
    if out.height < 8:
        return out.with_columns(pl.lit(False).alias("model_flag"), pl.lit(0.0).alias("model_score")).drop("_big")
    x = out.select(pl.col(c).clip(-50, 50) for c in features).to_numpy()
    forest = IsolationForest(n_estimators=300, max_samples=_samples(len(x)), random_state=FOREST_SEED,
                             contamination="auto").fit(x)
    score = forest.decision_function(x)
    return out.with_columns(pl.Series("model_score", -score),
                            (pl.Series(score < threshold) & out["_big"]).alias("model_flag")).drop("_big")


def detect_anomalies(usage: pl.DataFrame, service_cost: pl.DataFrame) -> pl.DataFrame:
    """Flagged points of both detectors, one row per (kind, date, subject).

    ``usage``: utc_date, tenant_id, meter, quantity, events (daily_usage output).
    ``service_cost``: the reconciliation (utc_date, service, meter, cost_micros,
    idle_micros, quantity, unit_cost_usd).
    """
    keys = ["tenant_id", "meter"]
    q = pl.col("quantity").cast(pl.Float64)
    t = usage.select("utc_date", *keys, q.alias("value"), "events",
                     (q / pl.col("events").clip(lower_bound=1)).alias("size"))
    t = _residuals(t, "value", keys, "meter")
    t = _residuals(t, "events", keys, "meter", "events_")
    t = _residuals(t, "size", keys, "meter", "size_")
    # Volume and intensity apart: a runaway job shows in one of them beyond the other's noise.
    t = _detect(_expected(t), ["z", "events_z", "size_z"], FOREST_THRESHOLD)
    # What one more unit costs: the services' shared cost, not the account's taxes and credits.
    unit = (service_cost.filter(pl.col("service").ne_missing(ACCOUNT_SERVICE)).group_by("utc_date", "meter")
            .agg(pl.col("service").sort().first(), pl.col("unit_cost_usd").sum()))
    t = t.join(unit, on=["utc_date", "meter"], how="left").with_columns(
        pl.lit("tenant_usage_spike").alias("kind"),
        ((pl.col("value") - pl.col("expected")).clip(lower_bound=0) * pl.col("unit_cost_usd").fill_null(0.0))
        .alias("impact_usd"))
    s = service_cost.filter(pl.col("idle_micros") > 0).select(
        "utc_date", "service", (pl.col("idle_micros") / 1e6).alias("value"),
        (pl.col("idle_micros") / (pl.col("cost_micros") - pl.col("idle_micros")).clip(lower_bound=1))
        .alias("idle_ratio"), pl.lit("all").alias("_season"))
    # The weekday effect is shared by all services: one series cannot be its own season.
    s = _residuals(s, "value", ["service"], "_season")
    s = _residuals(s, "idle_ratio", ["service"], "_season", "ratio_")
    s = _detect(_expected(s), ["z", "ratio_z"], SERVICE_THRESHOLD).with_columns(
        pl.lit("service_capacity_spike").alias("kind"), pl.lit(None, pl.String).alias("tenant_id"),
        pl.lit(None, pl.String).alias("meter"),
        (pl.col("value") - pl.col("expected")).clip(lower_bound=0).alias("impact_usd"))
    cols = ["kind", "utc_date", "tenant_id", "service", "meter", "value", "expected", "expected_low",
            "expected_high", "z", "model_score", "impact_usd", "baseline_flag", "model_flag"]
    both = pl.concat([t.select(cols), s.select(cols)], how="vertical_relaxed")
    return both.filter(pl.col("baseline_flag") | pl.col("model_flag")).sort("utc_date", "kind", "service")


def score_anomalies(found: pl.DataFrame, truth: pl.DataFrame) -> dict[str, dict]:
    """Precision, recall and F1 of each detector against the injected anomalies.

    A tenant spike matches on (date, tenant, meter); a capacity spike on (date, service).
    """
    def keys(frame: pl.DataFrame, date_col: str) -> set[tuple]:
        return {(r[date_col], r["kind"], r["tenant_id"] if r["kind"] == "tenant_usage_spike" else r["service"],
                 r["meter"] if r["kind"] == "tenant_usage_spike" else None) for r in frame.iter_rows(named=True)}

    true = keys(truth, "date")
    out = {}
    for name, flag in (("model", "model_flag"), ("baseline", "baseline_flag")):
        got = keys(found.filter(pl.col(flag)), "utc_date")
        tp = len(got & true)
        precision = tp / len(got) if got else 1.0
        recall = tp / len(true) if true else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"flagged": len(got), "true_positives": tp, "injected": len(true),
                     "precision": precision, "recall": recall, "f1": f1}
    return out


DETECTORS = {"either": pl.col("baseline_flag") | pl.col("model_flag"), "model": pl.col("model_flag"),
             "baseline": pl.col("baseline_flag")}


def listed(found: pl.DataFrame, *, detector: str = "either", tenant: str | None = None,
           start: date | None = None, end: date | None = None) -> pl.DataFrame:
    """The anomalies an analyst asked for, costliest first: flagged by ``detector`` (either,
    model or baseline), of ``tenant`` (a service capacity spike belongs to no tenant: left
    out when one is named), on days in [start, end); ``flagged_by`` names the detectors."""
    if detector not in DETECTORS:
        raise ValueError(f"detector {detector!r}: choose one of {', '.join(DETECTORS)}")
    rows = found.filter(DETECTORS[detector])
    if tenant is not None:
        rows = rows.filter(pl.col("tenant_id") == tenant)
    if start is not None:
        rows = rows.filter(pl.col("utc_date") >= start)
    if end is not None:
        rows = rows.filter(pl.col("utc_date") < end)
    by = pl.concat_list(pl.when(pl.col("model_flag")).then(pl.lit("model")),
                        pl.when(pl.col("baseline_flag")).then(pl.lit("baseline"))).list.drop_nulls().list.join(", ")
    return rows.with_columns(by.alias("flagged_by")).sort(["impact_usd", "utc_date", "kind", "service", "tenant_id",
                                                           "meter"], descending=[True, False, False, False, False,
                                                                                 False], nulls_last=True)
