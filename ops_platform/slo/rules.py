"""Export SLOs as Prometheus recording and alerting rules, in the manner of Sloth.

Recording rules give each SLO's error ratio over every window its burn tiers use; alerting
rules fire a tier when both its long and short windows burn faster than the tier's rate.
For a Timeslices SLO the ratio is the share of bad minutes among the minutes with traffic,
as the platform's burn series counts it: each minute's good ratio from a one-minute
``rate``, so its counters must be scraped at least twice a minute.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import numpy as np
import yaml

from .burn import window_name
from .daily import MAX_SILENCE
from .spec import SLO, THRESHOLD_OPS, MetricSource, alert_name, is_inf_bound

# How the landing-zone metric sources map to the metrics our Prometheus exporter writes.
METRICS = {
    "requests": "summit_http_requests_total",
    "errors": "summit_http_request_errors_total",
    "bucket": "summit_http_request_duration_seconds_bucket",
    "lag": "summit_pipeline_lag_seconds",
}


def _quoted(value: object) -> str:
    """A PromQL string literal: JSON's escapes are Go's, which PromQL reads (a quote or a
    backslash in a service name would otherwise break the rule file, or match another name)."""
    return json.dumps(str(value), ensure_ascii=False)


def _selector(source: MetricSource, *extra: str) -> str:
    labels = [f"{k}={_quoted(v)}" for k, v in sorted(source.spec.items()) if k in ("service", "pipeline", "cohort")]
    return "{" + ",".join(labels + list(extra)) + "}"


def _le_matcher(value: object) -> str:
    """A matcher for a bucket bound's `le` label, as Go clients and Prometheus write it (the
    shortest digits; an exponent from 1e6 and below 1e-4, ``1e+06``). A whole-number bound
    below 1e6 is written ``1`` by Prometheus 2's text scrapes and ``1.0`` by Prometheus 3
    (and protobuf scrapes): both match."""
    if is_inf_bound(value):
        return 'le="+Inf"'
    bound = float(value)
    if bound.is_integer() and abs(bound) < 1e6:
        return f'le=~"{int(bound)}|{int(bound)}[.]0"'
    if 1e-4 <= abs(bound) < 1e6:
        return f'le="{bound!r}"'
    return f'le="{np.format_float_scientific(bound, unique=True, trim="-", exp_digits=2)}"'


def _minutes(window: timedelta) -> str:
    """A subquery range holding exactly the window's minutes, as the burn series counts them:
    (t - w, t]. Prometheus 2 closes a range on the left, so ``[5m:1m]`` held 6 minute steps
    there (5 on Prometheus 3); a range one second short holds 5 on both."""
    return f"{int(window.total_seconds()) - 1}s"


def error_ratio_expr(slo: SLO, window: timedelta) -> str:
    """PromQL for the SLO's bad-event ratio over `window`: bad requests (or samples) over all
    of them for Occurrences, bad minutes over minutes with traffic for Timeslices."""
    ind = slo.indicator
    if ind.kind == "ratio":
        if slo.budgeting == "Timeslices":
            assert slo.objective.time_slice_target is not None
            good, _, total = _ratio_parts(slo, "1m")
            minute_bad = f"({good} / {total} < bool {slo.objective.time_slice_target!r}) and {total} > 0"
            return f"avg_over_time(({minute_bad})[{_minutes(window)}:1m])"
        _, bad, total = _ratio_parts(slo, window_name(window))
        # No traffic in the window is no ratio (as the platform's burn series has none), not
        # 0/0 = NaN, which would blank the budget's average over the whole SLO window.
        return f"({bad} / ({total} > 0))"
    metric = ind.metric
    assert metric is not None and slo.objective.op and slo.objective.value is not None
    sel = f'{METRICS["lag"]}{_selector(metric)}'
    bad_op = THRESHOLD_OPS[slo.objective.op].promql
    # Summed over scrape targets; a window without a bad sample counts 0, not "no series" (a
    # healthy pipeline must have a ratio, or dashboards and absence alerts break): the `or`
    # falls back to 0 x the samples, which carries the same labels.
    samples = f"count_over_time({sel}[{_minutes(window)}:1m])"
    return (f"(sum(count_over_time(({sel} {bad_op} {slo.objective.value!r})[{_minutes(window)}:1m]) or 0 * {samples})"
            f" / sum({samples}))")


def _ratio_parts(slo: SLO, window: str) -> tuple[str, str, str]:
    """PromQL (good, bad, total) rates of a ratio SLO over `window`. No errors counter (a service
    that never failed) is 0 errors, as the platform's Prometheus reader counts it."""
    good, total = slo.indicator.good, slo.indicator.total
    assert good is not None and total is not None
    t = f"sum(rate({_total_series(slo)}[{window}]))"
    if good.spec.get("table") == "latency_buckets":
        g = f'sum(rate({METRICS["bucket"]}{_selector(good, _le_matcher(good.spec["le"]))}[{window}]))'
        return g, f"({t} - {g})", t
    errors = f'sum(rate({METRICS["errors"]}{_selector(total)}[{window}]))'
    bad = f"({errors} or 0 * {t})"
    return f"({t} - {bad})", bad, t


