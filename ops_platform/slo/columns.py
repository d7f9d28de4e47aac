"""What each column of the warehouse schema ``slo`` holds, stored as DuckDB column comments
(``SELECT table_name, column_name, comment FROM duckdb_columns() WHERE schema_name = 'slo'``).
A name ending in ``*`` covers a column per burn window or tier the SLO files give; ``{}`` is
the window or tier. A test holds every column the burn assets write to a description here."""

from __future__ import annotations

_PARTITION = "the day partition (display time zone) the row was computed for"
_MINUTE = {
    "ts": "start of the minute (UTC); a window ending at it holds the minutes (ts - w, ts]",
    "slo": "the SLO's name (slos/*.yaml)",
    "bad": "bad events in the minute: errors, slow requests, late samples, or a bad minute (Timeslices)",
    "total": "all events in the minute (requests, samples, or 1 for a judged minute under Timeslices)",
    "error_ratio_*": "bad share over the {} window ending at this minute; null without traffic in it",
    "burn_*": "burn rate over the {} window: error_ratio_{} over the error budget (1 = spending it exactly "
              "over the SLO window)",
    "firing_*": "whether the {} tier fires: both its windows burn above its burn rate",
    "partition_key": _PARTITION,
}

SLO_COLUMNS: dict[str, dict[str, str]] = {
    "burn_minutes": {**_MINUTE, "service": "the service (or pipeline, for a lag SLO)",
                     "cohort": "deployment cohort (canary, early, general); null for a lag SLO",
                     "build_id": "the build serving the cohort; null for a lag SLO"},
    "burn_service": {**_MINUTE, "service": "the service (or pipeline) as a whole: what the tier checks judge"},
    "budget_daily": {
        "slo": "the SLO's name", "day": "the day (display time zone)",
        "bad": "bad events of the day", "total": "all events of the day",
        "error_ratio": "bad over total for the day",
        "burn_rate": "the day's burn rate: error_ratio over the error budget (1 = on budget)",
        "partition_key": _PARTITION,
    },
    "budget_remaining": {
        "slo": "the SLO's name", "day": "as of the end of this day",
        "window_first_day": "first day of the SLO's window (rolling, or the calendar period) ending on day",
        "days_stored": "days of that window stored so far (fewer at the start of the history)",
        "bad": "bad events over the days stored", "total": "all events over the days stored",
        "budget_remaining": "1 - (bad / total) / error budget: 1 untouched, 0 spent, below 0 overspent",
        "partition_key": "the day the row is for",
    },
    "alert_backtest": {
        "slo": "the SLO's name, or 'all' for the totals over every SLO", "tier": "the burn tier",
        "metric": "events, caught, recall, not_judged_before_scoring, not_judged_no_burn, alerts, false_alerts, "
                  "precision, median/max_minutes_to_alert, firing_minutes, scored_minutes, firing_share "
                  "(docs/slo.md, Scoring the alerts)",
        "value": "the metric's value; null when there is none (no alert, no time to alert)",
        "partition_key": "always 'all': each run scores the world's whole history",
    },
}
