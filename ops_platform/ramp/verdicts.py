"""Ramps from their schedule, and the controller's verdict on each, with its budget use.

The same functions serve the live `ramp/verdicts` asset (one day at a time, from the
warehouse) and the backtest (a whole world's history from the landing zone), so the
backtest scores exactly what the controller decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import polars as pl

from .analysis import ERROR_MARGIN, Verdict, candidate_series, decide

# ramp_start and ramp_end, not start and end: `end` is an SQL keyword, and the table is read
# with ad hoc SQL (ramp.verdicts).
VERDICT_SCHEMA = {
    "build_id": pl.String, "service": pl.String, "ramp_start": pl.Datetime("us", "UTC"),
    "ramp_end": pl.Datetime("us", "UTC"), "general_at": pl.Datetime("us", "UTC"),
    "action": pl.String, "acted_at": pl.Datetime("us", "UTC"), "reason": pl.String,
    "trusted_baseline": pl.Boolean, "cohorts_reached": pl.String,
    "requests": pl.Int64, "errors": pl.Int64, "requests_before_action": pl.Int64,
    "errors_before_action": pl.Int64, "burn_rate": pl.Float64,
    "burn_rate_before_action": pl.Float64,
}


def ramps_from_steps(steps: pl.DataFrame, open_until: datetime | None = None) -> pl.DataFrame:
    """One row per ramp: its first step, when it reached the general cohort, its end, and
    whether it is ``open`` (its last step still running). An open ramp ends at
    ``open_until`` (the caller's "now": the end of the day judged, or the present); without
    it, at its running step's start.

    A ramp ends when it is promoted to 100%: from then on there is no stable build left to
    compare with and the ramp is no longer the controller's to hold.
    """
    steps = steps.sort(["build_id", "step"])
    ramps = steps.group_by("build_id", maintain_order=True).agg(
        pl.col("service").first(), pl.col("started_at").min().alias("start"),
        pl.col("started_at").filter(pl.col("early_fraction") > 0).min().alias("early_at"),
        pl.col("started_at").filter(pl.col("general_fraction") > 0).min().alias("general_at"),
        pl.coalesce(pl.col("started_at").filter(pl.col("percent") >= 100).min(),
                    pl.col("ended_at").max(), pl.col("started_at").max()).alias("end"),
        # Its last step has not ended and it never reached 100%: still ramping now.
        (((pl.col("percent") >= 100).sum() == 0) & pl.col("ended_at").last().is_null()).alias("open")).sort("start")
    if open_until is None:
        return ramps
    return ramps.with_columns(pl.when(pl.col("open")).then(pl.lit(open_until).cast(ramps.schema["end"]))
                              .otherwise(pl.col("end")).alias("end"))


def baseline_builds(counters: pl.DataFrame, build: str, service: str, start, end) -> set[str]:
    """The other builds serving ``service`` during the ramp (the stable build, usually one)."""
    window = (pl.col("service") == service) & (pl.col("ts") >= start) & (pl.col("ts") < end)
    return set(counters.filter(window & (pl.col("build_id") != build))["build_id"].unique().to_list())


def judged_until(ramp: dict, until: datetime | None) -> datetime:
    """The end of the evidence a ramp is judged on: its end, or ``until`` if that is earlier."""
    return min(ramp["end"], until) if until is not None else ramp["end"]


def judge_ramp(counters: pl.DataFrame, latency: pl.DataFrame, ramp: dict, rejected: set[str],
               until: datetime | None = None, starts: dict[str, datetime] | None = None) -> tuple[Verdict, bool]:
    """The controller's verdict on one ramp, on the evidence up to ``until`` (default: its end).

    A stable build the controller already rejected (paused or rolled back) is no baseline:
    live, it would have been rolled back. Its latency is no reference either: when
    ``starts`` (build -> ramp start) knows when it began to ramp, latency is judged against
    the traffic before that, which the last trusted build served. Adds the build to
    ``rejected`` when it is paused or rolled back, so ramps must be judged in start order.
    """
    end = judged_until(ramp, until)
    untrusted = baseline_builds(counters, ramp["build_id"], ramp["service"], ramp["start"], end) & rejected
    known = [starts[b] for b in untrusted if starts and b in starts]
    series = candidate_series(counters, latency, ramp["build_id"], ramp["service"], ramp["start"], end,
                              reference_end=min(known) if known else None)
    trusted = not untrusted
    verdict = decide(series, trusted_baseline=trusted)
    if verdict.action in ("pause", "rollback"):
        rejected.add(ramp["build_id"])
    return verdict, trusted


def _cohorts_reached(ramp: dict, at) -> str:
    reached = ["canary"]
    for cohort, since in (("early", ramp.get("early_at")), ("general", ramp.get("general_at"))):
        if since is not None and since <= at:
            reached.append(cohort)
    return ",".join(reached)


def verdict_rows(counters: pl.DataFrame, latency: pl.DataFrame, ramps: Iterable[dict], rejected: set[str],
                 until: datetime | None = None) -> pl.DataFrame:
    """Judge ``ramps`` in order; one row each with the verdict and how fast it burnt the budget.

    The burn rate is the candidate's error ratio over the error budget (1.0 = burning exactly
    the budget; 14.4 would spend a 30-day budget in about 2 days), over the whole ramp and over
    what it served before the action: a rate, not a share of the SLO window's budget spent.
    """
    rows = []
    # Each ramp only looks at its own service: split once instead of filtering per ramp.
    by_service_c = counters.partition_by("service", as_dict=True)
    by_service_l = latency.partition_by("service", as_dict=True)
    starts: dict[str, datetime] = {}  # each build's ramp start, as the ramps go by
    for ramp in ramps:
        key = (ramp["service"],)
        svc_counters = by_service_c.get(key, counters.clear())
        starts.setdefault(ramp["build_id"], ramp["start"])
        verdict, trusted = judge_ramp(svc_counters, by_service_l.get(key, latency.clear()), ramp, rejected, until,
                                      starts)
        end = judged_until(ramp, until)
        cand = svc_counters.filter((pl.col("build_id") == ramp["build_id"]) & (pl.col("ts") >= ramp["start"])
                               & (pl.col("ts") < end))
        before = cand.filter(pl.col("ts") < verdict.ts) if verdict.ts is not None else cand
        req, err = int(cand["requests"].sum()), int(cand["errors"].sum())
        req_b, err_b = int(before["requests"].sum()), int(before["errors"].sum())
        rows.append({
            "build_id": ramp["build_id"], "service": ramp["service"], "ramp_start": ramp["start"],
            "ramp_end": ramp["end"],
            "general_at": ramp.get("general_at"), "action": verdict.action, "acted_at": verdict.ts,
            "reason": verdict.reason, "trusted_baseline": trusted,
            "cohorts_reached": _cohorts_reached(ramp, verdict.ts if verdict.ts is not None else end),
            "requests": req, "errors": err, "requests_before_action": req_b, "errors_before_action": err_b,
            "burn_rate": err / (ERROR_MARGIN * req) if req else 0.0,
            "burn_rate_before_action": err_b / (ERROR_MARGIN * req_b) if req_b else 0.0})
    return pl.DataFrame(rows, schema=VERDICT_SCHEMA)


def decided_since(rows: pl.DataFrame, start: datetime) -> pl.DataFrame:
    """The rows of ``verdict_rows`` a day starting at ``start`` reports: its ramps still
    undecided, and those decided that day. A ramp acted on an earlier day is that day's
    verdict, stored once: judged again over a longer window, the same action would be
    counted twice with other evidence."""
    return rows.filter(pl.col("acted_at").is_null() | (pl.col("acted_at") >= start))
