"""Ramp analysis and the backtest of the controller against two baselines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.ramp.analysis import MIN_REQUESTS, decide
from ops_platform.ramp.backtest import run_backtest

METRICS = {"bad_builds", "bad_builds_caught", "caught_before_general", "caught_before_general_rate",
           "false_pauses", "false_pause_rate", "median_minutes_to_pause", "p95_minutes_to_pause",
           "blast_radius_bad_requests", "blast_radius_requests", "error_budget_spent_per_bad_ramp"}


def _series(cand_err: float, base_err: float, rpm: int, minutes: int = 60) -> pl.DataFrame:
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    rows = [{"ts": t0 + timedelta(minutes=i), "requests": rpm, "errors": round(rpm * cand_err), "slow": 0,
             "b_requests": rpm * 20, "b_errors": round(rpm * 20 * base_err), "b_slow": 0} for i in range(minutes)]
    frame = pl.DataFrame(rows).sort("ts")
    return frame.with_columns(pl.col(c).cum_sum().alias(f"cum_{c}")
                              for c in ("requests", "errors", "slow", "b_requests", "b_errors", "b_slow"))


def test_regression_against_the_baseline_pauses_or_rolls_back():
    assert decide(_series(0.05, 0.001, 50)).action == "pause"
    assert decide(_series(0.20, 0.001, 50)).action == "rollback"  # burning > 14.4x the budget


def test_an_incident_hitting_every_build_alike_is_not_a_bad_build():
    v = decide(_series(0.05, 0.05, 50))
    assert v.ts is None


def test_low_traffic_is_inconclusive_and_holds():
    v = decide(_series(0.5, 0.0, 1, minutes=MIN_REQUESTS - 1))
    assert v.ts is None and v.reason.startswith("inconclusive")


def test_backtest_scores_three_policies_on_the_world(small_world):
    results = run_backtest(small_world)
    assert set(results) == {"controller", "flagger", "sre_multiwindow"}
    bad = pl.read_parquet(small_world / "truth" / "bad_builds.parquet").height
    for figures in results.values():
        assert set(figures) >= METRICS and figures["bad_builds"] == bad
    ctl = results["controller"]
    assert ctl["bad_builds_caught"] >= 1
    assert ctl["false_pauses"] <= min(r["false_pauses"] for r in results.values())


def test_cli_backtest_json(small_world):
    res = CliRunner().invoke(main, ["backtest", "ramps", "--world", str(small_world), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out["controller"]) >= METRICS