def _total_series(slo: SLO) -> str:
    """The series a ratio SLO counts all its events in: the requests counter, or the latency
    histogram's +Inf bucket."""
    total = slo.indicator.total
    assert total is not None
    if total.spec.get("table") == "latency_buckets":
        return f'{METRICS["bucket"]}{_selector(total, _le_matcher("+Inf"))}'
    return f'{METRICS["requests"]}{_selector(total)}'


def _budget_remaining(slo: SLO, labels: dict) -> list[dict]:
    """The error budget left over the SLO's rolling window (Sloth's
    ``slo:period_error_budget_remaining:ratio``): 1 less the window's error ratio over the
    budget, below 0 once spent. The window's ratio averages the shortest recorded window's
    ratio over it, as Sloth does (a mean of ratios, not the ratio of sums the platform's
    ``slo.budget_remaining`` computes; far cheaper than a 28-day rate). A calendar window has
    no PromQL range: none is recorded for it."""
    if not slo.window.rolling:
        return []
    period, shortest = window_name(slo.window.duration), window_name(min(slo.windows))
    rules = []
    if period not in map(window_name, slo.windows):  # a tier's own window is recorded already
        rules.append({"record": f"slo:sli_error:ratio_rate{period}",
                      "expr": f'avg_over_time(slo:sli_error:ratio_rate{shortest}{{slo="{slo.name}"}}[{period}])',
                      "labels": {**labels, "window": period}})
    rules.append({"record": "slo:period_error_budget_remaining:ratio",
                  "expr": f'1 - max without (window) (slo:sli_error:ratio_rate{period}{{slo="{slo.name}"}}) '
                          f"/ {slo.error_budget!r}",
                  "labels": labels})
    return rules


MISSING_FOR = window_name(MAX_SILENCE)  # how long an SLO goes unjudged before its data alert fires


def _data_missing_alert(slo: SLO, labels: dict) -> dict:
    """An alert for an SLO that cannot be judged: its source metric is absent (a dead exporter,
    a renamed service label), or requests come in but no ratio is recorded (a Timeslices SLO
    scraped less than twice a minute). Burn alerts are silent then, however bad it gets."""
    shortest = window_name(min(slo.windows))
    ind = slo.indicator
    if ind.kind == "ratio":
        metric = _total_series(slo)
        unjudged = (f'absent(slo:sli_error:ratio_rate{shortest}{{slo={_quoted(slo.name)}}}) '
                    f"and on() (sum(rate({metric}[{shortest}])) > 0)")
        # Summed: absent()'s labels (le, pipeline) are no labels of the SLO's.
        expr = f"sum(absent({metric})) or sum({unjudged})"
        why = f"{metric} is absent, or it counts requests but no error ratio is recorded"
    else:
        assert ind.metric is not None
        metric = f'{METRICS["lag"]}{_selector(ind.metric)}'
        expr = f"sum(absent({metric}))"
        why = f"{metric} is absent"
    severity = slo.tiers[0].severity  # as the fastest tier would page (every SLO has a tier)
    return {
        "alert": alert_name(slo.name, None), "expr": expr, "for": MISSING_FOR,
        "labels": _alert_labels({**labels, "severity": severity}),
        "annotations": _alert_labels({
            "summary": f"{slo.display_name}: not judged for {MISSING_FOR}: {why}; its burn alerts cannot fire",
            "action": "check the exporter, the scrape (twice a minute for a Timeslices SLO) and the labels "
                      "the SLO selects", **slo.alert_annotations}),
    }


