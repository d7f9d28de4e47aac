"""What each column of the warehouse schema ``ramp`` holds, stored as DuckDB column comments.
A test holds every column the ramp assets write to a description here."""

from __future__ import annotations

RAMP_COLUMNS: dict[str, dict[str, str]] = {
    "verdicts": {
        "build_id": "the candidate build", "service": "its service",
        "ramp_start": "when its ramp started (UTC)", "ramp_end": "when its ramp ended, or null while it runs",
        "general_at": "when it reached the general cohort, or null",
        "action": "pause, rollback or freeze; null when the ramp was left alone",
        "acted_at": "end of the minute whose counts decided (UTC); null without an action",
        "reason": "the evidence: what was worse (errors, latency, budget burn), the counts and the evidence "
                  "against the alarm level",
        "trusted_baseline": "whether the stable build was fit to compare with (not paused or rolled back earlier)",
        "cohorts_reached": "cohorts the candidate served by the action (or the ramp's end), comma-separated",
        "requests": "the candidate's requests over the ramp judged", "errors": "its errors over the ramp judged",
        "requests_before_action": "its requests before the action", "errors_before_action": "its errors before it",
        "burn_rate": "the candidate's error ratio over the 0.5% error budget, over the ramp (a rate, not a share "
                     "of the budget spent)",
        "burn_rate_before_action": "the same over what it served before the action",
        "partition_key": "the day (display time zone) the verdict was stored for",
    },
    "backtest": {
        "policy": "controller, flagger or sre_multiwindow",
        "metric": "bad builds caught (before the general cohort), false pauses, minutes to pause, blast radius, "
                  "error budget spent (docs/ramps.md, Ramp analysis and backtest)",
        "value": "the metric's value; null when there is none",
        "partition_key": "always 'all': each run replays the world's whole history",
    },
}
