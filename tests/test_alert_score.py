"""SLO burn alerts scored against the truth: caught events, minutes to alert, alerts with no cause."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.paths import SLO_DIR
from ops_platform.slo.alert_score import episodes, score_alerts, truth_events
from ops_platform.slo.spec import load_slos

T0 = datetime(2026, 3, 2, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _counters(spikes: list[range], build: str = "b1", minutes: int = 1440) -> pl.DataFrame:
    """A day of api traffic, 1,000 requests a minute, 20% errors in the spike minutes."""
    bad = {m for r in spikes for m in r}
    return pl.DataFrame({
        "ts": [T0 + m * MIN for m in range(minutes)], "service": "api", "cohort": "general", "build_id": build,
        "requests": 1000, "errors": [200 if m in bad else 0 for m in range(minutes)]},
        schema_overrides={"ts": pl.Datetime("ms", "UTC")})


def test_a_caused_spike_is_caught_and_an_uncaused_one_is_an_alert_without_cause():
    slo = next(s for s in load_slos(SLO_DIR) if s.name == "api-availability")
    assert abs(slo.error_budget - 0.005) < 1e-12  # fast tier: 14.4 x 0.5% = 7.2% over 1h and 5m
    counters = _counters([range(300, 330), range(900, 930)])
    incidents = pl.DataFrame({"incident_id": ["inc-1", "inc-2"], "kind": ["error_spike", "latency_regression"],
                              "service": ["api", "graph"], "start": [T0 + 300 * MIN, T0 + 60 * MIN],
                              "end": [T0 + 330 * MIN, T0 + 90 * MIN]})
    events = truth_events(incidents, pl.DataFrame(schema={"build_id": pl.String, "service": pl.String,
                                                          "effect": pl.String, "deploy_started_at": pl.Datetime,
                                                          "general_reached_at": pl.Datetime}), counters)
    # The graph regression burns graph latency: no golden SLO of this test reads it.
    assert events.select("event", "table", "service").rows() == [
        ("inc-1", "request_counters", "api"), ("inc-2", "latency_buckets", "graph")]
    scores = score_alerts([slo], events, counters=counters, latency=None, lag=None)
    fast = scores["api-availability"]["fast"]
    # The 1h window's error ratio after k bad minutes is k x 200 / 60,000: over 7.2% from k = 22,
    # the 22nd minute of the spike, 21 minutes after it started.
    assert (fast["events"], fast["caught"], fast["median_minutes_to_alert"]) == (1, 1, 21)
    assert (fast["alerts"], fast["false_alerts"], fast["precision"]) == (2, 1, 0.5)
    # 30 minutes of 20% errors are 1.7% over 6 h: under the medium tier's 3%, it never fires.
    # Nor could it catch the spike: the tier is scored from 05:59 (its 6h window whole), when
    # the spike (to 05:29) has left its 30-minute window, so the spike is not judged there.
    medium = scores["api-availability"]["medium"]
    assert (medium["events"], medium["alerts"], medium["recall"], medium["precision"]) == (0, 0, None, None)
    assert (medium["not_judged_before_scoring"], medium["not_judged_no_burn"]) == (1, 0)  # counted, not hidden
    # Scored from 00:59 (the 1h window whole) to the day's end: 1,381 minutes.
    firing = fast["firing_minutes"]
    assert fast["scored_minutes"] == 1440 - 59 and 0 < firing < 60
    assert scores["all"]["fast"] == {"events": 1, "caught": 1, "not_judged_before_scoring": 0,
                                     "not_judged_no_burn": 0, "alerts": 2, "false_alerts": 1, "recall": 1.0,
                                     "precision": 0.5, "firing_minutes": firing, "scored_minutes": 1381,
                                     "firing_share": firing / 1381, "median_minutes_to_alert": 21,
                                     "max_minutes_to_alert": 21}


def test_a_tier_that_fires_all_the_time_shows_it_in_its_firing_share():
    from ops_platform.slo.alert_score import TABLE_COLUMNS, table_rows

    slo = next(s for s in load_slos(SLO_DIR) if s.name == "api-availability")
    counters = _counters([range(0, 1440)])  # 20% errors all day: every tier fires from its first scored minute
    incidents = pl.DataFrame({"incident_id": ["inc-1"], "kind": ["error_spike"], "service": ["api"],
                              "start": [T0 + 300 * MIN], "end": [T0 + 330 * MIN]})
    no_builds = pl.DataFrame(schema={"build_id": pl.String, "service": pl.String, "effect": pl.String,
                                     "deploy_started_at": pl.Datetime, "general_reached_at": pl.Datetime})
    scores = score_alerts([slo], truth_events(incidents, no_builds, counters), counters=counters, latency=None,
                          lag=None)
    fast = scores["api-availability"]["fast"]
    # A perfect score on its face...
    assert (fast["recall"], fast["precision"], fast["median_minutes_to_alert"]) == (1.0, 1.0, 0)
    # ...that the firing minutes give away: every scored minute.
    assert fast["firing_minutes"] == fast["scored_minutes"] == 1381 and fast["firing_share"] == 1.0
    assert scores["all"]["fast"]["firing_share"] == 1.0
    rows = {(r[0], r[1]): dict(zip(TABLE_COLUMNS, r, strict=True)) for r in table_rows(scores)}
    assert rows[("api-availability", "fast")]["firing"] == rows[("all", "fast")]["firing"] == "1381 (100.0%)"


def test_an_slo_named_like_the_totals_is_not_scored_over_them():
    from dataclasses import replace

    import pytest

    slo = next(s for s in load_slos(SLO_DIR) if s.name == "api-availability")
    counters = _counters([])
    no_events = truth_events(pl.DataFrame(schema={"incident_id": pl.String, "kind": pl.String, "service": pl.String,
                                                  "start": pl.Datetime("ms", "UTC"), "end": pl.Datetime("ms", "UTC")}),
                             pl.DataFrame(schema={"build_id": pl.String, "service": pl.String, "effect": pl.String,
                                                  "deploy_started_at": pl.Datetime,
                                                  "general_reached_at": pl.Datetime}), counters)
    with pytest.raises(ValueError, match="no SLO may be named 'all'"):
        score_alerts([replace(slo, name="all")], no_events, counters=counters, latency=None, lag=None)


def test_an_event_is_caught_only_while_its_minutes_are_in_the_window_and_warm_up_is_not_scored():
    slo = next(s for s in load_slos(SLO_DIR) if s.name == "api-availability")
    # A: 20 minutes of 20% errors, 6.7% over 1h, never fires alone. B (no cause): 100% errors
    # from minute 385; the fast tier fires at 389, when the 1h window (329, 389] has just let
    # go of A's last minute (329). W: errors in the first minutes, before a 1h window is whole.
    counters = _counters([range(310, 330)]).with_columns(
        pl.when(pl.col("ts").is_between(T0 + 385 * MIN, T0 + 394 * MIN) | (pl.col("ts") < T0 + 10 * MIN))
        .then(pl.col("requests")).otherwise(pl.col("errors")).alias("errors"))
    incidents = pl.DataFrame({"incident_id": ["A"], "kind": ["error_spike"], "service": ["api"],
                              "start": [T0 + 310 * MIN], "end": [T0 + 330 * MIN]})
    no_builds = pl.DataFrame(schema={"build_id": pl.String, "service": pl.String, "effect": pl.String,
                                     "deploy_started_at": pl.Datetime, "general_reached_at": pl.Datetime})
    events = truth_events(incidents, no_builds, counters)
    fast = score_alerts([slo], events, counters=counters, latency=None, lag=None)["api-availability"]["fast"]
    assert (fast["events"], fast["caught"], fast["alerts"], fast["false_alerts"]) == (1, 0, 1, 1)


def test_an_alert_after_the_events_minutes_left_the_short_window_has_no_cause_in_it():
    # A tier fires only while its short window burns too: once A's last minute (339) has left
    # the fast tier's 5-minute window, a new burst C (from 350, no incident) firing while the
    # 1h window still holds A is C's alert, not A's (it was counted as A's, and A's span
    # reached to 1h after its end).
    slo = next(s for s in load_slos(SLO_DIR) if s.name == "api-availability")
    counters = _counters([range(300, 340), range(350, 372)])
    incidents = pl.DataFrame({"incident_id": ["A"], "kind": ["error_spike"], "service": ["api"],
                              "start": [T0 + 300 * MIN], "end": [T0 + 340 * MIN]})
    no_builds = pl.DataFrame(schema={"build_id": pl.String, "service": pl.String, "effect": pl.String,
                                     "deploy_started_at": pl.Datetime, "general_reached_at": pl.Datetime})
    fast = score_alerts([slo], truth_events(incidents, no_builds, counters), counters=counters, latency=None,
                        lag=None)["api-availability"]["fast"]
    assert (fast["events"], fast["caught"], fast["alerts"], fast["false_alerts"]) == (1, 1, 2, 1)


def test_a_bad_build_burns_from_its_deploy_until_its_last_served_minute():
    counters = pl.concat([_counters([], "good", 600), _counters([], "bad", 300)])
    builds = pl.DataFrame({"build_id": ["bad", "other"], "service": ["api", "api"],
                           "effect": ["error_rate", "memory_leak"], "magnitude": [0.05, 1.0],
                           "deploy_started_at": [T0 + 10 * MIN, T0], "general_reached_at": [T0 + 100 * MIN, T0]})
    incidents = pl.DataFrame(schema={"incident_id": pl.String, "kind": pl.String, "service": pl.String,
                                     "start": pl.Datetime("ms", "UTC"), "end": pl.Datetime("ms", "UTC")})
    events = truth_events(incidents, builds, counters)  # an effect no indicator reads is left out
    assert events.select("event", "kind", "table", "start", "end").rows() == [
        ("bad", "bad build (error_rate)", "request_counters", T0 + 10 * MIN, T0 + 300 * MIN)]


def test_an_alert_that_resolves_and_fires_again_within_the_gap_is_one_episode():
    minutes = pl.Series([T0 + m * MIN for m in (0, 1, 2, 6, 7, 20)])
    assert episodes(minutes) == [(T0, T0 + 2 * MIN), (T0 + 6 * MIN, T0 + 7 * MIN), (T0 + 20 * MIN, T0 + 20 * MIN)]
    assert episodes(minutes, 5 * MIN) == [(T0, T0 + 7 * MIN), (T0 + 20 * MIN, T0 + 20 * MIN)]
    assert episodes(pl.Series([], dtype=pl.Datetime("ms", "UTC"))) == []


def test_cli_backtest_alerts_json_scores_every_slo_and_sums_the_tiers(small_world):
    res = CliRunner().invoke(main, ["backtest", "alerts", "--world", str(small_world), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    names = {s.name for s in load_slos(SLO_DIR)}
    assert set(out) == names | {"all"}
    for tier, total in out["all"].items():
        for key in ("events", "caught", "alerts", "false_alerts", "firing_minutes", "scored_minutes"):
            assert total[key] == sum(out[n][tier][key] for n in names)
        assert total["firing_share"] == total["firing_minutes"] / total["scored_minutes"]
        assert total["caught"] <= total["events"] and total["false_alerts"] <= total["alerts"]
        assert set(total) == set(out["receipt-lag"]["fast"])  # the same keys as each SLO's, for scripts
        per_slo = [out[n][tier]["max_minutes_to_alert"] for n in names if tier in out[n]]
        assert total["max_minutes_to_alert"] == max((m for m in per_slo if m is not None), default=None)
    # The receipt pipeline's lag SLO sees every receipt stall the world injected.
    stalls = pl.read_parquet(small_world / "truth" / "incidents.parquet").filter(pl.col("kind") == "receipt_stall")
    assert out["receipt-lag"]["fast"]["events"] == stalls.height
    # The table keeps every column through a pipe (80 columns): the last one, firing, included.
    text = CliRunner().invoke(main, ["backtest", "alerts", "--world", str(small_world)]).output
    fast = out["api-availability"]["fast"]
    assert f"{fast['firing_minutes']} ({fast['firing_share']:.1%})" in text


def test_cli_backtest_alerts_without_truth_bad_slos_or_missing_landing_says_so(small_world, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(small_world, world, ignore=shutil.ignore_patterns("truth"))
    res = CliRunner().invoke(main, ["backtest", "alerts", "--world", str(world)])
    assert res.exit_code == 1 and "lacks bad_builds.parquet, incidents.parquet" in res.output
    (tmp_path / "slos").mkdir()
    res = CliRunner().invoke(main, ["backtest", "alerts", "--world", str(small_world), "--slos",
                                    str(tmp_path / "slos")])
    assert res.exit_code == 1 and "no SLO files" in res.output
    shutil.rmtree(world)
    shutil.copytree(small_world, world, ignore=shutil.ignore_patterns("lag_samples"))
    res = CliRunner().invoke(main, ["backtest", "alerts", "--world", str(world)])  # the lag SLOs need lag samples
    assert res.exit_code == 1 and "landing/lag_samples holds no Parquet files" in res.output
    res = CliRunner().invoke(main, ["backtest", "ramps", "--world", str(world), "--json"])  # the ramps do not
    assert res.exit_code == 0, res.output


def test_alert_backtest_asset_stores_and_reports_the_cli_figures(state):
    import dagster as dg

    from assets.slo import ALERT_BACKTEST_KEY, slo_alert_backtest
    from ops_platform.slo.alert_score import score_world
    from ops_platform.warehouse import Warehouse
    from resources import build_resources

    result = dg.materialize([slo_alert_backtest], resources=build_resources(state))
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == ALERT_BACKTEST_KEY]
    meta = event.materialization.metadata
    expected = score_world(state.world, load_slos(SLO_DIR))
    assert meta["all/fast/alerts"].value == expected["all"]["fast"]["alerts"]
    assert "| receipt-lag | fast |" in meta["scores"].value
    table = Warehouse(state.warehouse).query("SELECT slo, tier, metric, value FROM slo.alert_backtest")
    got = {(r["slo"], r["tier"], r["metric"]): r["value"] for r in table.iter_rows(named=True)}
    assert len(got) == sum(len(f) for tiers in expected.values() for f in tiers.values())
    assert got[("api-availability", "medium", "caught")] == expected["api-availability"]["medium"]["caught"]


def test_an_event_during_which_the_slo_did_not_burn_is_not_counted_missed():
    # A latency regression that kept every minute under the objective, or a bad build too small
    # to move the service: no alert on the SLO could catch it. It is counted apart, not as a
    # miss; an alert overlapping it still has a cause.
    from ops_platform.slo.alert_score import TABLE_COLUMNS, table_rows

    slo = next(s for s in load_slos(SLO_DIR) if s.name == "api-availability")
    # Q: an incident in the truth whose minutes (600-630) show no errors at all: no burn.
    # S: 30 minutes of 20% errors (300-330), caught by the fast tier.
    counters = _counters([range(300, 330)])
    incidents = pl.DataFrame({"incident_id": ["S", "Q"], "kind": ["error_spike", "error_spike"],
                              "service": ["api", "api"], "start": [T0 + 300 * MIN, T0 + 600 * MIN],
                              "end": [T0 + 330 * MIN, T0 + 630 * MIN]})
    no_builds = pl.DataFrame(schema={"build_id": pl.String, "service": pl.String, "effect": pl.String,
                                     "deploy_started_at": pl.Datetime, "general_reached_at": pl.Datetime})
    scores = score_alerts([slo], truth_events(incidents, no_builds, counters), counters=counters, latency=None,
                          lag=None)
    fast = scores["api-availability"]["fast"]
    assert (fast["events"], fast["caught"], fast["recall"], fast["not_judged_no_burn"]) == (1, 1, 1.0, 1)
    assert scores["all"]["fast"]["not_judged_no_burn"] == 1
    rows = {(r[0], r[1]): dict(zip(TABLE_COLUMNS, r, strict=True)) for r in table_rows(scores)}
    assert rows[("api-availability", "fast")]["caught"] == "1/1"
    assert rows[("api-availability", "fast")]["not judged"] == "0 + 1"
    assert rows[("api-availability", "fast")]["median min"] == "21.0"  # to a tenth, as --json has it
