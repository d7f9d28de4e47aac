"""One day of SLO burn: per-minute burn series, tier evaluations and the day's budget use.

The burn windows reach back up to the longest tier window (3 days), so a day is computed
from that much history and only the day's own minutes are kept: re-running a day gives
the same rows whatever else has been computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from .burn import GROUP, burn_rates, each_slo, minute_events, tier_states, window_name
from .spec import SLO, SOURCE_COLUMN

# Reported beside the tiers' own windows though no tier may alert on them: slo.burn_minutes
# and slo.burn_service have always carried a 1h and a 1d burn (docs/slo.md; the 1h one is the
# plotted peak), so the columns stay put whatever windows the tiers use.
REPORT_WINDOWS = (timedelta(hours=1), timedelta(days=1))
MIN_EVIDENCE = 10  # events (requests, samples or minutes) a group needs over a tier's long window to be named
# The longest run of minutes an SLO's source may stay silent; the exported rules'
# SLOData<Name>Missing alert waits as long (rules.py), so both paths call the same gap missing data.
MAX_SILENCE = timedelta(minutes=10)


def burn_windows(slos: list[SLO]) -> list[timedelta]:
    """Every SLO's tier windows plus REPORT_WINDOWS, shortest first: one column set for all
    SLOs, since their rows share the burn tables."""
    return sorted({w for s in slos for w in s.windows} | set(REPORT_WINDOWS))


def tier_names(slos: list[SLO]) -> list[str]:
    """Every tier name, in first-seen order (tiers come fastest first): each SLO's rows get a
    firing column per name, False for tiers it does not have."""
    return list(dict.fromkeys(t.name for s in slos for t in s.tiers))


def lookback(slos: list[SLO]) -> timedelta:
    return max((t.long_window for s in slos for t in s.tiers), default=timedelta(0))


@dataclass
class TierEvaluation:
    slo: str
    tier: str
    severity: str
    burn_rate: float
    long_window: str
    short_window: str
    firing_minutes: int
    groups_firing: list[str]
    first_firing: str | None
    groups_first: dict[str, str]  # each group's own first firing minute (its build was ramping then, or not)
    max_burn_long: float | None
    max_burn_short: float | None
    ramp_action: str
    platform_action: str
    # The first minute the tier is judged, when after the day's start: until its long window
    # lies whole inside the history, it neither fires nor passes on evidence (None: all day).
    judged_from: str | None = None

    @property
    def passed(self) -> bool:
        return self.firing_minutes == 0


@dataclass
class DayBurn:
    minutes: pl.DataFrame  # per group (service x cohort x build): ts, slo, group..., bad, total, burn_*, firing_*
    service: pl.DataFrame  # the SLO as a whole (all cohorts and builds): what alerts and checks judge
    budget: pl.DataFrame  # slo, bad, total, error_ratio, burn_rate (the day's error ratio over the error budget)
    tiers: list[TierEvaluation]
    since: datetime | None = None  # where the SLI history starts
    # Per SLO, the runs of the day longer than MAX_SILENCE in which its source had no row.
    silences: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)

    def peak_burn(self, slo: str, window: timedelta) -> float | None:
        """The SLO's highest burn over ``window`` in the day, among the minutes whose window lies
        whole inside the history (before, one bad sample of two reads 50x); None without any."""
        first = _judged_start(self.since, window)
        rows = self.service.filter((pl.col("slo") == slo) & (pl.col("ts") >= first if first else pl.lit(True)))
        return _max(rows, f"burn_{window_name(window)}")


def empty_sources(slos: list[SLO], start: datetime, end: datetime,
                  frames: dict[str, pl.DataFrame | None]) -> list[str]:
    """The source tables some SLO reads (``frames``: table -> rows) that hold no row in
    [start, end) for it: a day without any SLI is missing data, not a healthy day, and its
    checks must not pass on it (a wrong Prometheus URL answers with empty series)."""
    missing = []
    for table, name in sorted({s.source for s in slos}):
        frame = frames.get(table)
        column = SOURCE_COLUMN[table]
        rows = 0 if frame is None or not frame.height else frame.filter(
            (pl.col("ts") >= start) & (pl.col("ts") < end) & (pl.col(column) == name)).height
        if not rows:
            missing.append(f"{table} ({column} {name})")
    return missing


def silences(slo: SLO, start: datetime, end: datetime, frames: dict[str, pl.DataFrame | None],
             since: datetime | None = None, until: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """The runs of more than MAX_SILENCE in [start, end) with no row of the SLO's source, as
    [from, to): a dead exporter or a lost file reads as minutes without traffic, which burn
    nothing, so a day with hours missing would pass every tier on the data that is left.

    Judged from the history's start (``since``) up to the end of the last minute any source
    reports (``until``, default ``history_end`` of ``frames``): a day still being ingested,
    or the history's last day, is not missing what has not come yet, but a source that stops
    while the others go on is.
    """
    table, name = slo.source
    until = until or history_end(*frames.values())
    lo = max(start, since) if since is not None else start
    hi = min(end, until) if until is not None else lo
    if hi <= lo:
        return []
    frame = frames.get(table)
    minutes: list[datetime] = [] if frame is None or not frame.height else (
        frame.filter((pl.col(SOURCE_COLUMN[table]) == name) & (pl.col("ts") >= lo) & (pl.col("ts") < hi))
        .select(pl.col("ts").dt.truncate("1m").unique().sort())["ts"].to_list())
    step = timedelta(minutes=1)
    # Each silence runs from the minute after one report (or the start) to the next report (or the end).
    after, before = [lo, *(m + step for m in minutes)], [*minutes, hi]
    return [(a, b) for a, b in zip(after, before, strict=True) if b - a > MAX_SILENCE]


def history_start(*frames: pl.DataFrame | None) -> datetime | None:
    """The first minute of the SLI history the frames hold (their earliest ``ts``)."""
    stamps = [f["ts"].min() for f in frames if f is not None and f.height]
    return min(stamps).replace(second=0, microsecond=0) if stamps else None


def history_end(*frames: pl.DataFrame | None) -> datetime | None:
    """The end of the last minute of the SLI history the frames hold (after their latest ``ts``)."""
    stamps = [f["ts"].max() for f in frames if f is not None and f.height]
    return max(stamps).replace(second=0, microsecond=0) + timedelta(minutes=1) if stamps else None


def judged(burn: pl.DataFrame, slo: SLO, since: datetime | None) -> pl.DataFrame:
    """``burn`` with each tier's firing cleared until its long window lies whole inside the
    history that starts at ``since``: before, a sample or two make up the "3-day" ratio, and
    a tier is not judged on them (the alert scores use the same rule)."""
    if since is None:
        return burn
    return burn.with_columns(
        (pl.col(f"firing_{t.name}") & (pl.col("ts") >= since + t.long_window - timedelta(minutes=1)))
        .alias(f"firing_{t.name}") for t in slo.tiers)


def compute_day(slos: list[SLO], start: datetime, end: datetime, *, counters: pl.DataFrame,
                latency: pl.DataFrame, lag: pl.DataFrame, since: datetime | None = None) -> DayBurn:
    """The day [start, end) of every SLO, from frames reaching back ``lookback`` before it.
    ``since``: where the SLI history starts (default: the frames' first minute); a tier
    fires only once its long window lies whole after it."""
    windows, names = burn_windows(slos), tier_names(slos)
    since = since or history_start(counters, latency, lag)

    def evaluate(slo: SLO) -> tuple[pl.DataFrame, pl.DataFrame, dict, list[TierEvaluation]]:
        events = minute_events(slo, counters=counters, latency=latency, lag=lag)
        day = _day(judged(tier_states(burn_rates(events, slo, windows), slo), slo, since), start, end, slo, names)
        if slo.budgeting == "Timeslices":  # the service's own minutes, not its groups' minutes summed
            events = minute_events(slo, counters=counters, latency=latency, lag=lag, by=("service",))
        whole = _day(judged(tier_states(burn_rates(events, slo, windows, by=("service",)), slo), slo, since),
                     start, end, slo, names)
        # A Timeslices budget counts the service's own minutes, as its burn does.
        spent = whole if slo.budgeting == "Timeslices" else day
        bad, total = int(spent["bad"].sum()), int(spent["total"].sum())
        ratio = bad / total if total else 0.0
        budget = {"slo": slo.name, "bad": bad, "total": total, "error_ratio": ratio,
                  "burn_rate": ratio / slo.error_budget}
        tiers = []
        for t in slo.tiers:
            lw, sw = window_name(t.long_window), window_name(t.short_window)
            firing = whole.filter(pl.col(f"firing_{t.name}"))
            # A group is named only on enough evidence over the long window: below it the
            # result is inconclusive, and a ramp is held, not blamed, on a handful of requests.
            in_groups = day.filter(pl.col(f"firing_{t.name}") & (pl.col(f"total_{lw}") >= MIN_EVIDENCE))
            first = {"/".join(str(v) for v in r[:-1] if v is not None): r[-1].isoformat()
                     for r in in_groups.group_by(*GROUP).agg(pl.col("ts").min()).rows()}
            # The peaks the check reports, over the minutes it judged (as its firing minutes are).
            judged_start = _judged_start(since, t.long_window)
            judged_rows = whole.filter(pl.col("ts") >= judged_start) if judged_start else whole
            tiers.append(TierEvaluation(
                slo.name, t.name, t.severity, t.burn_rate, lw, sw, firing.height, sorted(first),
                firing["ts"].min().isoformat() if firing.height else None, first,  # as the groups' minutes
                _max(judged_rows, f"burn_{lw}"), _max(judged_rows, f"burn_{sw}"), t.ramp_action, t.platform_action,
                _judged_from(since, t.long_window, start)))
        return day, whole, budget, tiers

    evaluated = each_slo(evaluate, slos)
    frames, service_frames = [e[0] for e in evaluated], [e[1] for e in evaluated]
    budgets, tiers = [e[2] for e in evaluated], [t for e in evaluated for t in e[3]]
    cols = ["ts", "slo", *GROUP, "bad", "total"]
    cols += [f"{k}_{window_name(w)}" for w in windows for k in ("error_ratio", "burn")]
    cols += [f"firing_{n}" for n in names]
    # Stored in reading order (SLO, series, minute): a day's rows of `slo.burn_minutes` read
    # each series in time order, whatever order the burn computation left them in.
    minutes = pl.concat([f.select(cols) for f in frames], how="vertical_relaxed").sort(
        ["slo", *GROUP, "ts"], nulls_last=True) if frames else pl.DataFrame()
    service_cols = [c for c in cols if c not in ("cohort", "build_id")]
    service = pl.concat([f.select(service_cols) for f in service_frames], how="vertical_relaxed").sort(
        ["slo", "service", "ts"]) if service_frames else pl.DataFrame()
    sources = {"request_counters": counters, "latency_buckets": latency, "lag_samples": lag}
    until = history_end(counters, latency, lag)
    return DayBurn(minutes, service, pl.DataFrame(budgets), tiers, since,
                   {slo.name: silences(slo, start, end, sources, since, until) for slo in slos})


def _day(burn: pl.DataFrame, start: datetime, end: datetime, slo: SLO, tier_names: list[str]) -> pl.DataFrame:
    day = burn.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    for name in tier_names:
        if f"firing_{name}" not in day.columns:
            day = day.with_columns(pl.lit(False).alias(f"firing_{name}"))
    return day.with_columns(pl.lit(slo.name).alias("slo"))


def _judged_start(since: datetime | None, window: timedelta) -> datetime | None:
    """The first minute whose ``window`` lies whole inside the history (None: no history start)."""
    return None if since is None else since + window - timedelta(minutes=1)


def _judged_from(since: datetime | None, long_window: timedelta, start: datetime) -> str | None:
    """The first minute of the day a tier is judged (as ``judged`` clears it), when after the start."""
    first = _judged_start(since, long_window)
    return first.isoformat() if first is not None and first > start else None


def _max(frame: pl.DataFrame, col: str) -> float | None:
    v = frame[col].max() if frame.height else None
    return None if v is None else round(float(v), 4)
