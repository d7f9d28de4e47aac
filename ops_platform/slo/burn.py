"""Per-minute SLI events, multi-window burn rates, tier states and error budgets.

Everything is vectorised: an SLO's source rows become per-minute (bad, total) event
counts per group (service x cohort x build), window sums are differences of one cumulative
sum found by binary search (no per-group loop), and a burn rate is the window's bad ratio over the error budget
(burn 1 spends the budget exactly over the SLO window).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from .spec import SLO, BurnTier

GROUP = ("service", "cohort", "build_id")
_BAD_OP = {"lte": lambda c, v: c > v, "lt": lambda c, v: c >= v, "gte": lambda c, v: c < v,
           "gt": lambda c, v: c <= v}


def _is_inf(value) -> bool:
    return str(value).lower() in ("+inf", "inf", ".inf")


def minute_events(slo: SLO, *, counters: pl.DataFrame | None = None, latency: pl.DataFrame | None = None,
                  lag: pl.DataFrame | None = None) -> pl.DataFrame:
    """(ts, group..., bad, total) per minute for `slo`, from the source its indicator names.

    Occurrences count requests (or samples); Timeslices count minutes, a minute being bad
    when its good ratio falls below the slice target (minutes without traffic do not count).
    """
    ind = slo.indicator
    if ind.kind == "ratio" and ind.good.spec.get("table") == "latency_buckets":
        if latency is None:
            raise ValueError(f"SLO {slo.name} needs latency buckets")
        threshold = ind.good.spec["le"]
        if _is_inf(threshold):
            raise ValueError(f"SLO {slo.name}: the good bucket cannot be +Inf")
        le = float(threshold)
        lat = latency.filter((pl.col("service") == ind.total.spec.get("service", slo.service))
                             & pl.col("le").is_in([le, float("inf")]))
        # One pass: the good bucket and +Inf (the total) side by side per minute and group;
        # a minute without a +Inf bucket has no requests to judge.
        inf = pl.col("le").is_infinite()
        ev = (lat.select("ts", *GROUP, pl.when(inf).then(0).otherwise(pl.col("count")).alias("good"),
                         pl.when(inf).then(pl.col("count")).otherwise(0).alias("total"), inf.alias("_has_total"))
              .group_by(["ts", *GROUP]).agg(pl.col("good").sum(), pl.col("total").sum(), pl.col("_has_total").any())
              .filter(pl.col("_has_total")).drop("_has_total"))
    elif ind.kind == "ratio":
        if counters is None:
            raise ValueError(f"SLO {slo.name} needs request counters")
        ev = counters.filter(pl.col("service") == ind.total.spec.get("service", slo.service)).select(
            "ts", *GROUP, (pl.col("requests") - pl.col("errors")).alias("good"), pl.col("requests").alias("total"))
    else:
        if lag is None:
            raise ValueError(f"SLO {slo.name} needs lag samples")
        pipeline = ind.metric.spec.get("pipeline", slo.service)
        bad = _BAD_OP[slo.objective.op](pl.col(ind.metric.spec.get("value", "lag_seconds")), slo.objective.value)
        return (lag.filter(pl.col("pipeline") == pipeline)
                .group_by(pl.col("ts").dt.truncate("1m"), pl.col("pipeline").alias("service"))
                .agg(bad.sum().cast(pl.Int64).alias("bad"), pl.len().cast(pl.Int64).alias("total"))
                .with_columns(pl.lit(None, pl.String).alias("cohort"), pl.lit(None, pl.String).alias("build_id"))
                .select("ts", *GROUP, "bad", "total").sort("ts"))
    if slo.budgeting == "Timeslices":
        target = slo.objective.time_slice_target
        ev = ev.filter(pl.col("total") > 0).with_columns(
            ((pl.col("good") / pl.col("total")) < target).cast(pl.Int64).alias("bad"),
            pl.lit(1, pl.Int64).alias("total"))
    else:
        ev = ev.with_columns((pl.col("total") - pl.col("good")).cast(pl.Int64).alias("bad"))
    return ev.select("ts", *GROUP, "bad", pl.col("total").cast(pl.Int64)).sort([*GROUP, "ts"], nulls_last=True)


def window_name(w: timedelta) -> str:
    s = int(w.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _window_starts(ts_minutes: np.ndarray, group: np.ndarray, minutes: int) -> np.ndarray:
    """For each row (sorted by group, ts), the first row of its group inside (t - w, t]."""
    key = group.astype(np.int64) * (1 << 40) + ts_minutes
    return np.searchsorted(key, key - minutes, side="right")


def _window_sums(cum: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Window sums as differences of one cumulative sum (``cum`` has a leading zero)."""
    return cum[1:] - cum[first]


def burn_rates(events: pl.DataFrame, slo: SLO, windows: Sequence[timedelta] | None = None,
               by: Sequence[str] = GROUP) -> pl.DataFrame:
    """Bad ratio and burn rate over each window ending at each minute, per group in `by`.

    Windows are (t - w, t] over minute starts, i.e. the last w/1m minutes including t.
    """
    windows = list(windows or sorted({t.long_window for t in slo.tiers} | {t.short_window for t in slo.tiers}))
    keys = list(by)
    ev = events.group_by(["ts", *keys]).agg(pl.col("bad").sum(), pl.col("total").sum()) if keys != list(GROUP) \
        else events
    ev = ev.sort([*keys, "ts"], nulls_last=True) if keys else ev.sort("ts")
    changed = pl.any_horizontal([pl.col(k).ne_missing(pl.col(k).shift()) for k in keys]) if keys else pl.lit(False)
    marks = ev.select(changed.fill_null(True).cum_sum().alias("g"),
                      (pl.col("ts").dt.epoch("s") // 60).alias("m"))
    group, minute = marks["g"].to_numpy(), marks["m"].to_numpy()
    cum_bad = np.concatenate([[0], np.cumsum(ev["bad"].to_numpy(), dtype=np.int64)])
    cum_total = np.concatenate([[0], np.cumsum(ev["total"].to_numpy(), dtype=np.int64)])
    budget = slo.error_budget
    cols = []
    for w in windows:
        name = window_name(w)
        first = _window_starts(minute, group, int(w.total_seconds() // 60))
        b, t = _window_sums(cum_bad, first), _window_sums(cum_total, first)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(t > 0, b / np.maximum(t, 1), np.nan)
        cols += [pl.Series(f"total_{name}", t), pl.Series(f"error_ratio_{name}", ratio, nan_to_null=True),
                 pl.Series(f"burn_{name}", ratio / budget, nan_to_null=True)]
    return ev.with_columns(cols)


def tier_states(burn: pl.DataFrame, tiers: Sequence[BurnTier]) -> pl.DataFrame:
    """Add `firing_<tier>`: both the long and the short window burn faster than the tier."""
    return burn.with_columns(
        ((pl.col(f"burn_{window_name(t.long_window)}") > t.burn_rate)
         & (pl.col(f"burn_{window_name(t.short_window)}") > t.burn_rate)).fill_null(False).alias(f"firing_{t.name}")
        for t in tiers)


def remaining_budget(events: pl.DataFrame, slo: SLO, start: datetime, end: datetime) -> dict[str, float]:
    """Error budget left over [start, end) (1 = untouched, 0 = spent, negative = overspent)."""
    window = events.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    bad, total = int(window["bad"].sum()), int(window["total"].sum())
    ratio = bad / total if total else 0.0
    return {"bad": bad, "total": total, "error_ratio": ratio,
            "budget_consumed": ratio / slo.error_budget, "budget_remaining": 1 - ratio / slo.error_budget}
