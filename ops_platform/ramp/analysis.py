"""Ramp analysis: is a candidate build worse than the build it replaces?

The controller compares the candidate with the stable build serving the same service at the
same minutes: errors, and requests slower than the stable build's own p95 bucket. Evidence
accumulates minute by minute in a CUSUM of log-likelihood ratios between "as good as the
baseline, within a small margin" and "clearly worse" (a sequential test: it decides as soon
as the evidence is enough, and low traffic simply takes longer). Below a minimum number of
requests the result is inconclusive and the ramp holds. Comparing with the live baseline
cancels incidents that hit every build alike, which fixed thresholds and plain burn-rate
alerts mistake for a bad build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

ERROR_MARGIN = 0.005  # the error-rate SLO's budget (used to grade a regression's burn)
ERROR_H0, ERROR_H1 = 0.002, 0.015  # "as good as baseline" vs "clearly worse": extra error ratio
LATENCY_H0, LATENCY_H1 = 0.01, 0.10  # the same for the share beyond the baseline's p95 bucket
THRESHOLD = 6.0  # CUSUM alarm level (log-likelihood ratio); higher = fewer false pauses, slower
MIN_REQUESTS = 10  # below this the evidence is inconclusive: hold, neither advance nor roll back
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


def _llr(bad: np.ndarray, n: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Per-minute log-likelihood ratio of "clearly worse" over "as good" for binomial counts."""
    p0, p1 = np.clip(p0, 1e-6, 1 - 1e-6), np.clip(p1, 1e-6, 1 - 1e-6)
    return bad * np.log(p1 / p0) + (n - bad) * np.log((1 - p1) / (1 - p0))


def _cusum(steps: np.ndarray) -> np.ndarray:
    out, acc = np.empty(len(steps)), 0.0
    for i, x in enumerate(steps):
        acc = max(0.0, acc + x)
        out[i] = acc
    return out


def decide(series: pl.DataFrame) -> Verdict:
    """The first minute with enough evidence of a regression, and the action it calls for."""
    if series.height == 0:
        return Verdict(None, None, "no traffic")
    n = series["requests"].to_numpy().astype(float)
    err = series["errors"].to_numpy().astype(float)
    slow = series["slow"].to_numpy().astype(float)
    nb = np.maximum(series["cum_b_requests"].to_numpy(), 1)
    p_base = series["cum_b_errors"].to_numpy() / nb
    s_base = np.maximum(series["cum_b_slow"].to_numpy() / nb, 0.05)
    err_score = _cusum(_llr(err, n, p_base + ERROR_H0, p_base + ERROR_H1))
    slow_score = _cusum(_llr(slow, n, s_base + LATENCY_H0, s_base + LATENCY_H1))
    enough = series["cum_requests"].to_numpy() >= MIN_REQUESTS
    hit = enough & ((err_score >= THRESHOLD) | (slow_score >= THRESHOLD))
    if not hit.any():
        return Verdict(None, None, "no regression" if enough.any() else "inconclusive: too few requests")
    i = int(np.argmax(hit))
    cum_n, cum_err = series["cum_requests"][i], series["cum_errors"][i]
    ratio = cum_err / max(cum_n, 1)
    action = "rollback" if ratio / ERROR_MARGIN >= FAST_BURN else "pause"
    what = "errors" if err_score[i] >= THRESHOLD else "latency"
    return Verdict(series["ts"][i], action, f"{what}: {cum_err}/{cum_n} errors, "
                                            f"{series['cum_slow'][i]} slow, evidence {max(err_score[i], slow_score[i]):.1f}")
