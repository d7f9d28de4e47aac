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

from .spec import SLO, THRESHOLD_OPS, BurnTier, is_inf_bound

GROUP = ("service", "cohort", "build_id")


def minute_events(slo: SLO, *, counters: pl.DataFrame | None = None, latency: pl.DataFrame | None = None,
                  lag: pl.DataFrame | None = None) -> pl.DataFrame:
    """(ts, group..., bad, total) per minute for `slo`, from the source its indicator names,
    in no particular order (``burn_rates`` orders what it needs).

    Occurrences count requests (or samples); Timeslices count minutes, a minute being bad
    when its good ratio falls below the slice target (minutes without traffic do not count).
    """
    ind = slo.indicator
    if ind.kind == "ratio" and ind.good.spec.get("table") == "latency_buckets":
        if latency is None:
            raise ValueError(f"SLO {slo.name} needs latency buckets")
        threshold = ind.good.spec["le"]
        if is_inf_bound(threshold):
            raise ValueError(f"SLO {slo.name}: the good bucket cannot be +Inf")
        le = float(threshold)
        lat = latency.filter((pl.col("service") == ind.total.spec.get("service", slo.service))
                             & pl.col("le").is_in([le, float("inf")]))
        # The +Inf bucket (the total) of each minute and group, beside its good bucket: a minute
        # without a +Inf bucket has no requests to judge. Buckets are unique per minute, group
        # and bound (the contract's key), so a join pairs them.
        inf = pl.col("le").is_infinite()
        ev = (lat.filter(inf).select("ts", *GROUP, pl.col("count").alias("total"))
              .join(lat.filter(~inf).select("ts", *GROUP, pl.col("count").alias("good")), on=["ts", *GROUP],
                    how="left")
              .with_columns(pl.col("good").fill_null(0)))
    elif ind.kind == "ratio":
        if counters is None:
            raise ValueError(f"SLO {slo.name} needs request counters")
        ev = counters.filter(pl.col("service") == ind.total.spec.get("service", slo.service)).select(
            "ts", *GROUP, (pl.col("requests") - pl.col("errors")).alias("good"), pl.col("requests").alias("total"))
    else:
        if lag is None:
            raise ValueError(f"SLO {slo.name} needs lag samples")
        pipeline = ind.metric.spec.get("pipeline", slo.service)
        sample = pl.col(ind.metric.spec.get("value", "lag_seconds"))
        bad = THRESHOLD_OPS[slo.objective.op].bad(sample, slo.objective.value)
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
    return ev.select("ts", *GROUP, "bad", pl.col("total").cast(pl.Int64))


def window_name(w: timedelta) -> str:
    s = int(w.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _group_hash(keys: list[str]) -> pl.Expr:
    """The 64-bit hash that orders groups (a test swaps in a colliding one)."""
    return pl.struct(keys).hash()


def _ordered(events: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, np.ndarray]:
    """`events` ordered by group then minute, and each row's group number.

    Groups are ordered by a 64-bit hash of their keys, a third of the cost of sorting the
    key strings (and a stable sort suffices when the rows already come in time order). Two
    groups sharing a hash would interleave; that is detected, and the keys are sorted then.
    """
    if not keys:
        ev = events.sort("ts")
        return ev, np.zeros(ev.height, dtype=np.int64)
    ev = events.with_columns(_group_hash(keys).alias("_g"))
    ev = ev.sort("_g", maintain_order=True) if ev["ts"].is_sorted() else ev.sort(["_g", "ts"])
    changed = pl.any_horizontal([pl.col(k).ne_missing(pl.col(k).shift()) for k in keys]).fill_null(True)
    group = ev.select(changed.cum_sum()).to_series().to_numpy().astype(np.int64)
    if ev.height and group[-1] != ev["_g"].n_unique():  # a hash collision
        ev = events.sort([*keys, "ts"], nulls_last=True).with_columns(pl.lit(0, pl.UInt64).alias("_g"))
        group = ev.select(changed.cum_sum()).to_series().to_numpy().astype(np.int64)
    return ev.drop("_g"), group


class _WindowStarts:
    """For rows ordered by group then minute, the first row of each row's group inside a
    window (t - w, t].

    When every group has a row for each of its minutes (the usual per-minute series) that is
    arithmetic on row numbers; otherwise one binary search over (group, minute) per window.
    """

    def __init__(self, minute: np.ndarray, group: np.ndarray) -> None:
        n = len(minute)
        self.row = np.arange(n)
        start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if n else np.zeros(0, dtype=np.int64)
        self.first_of_group = np.repeat(start, np.diff(np.r_[start, n]))
        self.dense = bool(n) and np.array_equal(minute - minute[self.first_of_group], self.row - self.first_of_group)
        self.key = group.astype(np.int64) * (1 << 40) + minute

    def __call__(self, minutes: int) -> np.ndarray:
        if self.dense:
            return np.maximum(self.row - minutes + 1, self.first_of_group)
        return np.searchsorted(self.key, self.key - minutes, side="right")


def _window_sums(cum: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Window sums as differences of one cumulative sum (``cum`` has a leading zero)."""
    return cum[1:] - cum[first]


def burn_rates(events: pl.DataFrame, slo: SLO, windows: Sequence[timedelta] | None = None,
               by: Sequence[str] = GROUP) -> pl.DataFrame:
    """Bad ratio and burn rate over each window ending at each minute, per group in `by`;
    rows ordered by group, then minute.

    Windows are (t - w, t] over minute starts, i.e. the last w/1m minutes including t.
    """
    windows = list(windows or slo.windows)
    keys = list(by)
    ev = events.group_by(["ts", *keys]).agg(pl.col("bad").sum(), pl.col("total").sum()) if keys != list(GROUP) \
        else events
    ev, group = _ordered(ev, keys)
    minute = (ev["ts"].dt.epoch("s") // 60).to_numpy()
    cum_bad = np.concatenate([[0], np.cumsum(ev["bad"].to_numpy(), dtype=np.int64)])
    cum_total = np.concatenate([[0], np.cumsum(ev["total"].to_numpy(), dtype=np.int64)])
    budget = slo.error_budget
    starts = _WindowStarts(minute, group)
    cols = []
    for w in windows:
        name = window_name(w)
        first = starts(int(w.total_seconds() // 60))
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
