"""OpenSLO v1 files -> validated SLO domain objects.

One direction only (as Sloth does): YAML at the edge, small typed objects inside. The
domain objects know nothing of YAML or Prometheus. Multi-window burn-rate alerting, which
OpenSLO v1 cannot express (one lookback window per SLO), comes from our documented
extension kind `BurnAlertPolicy` (apiVersion `summit.example/v1alpha1`) in the same files.
"""

from __future__ import annotations

import math
import operator
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml

from ..strict_yaml import DuplicateKeyError, UniqueKeyLoader

OPENSLO = "openslo/v1"
EXTENSION = "summit.example/v1alpha1"
OWNER_ANNOTATION = "summit.example/owner"
RAMP_ACTIONS = ("rollback", "pause", "ticket")
PLATFORM_ACTIONS = ("freeze", "ticket")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Checks are named <slo, '-' as '_'>__<tier>: no '--' in an SLO's name and no '__' in a tier's
# keeps two SLOs' tiers from naming the same check.
_TIER_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
_DURATION = re.compile(r"^(\d+)(s|m|h|d|w|M|Q|Y)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


SOURCE_TABLES = ("request_counters", "latency_buckets", "lag_samples")  # what burn series read
LAG_VALUE = "lag_seconds"
# An SLO file is a few KB; one this large is a data file under a .yaml name (reading 60 MB of
# YAML took over a minute and 380 MB, with no word of what was wrong).
MAX_FILE_BYTES = 4 << 20
# The keys a metric source's spec may hold, per table: what the burn series read, no more.
SOURCE_KEYS = {"request_counters": ("table", "service", "value"), "latency_buckets": ("table", "service", "le"),
               "lag_samples": ("table", "pipeline", "value")}
# The column naming an SLO's service (or lag pipeline) in each source table.
SOURCE_COLUMN = {table: keys[1] for table, keys in SOURCE_KEYS.items()}
# A request-counter ratio is good = requests - errors over total = requests (all burn.minute_events computes).
GOOD_REQUESTS, ALL_REQUESTS = "requests - errors", "requests"
# Labels and annotations the exported rules write themselves (rules.py).
RULE_LABELS = ("slo", "service", "owner", "window", "severity", "tier", "ramp_action", "platform_action",
               "alertname")  # the last one Prometheus sets on every alert
ALERT_ANNOTATIONS = ("summary", "action")
_PROMETHEUS_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_NAMES = ("all",)  # the alert scores' totals over every SLO (alert_score.TOTALS)
TIER_KEYS = ("name", "burnRate", "longWindow", "shortWindow", "severity", "ramp", "platform")
POLICY_KEYS = ("slo", "tiers")
# The OpenSLO v1 keys each part may hold; a key outside them (a typo such as timeSliceTaget)
# is refused, and those of the spec this platform does not compute are refused by name.
DOC_KEYS = ("apiVersion", "kind", "metadata", "spec")
METADATA_KEYS = ("name", "displayName", "labels", "annotations")
SLO_SPEC_KEYS = ("description", "service", "indicator", "indicatorRef", "timeWindow", "budgetingMethod",
                 "objectives")
OBJECTIVE_KEYS = ("displayName", "op", "value", "target", "targetPercent", "timeSliceTarget", "timeSliceWindow")
WINDOW_KEYS = ("duration", "isRolling", "calendar")
CALENDAR_KEYS = ("startTime", "timeZone")
SLI_SPEC_KEYS = ("description", "ratioMetric", "thresholdMetric")
RATIO_KEYS = ("counter", "good", "total")
NOT_COMPUTED = {  # OpenSLO v1 fields this platform does not compute: what to write instead
    "alertPolicies": f"burn alert tiers come from a BurnAlertPolicy document ({EXTENSION}), see docs/slo.md",
    "bad": "give the ratio as good and total",
    "raw": "give the ratio as counters (good and total)",
    "rawType": "give the ratio as counters (good and total)",
    "compositeWeight": "composite SLOs are not supported",
}
# Valid OpenSLO v1 kinds that carry nothing the platform computes: read past, not refused.
IGNORED_KINDS = ("Service", "DataSource")
ALERT_KINDS = ("AlertPolicy", "AlertCondition", "AlertNotificationTarget")
# A calendar window's usual length, to say what share of its budget a tier spends.
_CALENDAR_LENGTH = {"day": timedelta(days=1), "week": timedelta(weeks=1), "month": timedelta(days=30),
                    "quarter": timedelta(days=91), "year": timedelta(days=365)}
# The shortest a calendar window gets, to compare a tier's long window with.
_CALENDAR_SPAN = {"day": timedelta(days=1), "week": timedelta(weeks=1), "month": timedelta(days=28),
                  "quarter": timedelta(days=89), "year": timedelta(days=365)}


def is_inf_bound(value: Any) -> bool:
    """Whether a histogram bucket bound is +Inf, however YAML or Prometheus spelled it
    (+Inf, inf, .inf): one test for the burn series and the rule export alike."""
    return str(value).lower() in ("+inf", "inf", ".inf")


@dataclass(frozen=True)
class ThresholdOp:
    """When a threshold objective's sample is bad, in both places it is judged: `bad(sample,
    value)` for our own series (numbers or polars expressions), `promql` for the exported rules.
    One table, so the two can never disagree."""

    bad: Callable[[Any, Any], Any]
    promql: str


# op -> the test a *bad* sample meets (the objective says what a good one is).
THRESHOLD_OPS: dict[str, ThresholdOp] = {
    "lte": ThresholdOp(operator.gt, ">"),
    "lt": ThresholdOp(operator.ge, ">="),
    "gte": ThresholdOp(operator.lt, "<"),
    "gt": ThresholdOp(operator.le, "<="),
}


def whole_minutes(w: timedelta) -> bool:
    """Whether a burn window is a whole number of minutes (at least one): burn series are
    per minute, so no other window can be computed."""
    return w >= timedelta(minutes=1) and not w % timedelta(minutes=1)


class SLOSpecError(ValueError):
    """A bad SLO file: names the file and the field path."""

    def __init__(self, file: Path | str, path: str, message: str):
        super().__init__(f"{file}: {path}: {message}")
        self.file, self.path = str(file), path


@dataclass(frozen=True)
class MetricSource:
    type: str | None  # None when a metricSourceRef names the DataSource instead
    spec: dict[str, Any]


@dataclass(frozen=True)
class Indicator:
    """A ratio (good/total counters) or a threshold metric (samples compared to a value)."""

    name: str
    kind: Literal["ratio", "threshold"]
    good: MetricSource | None = None
    total: MetricSource | None = None
    metric: MetricSource | None = None


@dataclass(frozen=True)
class TimeWindow:
    rolling: bool
    duration: timedelta | None  # rolling windows
    calendar_unit: Literal["month", "quarter", "year", "week", "day"] | None = None
    calendar_tz: str | None = None
    calendar_start: date | None = None  # the calendar's startTime: periods repeat from its day

    def first_day(self, day: date) -> date:
        """The first daily partition of the window that ends with ``day``: a rolling window
        covers its whole days back (at least ``day`` itself); a calendar window starts at
        its month, quarter, year or week, counted from the day of its ``startTime`` (a
        billing cycle from the 15th, a week from Sunday), or from the 1st (Monday) without one."""
        if self.rolling:
            assert self.duration is not None
            return day - timedelta(days=max(math.ceil(self.duration / timedelta(days=1)), 1) - 1)
        start = self.calendar_start
        if self.calendar_unit == "week":
            return day - timedelta(days=(day.weekday() - (start.weekday() if start else 0)) % 7)
        start = start or date(2000, 1, 1)
        months = {"month": 1, "quarter": 3, "year": 12}.get(self.calendar_unit or "")
        if months is None:
            return day
        anchor = start.year * 12 + start.month - 1
        index = anchor + ((day.year * 12 + day.month - 1) - anchor) // months * months
        first = _month_day(index, start.day)
        return first if first <= day else _month_day(index - months, start.day)


def _month_day(month_index: int, day: int) -> date:
    """The ``day``th of a month (months counted from year 0), or its last day if shorter."""
    year, month = divmod(month_index, 12)
    following = date(year + (month == 11), (month + 1) % 12 + 1, 1)
    return date(year, month + 1, min(day, (following - timedelta(days=1)).day))


@dataclass(frozen=True)
class Objective:
    target: float
    op: str | None = None  # threshold indicators: lte | lt | gte | gt
    value: float | None = None
    time_slice_target: float | None = None
    time_slice_window: timedelta | None = None


@dataclass(frozen=True)
class BurnTier:
    name: str
    burn_rate: float
    long_window: timedelta
    short_window: timedelta
    severity: Literal["critical", "warning"]
    ramp_action: str  # what to do to a ramp whose cohorts burn: rollback | pause | ticket
    platform_action: str  # what to do when the stable build burns: freeze | ticket


@dataclass(frozen=True)
class SLO:
    name: str
    display_name: str
    owner: str
    description: str
    service: str
    indicator: Indicator
    window: TimeWindow
    budgeting: Literal["Occurrences", "Timeslices"]
    objective: Objective
    tiers: tuple[BurnTier, ...] = field(default_factory=tuple)
    file: str = ""
    # metadata.labels, on every exported rule (Alertmanager routes on them), and the
    # annotations named like Prometheus labels (runbook_url, dashboard), on every alert.
    labels: dict[str, str] = field(default_factory=dict)
    alert_annotations: dict[str, str] = field(default_factory=dict)

    @property
    def error_budget(self) -> float:
        """The allowed bad fraction (1 - target): burn rate 1 spends it exactly over the window."""
        return error_budget_of(self.objective.target)

    @property
    def source(self) -> tuple[str, str]:
        """(table, service or pipeline) its indicator reads: one of SOURCE_TABLES, and the
        service (ratio SLOs) or pipeline (lag thresholds) it filters on."""
        ind = self.indicator
        if ind.kind == "ratio":
            return ind.total.spec["table"], ind.total.spec["service"]
        return ind.metric.spec["table"], ind.metric.spec["pipeline"]

    def budget_spent_to_fire(self, tier: BurnTier) -> float:
        """The share of the error budget a tier lets go before it fires (``_budget_share``)."""
        return _budget_share(tier, self.window)

    @property
    def windows(self) -> list[timedelta]:
        """Every window its burn tiers read (long and short), shortest first: each is computed
        once however many tiers share it."""
        return sorted({t.long_window for t in self.tiers} | {t.short_window for t in self.tiers})


def _budget_share(tier: BurnTier, window: TimeWindow) -> float:
    """The share of the error budget a tier lets go before it fires: its burn rate over its
    long window, against the SLO's window (a calendar one at its usual length). The SRE
    Workbook's tiers for a 30-day SLO spend 2%, 5% and 10%; the same rates on a shorter
    window spend more of it."""
    span = window.duration if window.rolling else _CALENDAR_LENGTH[window.calendar_unit or "day"]
    assert span is not None
    return tier.burn_rate * (tier.long_window / span)


def window_words(window: TimeWindow) -> str:
    return f"{window.duration.days}-day" if window.rolling and window.duration else f"calendar {window.calendar_unit}"


def _unknown_keys(doc: Any, allowed: tuple[str, ...], file, path: str) -> None:
    """Refuse a key the loader would otherwise ignore (a typo such as ``burnRat``), naming it
    and the keys allowed there; an OpenSLO field the platform does not compute, saying so."""
    if isinstance(doc, dict):
        for key in doc:
            if key in NOT_COMPUTED:
                raise SLOSpecError(file, f"{path}.{key}", f"not supported: {NOT_COMPUTED[key]}")
            if key not in allowed:
                raise SLOSpecError(file, f"{path}.{key}", f"unknown key; allowed here: {', '.join(allowed)}")


def parse_duration(text: Any, file: Path | str, path: str, *, calendar: bool = False) -> timedelta | str:
    m = _DURATION.match(str(text).strip())
    if not m:
        raise SLOSpecError(file, path, f"{text!r} is not a duration like 5m, 1h, 28d")
    n, unit = int(m.group(1)), m.group(2)
    if n <= 0:
        raise SLOSpecError(file, path, "a duration must be positive")
    if unit in _UNIT:
        try:
            return timedelta(seconds=n * _UNIT[unit])
        except OverflowError:  # past timedelta's 999,999,999 days
            raise SLOSpecError(file, path, f"{text!r} is too long a duration") from None
    if not calendar:
        raise SLOSpecError(file, path, f"{text!r}: months, quarters and years only make sense for calendar windows")
    if n != 1:
        raise SLOSpecError(file, path, f"{text!r}: a calendar window is one month, quarter or year (1M, 1Q, 1Y)")
    return {"M": "month", "Q": "quarter", "Y": "year"}[unit]


def _get(doc: dict, key: str, file, path: str, kind: type | tuple = object, required: bool = True) -> Any:
    if not isinstance(doc, dict):
        raise SLOSpecError(file, path, "expected a mapping")
    if key not in doc or doc[key] is None:
        if required:
            raise SLOSpecError(file, f"{path}.{key}", "is required")
        return None
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds and object not in kinds:  # YAML yes/true is no number
        raise SLOSpecError(file, f"{path}.{key}", f"must be a {' or '.join(k.__name__ for k in kinds)}, not a boolean")
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SLOSpecError(file, f"{path}.{key}", f"must be a {want}, not {type(value).__name__}")
    if isinstance(value, int) and float in kinds and not math.isfinite(_as_float(value)):
        raise SLOSpecError(file, f"{path}.{key}", f"{str(value)[:20]}... is too large a number")
    return value


def _as_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _name(doc: dict, file, path: str) -> str:
    _unknown_keys(doc, DOC_KEYS, file, path)
    _unknown_keys(_get(doc, "metadata", file, path, dict), METADATA_KEYS, file, f"{path}.metadata")
    name = _get(_get(doc, "metadata", file, path, dict), "name", file, f"{path}.metadata", str)
    if not _NAME.match(name):
        raise SLOSpecError(file, f"{path}.metadata.name", f"{name!r} is not a lowercase DNS-style name")
    return name


def _source(doc: Any, file, path: str) -> MetricSource:
    """A metric source, checked against the tables the burn series read, so a typo is an
    error naming the field when the file loads, not a missing column at run time."""
    _unknown_keys(doc, ("metricSource",), file, path)
    ms = _get(doc, "metricSource", file, path, dict)
    _unknown_keys(ms, ("type", "spec", "metricSourceRef"), file, f"{path}.metricSource")  # a DataSource, read past
    where = f"{path}.metricSource.spec"
    spec = _get(ms, "spec", file, f"{path}.metricSource", dict)
    table = _get(spec, "table", file, where, str)
    if table not in SOURCE_TABLES:
        raise SLOSpecError(file, f"{where}.table", f"{table!r} is not one of {', '.join(SOURCE_TABLES)}")
    _unknown_keys(spec, SOURCE_KEYS[table], file, where)
    # The service (or pipeline) the rows are filtered on: without it the burn series would
    # read the SLO's service and the exported rules every service, two different indicators.
    column = SOURCE_COLUMN[table]
    named = _get(spec, column, file, where, str)
    if not named or named != named.strip():  # matched exactly against the rows' names
        raise SLOSpecError(file, f"{where}.{column}", f"{named!r}: names the {column} whose rows the indicator "
                                                      "reads, without surrounding spaces")
    if table == "latency_buckets":
        le = _get(spec, "le", file, where, (int, float, str))
        # A finite bound >= 0, maybe quoted as Prometheus writes its le labels, or +Inf.
        if not (is_inf_bound(le) or re.fullmatch(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?", str(le).strip())
                and math.isfinite(float(le))):
            raise SLOSpecError(file, f"{where}.le", f"{le!r} is not a bucket bound (a number >= 0 or +Inf)")
    if table == "lag_samples" and spec.get("value", LAG_VALUE) != LAG_VALUE:
        raise SLOSpecError(file, f"{where}.value", f"{spec['value']!r}: lag samples carry {LAG_VALUE!r}")
    # OpenSLO infers the type from the DataSource a metricSourceRef names (read past here).
    return MetricSource(_get(ms, "type", file, f"{path}.metricSource", str, required="metricSourceRef" not in ms),
                        dict(spec))


def _indicator(doc: dict, file, path: str) -> Indicator:
    name = _name(doc, file, path)
    spec = _get(doc, "spec", file, path, dict)
    _unknown_keys(spec, SLI_SPEC_KEYS, file, f"{path}.spec")
    if "ratioMetric" in spec and "thresholdMetric" in spec:
        raise SLOSpecError(file, f"{path}.spec.thresholdMetric", "an SLI has a ratioMetric or a thresholdMetric, "
                                                               "not both")
    if "ratioMetric" in spec:
        rp = f"{path}.spec.ratioMetric"
        ratio = _get(spec, "ratioMetric", file, f"{path}.spec", dict)
        _unknown_keys(ratio, RATIO_KEYS, file, rp)
        if ratio.get("counter") is not True:
            raise SLOSpecError(file, f"{rp}.counter", "only counter ratios are supported")
        good = _source(_get(ratio, "good", file, rp), file, f"{rp}.good")
        total = _source(_get(ratio, "total", file, rp), file, f"{rp}.total")
        _ratio_shape(good, total, file, rp)
        return Indicator(name, "ratio", good=good, total=total)
    if "thresholdMetric" in spec:
        metric = _source(spec["thresholdMetric"], file, f"{path}.spec.thresholdMetric")
        if metric.spec["table"] != "lag_samples":
            raise SLOSpecError(file, f"{path}.spec.thresholdMetric.metricSource.spec.table",
                               f"{metric.spec['table']!r}: a thresholdMetric compares lag samples (table lag_samples)")
        return Indicator(name, "threshold", metric=metric)
    raise SLOSpecError(file, f"{path}.spec", "needs ratioMetric or thresholdMetric")


def _ratio_shape(good: MetricSource, total: MetricSource, file, path: str) -> None:
    """Only the ratios the burn series compute (``burn.minute_events``): requests without
    error over requests, or a latency bucket over the +Inf bucket, of one service. Anything
    else would load and then be computed as one of these, whatever the file says."""
    g, t = good.spec, total.spec
    where = "metricSource.spec"
    if g["table"] != t["table"]:
        raise SLOSpecError(file, f"{path}.good.{where}.table",
                           f"{g['table']!r}: the good and total of a ratio read the same table ({t['table']!r})")
    if g.get("service") != t.get("service"):
        raise SLOSpecError(file, f"{path}.good.{where}.service",
                           f"{g.get('service')!r}: the good and total of a ratio read the same service "
                           f"({t.get('service')!r})")
    if t["table"] == "lag_samples":
        raise SLOSpecError(file, f"{path}.total.{where}.table",
                           "lag samples are judged by a thresholdMetric, not a ratio (ratios read request_counters "
                           "or latency_buckets)")
    if t["table"] == "request_counters":
        for side, spec, want, required in (("good", g, GOOD_REQUESTS, True), ("total", t, ALL_REQUESTS, False)):
            value = spec.get("value")
            if value is None and not required:
                continue
            if value is None or re.sub(r"\s+", "", str(value)) != re.sub(r"\s+", "", want):
                raise SLOSpecError(file, f"{path}.{side}.{where}.value",
                                   f"{value!r}: a request-counter ratio's {side} is {want!r}")
    else:
        if is_inf_bound(g["le"]):
            raise SLOSpecError(file, f"{path}.good.{where}.le",
                               "the good bucket cannot be +Inf (that is every request): name a finite bound")
        if not is_inf_bound(t["le"]):
            raise SLOSpecError(file, f"{path}.total.{where}.le",
                               f"{t['le']!r}: a latency ratio's total is the +Inf bucket (every request)")


def _window(doc: list, file, path: str) -> TimeWindow:
    if not isinstance(doc, list) or len(doc) != 1:
        raise SLOSpecError(file, path, "exactly one time window is supported")
    w, p = doc[0], f"{path}[0]"
    _unknown_keys(w, WINDOW_KEYS, file, p)
    # OpenSLO: isRolling may be left out of a calendar window (it is then false).
    rolling = _get(w, "isRolling", file, p, bool, required=not isinstance(w, dict) or "calendar" not in w)
    dur = parse_duration(_get(w, "duration", file, p), file, f"{p}.duration", calendar=not rolling)
    if rolling:
        if not isinstance(dur, timedelta):
            raise SLOSpecError(file, f"{p}.duration", "a rolling window needs s, m, h, d or w")
        if "calendar" in w:
            raise SLOSpecError(file, f"{p}.calendar", "a rolling window has no calendar (isRolling: false for one)")
        if dur % timedelta(days=1):
            raise SLOSpecError(file, f"{p}.duration", f"{w['duration']!r}: a rolling window is whole days (7d, 4w, "
                                                      "28d): the error budget is kept per day")
        return TimeWindow(True, dur)
    cal = _get(w, "calendar", file, p, dict)
    _unknown_keys(cal, CALENDAR_KEYS, file, f"{p}.calendar")
    tz = _get(cal, "timeZone", file, f"{p}.calendar", str)
    try:
        ZoneInfo(tz)
    except (KeyError, ValueError, OSError):
        raise SLOSpecError(file, f"{p}.calendar.timeZone", f"{tz!r} is not an IANA time zone") from None
    start = _start_day(_get(cal, "startTime", file, f"{p}.calendar", (str, date)), file, f"{p}.calendar.startTime")
    unit = dur if isinstance(dur, str) else {timedelta(days=1): "day", timedelta(weeks=1): "week"}.get(dur)
    if unit is None:
        raise SLOSpecError(file, f"{p}.duration", "a calendar window is 1d, 1w, 1M, 1Q or 1Y")
    return TimeWindow(False, None, unit, tz, start)


def _start_day(value: str | date, file, path: str) -> date:
    """The day a calendar's ``startTime`` falls on: "2026-01-15 00:00:00" as OpenSLO writes
    it, quoted or not (YAML reads an unquoted one as a date or datetime)."""
    if isinstance(value, date):  # datetime is a date too
        return value.date() if isinstance(value, datetime) else value
    try:  # ISO 8601 in any of its usual spellings: a T or a space, a fraction, Z or an offset
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).date()
    except ValueError:
        raise SLOSpecError(file, path, f"{value!r} is not a start time like '2026-01-01 00:00:00'") from None


def _objective(doc: Any, budgeting: str, indicator: Indicator, file, path: str) -> Objective:
    if not isinstance(doc, list) or len(doc) != 1:
        raise SLOSpecError(file, path, "exactly one objective is supported")
    o, p = doc[0], f"{path}[0]"
    for key in ("indicator", "indicatorRef"):  # valid OpenSLO v1, not a typo: say so
        if isinstance(o, dict) and key in o:
            raise SLOSpecError(file, f"{p}.{key}", "not supported: an objective's own indicator; give the SLO's "
                                                   "indicator or indicatorRef in its spec")
    _unknown_keys(o, OBJECTIVE_KEYS, file, p)
    if isinstance(o, dict) and "targetPercent" in o:  # OpenSLO's other spelling: 99.5 for 0.995
        if "target" in o:
            raise SLOSpecError(file, f"{p}.targetPercent", "give target or targetPercent, not both")
        percent = float(_get(o, "targetPercent", file, p, (int, float)))
        if not 0 < percent < 100:
            raise SLOSpecError(file, f"{p}.targetPercent", f"{percent:g} must be between 0 and 100 (exclusive)")
        # Divided in decimal: 99.9 is the target 0.999, as `target: 0.999` gives, not 99.9 / 100's
        # 0.9990000000000001 (whose budget the exported rules would print as 0.0009999999999999).
        target = float(Decimal(repr(percent)) / 100)
    else:
        target = float(_get(o, "target", file, p, (int, float)))
        if not 0 < target < 1:
            hint = (f"; for {target:g}% write target: {float(Decimal(repr(target)) / 100):g} or targetPercent: "
                    f"{target:g}" if 1 <= target < 100 else "")
            raise SLOSpecError(file, f"{p}.target", f"{target} must be between 0 and 1 (exclusive){hint}")
    op = value = tst = tsw = None
    if indicator.kind == "ratio":
        for key in ("op", "value"):
            if key in o:
                raise SLOSpecError(file, f"{p}.{key}", "a ratio objective has no op or value (its indicator says "
                                                       "what is good)")
    if budgeting == "Occurrences":
        for key in ("timeSliceTarget", "timeSliceWindow"):
            if key in o:
                raise SLOSpecError(file, f"{p}.{key}", "only a Timeslices objective has time slices")
    elif indicator.kind == "threshold":
        raise SLOSpecError(file, p, "a thresholdMetric SLO budgets Occurrences (its samples): Timeslices over "
                                    "threshold samples is not supported")
    if indicator.kind == "threshold":
        op = _get(o, "op", file, p, str)
        if op not in THRESHOLD_OPS:
            raise SLOSpecError(file, f"{p}.op", f"{op!r} is not one of {', '.join(THRESHOLD_OPS)}")
        value = float(_get(o, "value", file, p, (int, float)))
        # Lag is seconds: a NaN compares false in PromQL and true nowhere else, and no lag is negative.
        if not (math.isfinite(value) and value >= 0):
            raise SLOSpecError(file, f"{p}.value", f"{value!r} is not a lag in seconds (a finite number >= 0)")
    if budgeting == "Timeslices":
        tst = float(_get(o, "timeSliceTarget", file, p, (int, float)))
        if not 0 < tst <= 1:
            raise SLOSpecError(file, f"{p}.timeSliceTarget", "must be in (0, 1]")
        raw_tsw = _get(o, "timeSliceWindow", file, p)
        if isinstance(raw_tsw, int | float):  # OpenSLO allows a number, but says not in what unit
            raise SLOSpecError(file, f"{p}.timeSliceWindow", f"{raw_tsw!r}: give the slice with its unit (1m)")
        tsw = parse_duration(raw_tsw, file, f"{p}.timeSliceWindow")
        if tsw != timedelta(minutes=1):
            raise SLOSpecError(file, f"{p}.timeSliceWindow", "only 1m slices are supported (burn series are per minute)")
    return Objective(target, op, value, tst, tsw)


def _tiers(doc: dict, file, path: str) -> tuple[BurnTier, ...]:
    tiers = []
    spec = _get(doc, "spec", file, path, dict)
    _unknown_keys(spec, POLICY_KEYS, file, f"{path}.spec")
    for i, t in enumerate(_get(spec, "tiers", file, f"{path}.spec", list)):
        p = f"{path}.spec.tiers[{i}]"
        _unknown_keys(t, TIER_KEYS, file, p)
        rate = float(_get(t, "burnRate", file, p, (int, float)))
        if not (rate > 0 and math.isfinite(rate)):
            raise SLOSpecError(file, f"{p}.burnRate", "must be a positive number")
        long_w = parse_duration(_get(t, "longWindow", file, p), file, f"{p}.longWindow")
        short_w = parse_duration(_get(t, "shortWindow", file, p), file, f"{p}.shortWindow")
        for key, w in (("longWindow", long_w), ("shortWindow", short_w)):
            if not whole_minutes(w):
                raise SLOSpecError(file, f"{p}.{key}", "must be a whole number of minutes (burn series are per minute)")
        if short_w >= long_w:
            raise SLOSpecError(file, f"{p}.shortWindow", "must be shorter than longWindow")
        severity = _get(t, "severity", file, p, str)
        if severity not in ("critical", "warning"):
            raise SLOSpecError(file, f"{p}.severity", "is critical or warning")
        ramp, platform = _get(t, "ramp", file, p, str), _get(t, "platform", file, p, str)
        if ramp not in RAMP_ACTIONS:
            raise SLOSpecError(file, f"{p}.ramp", f"{ramp!r} is not one of {', '.join(RAMP_ACTIONS)}")
        if platform not in PLATFORM_ACTIONS:
            raise SLOSpecError(file, f"{p}.platform", f"{platform!r} is not one of {', '.join(PLATFORM_ACTIONS)}")
        name = _get(t, "name", file, p, str)
        # It names Dagster checks, warehouse columns (firing_<tier>, case-blind) and alerts.
        if not _TIER_NAME.fullmatch(name):
            raise SLOSpecError(file, f"{p}.name", f"{name!r}: a tier name is lowercase letters, digits and "
                                                  "single underscores, starting with a letter (e.g. fast, page_1h)")
        tiers.append(BurnTier(name, rate, long_w, short_w, severity, ramp, platform))
    if not tiers:
        raise SLOSpecError(file, f"{path}.spec.tiers", "needs at least one tier")
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise SLOSpecError(file, f"{path}.spec.tiers", f"tier {twice!r} is named twice")
    return tuple(sorted(tiers, key=lambda t: -t.burn_rate))


def load_file(path: Path) -> tuple[list[tuple[int, dict]], list[tuple[int, Indicator]], list[tuple[int, dict]]]:
    """Documents of one file: SLO docs, SLI objects, BurnAlertPolicy docs."""
    try:  # a folder named *.yaml, a broken link, no permission: OSError
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # opening a pipe would block, a device never end
            raise SLOSpecError(path, "(file)", "is not a regular file (a pipe, socket or device): SLO files "
                                               "are YAML text files")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SLOSpecError(path, "(file)", f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SLOSpecError(path, "(file)", f"is larger than {MAX_FILE_BYTES >> 20} MiB: SLO files are a few KB "
                                           "(is it a data file under a .yaml name?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SLOSpecError(path, f"(line {line})", f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not "
                                                   "UTF-8: SLO files are UTF-8 text") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
    except DuplicateKeyError as exc:
        raise SLOSpecError(path, f"(line {exc.line})", f"key {exc.key!r} is given twice in one mapping (first on "
                                                       f"line {exc.first}): YAML keys must be unique") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"(line {mark.line + 1}, column {mark.column + 1})" if mark else "(yaml)"
        what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        raise SLOSpecError(path, where, f"not valid YAML: {what or exc}") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise SLOSpecError(path, "(yaml)", f"cannot be read: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # [[[[... hundreds deep: the parser recurses per level
        raise SLOSpecError(path, "(yaml)", "not valid YAML here: nested too deeply to read") from None
    slos, slis, policies = [], [], []
    for i, d in enumerate(docs):
        p = f"document[{i}]"
        if isinstance(d, dict) and "groups" in d and "apiVersion" not in d:
            raise SLOSpecError(path, p, "is a Prometheus rule file (top-level groups), not an OpenSLO document: "
                                        "keep rules written by `slo rules --out` outside the SLO folder")
        api, kind = _get(d, "apiVersion", path, p, str), _get(d, "kind", path, p, str)
        if api not in (OPENSLO, EXTENSION):
            raise SLOSpecError(path, f"{p}.apiVersion", f"unsupported {api!r}: an SLO file holds {OPENSLO} SLO and "
                                                        f"SLI documents and {EXTENSION} BurnAlertPolicy documents")
        if (api, kind) == (OPENSLO, "SLO"):
            slos.append((i, d))
        elif (api, kind) == (OPENSLO, "SLI"):
            slis.append((i, _indicator(d, path, p)))
        elif (api, kind) == (EXTENSION, "BurnAlertPolicy"):
            _name(d, path, p)
            policies.append((i, d))
        elif api == OPENSLO and kind in IGNORED_KINDS:
            _name(d, path, p)
        elif api == OPENSLO and kind in ALERT_KINDS:
            raise SLOSpecError(path, f"{p}.kind", f"{kind} is not supported: burn alert tiers come from a "
                                                  f"BurnAlertPolicy document ({EXTENSION}), see docs/slo.md")
        else:
            raise SLOSpecError(path, f"{p}.kind", f"unsupported {api}/{kind}: an SLO file holds {OPENSLO} SLO and "
                                                  f"SLI documents (Service and DataSource are read past) and "
                                                  f"{EXTENSION} BurnAlertPolicy documents")
    if not docs:
        raise SLOSpecError(path, "(file)", "is empty: an SLO file holds openslo/v1 documents (an SLO, its SLI, "
                                           "its BurnAlertPolicy)")
    return slos, slis, policies


def _doc_name(doc: Any) -> Any:
    return doc["metadata"].get("name") if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict) else None


def _slo_files(folder: Path) -> list[Path]:
    """The SLO files under ``folder``: ``.yaml``/``.yml`` in any case (``x.YAML`` saved on a
    case-blind file system), in linked subfolders too (a team's folder linked in from its own
    repository), each real folder once (a link back up is no endless loop), hidden ones left out."""
    files, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        # A folder named like a file (archive.yaml) is listed too: reading it says what it is.
        # A link to nothing (a team's folder moved away) is listed too: reading it says so,
        # rather than its SLOs dropping out while validate passes.
        files += [Path(root) / n for n in (*names, *dirs) if not n.startswith(".")
                  and (n.lower().endswith((".yaml", ".yml")) or not os.path.exists(os.path.join(root, n)))]
    return sorted(files)


def load_slos(folder: Path) -> list[SLO]:
    """Every SLO in the ``*.yaml`` and ``*.yml`` files of `folder` and its subfolders (one per
    team, say), validated, with its burn tiers. Hidden files and folders (an editor's lock
    file, ``._x.yaml``) are not SLO files."""
    if not Path(folder).is_dir():
        raise SLOSpecError(folder, "(folder)", "does not exist (or is not a folder)")
    files = _slo_files(Path(folder))
    if not files:
        raise SLOSpecError(folder, "(folder)", "no SLO files (*.yaml)")
    raw, indicators, policies, defined = [], {}, {}, {}
    for f in files:
        slos, slis, pols = load_file(f)
        raw += [(f, i, d) for i, d in slos]
        for i, s in slis:
            if s.name in indicators:
                raise SLOSpecError(f, f"document[{i}].metadata.name", f"indicator {s.name!r} is defined twice (also "
                                                                      f"in {defined[s.name]})")
            indicators[s.name], defined[s.name] = s, f"{f.relative_to(folder)}, document[{i}]"
        for i, d in pols:
            slo_name = _get(_get(d, "spec", f, f"document[{i}]", dict), "slo", f, f"document[{i}].spec", str)
            if slo_name in policies:
                # A copied file: its SLO is what is defined twice, named where it was first.
                first = next((g for g, _, d_slo in raw if g != f and _doc_name(d_slo) == slo_name), None)
                here = next((j for j, d_slo in slos if _doc_name(d_slo) == slo_name), None)
                if first is not None and here is not None:
                    raise SLOSpecError(f, f"document[{here}].metadata.name", f"SLO {slo_name!r} is defined twice "
                                                                             f"(also in {first.relative_to(folder)})")
                raise SLOSpecError(f, f"document[{i}].spec.slo", f"SLO {slo_name!r} has a BurnAlertPolicy already "
                                                                 f"(in {policies[slo_name][0].relative_to(folder)})")
            policies[slo_name] = (f, f"document[{i}]", _tiers(d, f, f"document[{i}]"), d["spec"]["tiers"])
    names = {_name(d, f, f"document[{i}]"): f for f, i, d in raw}
    for slo_name, (f, where, _, _) in policies.items():  # a misspelt spec.slo: the policy governs nothing
        if slo_name not in names:
            raise SLOSpecError(f, f"{where}.spec.slo", f"names no SLO {slo_name!r} (SLOs: {', '.join(sorted(names))})")
    out, seen = [], {}
    for f, i, d in raw:
        p = f"document[{i}]"
        name = _name(d, f, p)
        if name in seen:
            raise SLOSpecError(f, f"{p}.metadata.name", f"SLO {name!r} is defined twice (also in {seen[name]})")
        if "--" in name:
            raise SLOSpecError(f, f"{p}.metadata.name", f"{name!r}: use single hyphens; an SLO's checks are named "
                                                        "with '_' for '-' and '__' before the tier, so 'a--b' could "
                                                        "name another SLO's tier check")
        if name in RESERVED_NAMES:
            raise SLOSpecError(f, f"{p}.metadata.name", f"{name!r} is reserved (the alert scores' totals over "
                                                        "every SLO): name the SLO otherwise")
        seen[name] = f.relative_to(folder)
        meta, spec = d["metadata"], _get(d, "spec", f, p, dict)
        _unknown_keys(spec, SLO_SPEC_KEYS, f, f"{p}.spec")
        annotations = meta.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise SLOSpecError(f, f"{p}.metadata.annotations", "must be a mapping")
        owner = annotations.get(OWNER_ANNOTATION)
        if not owner:
            raise SLOSpecError(f, f"{p}.metadata.annotations", f"needs an owner ({OWNER_ANNOTATION})")
        if not isinstance(owner, str) or not owner.strip():  # an alert label: one string
            raise SLOSpecError(f, f"{p}.metadata.annotations.{OWNER_ANNOTATION}",
                               f"must be one owner as text, not {type(owner).__name__} {owner!r}")
        if "indicatorRef" in spec and "indicator" in spec:
            raise SLOSpecError(f, f"{p}.spec.indicator", "give indicator or indicatorRef, not both")
        if "indicatorRef" in spec:
            ref = _get(spec, "indicatorRef", f, f"{p}.spec", str)
            if ref not in indicators:
                raise SLOSpecError(f, f"{p}.spec.indicatorRef", f"no SLI named {ref!r}")
            indicator = indicators[ref]
        else:
            indicator = _indicator(_get(spec, "indicator", f, f"{p}.spec", dict), f, f"{p}.spec.indicator")
        budgeting = _get(spec, "budgetingMethod", f, f"{p}.spec", str)
        if budgeting not in ("Occurrences", "Timeslices"):
            raise SLOSpecError(f, f"{p}.spec.budgetingMethod", f"{budgeting!r} is not Occurrences or Timeslices")
        objective = _objective(_get(spec, "objectives", f, f"{p}.spec", list), budgeting, indicator, f,
                               f"{p}.spec.objectives")
        if name not in policies:
            raise SLOSpecError(f, f"{p}.metadata.name", f"SLO {name!r} has no BurnAlertPolicy (kind BurnAlertPolicy, "
                                                        f"apiVersion {EXTENSION}, spec.slo: {name}): an SLO "
                                                        "without burn tiers would never alert")
        policy_file, policy_path, tiers, raw_tiers = policies[name]
        _tiers_can_fire(tiers, raw_tiers, objective.target, policy_file, policy_path)
        # OpenSLO's spec.service names a Service (its own document); the indicator selects the
        # metric's service label, which may be spelt otherwise (summit-api vs api).
        service = _get(spec, "service", f, f"{p}.spec", str)
        window = _window(_get(spec, "timeWindow", f, f"{p}.spec", list), f, f"{p}.spec.timeWindow")
        span = window.duration if window.rolling else _CALENDAR_SPAN[window.calendar_unit or "day"]
        for i, t in enumerate(raw_tiers):
            tier = next(x for x in tiers if x.name == t.get("name"))
            if tier.long_window > span:
                raise SLOSpecError(policy_file, f"{policy_path}.spec.tiers[{i}].longWindow",
                                   f"tier {tier.name!r} looks back further than SLO {name!r}'s window")
            spent = _budget_share(tier, window)
            if spent >= 1:
                raise SLOSpecError(policy_file, f"{policy_path}.spec.tiers[{i}].burnRate",
                                   f"tier {tier.name!r} fires only once {spent:.0%} of SLO {name!r}'s error budget "
                                   f"is spent (burnRate {tier.burn_rate:g} over {t.get('longWindow')} of a "
                                   f"{window_words(window)} window): a budget alert must fire before the budget "
                                   "is gone; lower its burnRate or longWindow")
        for where, doc, key in ((f"{p}.metadata", meta, "displayName"), (f"{p}.spec", spec, "description")):
            if doc.get(key) is not None and not isinstance(doc[key], str):
                raise SLOSpecError(f, f"{where}.{key}", f"{doc[key]!r}: OpenSLO gives it as text")
        out.append(SLO(name, meta.get("displayName") or name, owner, spec.get("description", ""),
                       service, indicator, window, budgeting, objective, tiers, str(f),
                       _rule_labels(meta.get("labels"), f, f"{p}.metadata.labels"),
                       _alert_annotations(annotations, f, f"{p}.metadata.annotations")))
    if not out:
        raise SLOSpecError(folder, "(folder)", "defines no SLO (an openslo/v1 document of kind SLO)")
    _alert_names_unique(out)
    return sorted(out, key=lambda s: s.name)


def latency_bounds(slos: list[SLO]) -> list[float]:
    """The latency bucket bounds some SLO compares against (its good bucket), in order: with
    +Inf, all of the buckets a burn computation reads (the rest of a histogram is left in the
    warehouse)."""
    return sorted({float(s.indicator.good.spec["le"]) for s in slos
                   if s.indicator.kind == "ratio" and s.indicator.good.spec.get("table") == "latency_buckets"})


def alert_name(slo: str, tier: str | None) -> str:
    """The exported alert of an SLO's burn tier (``SLOBurnApiLatencyFast``), or of its data
    going missing (``tier`` None): each part of a name starts upper case, the rest as written."""
    def camel(text: str) -> str:
        return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", text))
    return f"SLOBurn{camel(slo)}{camel(tier)}" if tier is not None else f"SLOData{camel(slo)}Missing"


def _alert_names_unique(slos: list[SLO]) -> None:
    """Two SLOs whose alerts would share a name (``api-2fa`` and ``api2fa``): Alertmanager groups,
    silences and inhibits by alert name, so one SLO's page would be taken for the other's."""
    seen: dict[str, tuple[str, str | None]] = {}
    for slo in slos:
        for tier in [*(t.name for t in slo.tiers), None]:
            name = alert_name(slo.name, tier)
            if name in seen:
                other, other_tier = seen[name]
                what = f"tier {other_tier!r} of SLO {other!r}" if other_tier else f"SLO {other!r}"
                raise SLOSpecError(slo.file, "metadata.name", f"SLO {slo.name!r}{f' tier {tier!r}' if tier else ''} "
                                                              f"exports alert {name}, as {what} does: name one of "
                                                              "them otherwise")
            seen[name] = (slo.name, tier)


def _scalar_text(value: Any, file, path: str) -> str | None:
    if isinstance(value, bool):  # YAML 1.1 reads an unquoted NO, yes, on or off as a boolean
        raise SLOSpecError(file, path, f"{value!r} is a YAML boolean (an unquoted yes/no/on/off/true/false): "
                                       "quote the value ('NO') to keep it as written")
    return str(value) if isinstance(value, str | int | float) else None


def _reaches_the_rules(key: Any, file, path: str, what: str) -> bool:
    """Whether a metadata label or annotation goes into the exported rules: a prefixed name
    (summit.example/team, as Kubernetes writes them) is the platform's metadata and stays
    out; a Prometheus name goes in; any other name is an error, never dropped without a word."""
    if isinstance(key, str) and "/" in key:
        return False
    if not isinstance(key, str) or not _PROMETHEUS_LABEL.fullmatch(key) or key.startswith("__"):
        raise SLOSpecError(file, path, f"is no Prometheus {what} name (letters, digits and '_', not starting with "
                                       "a digit or '__'): rename it, or prefix it (example.com/name) to keep it "
                                       "out of the rules")
    return True


def _rule_labels(doc: Any, file, path: str) -> dict[str, str]:
    """OpenSLO metadata.labels named like Prometheus labels, as rule labels: a value, or a
    list of values (OpenSLO allows both) joined by commas. Prefixed names (summit.example/team,
    as Kubernetes writes them) are metadata and stay out of the rules, as annotations do; a
    name the rules write themselves is an error here rather than a clash in Prometheus."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SLOSpecError(file, path, "must be a mapping of label names to values")
    out = {}
    for key, value in doc.items():
        if not _reaches_the_rules(key, file, f"{path}.{key}", "label"):
            continue
        if key in RULE_LABELS:
            raise SLOSpecError(file, f"{path}.{key}", f"is a label the exported rules write themselves "
                                                      f"({', '.join(RULE_LABELS)}): name it otherwise")
        values = value if isinstance(value, list) else [value]
        texts = [_scalar_text(v, file, f"{path}.{key}") for v in values]
        if not texts or None in texts:
            raise SLOSpecError(file, f"{path}.{key}", f"{value!r}: a label's value is text, a number or a list of them")
        out[key] = ",".join(t for t in texts if t is not None)
    return out


def _alert_annotations(annotations: dict, file, path: str) -> dict[str, str]:
    """The SLO's annotations that Prometheus takes as alert annotations: those named like
    labels (runbook_url, dashboard). Prefixed ones (summit.example/owner) are metadata for
    the platform, as OpenSLO intends, and stay out of the rules; any other name (runbook-url)
    is an error, not an annotation that never reaches the alerts."""
    out = {}
    for key, value in annotations.items():
        if not _reaches_the_rules(key, file, f"{path}.{key}", "annotation"):
            continue
        if key in ALERT_ANNOTATIONS:
            raise SLOSpecError(file, f"{path}.{key}", f"is an annotation the exported alerts write themselves "
                                                      f"({', '.join(ALERT_ANNOTATIONS)}): name it otherwise")
        text = _scalar_text(value, file, f"{path}.{key}")
        if text is None:
            raise SLOSpecError(file, f"{path}.{key}", f"{value!r}: an alert annotation is text")
        out[key] = text
    return out


def error_budget_of(target: float) -> float:
    """1 - target, subtracted in decimal: 1 - 0.995 is the float nearest 0.005, which the
    exported rules print as 0.005, not the float subtraction's 0.0050000000000000044."""
    return float(Decimal(1) - Decimal(repr(target)))


def _tiers_can_fire(tiers: tuple[BurnTier, ...], raw: list, target: float, file, path: str) -> None:
    """A tier fires when the error ratio exceeds burn rate x error budget; an error ratio is at
    most 1, so a tier whose product is 1 or more could never fire."""
    budget = error_budget_of(target)
    for t in tiers:
        if t.burn_rate * budget >= 1:
            i = next(j for j, r in enumerate(raw) if r.get("name") == t.name)
            raise SLOSpecError(file, f"{path}.spec.tiers[{i}].burnRate",
                               f"tier {t.name!r}: burnRate {t.burn_rate:g} x error budget {budget:g} (1 - target "
                               f"{target!r}) = {t.burn_rate * budget:g}, but an error ratio is at most 1, so the tier "
                               f"could never fire: its burnRate must be below {1 / budget:g}")


def _same_clock(a: str, b: str) -> bool:
    """Whether two zone names keep the same clock (links such as US/Mountain and
    America/Denver do): the same UTC offset on the first of every month, 2000-2039."""
    if a == b:
        return True
    za, zb = ZoneInfo(a), ZoneInfo(b)
    instants = (datetime(y, m, 1, 12, tzinfo=UTC) for y in range(2000, 2040) for m in range(1, 13))
    return all(t.astimezone(za).utcoffset() == t.astimezone(zb).utcoffset() for t in instants)


def calendar_zone_notes(slos: list[SLO], partitions_tz: str) -> list[str]:
    """A note per SLO whose calendar window keeps another clock than the daily partitions'
    zone: budgets are summed over whole partition days, so its months (or weeks) are counted
    in the partitions' zone, their edges off by the zones' difference. Loading does not
    refuse it (a platform moved to another zone keeps working); the burn asset logs it."""
    return [f"SLO {s.name}: calendar window in {s.window.calendar_tz}, counted in whole days of the "
            f"partitions' zone {partitions_tz} (its edges move by the difference between the two zones)"
            for s in slos if s.window.calendar_tz and not _same_clock(s.window.calendar_tz, partitions_tz)]
