"""SLO files, Prometheus rule export, burn rates and budgets."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import yaml

from ops_platform.slo.burn import (
    LAID_OUT,
    burn_rates,
    each_slo,
    minute_events,
    remaining_budget,
    tier_states,
    window_name,
)
from ops_platform.slo.rules import rules_yaml
from ops_platform.slo.spec import MetricSource, SLOSpecError, load_slos

from .test_prometheus_source import PROMTOOL, _require_prometheus

ROOT = Path(__file__).resolve().parent.parent
SLOS = ROOT / "slos"


def by_name(folder: Path = SLOS) -> dict:
    return {s.name: s for s in load_slos(folder)}


def test_golden_slos_load_with_owners_windows_and_tiers():
    slos = by_name()
    assert set(slos) == {"api-availability", "api-latency", "receipt-lag", "approval-lag", "metering-lag"}
    assert {s.budgeting for s in slos.values()} == {"Occurrences", "Timeslices"}
    assert slos["approval-lag"].window.calendar_unit == "month" and not slos["approval-lag"].window.rolling
    assert slos["api-availability"].window.duration == timedelta(days=28)
    assert slos["api-latency"].objective.time_slice_target == 0.95
    for s in slos.values():
        assert s.owner.startswith("team:")
        rates = [t.burn_rate for t in s.tiers]
        assert rates == sorted(rates, reverse=True) and rates[0] == 14.4
    fast = slos["api-availability"].tiers[0]
    assert (fast.long_window, fast.short_window, fast.ramp_action) == (timedelta(hours=1), timedelta(minutes=5),
                                                                        "rollback")


def _mutate(tmp_path: Path, name: str, fn) -> Path:
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    docs = list(yaml.safe_load_all((folder / name).read_text()))
    fn(docs)
    (folder / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return folder


@pytest.mark.parametrize(("file", "mutation", "where"), [
    ("api-availability.yaml", lambda d: d[1]["spec"]["objectives"][0].pop("target"), "objectives[0].target"),
    ("api-availability.yaml", lambda d: d[1]["spec"]["objectives"][0].update(target=1.5), "objectives[0].target"),
    ("api-availability.yaml", lambda d: d[1]["spec"].update(indicatorRef="nope"), "spec.indicatorRef"),
    ("api-availability.yaml", lambda d: d[1]["spec"]["timeWindow"][0].update(duration="28 days"), "duration"),
    ("api-availability.yaml", lambda d: d[1]["metadata"].pop("annotations"), "metadata.annotations"),
    ("api-availability.yaml", lambda d: d[1]["spec"].update(budgetingMethod="RatioTimeslices"), "budgetingMethod"),
    ("api-latency.yaml", lambda d: d[1]["spec"]["objectives"][0].pop("timeSliceTarget"), "timeSliceTarget"),
    ("api-latency.yaml", lambda d: d[2]["spec"]["tiers"][0].update(shortWindow="2h"), "tiers[0].shortWindow"),
    ("api-latency.yaml", lambda d: d[2]["spec"]["tiers"][0].update(shortWindow="30s"), "tiers[0].shortWindow"),
    ("api-latency.yaml", lambda d: d[2]["spec"]["tiers"][0].update(longWindow="90s"), "tiers[0].longWindow"),
    ("api-latency.yaml", lambda d: d[2]["spec"]["tiers"][1].update(ramp="promote"), "tiers[1].ramp"),
    ("receipt-lag.yaml", lambda d: d[1]["spec"]["objectives"][0].update(op="about"), "objectives[0].op"),
    ("receipt-lag.yaml", lambda d: d[1].update(kind="AlertPolicy"), "kind"),
    # typos and contradictions that would otherwise load and be ignored
    ("api-latency.yaml", lambda d: d[1]["spec"]["objectives"][0].update(timeSliceTaget=0.9),
     "objectives[0].timeSliceTaget"),
    ("api-availability.yaml", lambda d: d[1]["spec"].update(budgetingMethd="Occurrences"), "spec.budgetingMethd"),
    ("api-availability.yaml", lambda d: d[1]["spec"].update(alertPolicies=["x"]), "spec.alertPolicies"),
    ("api-availability.yaml", lambda d: d[1]["spec"]["objectives"][0].update(op="lte"), "objectives[0].op"),
    ("api-availability.yaml", lambda d: d[1]["spec"].update(indicator=d[0]), "spec.indicator"),
    ("api-availability.yaml", lambda d: d[2]["spec"]["tiers"][0].update(burnRate=True), "tiers[0].burnRate"),
    ("api-latency.yaml", lambda d: d[1]["spec"]["objectives"][0].update(timeSliceTarget=True), "timeSliceTarget"),
    ("receipt-lag.yaml", lambda d: d[1]["spec"].update(budgetingMethod="Timeslices"), "objectives[0]"),
    ("api-availability.yaml", lambda d: d[1]["spec"]["timeWindow"][0].update(
        calendar={"startTime": "2026-01-01 00:00:00", "timeZone": "UTC"}), "timeWindow[0].calendar"),
    ("approval-lag.yaml", lambda d: d[1]["spec"]["timeWindow"][0]["calendar"].update(startTime="yesterday"),
     "calendar.startTime"),
    ("receipt-lag.yaml", lambda d: d[2]["spec"]["tiers"][2].update(longWindow="10d"), "tiers[2].longWindow"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"].update(bad=d[0]["spec"]["ratioMetric"]["good"]),
     "ratioMetric.bad"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"]["good"]["metricSource"].update(tpye="x"),
     "metricSource.tpye"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"]["good"].update(metricSorce={}), "good.metricSorce"),
    ("api-latency.yaml", lambda d: d[0]["metadata"].update(annotatoins={}), "metadata.annotatoins"),
    ("api-latency.yaml", lambda d: d[2]["metadata"].update(labesl={}), "document[2].metadata.labesl"),
    ("api-latency.yaml", lambda d: d[2].update(status={}), "document[2].status"),
    ("receipt-lag.yaml", lambda d: d[0]["spec"]["thresholdMetric"]["metricSource"]["spec"].update(value="lag_secs"),
     "metricSource.spec.value"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"].update(le="fast"),
     "metricSource.spec.le"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"].update(table="x"),
     "metricSource.spec.table"),
    ("api-latency.yaml", lambda d: d[1]["spec"]["objectives"][0].update(timeSliceWindow="5m"), "timeSliceWindow"),
    ("api-latency.yaml", lambda d: d[2]["spec"]["tiers"][1].update(name="fast"), "spec.tiers"),
    ("api-latency.yaml", lambda d: d.append(d[2]), "spec.slo"),
    ("approval-lag.yaml", lambda d: d[1]["spec"]["timeWindow"][0].update(duration="3M"), "duration"),
    ("receipt-lag.yaml", lambda d: d[1]["metadata"].update(annotations=["team:receipts"]), "metadata.annotations"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"].update(le="NaN"),
     "metricSource.spec.le"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"].update(le=-1),
     "metricSource.spec.le"),
    ("api-latency.yaml", lambda d: d[1]["spec"]["objectives"][0].update(timeSliceWindow=1), "timeSliceWindow"),
    ("api-latency.yaml", lambda d: d[0]["spec"]["ratioMetric"]["good"]["metricSource"].pop("type"),
     "good.metricSource.type"),
    ("api-latency.yaml", lambda d: d[1]["metadata"].update(labels={"severity": "low"}), "metadata.labels.severity"),
    ("api-latency.yaml", lambda d: d[1]["metadata"].update(labels={"team": {"a": 1}}), "metadata.labels.team"),
    ("api-latency.yaml", lambda d: d[1]["metadata"]["annotations"].update(summary="x"),
     "metadata.annotations.summary"),
    # Two SLOs' tiers must not name the same Dagster check (api--latency's fast, api's latency__fast).
    ("api-latency.yaml", lambda d: (d[1]["metadata"].update(name="api--latency"), d[2]["spec"].update(slo="api--latency")),
     "metadata.name"),
    ("api-latency.yaml", lambda d: d[2]["spec"]["tiers"][0].update(name="latency__fast"), "tiers[0].name"),
    # OpenSLO's text fields, and labels that would not reach the rules as written
    ("api-latency.yaml", lambda d: d[1]["metadata"].update(displayName=5), "metadata.displayName"),
    ("api-latency.yaml", lambda d: d[1]["spec"].update(description={"a": 1}), "spec.description"),
    ("api-latency.yaml", lambda d: d[1]["metadata"].update(labels={"cost-center": "x"}), "metadata.labels.cost-center"),
    ("api-latency.yaml", lambda d: d[1]["metadata"].update(labels={"alertname": "x"}), "metadata.labels.alertname"),
    ("api-latency.yaml", lambda d: d[1]["metadata"]["annotations"].update({"runbook-url": "x"}),
     "metadata.annotations.runbook-url"),  # no annotation Prometheus takes: refused, not left out
    ("api-availability.yaml", lambda d: d.append(d[0]), "document[3].metadata.name"),  # the SLI twice
])
def test_bad_files_name_file_and_field(tmp_path, file, mutation, where):
    folder = _mutate(tmp_path, file, mutation)
    with pytest.raises(SLOSpecError) as err:
        load_slos(folder)
    assert file in str(err.value) and where in str(err.value), str(err.value)


def test_openslo_files_as_the_spec_writes_them_load(tmp_path):
    # The spec's own forms: an unquoted startTime (YAML reads a datetime), a calendar window
    # without isRolling, targetPercent, a Service document, and an SLI in a file of its own
    # that an SLO in another file references.
    folder = _mutate(tmp_path, "approval-lag.yaml", lambda d: (
        d[1]["spec"]["timeWindow"][0].pop("isRolling"),
        d[1]["spec"]["timeWindow"][0]["calendar"].update(startTime=datetime(2026, 1, 15, 0, 0)),
        d[1]["spec"]["objectives"][0].update(targetPercent=99.0), d[1]["spec"]["objectives"][0].pop("target"),
        d[0]["spec"]["thresholdMetric"]["metricSource"].update(metricSourceRef="summit-landing"),
        d.insert(0, {"apiVersion": "openslo/v1", "kind": "Service", "metadata": {"name": "approval"},
                     "spec": {"description": "approvals"}})))
    docs = list(yaml.safe_load_all((folder / "approval-lag.yaml").read_text()))
    (folder / "approval-sli.yaml").write_text(yaml.safe_dump(docs.pop(1)))
    (folder / "approval-lag.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    slo = by_name(folder)["approval-lag"]
    assert slo.objective.target == 0.99 and not slo.window.rolling
    # a billing-cycle month from the 15th, not the 1st
    from datetime import date

    assert slo.window.first_day(date(2026, 3, 20)) == date(2026, 3, 15)
    assert slo.window.first_day(date(2026, 3, 10)) == date(2026, 2, 15)
    for i, spelt in enumerate(("2026-01-15T00:00:00Z", "2026-01-15 00:00:00.000", "2026-01-15T00:00:00-07:00",
                               "2026-01-15")):
        folder = _mutate(tmp_path / f"spelt{i}", "approval-lag.yaml", lambda d, t=spelt: d[1]["spec"][
            "timeWindow"][0]["calendar"].update(startTime=t))
        assert by_name(folder)["approval-lag"].window.calendar_start == date(2026, 1, 15), spelt


@pytest.mark.parametrize(("window", "first"), [
    (dict(rolling=True, duration=timedelta(days=28)), "2026-04-20"),
    (dict(rolling=True, duration=timedelta(hours=6)), "2026-05-17"),  # under a day: the day itself
    (dict(rolling=False, duration=None, calendar_unit="month"), "2026-05-01"),
    (dict(rolling=False, duration=None, calendar_unit="quarter"), "2026-04-01"),
    (dict(rolling=False, duration=None, calendar_unit="year"), "2026-01-01"),
    (dict(rolling=False, duration=None, calendar_unit="week"), "2026-05-11"),  # a Monday
    (dict(rolling=False, duration=None, calendar_unit="day"), "2026-05-17"),
])
def test_a_budget_window_starts_where_its_kind_says(window, first):
    from datetime import date

    from ops_platform.slo.spec import TimeWindow

    assert TimeWindow(**window).first_day(date(2026, 5, 17)) == date.fromisoformat(first)


def test_a_bucket_bound_quoted_as_prometheus_writes_it_loads(tmp_path):
    folder = _mutate(tmp_path, "api-latency.yaml",
                     lambda d: d[0]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"].update(le="1.5"))
    (slo,) = [s for s in load_slos(folder) if s.name == "api-latency"]
    assert float(slo.indicator.good.spec["le"]) == 1.5


def test_target_percent_and_a_data_source_reference_read_as_openslo_means_them(tmp_path):
    # 99.9% is the target 0.999 with a budget of 0.001, printed so, as `target: 0.999` gives;
    # a metricSourceRef names the DataSource, whose type the source need not repeat.
    folder = _mutate(tmp_path, "api-availability.yaml", lambda d: (
        d[1]["spec"]["objectives"][0].pop("target"), d[1]["spec"]["objectives"][0].update(targetPercent=99.9),
        d[0]["spec"]["ratioMetric"]["good"]["metricSource"].pop("type"),
        d[0]["spec"]["ratioMetric"]["good"]["metricSource"].update(metricSourceRef="summit-landing")))
    slo = by_name(folder)["api-availability"]
    assert (slo.objective.target, slo.error_budget) == (0.999, 0.001)
    assert slo.indicator.good.type is None
    text = rules_yaml([slo])
    assert "vector(0.999)" in text and "vector(0.001)" in text and "0.0009999" not in text


def test_a_folder_or_a_broken_link_named_yaml_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    (folder / "archive.yaml").mkdir()
    with pytest.raises(SLOSpecError, match=r"archive.yaml: \(file\): cannot be read"):
        load_slos(folder)
    (folder / "archive.yaml").rmdir()
    (folder / "team-b.yaml").symlink_to(tmp_path / "gone.yaml")
    with pytest.raises(SLOSpecError, match=r"team-b.yaml: \(file\): cannot be read: No such file"):
        load_slos(folder)


def test_slo_files_in_subfolders_load_and_hidden_files_are_no_slo_files(tmp_path):
    # Teams keep their SLOs in folders of their own; an editor's lock file (a dangling link)
    # or a hidden copy beside them is not an SLO file.
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    (folder / "team-api").mkdir()
    (folder / "api-latency.yaml").rename(folder / "team-api" / "api-latency.yaml")
    (folder / ".#api-availability.yaml").symlink_to("me@host.1234:1700000000")
    (folder / ".old").mkdir()
    (folder / ".old" / "draft.yaml").write_text("not: an slo\n")
    assert sorted(s.name for s in load_slos(folder)) == sorted(s.name for s in load_slos(SLOS))
    (folder / "team-api" / "copy.yml").write_text((folder / "team-api" / "api-latency.yaml").read_text())
    with pytest.raises(SLOSpecError, match=r"defined twice \(also in team-api/api-latency.yaml, document\[0\]\)"):
        load_slos(folder)


def test_numbers_with_an_exponent_read_as_yaml_1_2_reads_them(tmp_path):
    # PyYAML alone reads `1e1` and `1.44e1` as strings (YAML 1.1 wants `1.44e+1`).
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    text = (folder / "api-availability.yaml").read_text()
    assert "burnRate: 14.4," in text and "target: 0.995\n" in text
    (folder / "api-availability.yaml").write_text(
        text.replace("burnRate: 14.4,", "burnRate: 1.44e1,").replace("target: 0.995\n", "target: 9.95e-1\n"))
    slo = {s.name: s for s in load_slos(folder)}["api-availability"]
    assert slo.tiers[0].burn_rate == 14.4 and slo.objective.target == 0.995
    # No digit before the exponent: text, refused as not a number (not a crash inside float()).
    (folder / "api-availability.yaml").write_text(text.replace("burnRate: 14.4,", "burnRate: ._e1,"))
    with pytest.raises(SLOSpecError, match="burnRate"):
        load_slos(folder)


def test_unparseable_yaml_is_a_clear_error(tmp_path):
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    (folder / "receipt-lag.yaml").write_text("apiVersion: openslo/v1\nkind: [SLO\n")
    with pytest.raises(SLOSpecError, match=r"receipt-lag.yaml: \(line 3, column 1\): not valid YAML: while parsing "
                                           r"a flow sequence expected ',' or ']'"):
        load_slos(folder)


def test_prometheus_rules_pass_promtool(tmp_path):
    _require_prometheus()  # fails in CI, skips (saying why) only locally
    from click.testing import CliRunner

    from ops_platform.cli import main

    out = tmp_path / "slo-rules.yaml"
    res = CliRunner().invoke(main, ["slo", "rules", "--slos", str(SLOS), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text() == rules_yaml(load_slos(SLOS))
    proc = subprocess.run([str(PROMTOOL), "check", "rules", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Per SLO, its windows' ratios and objective; per rolling window, the budget left (and the
    # window's ratio when no tier records it): 4 SLOs x 2, the calendar month none.
    # window's ratio when no tier records it): 4 SLOs x 2, the calendar month none; per SLO,
    # its tiers' alerts and one for data missing.
    assert "SUCCESS: 63 rules found" in proc.stdout
    rules = yaml.safe_load(out.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    burn = [a for a in alerts if a["alert"].startswith("SLOBurn")]
    assert len(burn) == 15 and all(a["labels"]["ramp_action"] in ("rollback", "pause", "ticket") for a in burn)
    assert sorted(a["alert"] for a in alerts if a not in burn) == [
        "SLODataApiAvailabilityMissing", "SLODataApiLatencyMissing", "SLODataApprovalLagMissing",
        "SLODataMeteringLagMissing", "SLODataReceiptLagMissing"]


def test_a_lag_slo_recording_rule_is_zero_for_a_healthy_pipeline_and_sums_targets(tmp_path):
    _require_prometheus()
    (tmp_path / "rules.yaml").write_text(rules_yaml(load_slos(SLOS)))
    test = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [  # two scrape targets, one healthy, one always late: half the samples are bad
            {"series": 'summit_pipeline_lag_seconds{pipeline="receipt",instance="a"}', "values": "10x120"},
            {"series": 'summit_pipeline_lag_seconds{pipeline="receipt",instance="b"}', "values": "90x120"},
            {"series": 'summit_pipeline_lag_seconds{pipeline="approval",instance="a"}', "values": "1x120"}],
        "promql_expr_test": [
            {"expr": 'slo:sli_error:ratio_rate1h{slo="approval-lag"}', "eval_time": "100m",
             "exp_samples": [{"labels": 'slo:sli_error:ratio_rate1h{slo="approval-lag",service="approval",'
                                        f'owner="{by_name()["approval-lag"].owner}",window="1h"}}', "value": 0}]},
            {"expr": 'slo:sli_error:ratio_rate1h{slo="receipt-lag"}', "eval_time": "100m",
             "exp_samples": [{"labels": 'slo:sli_error:ratio_rate1h{slo="receipt-lag",service="receipt",'
                                        f'owner="{by_name()["receipt-lag"].owner}",window="1h"}}', "value": 0.5}]}]}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    proc = subprocess.run([str(PROMTOOL), "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_exported_window_holds_exactly_its_minutes_as_the_burn_series_counts_them(tmp_path):
    # One late minute (the 21st) of a receipt pipeline: two minutes later the 5m ratio is 1/5,
    # five minutes later the minute is out of the window. Prometheus 2 closes a range on the
    # left, so a `[5m:1m]` subquery held six minutes there: 1/6, then still 1/6.
    _require_prometheus()
    slo = by_name()["receipt-lag"]
    values = [10.0] * 21 + [100.0] + [10.0] * 41
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    lag = pl.DataFrame({"ts": [t0 + timedelta(minutes=i) for i in range(len(values))], "pipeline": ["receipt"] * len(values),
                        "lag_seconds": values, "sample_id": [str(i) for i in range(len(values))]})
    burn = burn_rates(minute_events(slo, lag=lag), slo)
    ours = {m: burn.filter(pl.col("ts") == t0 + timedelta(minutes=m))["error_ratio_5m"].item() for m in (23, 26)}
    assert ours == {23: 0.2, 26: 0.0}
    label = f'slo:sli_error:ratio_rate5m{{slo="receipt-lag",service="receipt",owner="{slo.owner}",window="5m"}}'
    _promtool_test(tmp_path, rules_yaml(load_slos(SLOS)), [{"interval": "1m", "input_series": [
        {"series": 'summit_pipeline_lag_seconds{pipeline="receipt"}', "values": "10x20 100 10x40"}],
        "promql_expr_test": [{"expr": 'slo:sli_error:ratio_rate5m{slo="receipt-lag"}', "eval_time": f"{m}m",
                              "exp_samples": [{"labels": label, "value": ratio}]} for m, ratio in ours.items()]}])


def test_exported_alerts_fire_and_ratios_read_as_the_platform_counts(tmp_path):
    # Sloth users check their rules with `promtool test rules`: here a 10% error rate (a 20x
    # burn of the 0.5% budget) must fire the fast page, whose two windows are recorded under
    # different `window` labels; a service whose errors counter never appeared has a ratio of
    # 0, not none; and a Timeslices SLO counts bad minutes, so 3% slow requests in every
    # minute (the slice allows 5%) spend nothing while 10% makes every minute bad.
    _require_prometheus()
    (tmp_path / "rules.yaml").write_text(rules_yaml(load_slos(SLOS)))
    owner = by_name()["api-latency"].owner
    bucket = "summit_http_request_duration_seconds_bucket"
    test = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [
        {"interval": "30s",
         "input_series": [
             {"series": 'summit_http_requests_total{service="api",cohort="general"}', "values": "0+100x400"},
             {"series": 'summit_http_request_errors_total{service="api",cohort="general"}', "values": "0+10x400"},
             {"series": f'{bucket}{{service="api",le="1.5"}}', "values": "0+97x400"},
             {"series": f'{bucket}{{service="api",le="+Inf"}}', "values": "0+100x400"}],
         "alert_rule_test": [
             {"eval_time": "70m", "alertname": "SLOBurnApiAvailabilityFast",
              "exp_alerts": [{"exp_labels": {"slo": "api-availability", "service": "api", "severity": "critical",
                                             "tier": "fast", "owner": by_name()["api-availability"].owner,
                                             "ramp_action": "rollback", "platform_action": "freeze"},
                              "exp_annotations": {
                                  "summary": f"{by_name()['api-availability'].display_name}: error budget "
                                             "burning 14.4x over 1h and 5m",
                                  "action": "ramps: rollback; platform: freeze"}}]},
             {"eval_time": "70m", "alertname": "SLOBurnApiLatencyFast", "exp_alerts": []}],
         "promql_expr_test": [
             {"expr": 'slo:sli_error:ratio_rate5m{slo="api-latency"}', "eval_time": "60m",
              "exp_samples": [{"labels": f'slo:sli_error:ratio_rate5m{{slo="api-latency",service="api",'
                                         f'owner="{owner}",window="5m"}}', "value": 0}]}]},
        {"interval": "30s",
         "input_series": [
             {"series": f'{bucket}{{service="api",le="1.5"}}', "values": "0+90x400"},
             {"series": f'{bucket}{{service="api",le="+Inf"}}', "values": "0+100x400"}],
         "promql_expr_test": [
             {"expr": 'slo:sli_error:ratio_rate5m{slo="api-latency"}', "eval_time": "60m",
              "exp_samples": [{"labels": f'slo:sli_error:ratio_rate5m{{slo="api-latency",service="api",'
                                         f'owner="{owner}",window="5m"}}', "value": 1}]}]}]}
    availability = by_name()["api-availability"]
    test["tests"].append({"interval": "30s", "input_series": [
        {"series": 'summit_http_requests_total{service="api",cohort="general"}', "values": "0+100x400"}],
        "promql_expr_test": [{"expr": 'slo:sli_error:ratio_rate5m{slo="api-availability"}', "eval_time": "60m",
                              "exp_samples": [{"labels": 'slo:sli_error:ratio_rate5m{slo="api-availability",'
                                                         f'service="api",owner="{availability.owner}",window="5m"}}',
                                               "value": 0}]}]})
    # The budget left over the rolling window: whole without errors; with half the requests
    # failing all along, 100 budgets' worth spent, 99 beyond it.
    remaining = 'slo:period_error_budget_remaining:ratio{slo="api-availability"}'
    labels = f'slo:period_error_budget_remaining:ratio{{slo="api-availability",service="api",owner="{availability.owner}"}}'
    test["tests"][-1]["promql_expr_test"].append({"expr": remaining, "eval_time": "60m",
                                                  "exp_samples": [{"labels": labels, "value": 1}]})
    test["tests"].append({"interval": "30s", "input_series": [
        {"series": 'summit_http_requests_total{service="api",cohort="general"}', "values": "0+100x400"},
        {"series": 'summit_http_request_errors_total{service="api",cohort="general"}', "values": "0+50x400"}],
        "promql_expr_test": [{"expr": remaining, "eval_time": "60m",
                              "exp_samples": [{"labels": labels, "value": 1 - 0.5 / availability.error_budget}]}]})
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    proc = subprocess.run([str(PROMTOOL), "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _promtool_test(tmp_path: Path, rules: str, tests: list[dict]) -> None:
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                        "tests": tests}))
    proc = subprocess.run([str(PROMTOOL), "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_quiet_spell_leaves_the_budget_left_a_number(tmp_path):
    # 0.1% errors, then ten minutes without a request, then traffic again: the minutes without
    # traffic have no ratio (0/0 would be NaN, and NaN averaged over 28 days blanks the budget
    # for the whole window); the budget left stays 1 - 0.001 / 0.005 = 0.8.
    _require_prometheus()
    slo = by_name()["api-availability"]
    _promtool_test(tmp_path, rules_yaml(load_slos(SLOS)), [{"interval": "1m", "input_series": [
        {"series": 'summit_http_requests_total{service="api"}', "values": "0+1000x60 60000x10 60000+1000x60"},
        {"series": 'summit_http_request_errors_total{service="api"}', "values": "0+1x60 60x10 60+1x60"}],
        "promql_expr_test": [
            {"expr": 'slo:sli_error:ratio_rate5m{slo="api-availability"}', "eval_time": "68m", "exp_samples": []},
            {"expr": 'abs(slo:period_error_budget_remaining:ratio{slo="api-availability"} - 0.8) < bool 1e-9',
             "eval_time": "125m", "exp_samples": [
                 {"labels": f'{{slo="api-availability",service="api",owner="{slo.owner}"}}', "value": 1}]}]}])


def test_an_slo_that_cannot_be_judged_alerts_after_ten_minutes(tmp_path):
    # A relabelled exporter (the service is now "api-gateway"): no burn alert can fire, however
    # bad, so the data alert does; so it does for a Timeslices SLO scraped every 2 minutes
    # (its one-minute slices need two samples a minute), while the counters show traffic.
    # A lag pipeline whose samples stop alerts too; a healthy SLO does not.
    _require_prometheus()
    slos = by_name()
    bucket = "summit_http_request_duration_seconds_bucket"
    text = rules_yaml(load_slos(SLOS))
    annotations = {r["alert"]: r["annotations"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]
                   if "alert" in r}
    assert "summit_http_requests_total{service=\"api\"} is absent" in annotations["SLODataApiAvailabilityMissing"][
        "summary"]

    def fired(name: str, slo: str) -> dict:
        return {"eval_time": "30m", "alertname": name, "exp_alerts": [{"exp_labels": {
            "slo": slo, "service": slos[slo].service, "owner": slos[slo].owner, "severity": "critical"},
            "exp_annotations": annotations[name]}]}

    _promtool_test(tmp_path, text, [
        {"interval": "1m", "input_series": [
            {"series": 'summit_http_requests_total{service="api-gateway"}', "values": "0+100x60"},
            {"series": 'summit_http_request_errors_total{service="api-gateway"}', "values": "0+100x60"},
            {"series": 'summit_pipeline_lag_seconds{pipeline="receipt"}', "values": "1x60"}],
         "alert_rule_test": [fired("SLODataApiAvailabilityMissing", "api-availability"),
                             {"eval_time": "8m", "alertname": "SLODataApiAvailabilityMissing", "exp_alerts": []},
                             {"eval_time": "30m", "alertname": "SLODataReceiptLagMissing", "exp_alerts": []},
                             fired("SLODataApprovalLagMissing", "approval-lag")]},
        {"interval": "2m", "input_series": [
            {"series": f'{bucket}{{service="api",le="1.5"}}', "values": "0+100x30"},
            {"series": f'{bucket}{{service="api",le="+Inf"}}', "values": "0+200x30"}],
         "alert_rule_test": [fired("SLODataApiLatencyMissing", "api-latency")]},
        {"interval": "30s", "input_series": [
            {"series": f'{bucket}{{service="api",le="1.5"}}', "values": "0+100x120"},
            {"series": f'{bucket}{{service="api",le="+Inf"}}', "values": "0+100x120"}],
         "alert_rule_test": [{"eval_time": "30m", "alertname": "SLODataApiLatencyMissing", "exp_alerts": []}]}])


def test_slo_labels_and_runbook_reach_the_rules_and_service_names_are_quoted(tmp_path):
    # metadata.labels go on every rule (Alertmanager routes on them); an annotation named like
    # a label (runbook_url) on every alert, a prefixed one (the owner) stays platform metadata;
    # a quote or a backslash in a service name is escaped, not a broken rule file.
    _require_prometheus()
    folder = _mutate(tmp_path, "api-availability.yaml", lambda d: (
        d[1]["metadata"].update(labels={"team": "payments", "tariff": ["1", "gold"], "summit.example/tier": "1"}),
        d[1]["metadata"]["annotations"].update(runbook_url="https://runbooks.example/api"),
        [d[0]["spec"]["ratioMetric"][k]["metricSource"]["spec"].update(service='ap"i\\x') for k in ("good", "total")]))
    slo = by_name(folder)["api-availability"]
    every = [r for g in yaml.safe_load(rules_yaml([slo]))["groups"] for r in g["rules"]]
    assert all(r["labels"]["team"] == "payments" and r["labels"]["tariff"] == "1,gold" for r in every)
    assert not any("summit.example/tier" in r["labels"] for r in every)  # prefixed: metadata only
    alerts = [r for r in every if "alert" in r]
    assert all(a["annotations"]["runbook_url"] == "https://runbooks.example/api" for a in alerts)
    assert not any("summit.example/owner" in a["annotations"] for a in alerts)
    _promtool_test(tmp_path, rules_yaml([slo]), [{"interval": "30s", "input_series": [
        {"series": 'summit_http_requests_total{service="ap\\"i\\\\x"}', "values": "0+100x200"},
        {"series": 'summit_http_request_errors_total{service="ap\\"i\\\\x"}', "values": "0+10x200"}],
        "alert_rule_test": [{"eval_time": "70m", "alertname": "SLOBurnApiAvailabilityFast", "exp_alerts": [
            {"exp_labels": {"slo": "api-availability", "service": "api", "owner": slo.owner, "team": "payments",
                            "tariff": "1,gold", "tier": "fast", "severity": "critical", "ramp_action": "rollback",
                            "platform_action": "freeze"},
             "exp_annotations": {"summary": f"{slo.display_name}: error budget burning 14.4x over 1h and 5m",
                                 "action": "ramps: rollback; platform: freeze",
                                 "runbook_url": "https://runbooks.example/api"}}]}]}])


def test_template_braces_in_slo_text_reach_the_alerts_as_written(tmp_path):
    # Alert labels and annotations are Go templates to Prometheus: a `{{` in a display name,
    # an owner or a label broke the rule file (or showed a live value). Written as template
    # literals there, plain in the recording rules, which are not templates.
    _require_prometheus()
    owner = "team }} {{ $value }}"
    folder = _mutate(tmp_path, "api-availability.yaml", lambda d: (
        d[1]["metadata"].update(displayName="API errors {{ below }} 0.5%", labels={"team": "pay{{ments"}),
        d[1]["metadata"]["annotations"].update({"summit.example/owner": owner})))
    slo = by_name(folder)["api-availability"]
    rules = yaml.safe_load(rules_yaml([slo]))
    assert all(r["labels"]["owner"] == owner for g in rules["groups"] for r in g["rules"] if "record" in r)
    _promtool_test(tmp_path, rules_yaml([slo]), [{"interval": "30s", "input_series": [
        {"series": 'summit_http_requests_total{service="api"}', "values": "0+100x200"},
        {"series": 'summit_http_request_errors_total{service="api"}', "values": "0+10x200"}],
        "alert_rule_test": [{"eval_time": "70m", "alertname": "SLOBurnApiAvailabilityFast", "exp_alerts": [
            {"exp_labels": {"slo": "api-availability", "service": "api", "owner": owner, "team": "pay{{ments",
                            "tier": "fast", "severity": "critical", "ramp_action": "rollback",
                            "platform_action": "freeze"},
             "exp_annotations": {"summary": "API errors {{ below }} 0.5%: error budget burning 14.4x over 1h and 5m",
                                 "action": "ramps: rollback; platform: freeze"}}]}]}])


def test_two_slos_whose_alerts_would_share_a_name_are_refused(tmp_path):
    from ops_platform.slo.spec import alert_name

    assert alert_name("api-latency", "page_1h") == "SLOBurnApiLatencyPage1h"  # not ...Page_1H
    assert alert_name("api-v2latency", "fast") != alert_name("api-v2-latency", "fast")
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    text = (folder / "api-availability.yaml").read_text()
    (folder / "api-availability.yaml").unlink()
    for name in ("api-2fa", "api2fa"):  # both export SLOBurnApi2faFast
        (folder / f"{name}.yaml").write_text(text.replace("api-availability", name).replace("api-good-requests",
                                                                                            f"{name}-good"))
    with pytest.raises(SLOSpecError, match="SLO 'api2fa' tier 'fast' exports alert SLOBurnApi2faFast, as tier "
                                           "'fast' of SLO 'api-2fa' does"):
        load_slos(folder)
    # Two tiers of one SLO, page_1h and page1h, would export one alert as well.
    tiers = _mutate(tmp_path / "t", "api-latency.yaml", lambda d: (
        d[2]["spec"]["tiers"].append({**d[2]["spec"]["tiers"][0], "name": "page_1h"}),
        d[2]["spec"]["tiers"].append({**d[2]["spec"]["tiers"][0], "name": "page1h"})))
    with pytest.raises(SLOSpecError, match="tier 'page1h' exports alert SLOBurnApiLatencyPage1h, as tier 'page_1h'"):
        load_slos(tiers)


def _synthetic(minutes: int = 600, seed: int = 1, gaps: bool = True) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 3, 8, tzinfo=UTC)
    rows = []
    for build in ("api-1", "api-2"):
        keep = rng.random(minutes) > (0.1 if gaps else -1)  # gaps: minutes without rows
        ts = [start + timedelta(minutes=int(i)) for i in np.flatnonzero(keep)]
        req = rng.integers(0, 200, len(ts))
        err = rng.binomial(req, 0.01 if build == "api-1" else 0.05)
        rows.append(pl.DataFrame({"ts": ts, "service": "api", "cohort": "canary", "build_id": build,
                                  "requests": req, "errors": err}))
    return pl.concat(rows).with_columns(pl.col("ts").dt.cast_time_unit("us"))


@pytest.mark.parametrize("gaps", [True, False], ids=["minutes-without-rows", "every-minute"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["rows-in-time-order", "rows-in-any-order"])
def test_burn_rates_match_a_straightforward_pandas_rolling_window(gaps, shuffled):
    slo = by_name()["api-availability"]
    counters = _synthetic(gaps=gaps)
    ev = minute_events(slo, counters=counters.sample(fraction=1.0, shuffle=True, seed=3) if shuffled else counters)
    got = burn_rates(ev, slo, [timedelta(minutes=5), timedelta(hours=1)])
    assert got.height == counters.height and got["build_id"].n_unique() == 2
    # each group's rows are consecutive and in time order
    assert got["build_id"].rle_id().max() == 1
    assert got.select((pl.col("ts").diff() > timedelta(0)).over("build_id").drop_nulls().all()).item()
    assert got.columns[:6] == ["ts", "service", "cohort", "build_id", "bad", "total"]
    # a true division, as pandas and numpy compute it (not times the reciprocal)
    np.testing.assert_array_equal(got["burn_5m"].to_numpy(), got["error_ratio_5m"].to_numpy() / slo.error_budget)
    for _build, g in got.to_pandas().groupby("build_id"):
        s = g.set_index("ts").sort_index()
        for w, name in (("5min", "5m"), ("60min", "1h")):
            bad = s["bad"].rolling(w).sum()
            total = s["total"].rolling(w).sum()
            expected = (bad / total).where(total > 0) / slo.error_budget
            pd.testing.assert_series_equal(s[f"burn_{name}"], expected, check_names=False, rtol=1e-12)
    assert got["burn_1h"].drop_nulls().mean() > 0


@pytest.mark.parametrize("gaps", [True, False], ids=["minutes-without-samples", "every-minute"])
def test_one_series_burn_rates_match_a_straightforward_pandas_rolling_window(gaps):
    # A pipeline's lag is one series: with a sample every minute its windows are shifts of
    # the running sums, with gaps they are found by minute; both must agree with pandas.
    slo = by_name()["receipt-lag"]
    rng = np.random.default_rng(5)
    keep = np.flatnonzero(rng.random(900) > (0.2 if gaps else -1))
    start = datetime(2026, 3, 8, tzinfo=UTC)
    lag = pl.DataFrame({"ts": [start + timedelta(minutes=int(i), seconds=7) for i in keep],
                        "pipeline": "receipt", "lag_seconds": rng.choice([5.0, 10.0, 900.0], len(keep), p=[.5, .4, .1]),
                        "sample_id": [str(i) for i in keep]}).sample(fraction=1.0, shuffle=True, seed=2)
    got = burn_rates(minute_events(slo, lag=lag), slo)
    assert got.height == len(keep) and got["ts"].is_sorted()
    s = got.to_pandas().set_index("ts")
    for name in ("5m", "1h", "6h"):
        minutes = int(pd.Timedelta(name.replace("m", "min")).total_seconds() // 60)
        bad, total = s["bad"].rolling(f"{minutes}min").sum(), s["total"].rolling(f"{minutes}min").sum()
        pd.testing.assert_series_equal(s[f"total_{name}"].astype(float), total, check_names=False)
        pd.testing.assert_series_equal(s[f"burn_{name}"], (bad / total).where(total > 0) / slo.error_budget,
                                       check_names=False, rtol=1e-12)
    assert (got["bad"] > 0).any() and got["burn_1h"].max() > 1


def test_burn_windows_must_be_whole_minutes():
    slo = by_name()["api-availability"]
    ev = minute_events(slo, counters=_synthetic(minutes=10))
    with pytest.raises(ValueError, match="whole minutes"):
        burn_rates(ev, slo, [timedelta(seconds=30)])


def test_timeslices_count_bad_minutes_and_skip_empty_ones():
    slo = by_name()["api-latency"]
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    rows = []
    for i, (fast, total) in enumerate([(99, 100), (90, 100), (0, 0), (95, 100)]):
        for le, count in ((1.5, fast), (float("inf"), total)):
            rows.append({"ts": t0 + timedelta(minutes=i), "service": "api", "cohort": "early", "build_id": "b",
                         "le": le, "count": count})
    ev = minute_events(slo, latency=pl.DataFrame(rows)).sort("ts")
    assert ev["bad"].to_list() == [0, 1, 0]  # 90% fast is bad; 95% meets the slice target
    assert ev["total"].to_list() == [1, 1, 1]  # the empty minute does not count
    left = remaining_budget(ev, slo, t0, t0 + timedelta(hours=1))
    assert left["error_ratio"] == pytest.approx(1 / 3) and left["budget_remaining"] < 0


def test_latency_minutes_pair_each_total_with_its_own_good_bucket_whatever_the_row_order():
    slo = by_name()["api-latency"]  # good: le 1.5; slice target 95%
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    buckets = {  # (minute, build) -> {le: count}
        (0, "b1"): {0.5: 90, 1.5: 99, 5.0: 100, float("inf"): 100},  # 99% fast: good
        (0, "b2"): {0.5: 0, 1.5: 50, float("inf"): 100},  # same minute, other build: bad
        (1, "b1"): {5.0: 100, float("inf"): 100},  # no good bucket: none fast, bad
        (2, "b1"): {1.5: 100},  # no +Inf bucket: no requests to judge
        (3, "b2"): {1.5: 96, float("inf"): 100},
    }
    rows = [{"ts": t0 + timedelta(minutes=m), "service": "api", "cohort": "early", "build_id": b, "le": le,
             "count": n} for (m, b), counts in buckets.items() for le, n in counts.items()]
    rows += [dict(r, service="graph") for r in rows]  # another service's buckets never pair with these
    rows += [r for r in rows if r["ts"] == t0 and r["build_id"] == "b2"]  # a minute delivered twice counts once
    lat = pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=3)
    ev = minute_events(slo, latency=lat).sort("ts", "build_id")
    minutes = [(int((ts - t0).total_seconds() // 60), b, bad) for ts, b, bad in ev.select("ts", "build_id", "bad").rows()]
    assert minutes == [(0, "b1", 0), (0, "b2", 1), (1, "b1", 1), (3, "b2", 0)]


def test_latency_buckets_in_their_usual_order_pair_by_position_as_the_sort_does():
    slo = by_name()["api-latency"]  # good: le 1.5; slice target 95%
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    rng = np.random.default_rng(5)
    rows = []
    for m in range(400):  # three groups, one of them starting late (a build ramping in)
        for cohort, build in (("general", "b1"), ("canary", "b2"), ("early", "b2")):
            if build == "b2" and m < 100:
                continue
            total = int(rng.integers(0, 50))  # some minutes without requests
            fast = total - int(rng.binomial(total, 0.04))
            for le, count in ((0.5, fast // 2), (1.5, fast), (float("inf"), total)):
                rows.append({"ts": t0 + timedelta(minutes=m), "service": "api", "cohort": cohort, "build_id": build,
                             "le": le, "count": count})
    rows += [dict(r, service="graph") for r in rows[:60]]
    in_order = pl.DataFrame(rows)
    shuffled = in_order.sample(fraction=1.0, shuffle=True, seed=9)
    laid, sorted_ = minute_events(slo, latency=in_order), minute_events(slo, latency=shuffled)
    assert LAID_OUT in laid.columns and LAID_OUT not in sorted_.columns  # one path each
    keys = ["cohort", "build_id", "ts"]
    assert laid.select(sorted_.columns).sort(keys).equals(sorted_.sort(keys))
    assert 0 < laid["bad"].sum() < laid.height  # some minutes bad, some good
    # The burn series over the layout are those over the events grouped anew.
    expected = burn_rates(sorted_, slo).sort(keys)
    assert burn_rates(laid, slo).sort(keys).equals(expected)
    # Events sorted since by something else are no layout: they are grouped anew, not misread.
    assert burn_rates(laid.sort("ts", "cohort"), slo).sort(keys).equals(expected)
    # A minute of one group delivered twice is no usual order: the sort pairs it, counted once.
    twice = pl.concat([in_order, in_order.filter((pl.col("ts") == t0 + timedelta(minutes=150))
                                                 & (pl.col("build_id") == "b2"))])
    again = minute_events(slo, latency=twice)
    assert LAID_OUT not in again.columns and again.sort(keys).equals(sorted_.sort(keys))


def test_each_slo_gives_every_result_in_the_slos_order():
    slos = list(by_name().values())
    assert len(slos) > 2
    # The first SLO takes longest: a pool that returned results as they finish would reorder them.
    def compute(slo):
        time.sleep(0.05 if slo is slos[0] else 0.0)
        return slo.name
    assert each_slo(compute, slos) == [s.name for s in slos]


def test_a_timeslices_slo_of_the_whole_service_judges_the_services_minute():
    slo = by_name()["api-latency"]
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    rows = []  # one minute: a canary's 10 requests all slow, the stable build's 1,000 all fast
    for build, cohort, fast, total in (("b2", "canary", 0, 10), ("b1", "general", 1000, 1000)):
        for le, count in ((1.5, fast), (float("inf"), total)):
            rows.append({"ts": t0, "service": "api", "cohort": cohort, "build_id": build, "le": le, "count": count})
    lat = pl.DataFrame(rows)
    groups = minute_events(slo, latency=lat).sort("build_id")
    assert groups.select("build_id", "bad", "total").rows() == [("b1", 0, 1), ("b2", 1, 1)]
    whole = minute_events(slo, latency=lat, by=("service",))
    assert whole.select("service", "cohort", "build_id", "bad", "total").rows() == [("api", None, None, 0, 1)]
    # The day's budget use counts the same minutes: one good minute, none spent.
    from ops_platform.slo.daily import compute_day

    day = compute_day([slo], t0, t0 + timedelta(minutes=1), counters=None, latency=lat, lag=None)
    assert day.budget.select("bad", "total").row(0) == (0, 1)


def test_a_burning_group_is_named_only_on_enough_evidence():
    from ops_platform.slo.daily import MIN_EVIDENCE, compute_day

    slo = by_name()["api-availability"]
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    rows = [{"ts": t0 + timedelta(minutes=i), "service": "api", "cohort": "general", "build_id": "api-100",
             "requests": 1000, "errors": 100} for i in range(120)]  # an incident: 20x the budget
    # A canary beside it, with a handful of requests: one error in three proves nothing.
    rows += [{"ts": t0 + timedelta(minutes=110 + i), "service": "api", "cohort": "canary", "build_id": "api-101",
              "requests": 1, "errors": int(i == 0)} for i in range(3)]
    day = compute_day([slo], t0, t0 + timedelta(hours=2), counters=pl.DataFrame(rows), latency=None, lag=None)
    fast = next(t for t in day.tiers if t.tier == "fast")
    assert fast.groups_firing == ["api/general/api-100"]
    burning = day.minutes.filter(pl.col("firing_fast") & (pl.col("build_id") == "api-101"))
    assert burning.height > 0 and MIN_EVIDENCE > 3  # it burns, yet is not named


def test_a_tier_is_judged_once_its_long_window_lies_inside_the_history():
    from ops_platform.slo.daily import compute_day

    slo = by_name()["api-availability"]
    t0 = datetime(2026, 3, 8, tzinfo=UTC)  # the history's first minute, already burning
    rows = [{"ts": t0 + timedelta(minutes=i), "service": "api", "cohort": "general", "build_id": "api-100",
             "requests": 1000, "errors": 100} for i in range(180)]
    day = compute_day([slo], t0, t0 + timedelta(hours=3), counters=pl.DataFrame(rows), latency=None, lag=None)
    tiers = {t.tier: t for t in day.tiers}
    fast = slo.tiers[0]
    # The fast tier's ratio is 20x from the first minute, but its 1h window is whole only at
    # minute 60 (00:59 is its last minute); the slow tier's 3 days never are.
    assert tiers[fast.name].first_firing == (t0 + fast.long_window - timedelta(minutes=1)).isoformat()
    assert tiers[fast.name].firing_minutes == 180 - 59
    slow = max(slo.tiers, key=lambda t: t.long_window)
    assert tiers[slow.name].passed and not day.service[f"firing_{slow.name}"].any()
    # Given an earlier start of the history, the same minutes are judged at once.
    earlier = compute_day([slo], t0, t0 + timedelta(hours=3), counters=pl.DataFrame(rows), latency=None, lag=None,
                          since=t0 - timedelta(days=3))
    assert {t.tier: t.firing_minutes for t in earlier.tiers}[fast.name] == 180


def test_reported_peak_burns_are_those_of_the_minutes_judged():
    # The first minutes of a history: one failed request of two reads 100x over "1h" at 00:01,
    # yet the hour is not whole until 00:59. A passing check must not report that peak, nor the
    # plotted day peak; from 00:59 on the service burns 2x.
    from ops_platform.slo.daily import compute_day

    slo = by_name()["api-availability"]
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    rows = [{"ts": t0 + timedelta(minutes=i), "service": "api", "cohort": "general", "build_id": "api-100",
             "requests": 2 if i == 0 else 1000, "errors": 1 if i == 0 else 10} for i in range(180)]
    day = compute_day([slo], t0, t0 + timedelta(hours=3), counters=pl.DataFrame(rows), latency=None, lag=None)
    fast = {t.tier: t for t in day.tiers}[slo.tiers[0].name]
    assert day.service["burn_1h"].max() > 50  # the stored series holds the early minutes as they are
    assert fast.passed and fast.max_burn_long < 2.1 and day.peak_burn(slo.name, timedelta(hours=1)) < 2.1
    # Tiers that use no 1h window: the 1h burn is still reported (the plotted peak reads it).
    no_hour = replace(slo, tiers=tuple(replace(t, long_window=timedelta(hours=2)) if t.long_window == timedelta(hours=1)
                                       else t for t in slo.tiers))
    assert timedelta(hours=1) not in no_hour.windows
    assert "burn_1h" in compute_day([no_hour], t0, t0 + timedelta(hours=3), counters=pl.DataFrame(rows),
                                    latency=None, lag=None).service.columns


def test_threshold_slo_counts_late_samples():
    slo = by_name()["receipt-lag"]
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    lag = pl.DataFrame({"ts": [t0, t0 + timedelta(seconds=20), t0 + timedelta(minutes=1)],
                        "pipeline": ["receipt"] * 3, "lag_seconds": [2.0, 31.0, 30.0], "sample_id": ["a", "b", "c"]})
    ev = minute_events(slo, lag=lag)
    assert ev.select("bad", "total").rows() == [(1, 2), (0, 1)]
    # Samples out of time order (a late file) give the same minutes, in time order.
    assert minute_events(slo, lag=lag.reverse()).rows() == ev.rows()


def test_checks_and_exported_alerts_compare_the_same_threshold():
    # The alert fires on `ratio > (rate * budget)`; a check must use the same float product,
    # which the rule prints at full precision, so both fire on the same minutes to the bit.
    slos = load_slos(SLOS)
    rules = yaml.safe_load(rules_yaml(slos))
    alerts = {r["labels"]["slo"] + "/" + r["labels"]["tier"]: r["expr"]
              for g in rules["groups"] for r in g["rules"] if "tier" in r.get("labels", {})}
    for slo in slos:
        for t in slo.tiers:
            rate, budget = re.search(r"> \(([^ ]+) \* ([^ )]+)\)", alerts[f"{slo.name}/{t.name}"]).groups()
            assert float(rate) * float(budget) == t.burn_rate * slo.error_budget
    slo = by_name()["api-availability"]
    tier = slo.tiers[0]
    threshold = tier.burn_rate * slo.error_budget
    lw, sw = (f"error_ratio_{window_name(w)}" for w in (tier.long_window, tier.short_window))
    burn = pl.DataFrame({f"error_ratio_{window_name(w)}": [0.0] * 4 for w in slo.windows}).with_columns(
        pl.Series(lw, [threshold, np.nextafter(threshold, 1), np.nextafter(threshold, 1), None]),
        pl.Series(sw, [1.0, np.nextafter(threshold, 1), threshold, 1.0]))
    assert tier_states(burn, slo)[f"firing_{tier.name}"].to_list() == [False, True, False, False]


def test_bad_build_fires_the_fast_tier_on_its_own_series(small_world):
    counters = pl.read_parquet(small_world / "landing" / "request_counters" / "*" / "*.parquet")
    bad = pl.read_parquet(small_world / "truth" / "bad_builds.parquet").filter(pl.col("effect") == "error_rate")
    row = bad.row(0, named=True)
    base = by_name()["api-availability"]
    src = MetricSource("summit.landing", {"table": "request_counters", "service": row["service"]})
    slo = replace(base, service=row["service"], indicator=replace(base.indicator, good=src, total=src))
    states = tier_states(burn_rates(minute_events(slo, counters=counters), slo), slo)
    own = states.filter(pl.col("build_id") == row["build_id"])
    first = own.filter(pl.col("firing_fast"))["ts"].min()
    assert first is not None and first - row["deploy_started_at"] <= timedelta(minutes=10)
    others = states.filter((pl.col("service") == row["service"]) & (pl.col("build_id") != row["build_id"]))
    assert others["firing_fast"].mean() < 0.01


def test_a_day_backfilled_out_of_order_refreshes_the_later_days_remaining_budget(tmp_path):
    from datetime import date

    from assets.slo import _budget_rows
    from ops_platform.warehouse import Warehouse

    slos = list(by_name().values())
    wh = Warehouse(tmp_path / "wh.duckdb")

    def store(day: date, bad: int, total: int) -> dict:
        wh.replace_partition_tables("slo", day.isoformat(), {"budget_daily": pl.DataFrame(
            [{"slo": s.name, "day": day, "bad": bad, "total": total, "partition_key": day.isoformat()} for s in slos])})
        return _budget_rows(wh, slos, day)

    rows = store(date(2026, 3, 8), bad=1, total=1000)
    assert list(rows) == [date(2026, 3, 8)]  # in order: nothing later to refresh
    rows = store(date(2026, 3, 7), bad=9, total=1000)  # the day before, stored after
    assert list(rows) == [date(2026, 3, 7), date(2026, 3, 8)]
    later = rows[date(2026, 3, 8)].filter(pl.col("slo") == "api-availability").row(0, named=True)
    assert (later["days_stored"], later["bad"], later["total"]) == (2, 10, 2000)  # the 7th now counts
    # A day outside every window of the later days (rolling 28 days, calendar months) is not rewritten.
    assert list(store(date(2026, 1, 1), bad=0, total=10)) == [date(2026, 1, 1)]


def test_a_passing_check_names_the_groups_burning_on_their_own():
    from assets.slo import _check_description
    from ops_platform.slo.daily import TierEvaluation

    def tier(firing: int, groups: list[str]) -> TierEvaluation:
        return TierEvaluation("api-latency", "fast", "critical", 14.4, "1h", "5m", firing, groups, None,
                              {}, 0.0, 0.0, "rollback", "freeze")

    assert _check_description(tier(0, [])) == "not burning"
    assert _check_description(tier(0, ["api/canary/api-106"])) == (
        "not burning as a whole; 1 group(s) burning on their own over 14.4x: api/canary/api-106")
    assert _check_description(tier(3, ["api/canary/api-106"])).startswith("3 minute(s) burning over 14.4x")


def test_a_day_without_sli_data_is_missing_data_not_a_healthy_day():
    from ops_platform.slo.daily import empty_sources

    slos = list(by_name().values())
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    counters = pl.DataFrame({"ts": [t0], "service": ["api"], "cohort": ["general"], "build_id": ["b1"],
                             "requests": [10], "errors": [0]})
    lat = pl.DataFrame({"ts": [t0], "service": ["api"], "cohort": ["general"], "build_id": ["b1"],
                        "le": [float("inf")], "count": [10]})
    lag = pl.DataFrame({"ts": [t0 - timedelta(days=1)], "pipeline": ["receipt"], "lag_seconds": [1.0]})
    missing = empty_sources(slos, t0, t0 + timedelta(days=1),
                            {"request_counters": counters, "latency_buckets": lat, "lag_samples": lag})
    # The lag sample is the day before: every lag pipeline misses this day.
    assert missing and all(m.startswith("lag_samples (pipeline ") for m in missing)
    assert "request_counters (service api)" in empty_sources(
        slos, t0, t0 + timedelta(days=1), {"request_counters": counters.clear(), "latency_buckets": lat,
                                           "lag_samples": lag})


def test_slo_validate_lists_what_each_tier_lets_go_and_names_a_bad_file(tmp_path):
    from click.testing import CliRunner

    from ops_platform.cli import main

    res = CliRunner().invoke(main, ["slo", "validate", "--slos", str(SLOS)])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.strip().startswith("receipt-lag")}
    # 14.4x over 1h of a 7-day window lets 8.6% of the budget go, not the Workbook's 2% of 30 days
    assert "5 SLO(s) valid" in res.output and "8.6%" in lines["receipt-lag"], res.output
    slos = {s.name: s for s in load_slos(SLOS)}
    fast = slos["api-availability"].tiers[0]
    assert slos["api-availability"].budget_spent_to_fire(fast) == pytest.approx(14.4 / (28 * 24))
    folder = _mutate(tmp_path, "api-availability.yaml", lambda d: d[1]["spec"].update(budgetingMethd="x"))
    res = CliRunner().invoke(main, ["slo", "validate", "--slos", str(folder)])
    assert res.exit_code == 1 and "api-availability.yaml" in res.output and "budgetingMethd" in res.output
    res = CliRunner().invoke(main, ["slo", "rules", "--slos", str(tmp_path / "none")])
    assert res.exit_code == 1 and "does not exist" in res.output
    # A target of many nines is shown as written, not rounded to 1.
    nines = _mutate(tmp_path / "nines", "api-availability.yaml",
                    lambda d: d[1]["spec"]["objectives"][0].update(target=0.9999999))
    res = CliRunner().invoke(main, ["slo", "validate", "--slos", str(nines)])
    assert res.exit_code == 0 and "0.9999999" in res.output, res.output


def test_rules_match_a_whole_bucket_bound_as_prometheus_2_and_3_write_it_and_keep_full_precision(tmp_path):
    # Prometheus 3 stores le="1" as "1.0": a selector for one form only never matches the other.
    _require_prometheus()
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    latency = folder / "api-latency.yaml"
    latency.write_text(latency.read_text().replace("le: 1.5}", "le: 1}"))
    lag = folder / "receipt-lag.yaml"
    lag.write_text(lag.read_text().replace("      value: 30\n", "      value: 1234567\n"))
    text = rules_yaml(load_slos(folder))
    assert "> 1234567.0)" in text and "e+06" not in text  # the threshold as written, not 6 digits
    assert "&id" not in text and "*id" not in text  # every rule spells its labels out
    from ops_platform.slo.rules import _le_matcher

    # From 1e6 (and below 1e-4) Go clients and Prometheus write an exponent: 1e+06, not 1000000.
    assert [_le_matcher(b) for b in (1e6, 2.5e6, 1e-5, 0.25)] == [
        'le="1e+06"', 'le="2.5e+06"', 'le="1e-05"', 'le="0.25"']
    (tmp_path / "rules.yaml").write_text(text)
    bucket = "summit_http_request_duration_seconds_bucket"
    for le in ("1", "1.0"):
        test = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
            "interval": "30s",
            "input_series": [{"series": f'{bucket}{{service="api",le="{le}"}}', "values": "0+50x400"},
                             {"series": f'{bucket}{{service="api",le="+Inf"}}', "values": "0+100x400"}],
            "promql_expr_test": [{"expr": 'slo:sli_error:ratio_rate5m{slo="api-latency"}', "eval_time": "60m",
                                  "exp_samples": [{"labels": 'slo:sli_error:ratio_rate5m{slo="api-latency",'
                                                             f'service="api",owner="{by_name()["api-latency"].owner}",'
                                                             'window="5m"}', "value": 1}]}]}]}
        (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
        proc = subprocess.run([str(PROMTOOL), "test", "rules", "test.yaml"], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 0, le + proc.stdout + proc.stderr


def test_slo_validate_with_a_world_names_every_slo_that_would_judge_nothing(tmp_path, small_world):
    # A pipeline or bucket bound the data does not have passes the spec check but judges
    # nothing; run on a day of the world's data, validate names each such SLO, not only the first.
    from click.testing import CliRunner

    from ops_platform.cli import main

    ok = CliRunner().invoke(main, ["slo", "validate", "--slos", str(SLOS), "--world", str(small_world)])
    assert ok.exit_code == 0 and "5 SLO(s) valid" in ok.output, ok.output
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    for name, old, new in (("receipt-lag.yaml", "pipeline: receipt,", "pipeline: receipts,"),
                           ("api-latency.yaml", "le: 1.5}", "le: 2.4}")):
        text = (folder / name).read_text()
        assert old in text
        (folder / name).write_text(text.replace(old, new))
    assert CliRunner().invoke(main, ["slo", "validate", "--slos", str(folder)]).exit_code == 0  # the spec is fine
    res = CliRunner().invoke(main, ["slo", "validate", "--slos", str(folder), "--world", str(small_world)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "the lag samples hold no pipeline 'receipts'" in res.output and "le=2.4 is not among" in res.output


def test_loader_errors_name_the_other_file_and_what_is_supported(tmp_path):
    # A misspelt policy is named itself (not as its SLO lacking one); a duplicate names both
    # files; an unknown kind says what an SLO file may hold.
    folder = _mutate(tmp_path / "a", "receipt-lag.yaml",
                     lambda d: next(x for x in d if x["kind"] == "BurnAlertPolicy")["spec"].update(slo="receipt-lagg"))
    with pytest.raises(SLOSpecError, match=r"receipt-lag\.yaml: document\[\d\]\.spec\.slo: names no SLO 'receipt-lagg'"):
        load_slos(folder)
    folder = tmp_path / "b"
    shutil.copytree(SLOS, folder)
    sli = next(d for d in yaml.safe_load_all((SLOS / "receipt-lag.yaml").read_text()) if d["kind"] == "SLI")
    (folder / "zz-copy.yaml").write_text(yaml.safe_dump(sli))
    with pytest.raises(SLOSpecError, match=r"zz-copy\.yaml: document\[0\]\.metadata\.name: .* defined twice \(also in receipt-lag\.yaml, document\[0\]\)"):
        load_slos(folder)
    (folder / "zz-copy.yaml").write_text(yaml.safe_dump({"apiVersion": "openslo/v2", "kind": "SLO"}))
    with pytest.raises(SLOSpecError, match=r"document\[0\]\.apiVersion: unsupported 'openslo/v2': an SLO file holds openslo/v1 SLO and SLI"):
        load_slos(folder)


def test_a_source_silent_for_over_ten_minutes_is_named_with_its_minutes():
    # api's counters miss 10:00-10:30 (a lost file) and 15:00-15:10 (ten minutes: not over
    # the limit), and stop at 20:00 while the lag samples go on; the history starts at 07:00.
    from ops_platform.slo.daily import silences

    slos = by_name()
    day = datetime(2026, 3, 2, tzinfo=UTC)
    every = [day + timedelta(minutes=m) for m in range(7 * 60, 24 * 60)]
    quiet = [(day.replace(hour=10), day.replace(hour=10, minute=30)), (day.replace(hour=15), day.replace(hour=15, minute=10))]
    api = [t for t in every if t < day.replace(hour=20) and not any(a <= t < b for a, b in quiet)]
    counters = pl.DataFrame({"ts": api, "service": "api", "cohort": "general", "build_id": "b1", "requests": 5,
                             "errors": 0})
    lag = pl.DataFrame({"ts": [t + timedelta(seconds=7) for t in every], "pipeline": "approval", "lag_seconds": 1.0})
    frames = {"request_counters": counters, "latency_buckets": None, "lag_samples": lag}
    end = day + timedelta(days=1)
    assert silences(slos["api-availability"], day, end, frames, since=day.replace(hour=7)) == [
        quiet[0], (day.replace(hour=20), end)]
    # Without a history start the night before 07:00 counts too; the lag pipeline never went quiet.
    assert silences(slos["api-availability"], day, end, frames)[0] == (day, day.replace(hour=7))
    assert silences(slos["approval-lag"], day, end, frames, since=day.replace(hour=7)) == []
    # Every source stops at 20:00 (the day still being ingested): the evening is not missing yet.
    frames["lag_samples"] = lag.filter(pl.col("ts") < day.replace(hour=20))
    assert silences(slos["api-availability"], day, end, frames, since=day.replace(hour=7)) == [quiet[0]]
    # A source with no row of the SLO's service at all is silent the whole time it is judged.
    assert silences(slos["api-latency"], day, end, frames, since=day.replace(hour=7)) == [
        (day.replace(hour=7), day.replace(hour=20))]


def test_linked_team_folders_and_upper_case_extensions_are_read(tmp_path):
    # A team's folder linked in from its own repository, and a file saved as .YAML, hold SLOs
    # like any other: skipped, they would get no rules and no alerts while validate passed.
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    team = tmp_path / "team-repo"
    team.mkdir()
    (folder / "api-latency.yaml").rename(team / "api-latency.yaml")
    (folder / "team-api").symlink_to(team, target_is_directory=True)
    (team / "loop").symlink_to(folder, target_is_directory=True)  # a link back up is read once
    (folder / "receipt-lag.yaml").rename(folder / "receipt-lag.YAML")
    assert sorted(s.name for s in load_slos(folder)) == sorted(s.name for s in load_slos(SLOS))
    # A team's folder moved away: its link is refused by name, not its SLOs dropped unsaid.
    (folder / "team-gone").symlink_to(tmp_path / "moved", target_is_directory=True)
    with pytest.raises(SLOSpecError, match=r"team-gone: \(file\): cannot be read"):
        load_slos(folder)


@pytest.mark.parametrize(("file", "mutation", "message"), [
    # YAML 1.1 reads an unquoted NO as false: the label would reach Alertmanager as "false".
    ("api-availability.yaml", lambda d: d[1]["metadata"].update(labels={"country": False}),
     r"document\[1\]\.metadata\.labels\.country: False is a YAML boolean .* quote the value"),
    ("api-availability.yaml", lambda d: d[2]["spec"]["tiers"][0].update(burnRate=10 ** 400),
     r"document\[2\]\.spec\.tiers\[0\]\.burnRate: 10000000000000000000\.\.\. is too large a number"),
    ("api-availability.yaml", lambda d: d[1]["spec"]["objectives"][0].update(indicatorRef="api-good-requests"),
     r"objectives\[0\]\.indicatorRef: not supported: an objective's own indicator"),
    # The budget is kept per day: a 36h window would be counted over two whole days.
    ("api-availability.yaml", lambda d: d[1]["spec"]["timeWindow"][0].update(duration="36h"),
     r"timeWindow\[0\]\.duration: '36h': a rolling window is whole days"),
    # 3x over 3d on a 7-day window fires once 129% of the budget is gone.
    ("receipt-lag.yaml", lambda d: d[2]["spec"]["tiers"][2].update(burnRate=3),
     r"receipt-lag\.yaml: document\[2\]\.spec\.tiers\[2\]\.burnRate: tier 'slow' fires only once 129% of SLO "
     r"'receipt-lag''s error budget is spent \(burnRate 3 over 3d of a 7-day window\)"),
])
def test_labels_numbers_windows_and_late_tiers_are_refused_by_name(tmp_path, file, mutation, message):
    with pytest.raises(SLOSpecError, match=message):
        load_slos(_mutate(tmp_path, file, mutation))


def test_a_rules_file_or_a_copied_slo_in_the_folder_is_named_as_such(tmp_path):
    from click.testing import CliRunner

    from ops_platform.cli import main

    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    # Saved there by other means (`slo rules --out` refuses the folder).
    res = CliRunner().invoke(main, ["slo", "rules", "--slos", str(folder), "--out", str(tmp_path / "rules.yaml")])
    assert res.exit_code == 0, res.output
    shutil.copy(tmp_path / "rules.yaml", folder / "rules.yaml")
    with pytest.raises(SLOSpecError, match=r"rules.yaml: document\[0\]: is a Prometheus rule file .* outside the SLO"):
        load_slos(folder)
    (folder / "rules.yaml").unlink()
    # A copy with its SLI renamed: the SLO is what is defined twice, not its alert policy.
    copy = (folder / "api-latency.yaml").read_text().replace("name: api-fast-requests", "name: api-fast-2")
    (folder / "api-latency-copy.yaml").write_text(copy)
    with pytest.raises(SLOSpecError, match=r"api-latency.yaml: document\[1\]\.metadata\.name: SLO 'api-latency' is "
                                           r"defined twice \(also in api-latency-copy\.yaml\)"):
        load_slos(folder)
    (folder / "api-latency-copy.yaml").unlink()
    # The policy in a file of its own: the copy is named beside the file that defines the SLO.
    docs = list(yaml.safe_load_all((folder / "api-latency.yaml").read_text()))
    (folder / "api-latency.yaml").write_text(yaml.safe_dump_all(docs[:2], sort_keys=False))
    (folder / "policies").mkdir()
    (folder / "policies" / "api-latency-burn.yaml").write_text(yaml.safe_dump(docs[2], sort_keys=False))
    docs[0]["metadata"]["name"] = "api-fast-2"
    (folder / "zz-copy.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    with pytest.raises(SLOSpecError, match=r"zz-copy.yaml: document\[1\]\.metadata\.name: SLO 'api-latency' is "
                                           r"defined twice \(also in api-latency\.yaml\)"):
        load_slos(folder)
    (folder / "zz-copy.yaml").unlink()
    (folder / "huge.yaml").write_text("apiVersion: openslo/v1\nkind: SLO\nx: " + "9" * 5001 + "\n")
    with pytest.raises(SLOSpecError, match=r"huge.yaml: \(yaml\): cannot be read: Exceeds the limit"):
        load_slos(folder)


def test_rules_written_through_a_link_replace_its_target(tmp_path):
    # Prometheus reads /etc/prometheus/rules/slo.yml, a link to the managed file: replacing
    # the link with a plain file left the managed file stale. A link to nothing is refused.
    from click.testing import CliRunner

    from ops_platform.cli import main

    managed = tmp_path / "managed"
    managed.mkdir()
    (managed / "slo.yml").write_text("groups: []\n")
    link = tmp_path / "slo.yml"
    link.symlink_to(managed / "slo.yml")
    res = CliRunner().invoke(main, ["slo", "rules", "--out", str(link)])
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and "slo:sli_error:ratio_rate5m" in (managed / "slo.yml").read_text()
    assert sorted(p.name for p in managed.iterdir()) == ["slo.yml"]
    dangling = tmp_path / "gone.yml"
    dangling.symlink_to(tmp_path / "nowhere" / "slo.yml")
    res = CliRunner().invoke(main, ["slo", "rules", "--out", str(dangling)])
    assert res.exit_code == 2 and "is a link to nothing" in res.output and not (tmp_path / "nowhere").exists()
