"""The SLO burn alerts scored against a world's truth: which incidents and bad builds each
tier caught, how soon, and how many of its alerts had no cause behind them.

An alert is what the ``slo/burn`` checks judge: a tier firing on the SLO as a whole (the
service's series of ``compute_day``). Its episodes are runs of firing minutes; a gap shorter
than the tier's short window does not end one (an alert that resolves and fires again within
its short window is the same alert flapping, which a pager would not count twice).
A truth event (an incident or a bad build) belongs to an SLO when it burns the SLO's own
indicator (``INCIDENT_BURNS``, ``BAD_BUILD_BURNS``). A tier catches an event when it fires
between the event's start and the last minute whose short window still holds one of the
event's minutes (a tier fires only while both its windows burn; any firing then counts,
whatever else fed it); an episode is true when it overlaps that span of one of the SLO's
events, and false otherwise. A tier is scored from the first minute its long window lies
whole inside the history (before, a sample or two make a window's ratio); events over by
then are not judged. Nor is an event during which the SLO as a whole did not burn faster
than its budget (its bad share over the event's minutes at most the error budget: a latency
regression that kept every minute under the objective, a bad build too small to show): no
alert on the SLO could catch it, so it counts in no tier's recall; it still makes the alerts
it overlaps true. Both kinds are counted apart (``not_judged_before_scoring``,
``not_judged_no_burn``). Events that burn no golden SLO (a latency regression of the graph
service, say) are left out. Only the scoring reads the truth folder; the alerts come from
landing data alone.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from ..ingest.landing import read_world_table
from .burn import remaining_budget
from .daily import compute_day, history_start
from .spec import RESERVED_NAMES, SLO, BurnTier

MINUTE = timedelta(minutes=1)
# What each kind of incident burns: (indicator table, the service or pipeline it burns; None
# for the incident's own service). A stalled receipt pipeline is lag on the receipt pipeline.
INCIDENT_BURNS = {"error_spike": ("request_counters", None), "latency_regression": ("latency_buckets", None),
                  "receipt_stall": ("lag_samples", "receipt")}
BAD_BUILD_BURNS = {"error_rate": "request_counters", "latency": "latency_buckets"}
# The scores as a table (``table_rows``), for the CLI and the asset's metadata alike.
TABLE_COLUMNS = ("slo", "tier", "caught", "recall", "not judged", "alerts", "precision", "median min", "firing")
TABLE_CAPTION = ("caught: truth events alerted on / events judged; not judged: events over before the tier\n"
                 "was scored + events during which the SLO burnt no faster than its budget;\n"
                 "alerts: episodes (in brackets: no cause in the truth); median min: event start to\n"
                 "first alert; firing: minutes the tier fired (their share of the minutes scored)")
# The key of the per-tier totals over every SLO: a name the SLO loader reserves.
TOTALS = RESERVED_NAMES[0]


def truth_events(incidents: pl.DataFrame, bad_builds: pl.DataFrame, counters: pl.DataFrame) -> pl.DataFrame:
    """(event, kind, table, service, start, end) of the incidents and bad builds that burn an
    indicator. A bad build burns from its deploy until the last minute it served requests (one
    that never served is left out)."""
    rows = []
    for r in incidents.iter_rows(named=True):
        if r["kind"] in INCIDENT_BURNS:
            table, service = INCIDENT_BURNS[r["kind"]]
            rows.append({"event": r["incident_id"], "kind": r["kind"], "table": table,
                         "service": service or r["service"], "start": r["start"], "end": r["end"]})
    served = dict(counters.filter(pl.col("requests") > 0).group_by("build_id").agg(pl.col("ts").max()).rows())
    for r in bad_builds.iter_rows(named=True):
        last = served.get(r["build_id"])
        if r["effect"] in BAD_BUILD_BURNS and last is not None:  # a build that served nothing burnt nothing
            rows.append({"event": r["build_id"], "kind": f"bad build ({r['effect']})",
                         "table": BAD_BUILD_BURNS[r["effect"]], "service": r["service"],
                         "start": r["deploy_started_at"], "end": last + MINUTE})
    ts = pl.Datetime("ms", "UTC")
    return pl.DataFrame(rows, schema={"event": pl.String, "kind": pl.String, "table": pl.String,
                                      "service": pl.String, "start": ts, "end": ts})


def episodes(minutes: pl.Series, gap: timedelta = MINUTE) -> list[tuple[datetime, datetime]]:
    """(first, last) minute of each run of ``minutes`` whose steps are at most ``gap``."""
    m = minutes.unique().sort()
    if not m.len():
        return []
    runs = pl.DataFrame({"ts": m}).with_columns((pl.col("ts").diff() > gap).fill_null(True).cum_sum().alias("run"))
    return runs.group_by("run", maintain_order=True).agg(pl.col("ts").first(), pl.col("ts").last().alias("to")).select(
        "ts", "to").rows()


def _tier_score(minutes: pl.Series, events: pl.DataFrame, tier: BurnTier, first_minute: datetime,
                history_end: datetime, delays_out: list[float] | None = None) -> dict:
    """One tier's figures; ``delays_out`` gathers its minutes to alert (for the totals)."""
    # Scored once the long window lies inside the history: before, a sample or two make its
    # ratio, and compute_day fires no tier there (daily.judged), so only events are cut here.
    scored_from = first_minute + tier.long_window - MINUTE
    scored = max(int((history_end - scored_from) / MINUTE), 0)
    # A tier fires when its long and its short window both burn, so an event can be caught up
    # to the last minute whose short window (t - w, t] still holds one of its minutes: later,
    # what burns in that window is something else. An event whose last such minute comes
    # before scoring starts is not judged (no minute the tier is scored on could catch it).
    reach = min(tier.short_window, tier.long_window) - MINUTE
    spans = [(start, end + reach, burnt) for start, end, burnt in events.select("start", "end", "burnt").rows()]
    before = sum(1 for _, until, _ in spans if until <= scored_from)
    spans = [(start, until, burnt) for start, until, burnt in spans if until > scored_from]
    judged = [(start, until) for start, until, burnt in spans if burnt]
    delays = []
    for start, until in judged:
        hits = minutes.filter((minutes >= start) & (minutes < until))
        if hits.len():
            delays.append((hits.min() - start) / MINUTE)
    alerts = episodes(minutes, max(tier.short_window, MINUTE))
    false = sum(1 for first, last in alerts if not any(first < until and last >= start for start, until, _ in spans))
    if delays_out is not None:
        delays_out.extend(delays)
    return {"events": len(judged), "caught": len(delays), "recall": len(delays) / len(judged) if judged else None,
            "not_judged_before_scoring": before, "not_judged_no_burn": len(spans) - len(judged),
            "alerts": len(alerts), "false_alerts": false,
            "precision": (len(alerts) - false) / len(alerts) if alerts else None,
            "median_minutes_to_alert": statistics.median(delays) if delays else None,
            "max_minutes_to_alert": max(delays) if delays else None, "firing_minutes": minutes.len(),
            # A tier that fires all the time catches everything at once: its firing share shows it.
            "scored_minutes": scored, "firing_share": minutes.len() / scored if scored else None}


