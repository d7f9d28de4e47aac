"""Replay a world's ramps through ramp policies and score them against the truth folder.

Policies: the platform's controller (`analysis.decide`), a Flagger-style fixed threshold
checked every minute (rollback after 5 failed checks), and plain SRE Workbook multi-window
burn-rate alerts on the candidate's own series. Each sees only landing data and the ramp
schedule; only the scoring reads the truth folder.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import polars as pl

from .analysis import ERROR_MARGIN, candidate_series, decide

SLOW_S = 1.5
FLAGGER_MAX_ERROR, FLAGGER_MAX_SLOW, FLAGGER_THRESHOLD = 0.01, 0.05, 5
SRE_TIERS = ((14.4, 60, 5), (6.0, 360, 30))  # (burn rate, long minutes, short minutes)
LATENCY_BUDGET = 0.01


def _read(world: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(world / "landing" / table / "*" / "*.parquet")


def ramps(world: Path) -> pl.DataFrame:
    steps = _read(world, "ramp_steps").sort(["build_id", "step"])
    return steps.group_by("build_id", maintain_order=True).agg(
        pl.col("service").first(), pl.col("started_at").min().alias("start"),
        pl.col("started_at").filter(pl.col("general_fraction") > 0).min().alias("general_at"),
        (pl.col("started_at").max() + (pl.col("started_at").sort().diff().drop_nulls().first()))
        .alias("end"))


def _flagger(s: pl.DataFrame) -> object:
    ratio = s["errors"] / s["requests"].clip(1)
    slow = s["slow15"] / s["requests"].clip(1)
    failed = ((s["requests"] > 0) & ((ratio > FLAGGER_MAX_ERROR) | (slow > FLAGGER_MAX_SLOW))).cast(pl.Int64).cum_sum()
    hit = failed >= FLAGGER_THRESHOLD
    return s["ts"].filter(hit).min() if hit.any() else None


def _sre(s: pl.DataFrame) -> object:
    frame = s.sort("ts")
    fire = pl.lit(False)
    for rate, long_m, short_m in SRE_TIERS:
        for col, budget in (("errors", ERROR_MARGIN), ("slow15", LATENCY_BUDGET)):
            lw = pl.col(col).rolling_sum_by("ts", f"{long_m}m") / pl.col("requests").rolling_sum_by("ts", f"{long_m}m").clip(1)
            sw = pl.col(col).rolling_sum_by("ts", f"{short_m}m") / pl.col("requests").rolling_sum_by("ts", f"{short_m}m").clip(1)
            fire = fire | ((lw > rate * budget) & (sw > rate * budget))
    hit = frame.select(fire.alias("f"))["f"]
    return frame["ts"].filter(hit).min() if hit.any() else None


def run_backtest(world: Path) -> dict[str, dict]:
    counters, latency = _read(world, "request_counters"), _read(world, "latency_buckets")
    slow15 = (latency.group_by(["ts", "service", "cohort", "build_id"]).agg(
        (pl.col("count").filter(pl.col("le").is_infinite()).sum()
         - pl.col("count").filter(pl.col("le") == SLOW_S).sum()).alias("slow15")))
    counters = counters.join(slow15, on=["ts", "service", "cohort", "build_id"], how="left").with_columns(
        pl.col("slow15").fill_null(0))
    bad = pl.read_parquet(world / "truth" / "bad_builds.parquet")
    bad_ids = set(bad["build_id"].to_list())
    results: dict[str, list[dict]] = {"controller": [], "flagger": [], "sre_multiwindow": []}
    for r in ramps(world).iter_rows(named=True):
        start, end = r["start"], r["end"]
        series = candidate_series(counters, latency, r["build_id"], r["service"], start, end)
        cand = counters.filter((pl.col("build_id") == r["build_id"]) & (pl.col("ts") >= start) & (pl.col("ts") < end))
        per_min = cand.group_by("ts").agg(pl.col("requests").sum(), pl.col("errors").sum(),
                                          pl.col("slow15").sum()).sort("ts")
        pauses = {"controller": decide(series).ts, "flagger": _flagger(per_min), "sre_multiwindow": _sre(per_min)}
        for policy, ts in pauses.items():
            served = per_min.filter(pl.col("ts") < ts) if ts is not None else per_min
            results[policy].append({
                "build_id": r["build_id"], "bad": r["build_id"] in bad_ids, "paused_at": ts,
                "minutes_to_pause": (ts - start).total_seconds() / 60 if ts is not None else None,
                "before_general": ts is not None and r["general_at"] is not None and ts < r["general_at"],
                "requests_before_pause": int(served["requests"].sum()),
                "bad_requests_before_pause": int(served["errors"].sum() + served["slow15"].sum()),
                "budget_spent": (served["errors"].sum() / (ERROR_MARGIN * served["requests"].sum())
                                 if served["requests"].sum() else 0.0)})
    return {p: score(rows) for p, rows in results.items()}


def score(rows: list[dict]) -> dict:
    bad = [r for r in rows if r["bad"]]
    good = [r for r in rows if not r["bad"]]
    caught = [r for r in bad if r["paused_at"] is not None]
    minutes = sorted(r["minutes_to_pause"] for r in caught)
    return {
        "ramps": len(rows), "bad_builds": len(bad),
        "bad_builds_caught": len(caught),
        "caught_before_general": sum(r["before_general"] for r in bad),
        "caught_before_general_rate": (sum(r["before_general"] for r in bad) / len(bad)) if bad else 1.0,
        "false_pauses": sum(r["paused_at"] is not None for r in good),
        "false_pause_rate": (sum(r["paused_at"] is not None for r in good) / len(good)) if good else 0.0,
        "median_minutes_to_pause": statistics.median(minutes) if minutes else None,
        "p95_minutes_to_pause": float(np.percentile(minutes, 95)) if minutes else None,
        "blast_radius_bad_requests": sum(r["bad_requests_before_pause"] for r in bad),
        "blast_radius_requests": sum(r["requests_before_pause"] for r in bad),
        "error_budget_spent_per_bad_ramp": (statistics.mean(r["budget_spent"] for r in bad) if bad else 0.0),
        "error_budget_spent_per_good_ramp": (statistics.mean(r["budget_spent"] for r in good) if good else 0.0),
    }


