"""Per-minute SLI events, multi-window burn rates, tier states and error budgets.

Everything is vectorised: an SLO's source rows become per-minute (bad, total) event
counts per group (service x cohort x build), window sums are differences of running sums
over the groups laid end to end (no per-group loop), and a burn rate is the window's bad
ratio over the error budget (burn 1 spends the budget exactly over the SLO window).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

import numpy as np
import polars as pl

from .spec import (
    LAG_VALUE,
    SLO,
    SOURCE_COLUMN,
    THRESHOLD_OPS,
    BurnTier,
    is_inf_bound,
    whole_minutes,
)

GROUP = ("service", "cohort", "build_id")
T = TypeVar("T")
# The column of events laid out by group that ``minute_events`` may give: each group's number,
# never decreasing down the frame, a group's rows in time order. ``burn_rates`` checks that it
# still holds (a caller may have sorted the events since) before it takes the layout.
LAID_OUT = "_group"


def minute_events(slo: SLO, *, counters: pl.DataFrame | None = None, latency: pl.DataFrame | None = None,
                  lag: pl.DataFrame | None = None, by: Sequence[str] = GROUP) -> pl.DataFrame:
    """(ts, group..., bad, total) per minute for `slo`, from the source its indicator names,
    in no particular order (``burn_rates`` orders what it needs). A latency SLO's events may
    come laid out by group already, numbered in a ``LAID_OUT`` column that ``burn_rates`` uses.

    Occurrences count requests (or samples); Timeslices count minutes, a minute being bad
    when its good ratio falls below the slice target (minutes without traffic do not count).
    ``by``: the groups a minute is judged for. A Timeslices SLO of the whole service judges
    the service's minute (``by=("service",)``), not each cohort and build's minute summed;
    the group columns left out are null.

    A frame that holds rows but none of the SLO's service (or pipeline) is an error naming
    those it holds (a typo would otherwise judge nothing: 0/0); so is a latency SLO whose good
    bound is none of the service's buckets (every request would count slow). An empty frame,
    or a service without traffic in some minutes, is no error.
    """
    ind = slo.indicator
    if ind.kind == "ratio" and ind.good.spec.get("table") == "latency_buckets":
        if latency is None:
            raise ValueError(f"SLO {slo.name} needs latency buckets")
        threshold = ind.good.spec["le"]
        if is_inf_bound(threshold):
            raise ValueError(f"SLO {slo.name}: the good bucket cannot be +Inf")
        le = float(threshold)
        # One pass over the buckets for the two bounds; the checks look at the whole frame
        # only when the pass finds something wrong.
        lat = latency.filter((pl.col("service") == slo.source[1]) & pl.col("le").is_in([le, float("inf")]))
        if latency.height and not (lat["le"] == le).any():
            mine = _of_source(slo, latency, "latency buckets")
            bounds = ", ".join("+Inf" if math.isinf(b) else f"{b:g}" for b in mine["le"].unique().sort().to_list())
            raise ValueError(f"{_named(slo)}: its good bucket le={le:g} is not among the latency "
                             f"buckets of service {slo.source[1]!r} (le = {bounds}); name one of them")
        ev = _paired_in_order(lat, le)
        if ev is None:
            # The general case: the +Inf bucket (the total) of each minute and group, beside its
            # good bucket; a minute without a +Inf bucket has no requests to judge. Buckets are
            # unique per minute, group and bound (the contract's key), so once sorted by them a
            # minute's good bucket sits just before its +Inf one. A bucket delivered twice
            # (landing files, before the contract) counts once: a copy of the +Inf bucket
            # follows it and is left out.
            minute = ["ts", *GROUP[1:]]  # the service is the one filtered on
            same = pl.all_horizontal(pl.col(k).eq_missing(pl.col(k).shift(1)) for k in minute)
            before = pl.col("le").shift(1)
            good = pl.when(same & before.is_finite()).then(pl.col("count").shift(1)).otherwise(0).fill_null(0)
            total = pl.col("le").is_infinite() & ~(same & before.is_infinite())
            ev = (lat.select("ts", *GROUP, "le", "count").sort([*minute, "le"]).with_columns(good.alias("good"))
                  .filter(total).select("ts", *GROUP, "good", pl.col("count").alias("total")))
    elif ind.kind == "ratio":
        if counters is None:
            raise ValueError(f"SLO {slo.name} needs request counters")
        ev = _of_source(slo, counters, "request counters").select(
            "ts", *GROUP, (pl.col("requests") - pl.col("errors")).alias("good"), pl.col("requests").alias("total"))
    else:
        if lag is None:
            raise ValueError(f"SLO {slo.name} needs lag samples")
        pipeline = slo.source[1]
        value = ind.metric.spec.get("value", LAG_VALUE)
        bad = THRESHOLD_OPS[slo.objective.op].bad(pl.col(value), slo.objective.value)
        mine = _of_source(slo, lag, "lag samples")
        # Samples come in time order (landing files and warehouse reads alike; the odd late file
        # is sorted first): their minutes are grouped in that order, half the cost of hashing
        # them and sorting the minutes after.
        if not mine["ts"].is_sorted():
            mine = mine.sort("ts")
        return (mine.group_by(pl.col("ts").dt.truncate("1m").set_sorted(), maintain_order=True)
                .agg(bad.sum().cast(pl.Int64).alias("bad"), pl.len().cast(pl.Int64).alias("total"))
                .select("ts", pl.lit(pipeline, pl.String).alias("service"), pl.lit(None, pl.String).alias("cohort"),
                        pl.lit(None, pl.String).alias("build_id"), "bad", "total"))
    good, total = pl.col("good"), pl.col("total")
    layout = [LAID_OUT] if LAID_OUT in ev.columns and list(by) == list(GROUP) else []
    if list(by) != list(GROUP):
        ev = ev.group_by("ts", *by).agg(good.sum(), total.sum()).with_columns(
            pl.lit(None, pl.String).alias(c) for c in GROUP if c not in by)
    if slo.budgeting == "Timeslices":
        return ev.filter(total > 0).select(
            "ts", *GROUP, ((good / total) < slo.objective.time_slice_target).cast(pl.Int64).alias("bad"),
            pl.lit(1, pl.Int64).alias("total"), *layout)
    return ev.select("ts", *GROUP, (total - good).cast(pl.Int64).alias("bad"), total.cast(pl.Int64), *layout)


def each_slo(compute: Callable[[SLO], T], slos: Sequence[SLO]) -> list[T]:
    """``compute`` of every SLO, in the SLOs' order, several at a time (one per core): polars
    lets go of the GIL while it computes, so one SLO's burn series proceed beside another's,
    where a single SLO's columns of 43-263 k rows keep a second core mostly idle."""
    workers = min(len(slos), os.cpu_count() or 1)
    if workers < 2:
        return [compute(slo) for slo in slos]
    with ThreadPoolExecutor(workers, thread_name_prefix="slo") as pool:
        return list(pool.map(compute, slos))


