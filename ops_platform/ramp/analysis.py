"""Ramp analysis: is a candidate build worse than the build it replaces?

The controller compares the candidate with the stable build serving the same service at the
same minutes, cumulatively since the ramp started: errors, and requests slower than the
stable build's own p95 bucket. A regression needs statistical evidence (a one-sided
binomial test against "baseline plus the SLO's tolerated margin") and a minimum number of
requests; below that the result is inconclusive and the ramp holds. Comparing with the
live baseline cancels incidents that hit every build alike, which fixed thresholds and
plain burn-rate alerts mistake for a bad build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import binom

ERROR_MARGIN = 0.005  # the error-rate SLO's budget: a candidate may cost up to this much more
LATENCY_MARGIN = 0.05  # share of requests beyond the stable build's p95 bucket, over its own 5%
ALPHA = 1e-5  # per-minute false-alarm rate of each test
MIN_REQUESTS = 20  # below this the evidence is inconclusive: hold, neither advance nor roll back
FAST_BURN = 14.4  # a candidate burning the error budget this fast is rolled back, not only paused


@dataclass(frozen=True)
class Verdict:
    ts: object  # first minute the controller acts (None: never)
    action: str | None  # pause | rollback
    reason: str


def _cumulative(frame: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    return frame.sort("ts").with_columns(pl.col(c).cum_sum().alias(f"cum_{c}") for c in cols)


def candidate_series(counters: pl.DataFrame, latency: pl.DataFrame, build: str, service: str,
                     start, end) -> pl.DataFrame:
    """Per minute in [start, end): candidate and baseline requests, errors, slow requests."""
    window = (pl.col("ts") >= start) & (pl.col("ts") < end) & (pl.col("service") == service)
    c = counters.filter(window)
    lat = latency.filter(window)
    before = latency.filter((pl.col("service") == service) & (pl.col("ts") < start)
                            & (pl.col("ts") >= start - (end - start)))
    # The stable build's p95 bucket, from its traffic before the ramp began.
    ref = before.group_by("le").agg(pl.col("count").sum()).sort("le")
    if ref.height:
        total = ref.filter(pl.col("le").is_infinite())["count"][0] or 1
        le_ref = ref.filter((pl.col("count") / total) >= 0.95)["le"].min()
    else:
        le_ref = float("inf")
    slow = lat.group_by(["ts", pl.col("build_id") == build]).agg(
        (pl.col("count").filter(pl.col("le").is_infinite()).sum()
         - pl.col("count").filter(pl.col("le") == le_ref).sum()).alias("slow")).rename({"build_id": "is_cand"})
    req = c.group_by(["ts", pl.col("build_id") == build]).agg(pl.col("requests").sum(),
                                                              pl.col("errors").sum()).rename(
        {"build_id": "is_cand"})
    both = req.join(slow, on=["ts", "is_cand"], how="left").with_columns(pl.col("slow").fill_null(0))
    cand = both.filter(pl.col("is_cand")).drop("is_cand")
    base = both.filter(~pl.col("is_cand")).drop("is_cand").rename(
        {"requests": "b_requests", "errors": "b_errors", "slow": "b_slow"})
    out = cand.join(base, on="ts", how="left").fill_null(0)
    out = _cumulative(out, ["requests", "errors", "slow", "b_requests", "b_errors", "b_slow"])
    return out.with_columns(pl.lit(le_ref).alias("le_ref"))


def decide(series: pl.DataFrame) -> Verdict:
    """The first minute with significant evidence of a regression, and the action it calls for."""
    if series.height == 0:
        return Verdict(None, None, "no traffic")
    n = series["cum_requests"].to_numpy()
    err = series["cum_errors"].to_numpy()
    slow = series["cum_slow"].to_numpy()
    nb = np.maximum(series["cum_b_requests"].to_numpy(), 1)
    p_err = np.clip(series["cum_b_errors"].to_numpy() / nb + ERROR_MARGIN, 1e-6, 1 - 1e-6)
    p_slow = np.clip(np.maximum(series["cum_b_slow"].to_numpy() / nb, 0.05) + LATENCY_MARGIN, 1e-6, 1 - 1e-6)
    enough = n >= MIN_REQUESTS
    err_hit = enough & (binom.sf(err - 1, n, p_err) < ALPHA)
    slow_hit = enough & (binom.sf(slow - 1, n, p_slow) < ALPHA)
    hit = err_hit | slow_hit
    if not hit.any():
        return Verdict(None, None, "no significant regression" if enough.any() else "inconclusive: too few requests")
    i = int(np.argmax(hit))
    ratio = err[i] / max(n[i], 1)
    action = "rollback" if ratio / ERROR_MARGIN >= FAST_BURN else "pause"
    what = "errors" if err_hit[i] else "latency"
    return Verdict(series["ts"][i], action, f"{what}: {err[i]}/{n[i]} errors, {slow[i]} slow vs baseline")
