"""Replay a world's ramps through ramp policies and score them against the truth folder.

Policies: the platform's controller (`analysis.decide`), a Flagger-style fixed threshold
checked every minute (rollback after 5 failed checks), and plain SRE Workbook multi-window
burn-rate alerts on the candidate's own series. Each sees only landing data and the ramp
schedule; only the scoring reads the truth folder (bad builds and incidents).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import binomtest

from ..ingest.landing import read_world_table
from .analysis import ERROR_MARGIN, MINUTE
from .verdicts import ramps_from_steps, verdict_rows

NORMAL_SHARE = 0.99  # a service's slow bound: the bucket 99% of its normal requests stay under
FLAGGER_MAX_ERROR, FLAGGER_MAX_SLOW, FLAGGER_THRESHOLD = 0.01, 0.05, 5
SRE_TIERS = ((14.4, 60, 5), (6.0, 360, 30))  # (burn rate, long minutes, short minutes)
LATENCY_BUDGET = 0.01


def ramps(world: Path) -> pl.DataFrame:
    return ramps_from_steps(read_world_table(world, "ramp_steps"))


def slow_bounds(latency: pl.DataFrame, first_ramp) -> pl.DataFrame:
    """(service, bound): per service, the smallest bucket bound that 99% of its requests
    stayed under before the first ramp started, as a Flagger user sets a Canary's latency
    threshold from the service's normal p99. One bound for every service (1.5 s) left the
    baselines blind to a build 2.5-5x slower on a service whose normal is 15-250 ms; the
    same bound counts a request as bad in every policy's blast radius."""
    normal = latency.filter(pl.col("ts") < first_ramp) if first_ramp is not None else latency
    if not normal.height:  # a ramp from the first minute: the whole history is all there is
        normal = latency
    per = normal.group_by("service", "le").agg(pl.col("count").sum())
    total = per.filter(pl.col("le").is_infinite()).select("service", pl.col("count").alias("_total"))
    return (per.join(total, on="service").filter(pl.col("count") >= NORMAL_SHARE * pl.col("_total"))
            .group_by("service").agg(pl.col("le").min().alias("bound")))


def _flagger(s: pl.DataFrame) -> object:
    ratio = s["errors"] / s["requests"].clip(1)
    slow = s["slow"] / s["requests"].clip(1)
    failed = ((s["requests"] > 0) & ((ratio > FLAGGER_MAX_ERROR) | (slow > FLAGGER_MAX_SLOW))).cast(pl.Int64).cum_sum()
    hit = failed >= FLAGGER_THRESHOLD
    return s["ts"].filter(hit).min() + MINUTE if hit.any() else None


def _sre(s: pl.DataFrame) -> object:
    frame = s.sort("ts")
    fire = pl.lit(False)
    for rate, long_m, short_m in SRE_TIERS:
        for col, budget in (("errors", ERROR_MARGIN), ("slow", LATENCY_BUDGET)):
            lw = pl.col(col).rolling_sum_by("ts", f"{long_m}m") / pl.col("requests").rolling_sum_by("ts", f"{long_m}m").clip(1)
            sw = pl.col(col).rolling_sum_by("ts", f"{short_m}m") / pl.col("requests").rolling_sum_by("ts", f"{short_m}m").clip(1)
            fire = fire | ((lw > rate * budget) & (sw > rate * budget))
    hit = frame.select(fire.alias("f"))["f"]
    return frame["ts"].filter(hit).min() + MINUTE if hit.any() else None


def replay(world: Path) -> dict[str, list[dict]]:
    """Per policy, one row per ramp: when (if ever) it acted, how, and what was served before.

    The controller's rows come from ``verdict_rows``, the very function the live
    `ramp/verdicts` asset runs; ramps are replayed in start order.
    """
    counters, latency = read_world_table(world, "request_counters"), read_world_table(world, "latency_buckets")
    all_ramps = ramps(world).to_dicts()
    bounds = slow_bounds(latency, min((r["start"] for r in all_ramps), default=None))
    slow = (latency.join(bounds, on="service").group_by(["ts", "service", "cohort", "build_id"]).agg(
        (pl.col("count").filter(pl.col("le").is_infinite()).sum()
         - pl.col("count").filter(pl.col("le") == pl.col("bound")).sum()).alias("slow")))
    counters = counters.join(slow, on=["ts", "service", "cohort", "build_id"], how="left").with_columns(
        pl.col("slow").fill_null(0))
    bad = pl.read_parquet(world / "truth" / "bad_builds.parquet")
    bad_ids = set(bad["build_id"].to_list())
    incidents = pl.read_parquet(world / "truth" / "incidents.parquet")
    verdicts = verdict_rows(counters, latency, all_ramps, set())
    results: dict[str, list[dict]] = {"controller": [], "flagger": [], "sre_multiwindow": []}
    by_build = counters.partition_by("build_id", as_dict=True)  # split once, not filtered per ramp
    for r, v in zip(all_ramps, verdicts.iter_rows(named=True), strict=True):
        start, end, build = r["start"], r["end"], r["build_id"]
        cand = by_build.get((build,), counters.clear()).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        per_min = cand.group_by("ts").agg(pl.col("requests").sum(), pl.col("errors").sum(),
                                          pl.col("slow").sum()).sort("ts")
        acted = {"controller": (v["acted_at"], v["action"] or "", v["reason"]),
                 "flagger": (_flagger(per_min), "rollback", "failed checks"),
                 "sre_multiwindow": (_sre(per_min), "pause", "burn-rate alert")}
        for policy, (ts, action, reason) in acted.items():
            served = per_min.filter(pl.col("ts") < ts) if ts is not None else per_min
            requests = int(served["requests"].sum())
            in_incident = ts is not None and incidents.filter(
                (pl.col("service") == r["service"]) & (pl.col("start") <= ts) & (pl.col("end") > ts)).height > 0
            results[policy].append({
                "build_id": build, "service": r["service"], "bad": build in bad_ids,
                "acted_at": ts, "action": action if ts is not None else None, "reason": reason,
                "during_incident": in_incident,
                "minutes_to_pause": (ts - start).total_seconds() / 60 if ts is not None else None,
                # a ramp that never reached the general cohort was held before it, if held at all
                "before_general": ts is not None and (r["general_at"] is None or ts < r["general_at"]),
                "requests_before_pause": requests,
                "bad_requests_before_pause": int(served["errors"].sum() + served["slow"].sum()),
                "budget_spent": (served["errors"].sum() / (ERROR_MARGIN * requests) if requests else 0.0),
                "budget_spent_whole_ramp": (per_min["errors"].sum() / (ERROR_MARGIN * per_min["requests"].sum())
                                            if per_min["requests"].sum() else 0.0)})
    return results