def score_alerts(slos: list[SLO], events: pl.DataFrame, *, counters: pl.DataFrame,
                 latency: pl.DataFrame | None, lag: pl.DataFrame | None) -> dict[str, dict[str, dict]]:
    """Per SLO and tier: events, caught, recall, alerts, false_alerts, precision, median and
    max minutes to alert, firing minutes, scored minutes and the share of them firing; and
    ``all`` (TOTALS) per tier name, summed over the SLOs (an event two SLOs read counts for
    each). An SLO named ``all`` is refused: its figures would collide with the totals."""
    if any(s.name == TOTALS for s in slos):
        raise ValueError(f"no SLO may be named {TOTALS!r}: it is the key of the totals over every SLO")
    start = history_start(counters, latency, lag)
    end = max(f["ts"].max() for f in (counters, latency, lag) if f is not None and f.height) + MINUTE
    service = compute_day(slos, start, end, counters=counters, latency=latency, lag=lag).service
    out: dict[str, dict[str, dict]] = {}
    delays: dict[str, list[float]] = {}
    for slo in slos:
        table, name = slo.source
        rows = service.filter(pl.col("slo") == slo.name)
        mine = _burnt(events.filter((pl.col("table") == table) & (pl.col("service") == name)), rows, slo)
        out[slo.name] = {t.name: _tier_score(rows.filter(pl.col(f"firing_{t.name}"))["ts"], mine, t, start, end,
                                             delays.setdefault(t.name, []))
                         for t in slo.tiers}
    totals: dict[str, dict] = {}
    for tiers in out.values():
        for tier, s in tiers.items():
            t = totals.setdefault(tier, dict.fromkeys(("events", "caught", "not_judged_before_scoring",
                                                       "not_judged_no_burn", "alerts", "false_alerts",
                                                       "firing_minutes", "scored_minutes"), 0))
            for k in t:
                t[k] += s[k]
    for t in totals.values():
        t["recall"] = t["caught"] / t["events"] if t["events"] else None
        t["precision"] = (t["alerts"] - t["false_alerts"]) / t["alerts"] if t["alerts"] else None
        t["firing_share"] = t["firing_minutes"] / t["scored_minutes"] if t["scored_minutes"] else None
    for tier, t in totals.items():  # the same keys as each SLO's, for scripts
        t["median_minutes_to_alert"] = statistics.median(delays[tier]) if delays[tier] else None
        t["max_minutes_to_alert"] = max(delays[tier]) if delays[tier] else None
    out[TOTALS] = totals
    return out


