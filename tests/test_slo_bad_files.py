"""SLO files that used to load wrongly (or crash) are refused with the file and what is wrong;
sources that hold nothing an SLO reads are a clear error, not 0/0."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.slo.burn import minute_events
from ops_platform.slo.spec import SLOSpecError, load_slos

SLOS = Path(__file__).resolve().parent.parent / "slos"
T0 = datetime(2026, 3, 8, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "slos"
    shutil.copytree(SLOS, folder)
    return folder


def _edit(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """The golden SLOs with one text edit in `file` (the edit must apply exactly once)."""
    folder = _copy(tmp_path)
    text = (folder / file).read_text()
    assert text.count(old) == 1, old
    (folder / file).write_text(text.replace(old, new))
    return folder


def _refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(SLOSpecError) as err:
        load_slos(folder)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def by_name(folder: Path = SLOS) -> dict:
    return {s.name: s for s in load_slos(folder)}


# 1. duplicate keys


def test_a_key_given_twice_is_refused_not_the_last_one_kept(tmp_path):
    folder = _edit(tmp_path, "api-availability.yaml", "      target: 0.995\n",
                   "      target: 0.995\n      target: 0.9\n")
    _refused(folder, "api-availability.yaml", "'target' is given twice", "line")


def test_a_key_a_merge_brings_in_may_still_be_overridden(tmp_path):
    folder = _edit(tmp_path, "api-availability.yaml", "  annotations:\n    summit.example/owner: team:api\n",
                   "  annotations: &a\n    summit.example/owner: team:api\n  labels:\n    <<: *a\n"
                   "    summit.example/owner: team:web\n")
    assert by_name(folder)["api-availability"].owner == "team:api"


# 2. files without an SLO, SLOs without tiers


def test_an_empty_slo_file_is_refused_not_skipped(tmp_path):
    folder = _copy(tmp_path)
    (folder / "receipt-lag.yaml").write_text("# nothing here yet\n")
    _refused(folder, "receipt-lag.yaml", "is empty")


def test_an_slo_without_its_burn_alert_policy_is_refused(tmp_path):
    folder = _copy(tmp_path)
    path = folder / "receipt-lag.yaml"
    text = path.read_text()
    path.write_text(text[:text.rindex("---")])  # the BurnAlertPolicy document gone
    _refused(folder, "receipt-lag.yaml", "'receipt-lag' has no BurnAlertPolicy")


# 3. unknown keys


@pytest.mark.parametrize(("old", "new", "key"), [
    ("burnRate: 14.4, longWindow: 1h", "burnRat: 3, burnRate: 14.4, longWindow: 1h", "tiers[0].burnRat"),
    ("burnRate: 6, longWindow: 6h", "burnRate: 6, lookback: 2h, longWindow: 6h", "tiers[1].lookback"),
])
def test_an_unknown_tier_key_is_refused_naming_the_allowed_ones(tmp_path, old, new, key):
    folder = _edit(tmp_path, "api-availability.yaml", old, new)
    _refused(folder, "api-availability.yaml", key, "unknown key", "burnRate, longWindow, shortWindow")


# 4. encoding


def test_a_byte_that_is_not_utf8_is_a_clear_error_not_a_traceback(tmp_path):
    folder = _copy(tmp_path)
    path = folder / "metering-lag.yaml"
    path.write_bytes(path.read_bytes().replace(b"Metering lag under", b"Metering lag \xe9under"))
    message = _refused(folder, "metering-lag.yaml", "0xe9", "not UTF-8")
    assert "(line 17)" in message


# 5. indicators the burn series do not compute


@pytest.mark.parametrize(("file", "old", "new", "where"), [
    # a good count from another table beside request counters
    ("api-availability.yaml", "spec: {table: request_counters, service: api, value: requests - errors}",
     "spec: {table: lag_samples, pipeline: x}", "ratioMetric.good.metricSource.spec.table"),
    # another service for the good than for the total
    ("api-availability.yaml", "spec: {table: request_counters, service: api, value: requests - errors}",
     "spec: {table: request_counters, service: graph, value: requests - errors}",
     "ratioMetric.good.metricSource.spec.service"),
    # a good count the burn series do not compute
    ("api-availability.yaml", "value: requests - errors}", "value: requests}", "good.metricSource.spec.value"),
    ("api-availability.yaml", "value: requests}", "value: errors}", "total.metricSource.spec.value"),
    # a key the burn series never read
    ("api-availability.yaml", "service: api, value: requests}", "service: api, cohort: canary, value: requests}",
     "total.metricSource.spec.cohort"),
    # latency: the total is the +Inf bucket, the good a finite one
    ("api-latency.yaml", "le: +Inf}", "le: 10}", "total.metricSource.spec.le"),
    ("api-latency.yaml", "le: 1.5}", "le: +Inf}", "good.metricSource.spec.le"),
    # a threshold compares lag samples
    ("receipt-lag.yaml", "spec: {table: lag_samples, pipeline: receipt, value: lag_seconds}",
     "spec: {table: request_counters, service: api, value: requests}", "thresholdMetric.metricSource.spec.table"),
])
def test_an_indicator_the_burn_series_do_not_compute_is_refused(tmp_path, file, old, new, where):
    _refused(_edit(tmp_path, file, old, new), file, where)


def test_a_lag_ratio_is_refused(tmp_path):
    folder = _edit(tmp_path, "api-availability.yaml", "    good:\n      metricSource:\n        type: summit.landing\n"
                   "        spec: {table: request_counters, service: api, value: requests - errors}\n"
                   "    total:\n      metricSource:\n        type: summit.landing\n"
                   "        spec: {table: request_counters, service: api, value: requests}\n",
                   "    good:\n      metricSource:\n        type: summit.landing\n"
                   "        spec: {table: lag_samples, pipeline: receipt}\n"
                   "    total:\n      metricSource:\n        type: summit.landing\n"
                   "        spec: {table: lag_samples, pipeline: receipt}\n")
    _refused(folder, "api-availability.yaml", "thresholdMetric, not a ratio")


# 6. and 7. sources that hold nothing the SLO reads


def _latency(service: str = "api", bounds=(0.5, 1.5, 2.5)) -> pl.DataFrame:
    rows = [{"ts": T0 + m * MIN, "service": service, "cohort": "general", "build_id": "b", "le": le,
             "count": 90 if le < 2 else 100} for m in range(3) for le in (*bounds, float("inf"))]
    return pl.DataFrame(rows)


def test_a_latency_bound_the_service_has_no_bucket_for_is_an_error_listing_its_bounds(tmp_path):
    folder = _edit(tmp_path, "api-latency.yaml", "le: 1.5}", "le: 1.2}")
    slo = by_name(folder)["api-latency"]
    with pytest.raises(ValueError, match=r"le=1\.2 is not among .*'api' \(le = 0\.5, 1\.5, 2\.5, \+Inf\)"):
        minute_events(slo, latency=_latency())
    # Another service's buckets do not count for it.
    with pytest.raises(ValueError, match="le=1.2"):
        minute_events(slo, latency=pl.concat([_latency(), _latency("graph", (1.2,))]))
    # With the bound present, the minutes are judged: 90% within 1.5 s is under the 95% slice target.
    assert minute_events(by_name()["api-latency"], latency=_latency())["bad"].to_list() == [1, 1, 1]


def test_a_service_or_pipeline_the_source_does_not_hold_is_an_error_naming_those_it_holds(tmp_path):
    counters = pl.DataFrame({"ts": [T0, T0 + MIN], "service": ["api", "graph"], "cohort": "general", "build_id": "b",
                             "requests": [10, 10], "errors": [0, 1]})
    folder = _edit(tmp_path, "api-availability.yaml", "service: api, value: requests - errors}",
                   "service: apii, value: requests - errors}")
    # The SLO's own service misspelt alike (apart, the loader refuses the mismatch).
    text = (folder / "api-availability.yaml").read_text().replace("service: api, value: requests}",
                                                                   "service: apii, value: requests}")
    text = text.replace("\n  service: api\n", "\n  service: apii\n")
    (folder / "api-availability.yaml").write_text(text)
    slo = by_name(folder)["api-availability"]
    with pytest.raises(ValueError, match=r"request counters hold no service 'apii' \(they hold: api, graph\)"):
        minute_events(slo, counters=counters)
    with pytest.raises(ValueError, match=r"latency buckets hold no service 'api' \(they hold: graph\)"):
        minute_events(by_name()["api-latency"], latency=_latency("graph"))
    folder = _edit(tmp_path / "lag", "receipt-lag.yaml", "pipeline: receipt", "pipeline: reciept")
    path = folder / "receipt-lag.yaml"
    path.write_text(path.read_text().replace("\n  service: receipt\n", "\n  service: reciept\n"))
    lag = pl.DataFrame({"ts": [T0], "pipeline": ["receipt"], "lag_seconds": [1.0]})
    with pytest.raises(ValueError, match=r"lag samples hold no pipeline 'reciept' \(they hold: receipt\)"):
        minute_events(by_name(folder)["receipt-lag"], lag=lag)


def test_a_service_without_traffic_in_the_frame_given_is_no_error():
    slo = by_name()["api-availability"]
    empty = pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "service": pl.String, "cohort": pl.String,
                                 "build_id": pl.String, "requests": pl.Int64, "errors": pl.Int64})
    assert minute_events(slo, counters=empty).height == 0
    # Some minutes without rows beside minutes with traffic: judged as before, no error.
    counters = pl.DataFrame({"ts": [T0, T0 + 5 * MIN], "service": ["api", "api"], "cohort": "general",
                             "build_id": "b", "requests": [10, 0], "errors": [1, 0]})
    assert minute_events(slo, counters=counters).sort("ts").select("bad", "total").rows() == [(1, 10), (0, 0)]
    lag = pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "pipeline": pl.String, "lag_seconds": pl.Float64})
    assert minute_events(by_name()["receipt-lag"], lag=lag).height == 0


def test_the_backtest_cli_says_which_bounds_exist_instead_of_alerting_for_two_weeks(small_world, tmp_path):
    folder = _edit(tmp_path, "api-latency.yaml", "le: 1.5}", "le: 1.2}")
    res = CliRunner().invoke(main, ["backtest", "alerts", "--world", str(small_world), "--slos", str(folder), "--json"])
    assert res.exit_code == 1 and "le=1.2 is not among the latency buckets of service 'api'" in res.output, res.output
    assert "1.5" in res.output and "Traceback" not in res.output


# 8. calendar time zones


def test_an_invalid_calendar_zone_is_refused(tmp_path):
    folder = _edit(tmp_path, "approval-lag.yaml", "timeZone: America/Denver", "timeZone: America/Denvr")
    _refused(folder, "approval-lag.yaml", "calendar.timeZone", "'America/Denvr' is not an IANA time zone")


def test_a_calendar_zone_other_than_the_partitions_loads_and_is_noted(tmp_path, monkeypatch):
    from ops_platform.slo.spec import calendar_zone_notes

    # A platform run in another zone keeps loading the shipped files (the definitions with them).
    monkeypatch.setenv("OPS_PLATFORM_TZ", "UTC")
    slos = load_slos(SLOS)
    assert by_name(SLOS)["approval-lag"].window.calendar_tz == "America/Denver"
    (note,) = calendar_zone_notes(slos, "UTC")
    assert note.startswith("SLO approval-lag: calendar window in America/Denver") and "UTC" in note
    assert calendar_zone_notes(slos, "America/Denver") == []
    assert calendar_zone_notes(slos, "US/Mountain") == []  # another name of the same clock


# 9. tiers that can never fire


def test_a_tier_that_could_never_fire_is_refused_with_the_numbers(tmp_path):
    folder = _edit(tmp_path, "api-availability.yaml", "target: 0.995", "target: 0.9")
    _refused(folder, "api-availability.yaml", "document[2].spec.tiers[0].burnRate", "'fast'", "14.4",
             "0.1", "= 1.44", "below 10")
    # 6x a 10% budget (60%) can fire: with the fast tier slower, the file loads.
    text = (folder / "api-availability.yaml").read_text().replace("burnRate: 14.4", "burnRate: 9.5")
    (folder / "api-availability.yaml").write_text(text)
    assert [t.burn_rate for t in by_name(folder)["api-availability"].tiers] == [9.5, 6, 1]


# 10a. the totals' key


def test_an_slo_named_like_the_totals_is_refused(tmp_path):
    folder = _copy(tmp_path)
    path = folder / "receipt-lag.yaml"
    path.write_text(path.read_text().replace("name: receipt-lag\n", "name: all\n").replace("slo: receipt-lag",
                                                                                            "slo: all"))
    _refused(folder, "receipt-lag.yaml", "metadata.name", "'all' is reserved")


# 11. what loads must also name Dagster checks, warehouse columns and Prometheus rules


@pytest.mark.parametrize("name", ["very-fast", "very fast", "Fast", "", "1h"])
def test_a_tier_name_that_cannot_name_a_check_or_a_column_is_refused(tmp_path, name):
    folder = _edit(tmp_path, "api-availability.yaml", "{name: fast,", f"{{name: '{name}',")
    _refused(folder, "api-availability.yaml", "document[2].spec.tiers[0].name", "lowercase letters")


@pytest.mark.parametrize(("file", "old", "new", "fragments"), [
    # a metric source without its service or pipeline: the burn series read the SLO's service
    # and the exported rules every service
    ("api-availability.yaml", "{table: request_counters, service: api, value: requests}",
     "{table: request_counters, value: requests}", ("ratioMetric.total.metricSource.spec.service", "is required")),
    ("receipt-lag.yaml", "{table: lag_samples, pipeline: receipt, value: lag_seconds}",
     "{table: lag_samples, value: lag_seconds}", ("thresholdMetric.metricSource.spec.pipeline", "is required")),
    # an owner is an alert label: a list made a rule file Prometheus refuses
    ("api-availability.yaml", "summit.example/owner: team:api", "summit.example/owner: [team-a, team-b]",
     ("annotations.summit.example/owner", "one owner as text")),
    ("receipt-lag.yaml", "spec:\n  thresholdMetric:\n", "spec:\n  ratioMetric: {counter: true}\n  thresholdMetric:\n",
     ("thresholdMetric", "not both")),
    # NaN compared true in the burn series and false in PromQL: the two disagreed
    *[("receipt-lag.yaml", "      value: 30\n", f"      value: {value}\n", ("objectives[0].value", "a finite number >= 0"))
      for value in (".nan", ".inf", "-5")],
])
def test_what_the_rules_and_burn_series_could_not_agree_on_is_refused(tmp_path, file, old, new, fragments):
    _refused(_edit(tmp_path, file, old, new), file, *fragments)


# An SRE's slips: a percentage for a ratio, rules written into the folder, files that are no files.


def test_a_target_written_as_a_percentage_is_told_both_right_spellings(tmp_path):
    folder = _edit(tmp_path, "api-availability.yaml", "      target: 0.995\n", "      target: 99.5\n")
    _refused(folder, "target: 99.5 must be between 0 and 1", "write target: 0.995 or targetPercent: 99.5")
    folder = _edit(tmp_path / "b", "api-availability.yaml", "      target: 0.995\n", "      target: 995\n")
    assert "targetPercent" not in _refused(folder, "995")  # no percentage either: no hint


def test_rules_are_not_written_into_the_slo_folder_they_would_break(tmp_path):
    folder = _copy(tmp_path)
    res = CliRunner().invoke(main, ["slo", "rules", "--slos", str(folder), "--out", str(folder / "generated.yml")])
    assert res.exit_code == 2 and "inside the SLO folder" in res.output, res.output
    assert not (folder / "generated.yml").exists() and len(load_slos(folder)) == 5
    (folder / "team").mkdir()  # a subfolder is read too
    res = CliRunner().invoke(main, ["slo", "rules", "--slos", str(folder), "--out", str(folder / "team" / "r.yaml")])
    assert res.exit_code == 2 and not (folder / "team" / "r.yaml").exists(), res.output
    linked = tmp_path / "elsewhere"  # a team's folder linked in: the loader reads it too
    linked.mkdir()
    (folder / "linked").symlink_to(linked, target_is_directory=True)
    res = CliRunner().invoke(main, ["slo", "rules", "--slos", str(folder), "--out", str(folder / "linked" / "r.yml")])
    assert res.exit_code == 2 and not (linked / "r.yml").exists(), res.output
    res = CliRunner().invoke(main, ["slo", "rules", "--slos", str(folder), "--out", str(tmp_path / "rules.yaml")])
    assert res.exit_code == 0 and "groups:" in (tmp_path / "rules.yaml").read_text(), res.output


def test_a_pipe_a_device_a_huge_file_and_deep_nesting_are_refused_naming_the_file(tmp_path):
    import os

    folder = _copy(tmp_path)
    os.mkfifo(folder / "z.yaml")  # reading it would wait for a writer forever
    _refused(folder, "z.yaml", "is not a regular file")
    (folder / "z.yaml").unlink()
    (folder / "zero.yaml").symlink_to("/dev/zero")  # reading it would never end
    _refused(folder, "zero.yaml", "is not a regular file")
    (folder / "zero.yaml").unlink()
    big = folder / "big.yaml"
    big.write_text("# " + "x" * (4 << 20) + "\n")
    _refused(folder, "big.yaml", "is larger than 4 MiB")
    big.write_text((SLOS / "receipt-lag.yaml").read_text().replace("receipt-lag", "big-lag") + "---\n"
                   + "[" * 2000 + "]" * 2000 + "\n")
    _refused(folder, "big.yaml", "nested too deeply")