def run_backtest(world: Path) -> dict[str, dict]:
    """The scores of every policy on ``world`` (see ``score``)."""
    return {p: score(rows) for p, rows in replay(world).items()}


def _stopped(row: dict) -> bool:
    """A verdict against the build: a pause or a rollback (a freeze blames the platform)."""
    return row["action"] in ("pause", "rollback")


def _interval(name: str, k: int, n: int) -> dict[str, float | None]:
    """``<name>_low95`` and ``<name>_high95``: the 95% Wilson interval of a rate of k in n,
    what a few dozen ramps can show (14 of 14 caught rules out rates below 78.5% only, 0
    false pauses in 55 rates above 6.5%); None over no builds."""
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson") if n else None
    return {f"{name}_low95": ci.low if ci else None, f"{name}_high95": ci.high if ci else None}


def score(rows: list[dict]) -> dict:
    """Decisions scored against the truth folder.

    A bad build counts as caught when its ramp was paused or rolled back; a good build's
    pause or rollback is a false pause. Freezes (every ramp held because the stable build
    burns too) are a platform decision, scored apart: correct when a true incident was on.
    A rate or mean over no builds is None (no bad build to catch is not a perfect catch).
    """
    bad = [r for r in rows if r["bad"]]
    good = [r for r in rows if not r["bad"]]
    caught = [r for r in bad if _stopped(r)]
    false = sum(_stopped(r) for r in good)
    before = [r for r in caught if r["before_general"]]
    minutes = sorted(r["minutes_to_pause"] for r in caught)
    freezes = [r for r in rows if r["action"] == "freeze"]
    return {
        "ramps": len(rows), "bad_builds": len(bad), "good_builds": len(good),
        "bad_builds_caught": len(caught),
        "caught_before_general": len(before),
        "caught_before_general_rate": len(before) / len(bad) if bad else None,
        **_interval("caught_before_general_rate", len(before), len(bad)),
        "false_pauses": false,
        "false_pause_rate": false / len(good) if good else None,
        **_interval("false_pause_rate", false, len(good)),
        "median_minutes_to_pause": statistics.median(minutes) if minutes else None,
        "p95_minutes_to_pause": float(np.percentile(minutes, 95)) if minutes else None,
        "blast_radius_bad_requests": sum(r["bad_requests_before_pause"] for r in bad),
        "blast_radius_requests": sum(r["requests_before_pause"] for r in bad),
        "error_budget_spent_per_bad_ramp": statistics.mean(r["budget_spent"] for r in bad) if bad else None,
        "error_budget_spent_per_good_ramp": statistics.mean(r["budget_spent"] for r in good) if good else None,
        "freezes": len(freezes),
        "freezes_during_true_incident": sum(r["during_incident"] for r in freezes),
    }


# Issue targets on the default seeds: held before the general cohort, false pauses, median
# minutes to pause; and better than each baseline on blast radius at no more false pauses.
CAUGHT_BEFORE_GENERAL_TARGET = 0.99
FALSE_PAUSE_TARGET = 0.01
MEDIAN_MINUTES_TARGET = 5.0


def targets_missed(results: dict[str, dict]) -> list[str]:
    """The controller's targets a backtest (``run_backtest``'s figures) misses; empty when
    all are met. A catch rate or time to pause that cannot be computed (no bad build caught)
    is a miss: a gate must not pass on nothing. No good build means no false pause."""
    c, missed = results["controller"], []
    rate = c["caught_before_general_rate"]
    if rate is None or rate < CAUGHT_BEFORE_GENERAL_TARGET:
        missed.append(f"caught before the general cohort {rate} (target >= {CAUGHT_BEFORE_GENERAL_TARGET})")
    if (c["false_pause_rate"] or 0.0) > FALSE_PAUSE_TARGET:
        missed.append(f"false pause rate {c['false_pause_rate']:.3f} (target <= {FALSE_PAUSE_TARGET})")
    median = c["median_minutes_to_pause"]
    if median is None or median >= MEDIAN_MINUTES_TARGET:
        missed.append(f"median minutes to pause {median} (target < {MEDIAN_MINUTES_TARGET:g})")
    for name, b in results.items():
        if name != "controller" and not (c["blast_radius_bad_requests"] < b["blast_radius_bad_requests"]
                                         and c["false_pauses"] <= b["false_pauses"]):
            missed.append(f"not better than {name}: blast radius {c['blast_radius_bad_requests']} vs "
                          f"{b['blast_radius_bad_requests']}, false pauses {c['false_pauses']} vs {b['false_pauses']}")
    return missed