def _burnt(events: pl.DataFrame, minutes: pl.DataFrame, slo: SLO) -> pl.DataFrame:
    """``events`` with ``burnt``: whether the SLO as a whole (``minutes``: its service series,
    bad and total per minute) burnt faster than its budget over the event's own minutes."""
    burnt = []
    for start, end in events.select("start", "end").rows():
        spent = remaining_budget(minutes, slo, start, end)
        burnt.append(spent["total"] > 0 and spent["bad"] > slo.error_budget * spent["total"])
    return events.with_columns(pl.Series("burnt", burnt, pl.Boolean))


def score_world(world: Path, slos: list[SLO]) -> dict[str, dict[str, dict]]:
    """``score_alerts`` over a world's landing zone and truth folder."""
    # The request counters always (they date the bad builds), the other tables if an SLO reads them.
    tables = {s.source[0] for s in slos}
    counters = read_world_table(world, "request_counters")
    latency, lag = (read_world_table(world, t) if t in tables else None for t in ("latency_buckets", "lag_samples"))
    truth = world / "truth"
    events = truth_events(pl.read_parquet(truth / "incidents.parquet"), pl.read_parquet(truth / "bad_builds.parquet"),
                          counters)
    return score_alerts(slos, events, counters=counters, latency=latency, lag=lag)


def table_rows(results: dict[str, dict[str, dict]]) -> list[tuple[str, ...]]:
    """The scores as text, one row per SLO and tier under ``TABLE_COLUMNS`` (the CLI's table
    and the asset's metadata): caught as caught/events judged, the events not judged (before
    scoring + without burn), alerts with those without cause in brackets, minutes to alert to
    a tenth (as ``--json`` has them: a median of two is often a half), the firing minutes with
    their share of the scored minutes in brackets."""
    def num(v: float | None, digits: int = 2) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    def firing(s: dict) -> str:
        share = s.get("firing_share")
        return f"{s.get('firing_minutes', '-')} ({'-' if share is None else f'{100 * share:.1f}%'})"

    return [(slo, tier, f"{s['caught']}/{s['events']}", num(s["recall"]),
             f"{s['not_judged_before_scoring']} + {s['not_judged_no_burn']}", f"{s['alerts']} ({s['false_alerts']})",
             num(s["precision"]), num(s.get("median_minutes_to_alert"), 1), firing(s))
            for slo, tiers in results.items() for tier, s in tiers.items()]