def _paired_in_order(lat: pl.DataFrame, le: float) -> pl.DataFrame | None:
    """One service's good and +Inf buckets as (ts, group..., good, total) laid out by group
    (``LAID_OUT``), when they have the usual shape: every group has both buckets for
    the same minutes, in time order, once each. One hash aggregation gathers each group's two
    bounds side by side, which then pair by position: no sort, and ``burn_rates`` takes the
    layout instead of grouping again. None when the shape is any other (the caller pairs them
    by sorting)."""
    good, inf = pl.col("le") == le, pl.col("le").is_infinite()
    keys = list(GROUP[1:])  # the service is the one filtered on
    sides = lat.group_by(keys).agg(
        pl.col("ts").filter(inf), pl.col("count").filter(inf).alias("total"),
        pl.col("ts").filter(good).alias("_good_ts"), pl.col("count").filter(good).alias("good"))
    if not sides.select((pl.col("ts") == pl.col("_good_ts")).all()).item():
        return None
    ev = (sides.drop("_good_ts").with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(LAID_OUT))
          .explode(["ts", "total", "good"]))
    if not _in_layout(ev):  # a minute twice (a file delivered again) would pair with itself
        return None
    return ev.select("ts", pl.lit(lat["service"][0], lat.schema["service"]).alias("service"), *keys,
                     "good", "total", LAID_OUT)


def _in_layout(ev: pl.DataFrame) -> bool:
    """Whether ``ev``'s ``LAID_OUT`` numbers never decrease and each group's minutes
    strictly increase (once each, in time order)."""
    group, ts = pl.col(LAID_OUT), pl.col("ts")
    ok = (group > group.shift(1)) | ((group == group.shift(1)) & (ts > ts.shift(1)))
    return bool(ev.select(ok.fill_null(True).all()).item())


def _named(slo: SLO) -> str:
    return f"SLO {slo.name}" + (f" ({slo.file})" if slo.file else "")