def _literal(text: str) -> str:
    """``text`` as an alert label or annotation shows it: Prometheus expands those as Go
    templates, so a ``{{`` from an SLO file (its display name, owner, labels) would break the
    rule file or show a live value; each is written as a template literal instead."""
    return re.sub(r"\{\{|\}\}", lambda m: '{{ "' + m[0] + '" }}', text)


def _alert_labels(labels: dict) -> dict:
    return {k: _literal(str(v)) for k, v in labels.items()}


def rule_groups(slos: list[SLO]) -> dict:
    """The Prometheus rule file content (a dict ready for YAML) for all SLOs."""
    groups = []
    for slo in slos:
        labels = {"slo": slo.name, "service": slo.service, "owner": slo.owner, **slo.labels}
        recording = [{"record": f"slo:sli_error:ratio_rate{window_name(w)}", "expr": error_ratio_expr(slo, w),
                      "labels": {**labels, "window": window_name(w)}} for w in slo.windows]
        recording.append({"record": "slo:objective:ratio", "expr": f"vector({slo.objective.target})",
                          "labels": labels})
        recording.append({"record": "slo:error_budget:ratio", "expr": f"vector({slo.error_budget!r})",
                          "labels": labels})
        recording += _budget_remaining(slo, labels)
        alerts = []
        for tier in slo.tiers:
            lw, sw = window_name(tier.long_window), window_name(tier.short_window)
            # Full precision (repr round-trips): the platform's checks compare the same product.
            threshold = f"({tier.burn_rate!r} * {slo.error_budget!r})"
            # Each recorded ratio carries its own `window` label: matched without it, or the
            # two windows never meet and the alert cannot fire.
            expr = (f'max without (window) (slo:sli_error:ratio_rate{lw}{{slo="{slo.name}"}} > {threshold}) '
                    f'and max without (window) (slo:sli_error:ratio_rate{sw}{{slo="{slo.name}"}} > {threshold})')
            alerts.append({
                "alert": alert_name(slo.name, tier.name),
                "expr": expr,
                "labels": _alert_labels({**labels, "severity": tier.severity, "tier": tier.name,
                                         "ramp_action": tier.ramp_action, "platform_action": tier.platform_action}),
                "annotations": _alert_labels({
                    "summary": f"{slo.display_name}: error budget burning {tier.burn_rate:g}x "
                               f"over {lw} and {sw}",
                    "action": f"ramps: {tier.ramp_action}; platform: {tier.platform_action}",
                    **slo.alert_annotations,
                }),
            })
        alerts.append(_data_missing_alert(slo, labels))
        groups.append({"name": f"slo-{slo.name}-sli-recordings", "rules": recording})
        groups.append({"name": f"slo-{slo.name}-alerts", "rules": alerts})
    return {"groups": groups}


class _NoAliases(yaml.SafeDumper):
    """Every rule spells its labels out: an alias (``*id001``) would tie two rules' labels
    together for whoever edits the file, and Sloth writes none."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def rules_yaml(slos: list[SLO]) -> str:
    return yaml.dump(rule_groups(slos), Dumper=_NoAliases, sort_keys=False, width=120)
