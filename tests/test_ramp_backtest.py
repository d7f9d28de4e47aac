"""Ramp analysis and the backtest of the controller against two baselines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.ramp.analysis import MIN_REQUESTS, SUSTAINED, decide
from ops_platform.ramp.backtest import run_backtest, score

METRICS = {"bad_builds", "bad_builds_caught", "caught_before_general", "caught_before_general_rate",
           "false_pauses", "false_pause_rate", "median_minutes_to_pause", "p95_minutes_to_pause",
           "blast_radius_bad_requests", "blast_radius_requests", "error_budget_spent_per_bad_ramp"}


def _series(cand_err: float, base_err: float, rpm: int, minutes: int = 60, usual_base_err: float = 0.001,
            cand_slow: float = 0.0, burst: range = range(0), burst_err: float = 0.3,
            cand_burst_err: float | None = None) -> pl.DataFrame:
    """Candidate and stable build per minute; in the ``burst`` minutes both err at ``burst_err``
    (the candidate at ``cand_burst_err`` if given)."""
    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    cand = [(cand_burst_err or burst_err) if i in burst else cand_err for i in range(minutes)]
    base = [burst_err if i in burst else base_err for i in range(minutes)]
    rows = [{"ts": t0 + timedelta(minutes=i), "requests": rpm, "errors": round(rpm * cand[i]),
             "slow": round(rpm * cand_slow), "b_requests": rpm * 20, "b_errors": round(rpm * 20 * base[i]),
             "b_slow": rpm} for i in range(minutes)]  # the stable build: 5% beyond its own p95
    frame = pl.DataFrame(rows).sort("ts")
    return frame.with_columns([pl.col(c).cum_sum().alias(f"cum_{c}")
                               for c in ("requests", "errors", "slow", "b_requests", "b_errors", "b_slow")]
                              + [pl.lit(usual_base_err).alias("b_pre_error_ratio")])


def test_a_clear_regression_against_a_trusted_baseline_rolls_back():
    # Worse than a healthy stable build: everyone back on it, as a failed canary analysis does
    # in Flagger or Argo Rollouts; a pause would keep serving the build the evidence rejects.
    v = decide(_series(0.05, 0.001, 50))
    assert v.action == "rollback" and v.reason.startswith("errors") and "(alarm at 5.5)" in v.reason, v.reason
    assert decide(_series(0.20, 0.001, 50)).action == "rollback"  # burning > 14.4x the budget
    # The same build where the stable build is rejected itself: a pause, going back helps no one.
    assert decide(_series(0.05, 0.001, 50), trusted_baseline=False).action == "pause"
    assert decide(_series(0.20, 0.001, 50), trusted_baseline=False).action == "rollback"  # 14.4x whatever


def test_an_incident_hitting_every_build_alike_freezes_ramps_and_blames_no_build():
    v = decide(_series(0.05, 0.05, 50))
    assert v.action == "freeze" and "on stable" in v.reason
    assert decide(_series(0.002, 0.05, 50)).ts is None  # a healthy candidate in a noisy minute: nothing


def test_a_burst_on_every_build_is_neither_the_candidates_burn_nor_an_incident():
    # Two minutes at 30% errors on every build (a deploy hiccup): at a canary's 30 requests a
    # minute that alone is evidence past the alarm for an absolute burn test.
    blip = range(20, 22)
    assert decide(_series(0.0, 0.001, 30, burst=blip)).ts is None  # was a freeze of every ramp
    # Beside a stable build rejected itself (10x all along) only the absolute tests run: was a pause.
    assert decide(_series(0.0, 0.05, 30, usual_base_err=0.05, burst=blip), trusted_baseline=False).ts is None
    # At a general cohort's traffic the candidate's share of a burst differs from the stable
    # build's by sampling noise alone (36% against 35%): still no evidence of its own burn.
    assert decide(_series(0.001, 0.07, 500, usual_base_err=0.07, burst=blip, burst_err=0.35, cand_burst_err=0.36),
                  trusted_baseline=False).ts is None
    # What the candidate burns outside the burst still counts.
    v = decide(_series(0.03, 0.05, 50, usual_base_err=0.05, burst=blip), trusted_baseline=False)
    assert v.action == "pause" and v.reason.startswith("budget burn")


def test_a_stable_build_that_stays_worse_than_it_was_does_not_blind_the_absolute_test():
    # The stable build burns 6x all ramp long where it used to burn 2.4x (a rejected build whose
    # share grew, a stable build that degraded): every minute is above its usual ratio. Only a
    # blip's first minutes are skipped, so a candidate burning as badly, or far worse, is held.
    for cand in (0.03, 0.10, 0.25):
        v = decide(_series(cand, 0.03, 50, minutes=240, usual_base_err=0.012), trusted_baseline=False)
        assert v.action is not None and v.reason.startswith("budget burn"), (cand, v)
        assert v.ts <= datetime(2026, 3, 8, tzinfo=UTC) + timedelta(minutes=30), (cand, v)
    assert decide(_series(0.25, 0.03, 50, minutes=240, usual_base_err=0.012), trusted_baseline=False).action == "rollback"
    v = decide(_series(0.03, 0.03, 50, minutes=240, usual_base_err=0.012))  # as bad as a trusted but bad stable build
    assert v.action == "pause" and v.reason.startswith("budget burn")
    # A candidate at 12% in an 8% incident beside a rejected stable build that usually burns 3x.
    assert decide(_series(0.12, 0.08, 50, usual_base_err=0.015), trusted_baseline=False).action == "rollback"


def test_a_freeze_waits_until_the_stable_build_has_burnt_for_several_minutes():
    assert decide(_series(0.0, 0.001, 30, burst=range(20, 20 + SUSTAINED - 1))).ts is None
    v = decide(_series(0.0, 0.001, 30, burst=range(20, 80), minutes=90))
    assert v.action == "freeze" and v.ts >= datetime(2026, 3, 8, tzinfo=UTC) + timedelta(minutes=20 + SUSTAINED)


def test_a_candidate_replacing_a_chronically_bad_build_is_paused_on_its_own_burn():
    # The stable build burns 10x all along (it is bad itself); the candidate burns 6x: less
    # bad than its baseline, still far over budget, so it must not ramp.
    v = decide(_series(0.03, 0.05, 50, usual_base_err=0.05))
    assert v.action == "pause" and v.reason.startswith("budget burn")


def test_an_untrusted_baseline_switches_off_the_comparison_not_the_absolute_tests():
    # 1.2% errors: worse than a 0.1% baseline, but under the 6x absolute burn.
    assert decide(_series(0.012, 0.001, 200)).action == "rollback"
    assert decide(_series(0.012, 0.001, 200), trusted_baseline=False).ts is None
    # Latency is judged against the pre-ramp p95 instead: 30% beyond it is still a regression.
    assert decide(_series(0.0, 0.001, 50, cand_slow=0.3), trusted_baseline=False).action == "pause"
    # And against the pre-ramp median bucket: a build slower all over (40% beyond where 20%
    # used to be) is paused though its p95 share barely moves.
    slower = _series(0.0, 0.001, 50).with_columns(pl.lit(20).alias("mid"), pl.lit(0.2).alias("pre_mid"))
    v = decide(slower, trusted_baseline=False)
    assert v.action == "pause" and v.reason.startswith("latency")
    assert decide(slower.with_columns(pl.lit(11).alias("mid")), trusted_baseline=False).ts is None  # 22%: as before


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
    # The targets, on this world too: every bad build held before the general
    # cohort, no false pause, and the smallest blast radius of the three policies.
    assert ctl["caught_before_general"] == bad and ctl["false_pauses"] == 0
    assert ctl["median_minutes_to_pause"] < 5
    assert ctl["blast_radius_bad_requests"] < min(results[p]["blast_radius_bad_requests"]
                                                  for p in ("flagger", "sre_multiwindow"))
    assert ctl["freezes"] == ctl["freezes_during_true_incident"]


def test_rates_over_no_builds_are_none_not_perfect():
    good = {"bad": False, "action": "promote", "before_general": False, "minutes_to_pause": None,
            "bad_requests_before_pause": 0, "requests_before_pause": 0, "budget_spent": 0.2, "during_incident": False}
    only_good = score([good])
    assert only_good["bad_builds"] == 0 and only_good["caught_before_general_rate"] is None
    assert only_good["error_budget_spent_per_bad_ramp"] is None and only_good["false_pause_rate"] == 0.0
    bad = good | {"bad": True, "action": "pause", "before_general": True, "minutes_to_pause": 3.0}
    only_bad = score([bad])
    assert only_bad["caught_before_general_rate"] == 1.0 and only_bad["false_pause_rate"] is None
    assert only_good["caught_before_general_rate_low95"] is None and only_bad["false_pause_rate_high95"] is None
    # 14 of 14 caught and 0 of 55 false: the 95% Wilson intervals say what they can show.
    many = score([bad] * 14 + [good] * 55)
    assert abs(many["caught_before_general_rate_low95"] - 0.7847) < 1e-4 and many["caught_before_general_rate_high95"] == 1
    assert many["false_pause_rate_low95"] == 0 and abs(many["false_pause_rate_high95"] - 0.0653) < 1e-4


def test_the_targets_gate_passes_on_the_world_and_fails_on_a_worse_controller(small_world):
    from ops_platform.ramp.backtest import targets_missed

    res = CliRunner().invoke(main, ["backtest", "ramps", "--world", str(small_world), "--json", "--check"])
    results = json.loads(res.stdout)
    assert (res.exit_code == 0) == (targets_missed(results) == []), res.output
    worse = {**results, "controller": {**results["controller"], "median_minutes_to_pause": 9.0,
                                       "blast_radius_bad_requests": 10**12}}
    missed = targets_missed(worse)
    assert any("median minutes to pause 9.0" in m for m in missed)
    assert sum(m.startswith("not better than") for m in missed) == len(results) - 1
    assert targets_missed({**results, "controller": {**results["controller"], "caught_before_general_rate": None}})


def test_cli_backtest_json(small_world):
    res = CliRunner().invoke(main, ["backtest", "ramps", "--world", str(small_world), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out["controller"]) >= METRICS


def test_cli_backtest_of_a_world_without_truth_says_so(small_world, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(small_world, world, ignore=shutil.ignore_patterns("truth"))
    res = CliRunner().invoke(main, ["backtest", "ramps", "--world", str(world)])
    assert res.exit_code == 1 and "lacks bad_builds.parquet, incidents.parquet" in res.output
    # A truth file that is not Parquet: a clear error naming the world, not a traceback.
    shutil.copytree(small_world / "truth", world / "truth")
    (world / "truth" / "incidents.parquet").write_text("x")
    res = CliRunner().invoke(main, ["backtest", "ramps", "--world", str(world)])
    assert res.exit_code == 1 and f"cannot replay {world}" in res.output and res.exception.__class__ is SystemExit


def test_backtest_asset_reports_the_same_figures_as_metadata_and_in_the_warehouse(state):
    import dagster as dg

    from assets.ramp import BACKTEST_KEY, ramp_backtest
    from ops_platform.warehouse import Warehouse
    from resources import build_resources

    result = dg.materialize([ramp_backtest], resources=build_resources(state))
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == BACKTEST_KEY]
    meta = event.materialization.metadata
    expected = run_backtest(state.world)
    assert meta["controller/caught_before_general_rate"].value == round(
        expected["controller"]["caught_before_general_rate"], 4)
    assert "| false_pauses |" in meta["scores"].value
    table = Warehouse(state.warehouse).query("SELECT policy, metric, value FROM ramp.backtest")
    got = {(r["policy"], r["metric"]): r["value"] for r in table.iter_rows(named=True)}
    assert got[("flagger", "false_pauses")] == expected["flagger"]["false_pauses"]
    assert len(got) == sum(len(v) for v in expected.values())


def test_after_a_rejected_build_latency_is_judged_against_the_last_trusted_builds_traffic():
    from ops_platform.ramp.analysis import candidate_series

    t0 = datetime(2026, 3, 8, tzinfo=UTC)
    counters, buckets = [], []
    # b0 (trusted) fast until minute 60; b1 (rejected, slow) until 120; b2 ramps from 120,
    # as slow as b1 beside it: no better than the rejected build, much worse than b0.
    for minute in range(180):
        ts = t0 + timedelta(minutes=minute)
        serving = [("b0" if minute < 60 else "b1", 200)] + ([("b2", 20)] if minute >= 120 else [])
        for build, n in serving:
            fast = n if build == "b0" else n // 5
            counters.append({"ts": ts, "service": "api", "cohort": "general", "build_id": build,
                             "requests": n, "errors": 0})
            buckets += [{"ts": ts, "service": "api", "cohort": "general", "build_id": build, "le": le, "count": c}
                        for le, c in ((0.25, fast), (1.0, n), (float("inf"), n))]
    c, lat = pl.DataFrame(counters), pl.DataFrame(buckets)
    start, end = t0 + timedelta(minutes=120), t0 + timedelta(minutes=180)
    against_rejected = candidate_series(c, lat, "b2", "api", start, end)
    against_trusted = candidate_series(c, lat, "b2", "api", start, end, reference_end=t0 + timedelta(minutes=60))
    assert decide(against_rejected, trusted_baseline=False).ts is None  # as slow as its reference
    v = decide(against_trusted, trusted_baseline=False)
    assert v.action == "pause" and v.reason.startswith("latency")


def test_each_service_is_judged_slow_against_its_own_normal_latency():
    # One bound (1.5 s) for every service left the baselines blind to a build 5x slower on a
    # service whose normal is 20 ms. Each service's bound is the bucket 99% of its requests
    # stayed under before the first ramp; what came after (a slow candidate) does not move it.
    from ops_platform.ramp.backtest import slow_bounds

    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for minute, per_le in ((0, {"fast": (0.025, 0.05), "slow": (0.5, 1.0)}), (90, {"fast": (2.5, 5.0)})):
        for service, (p99, top) in per_le.items():
            for le, count in ((p99, 990), (top, 1000), (float("inf"), 1000)):
                rows.append({"ts": t0 + timedelta(minutes=minute), "service": service, "le": le, "count": count})
    bounds = dict(slow_bounds(pl.DataFrame(rows), t0 + timedelta(minutes=60)).iter_rows())
    assert bounds == {"fast": 0.025, "slow": 0.5}
    # Without a ramp, or one from the first minute, the whole history is the normal.
    assert dict(slow_bounds(pl.DataFrame(rows[:6]), None).iter_rows()) == {"fast": 0.025, "slow": 0.5}
    assert dict(slow_bounds(pl.DataFrame(rows[:6]), t0).iter_rows()) == {"fast": 0.025, "slow": 0.5}