def _of_source(slo: SLO, frame: pl.DataFrame, what: str) -> pl.DataFrame:
    """The rows of ``frame`` of the SLO's service or pipeline; an error naming those the
    frame holds when it holds rows but none of them."""
    column = SOURCE_COLUMN[slo.source[0]]
    mine = frame.filter(pl.col(column) == slo.source[1])
    if frame.height and not mine.height:
        present = ", ".join(sorted(str(v) for v in frame[column].unique().to_list()))
        raise ValueError(f"{_named(slo)}: the {what} hold no {column} {slo.source[1]!r} "
                         f"(they hold: {present}); is the {column} in its indicator spelt right?")
    return mine


def window_name(w: timedelta) -> str:
    s = int(w.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _grouped(events: pl.DataFrame, keys: list[str]) -> pl.DataFrame | None:
    """`events` ordered by group, then minute, with `_group` (the group's number) and
    `_first` (the row number of its first row); None when no key splits the rows (one
    series: ``burn_rates`` takes its short path).

    One hash aggregation gathers each group's rows (in their order, which is time order
    when the rows come sorted) and an explode lays the groups end to end, which is much
    cheaper than sorting on the key strings. Groups come in no particular order.
    """
    # A key with one value in every row (the SLO's service, after selecting its rows) splits
    # nothing: left out of the grouping and set back after (hashing it cost a third of it).
    # All keys looked at in one call (a polars call costs about as much as its work here).
    single = events.select(pl.col(k).eq_missing(pl.col(k).first()).all() for k in keys).row(0) \
        if events.height else (False,) * len(keys)  # no rows: no key is constant
    constant = {k: events[k][0] for k, one in zip(keys, single, strict=True) if one}
    keys = [k for k in keys if k not in constant]
    if not keys:
        return None
    in_time = pl.all() if events["ts"].is_sorted() else pl.all().sort_by("ts")
    rows = pl.len().cast(pl.Int64)
    grouped = events.drop(list(constant)).group_by(keys).agg(in_time, rows.alias("_rows")).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_group"),
        (pl.col("_rows").cum_sum() - pl.col("_rows")).cast(pl.get_index_type()).alias("_first"))
    values = [c for c in events.columns if c not in keys and c not in constant]
    return grouped.explode(values).with_columns(
        pl.lit(v, events.schema[k]).alias(k) for k, v in constant.items()).select(*events.columns, "_group", "_first")


def _every_minute(series: pl.DataFrame) -> bool:
    """Whether one series, in time order, has exactly one row for each minute from its first
    to its last."""
    step = (pl.col("ts").dt.epoch("s") // 60).diff()
    return bool(series.select((step.fill_null(1) == 1).all()).item())


def _dense(ev: pl.DataFrame) -> bool:
    """Whether every group has a row for each minute from its first to its last."""
    minute, row = pl.col("_minute"), pl.col("_row")
    return bool(ev.select(((minute - minute.gather(pl.col("_first"))) == (row - pl.col("_first"))).all()).item())


def burn_rates(events: pl.DataFrame, slo: SLO, windows: Sequence[timedelta] | None = None,
               by: Sequence[str] = GROUP) -> pl.DataFrame:
    """Bad ratio and burn rate over each window ending at each minute, per group in `by`;
    rows ordered by group (in no particular group order), then minute.

    Windows are (t - w, t] over minute starts, i.e. the last w/1m minutes including t. A
    window's sums are differences of running sums: up to the row, less up to (not
    including) the window's first row. That first row is arithmetic on row numbers when
    every group has a row for each of its minutes (the usual per-minute series; for a
    single such series, a shift of the running sums), and a binary search over (group,
    minute) otherwise.
    """
    windows = list(windows or slo.windows)
    minute = timedelta(minutes=1)
    if not all(map(whole_minutes, windows)):
        raise ValueError(f"burn windows must be whole minutes: {[str(w) for w in windows]}")
    keys = list(by)
    ev = events.group_by(["ts", *keys]).agg(pl.col("bad").sum(), pl.col("total").sum()) if keys != list(GROUP) \
        else events
    columns = [c for c in ev.columns if c != LAID_OUT]
    # Events ``minute_events`` laid out by group (it had to, for the latency buckets) are taken
    # as they are, with each group's first row. One chunk otherwise: a frame read from many
    # files has one chunk per file, and the grouping gathers from one chunk faster (by more
    # than the copy costs).
    if LAID_OUT in ev.columns and _in_layout(ev):
        first = pl.when(pl.col(LAID_OUT).ne_missing(pl.col(LAID_OUT).shift(1))).then(
            pl.int_range(pl.len(), dtype=pl.get_index_type()))
        ordered = ev.with_columns(first.forward_fill().alias("_first"))
    else:
        ordered = _grouped((ev.select(columns) if LAID_OUT in ev.columns else ev).rechunk(), keys)
    series = ordered is None
    if series:
        ordered = ev if ev["ts"].is_sorted() else ev.sort("ts")
    cum = {c: pl.col(f"_cum_{c}") for c in ("bad", "total")}
    ev = ordered.with_columns(
        *(pl.col(c).cast(pl.Int64).cum_sum().alias(f"_cum_{c}") for c in cum),
        # A column, not a scalar: polars divides by a scalar through its reciprocal, one unit
        # in the last place away from the true division that pandas and numpy compute.
        pl.Series("_budget", np.full(ordered.height, slo.error_budget)))
    if series and _every_minute(ev):
        # One series with a row for every minute (a pipeline's lag): a window's first row is
        # `minutes` rows back, so its sums are the running sums less themselves shifted;
        # no row numbers, no gathers (a polars call costs about as much as its work here).
        def window_sum(c: str, w: timedelta) -> pl.Expr:
            return cum[c] - cum[c].shift(w // minute, fill_value=0)
    else:
        if series:
            ev = ev.with_columns(pl.lit(0, pl.Int64).alias("_group"), pl.lit(0, pl.get_index_type()).alias("_first"))
        # Row numbers in polars' own index type: gathers take them as they are (Int64 indices
        # are converted and bounds-checked first, a twentieth of the whole computation).
        ev = ev.with_row_index("_row").with_columns(
            (pl.col("ts").dt.epoch("s") // 60).alias("_minute"),
            *((cum[c] - pl.col(c)).alias(f"_cum_{c}_before") for c in cum))  # sums run once
        if _dense(ev):
            def window_start(minutes: int) -> pl.Expr:  # never before the group's first row
                return pl.max_horizontal(pl.col("_row"), pl.col("_first") + (minutes - 1)) - (minutes - 1)
        else:
            ev = ev.with_columns((pl.col("_group") * (1 << 40) + pl.col("_minute")).alias("_key"))

            def window_start(minutes: int) -> pl.Expr:
                return pl.col("_key").search_sorted(pl.col("_key") - minutes, side="right")

        # Each window's first row once, for both of its sums.
        ev = ev.with_columns(window_start(w // minute).alias(f"_from_{window_name(w)}") for w in windows)

        def window_sum(c: str, w: timedelta) -> pl.Expr:
            return cum[c] - pl.col(f"_cum_{c}_before").gather(pl.col(f"_from_{window_name(w)}"))
    names = [window_name(w) for w in windows]
    # In three steps, each column computed once (one expression per column would redo the
    # window sums for the ratio and the burn: twice the time).
    sums = []
    for name, w in zip(names, windows, strict=True):
        sums += [window_sum("total", w).alias(f"total_{name}"), window_sum("bad", w).alias(f"_bad_{name}")]
    ev = ev.with_columns(sums).with_columns(
        # no traffic in the window: no ratio (null)
        pl.when(pl.col(f"total_{n}") > 0).then(pl.col(f"_bad_{n}") / pl.col(f"total_{n}")).alias(f"error_ratio_{n}")
        for n in names)
    return ev.with_columns((pl.col(f"error_ratio_{n}") / pl.col("_budget")).alias(f"burn_{n}") for n in names).select(
        *columns,
        *(f"{k}_{n}" for n in names for k in ("total", "error_ratio", "burn")))


def tier_states(burn: pl.DataFrame, slo: SLO) -> pl.DataFrame:
    """Add `firing_<tier>`: both the long and the short window burn faster than the tier.

    Compared as the exported Prometheus alerts compare (``rules.py``): the error ratio against
    burn rate x error budget, so a check fires exactly when the alert would, to the last bit.
    """
    def over(t: BurnTier, w: timedelta) -> pl.Expr:
        return pl.col(f"error_ratio_{window_name(w)}") > t.burn_rate * slo.error_budget

    return burn.with_columns((over(t, t.long_window) & over(t, t.short_window)).fill_null(False)
                             .alias(f"firing_{t.name}") for t in slo.tiers)


def remaining_budget(events: pl.DataFrame, slo: SLO, start: datetime, end: datetime) -> dict[str, float]:
    """Error budget left over [start, end) (1 = untouched, 0 = spent, negative = overspent)."""
    window = events.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    bad, total = int(window["bad"].sum()), int(window["total"].sum())
    ratio = bad / total if total else 0.0
    return {"bad": bad, "total": total, "error_ratio": ratio,
            "budget_consumed": ratio / slo.error_budget, "budget_remaining": 1 - ratio / slo.error_budget}
