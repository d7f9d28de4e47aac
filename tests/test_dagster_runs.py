"""Run the real jobs in-process: raw assets, contract checks, dbt models and tests."""

from __future__ import annotations

import shutil
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest

from ops_platform.definitions import build_definitions
from ops_platform.timezones import partition_bounds
from ops_platform.warehouse import Warehouse
from sensors import CATALOG_JOB, DAILY_JOB, DBT_JOB
from sensors.runner import QUIET, run_everything


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def test_dst_partition_catalog_and_staging_end_to_end(state, instance):
    defs = build_definitions(state)
    assert defs.resolve_job_def(CATALOG_JOB).execute_in_process(instance=instance, run_config=QUIET).success
    day = defs.resolve_job_def(DAILY_JOB).execute_in_process(partition_key="2026-03-08", instance=instance,
                                                             run_config=QUIET)
    assert day.success
    checks = _checks(day)
    assert checks["raw/usage_events:contract"].passed
    wh = Warehouse(state.warehouse)
    q = wh.query("SELECT count(*) AS n FROM raw.quarantine WHERE source_table = 'usage_events'")["n"][0]
    meta = checks["raw/usage_events:quarantine_rate"].metadata
    assert meta["quarantined"].value == q
    accepted = wh.query("SELECT count(*) AS n FROM raw.usage_events")["n"][0]
    assert meta["rows_considered"].value >= accepted + q and meta["threshold"].value == 0.01
    assert meta["quarantine_rate"].value == q / meta["rows_considered"].value
    # A passing contract with quarantined rows says so, not "satisfied"; times are timestamps.
    contract = checks["raw/usage_events:contract"]
    assert q and contract.description.startswith(f"schema and table expectations met; {q} row(s) quarantined: "), \
        contract.description
    top = wh.query("SELECT reason, count(*) AS n FROM raw.quarantine WHERE source_table = 'usage_events' "
                   "GROUP BY reason ORDER BY n DESC, reason LIMIT 1").row(0)
    assert f"{top[0]} ({top[1]})" in contract.description, contract.description
    raw_meta = day.asset_materializations_for_node("raw__usage_events")[0].metadata
    assert isinstance(raw_meta["time_min"], dg.TimestampMetadataValue)
    assert raw_meta["time_min"].value <= raw_meta["time_max"].value
    # The 23-hour DST day holds exactly 23 hours of per-minute counters.
    minutes = wh.query("SELECT count(DISTINCT ts) AS n FROM raw.request_counters")["n"][0]
    assert minutes == 23 * 60
    burn_checks = [e for e in day.get_asset_check_evaluations() if e.asset_key.to_user_string() == "slo/burn"]
    # five SLOs x three tiers, each with the numbers that decided it, and each SLO's data and budget checks
    assert len(burn_checks) == 25
    budget = {e.check_name: e for e in burn_checks if e.check_name.endswith("___budget")}
    assert len(budget) == 5 and all(e.severity == dg.AssetCheckSeverity.WARN for e in budget.values())
    for e in budget.values():  # what it says is what the table holds
        assert e.passed == (e.metadata["budget_remaining"].value > 0), e.description
        assert ("of the error budget left" if e.passed else "error budget spent") in e.description, e.description
    data = [e for e in burn_checks if e.check_name.endswith("___sli_data")]
    assert len(data) == 5 and all(e.passed and e.metadata["minutes_without_data"].value == 0 for e in data)
    assert all("firing_minutes" in e.metadata for e in burn_checks if e not in data and e.check_name not in budget)
    # The day ran before the three it reads back (a backfill out of order): a tier is judged
    # only once its long window lies after them, and its check says so rather than "not burning".
    burn_meta = day.asset_materializations_for_node("slo__burn")[0].metadata
    assert burn_meta["lookback_days_not_ingested"].value == ["2026-03-06", "2026-03-07"]
    by_name = {e.check_name: e for e in burn_checks}
    slow, fast = by_name["api_availability__slow"], by_name["api_availability__fast"]
    assert slow.passed and slow.description.startswith("not judged this day: its 3d window reaches into day(s) "
                                                       "not ingested yet (2026-03-06, 2026-03-07)")
    start = partition_bounds("2026-03-08", "America/Denver")[0]
    assert fast.metadata["judged_from"].value == (start + timedelta(minutes=59)).timestamp()
    assert fast.metadata["judged"].value is True and slow.metadata["judged"].value is False  # no evidence: said
    # A lag names no build: its tiers' checks carry no ramp action, only the platform's.
    lag = by_name["receipt_lag__fast"]
    assert "ramp_action" not in lag.metadata and lag.metadata["platform_action"].value == "freeze"
    assert fast.metadata["ramp_action"].value == "rollback"
    assert fast.description.startswith("not judged before") or not fast.passed
    # The part judged reads as what it found from then on (this world's fast tier passes that day).
    assert fast.passed and "materialize this day again once they are); from then on, not burning" \
        in fast.description, fast.description
    # Each check is recorded against its day, as the asset is, for partitioned assets.
    for key, name in ((dg.AssetKey(["slo", "burn"]), burn_checks[0].check_name),
                      (dg.AssetKey(["raw", "usage_events"]), "contract"), (dg.AssetKey(["ramp", "verdicts"]),
                                                                            "no_regressing_ramps")):
        record = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(key, name), limit=1)
        assert record and record[0].partition == "2026-03-08", (key, name)
    slo_meta = day.asset_materializations_for_node("slo__burn")[0].metadata
    assert slo_meta["dagster/row_count"].value > 0
    assert slo_meta["budget_remaining/api-availability"].value <= 1.0
    assert slo_meta["budget_remaining_rewritten_for"].value == []  # no later day stored yet
    left = wh.query("SELECT * FROM slo.budget_remaining ORDER BY slo")
    assert left.height == 5 and left["days_stored"].to_list() == [1] * 5
    daily = wh.query("SELECT slo, bad, total FROM slo.budget_daily ORDER BY slo")
    assert left.select("slo", "bad", "total").equals(daily.cast(left.select("slo", "bad", "total").schema))
    row = left.filter(pl.col("slo") == "api-availability").row(0, named=True)
    assert row["budget_remaining"] == pytest.approx(slo_meta["budget_remaining/api-availability"].value, abs=1e-4)
    assert str(row["window_first_day"]) == "2026-02-09"  # a rolling 28 days
    # The day's burn rate: its error ratio over the error budget (0.5% for api-availability).
    burn = wh.query("SELECT bad, total, burn_rate FROM slo.budget_daily WHERE slo = 'api-availability'").row(0)
    assert burn[2] == pytest.approx(burn[0] / burn[1] / 0.005)
    assert slo_meta["burn_rate_today/api-availability"].value == pytest.approx(burn[2], abs=1e-4)
    series = wh.query("SELECT count(DISTINCT ts) AS n FROM slo.burn_minutes WHERE slo = 'api-availability'")
    assert series["n"][0] == 23 * 60
    stored = wh.query("SELECT slo, service, cohort, build_id, ts FROM slo.burn_minutes")  # in reading order
    assert stored.equals(stored.sort(["slo", "service", "cohort", "build_id", "ts"], nulls_last=True))
    # Two hours of api's counters lost (a file that never loaded): that SLO's data check fails
    # naming them in the partition's zone, the others still pass.
    noon = start + timedelta(hours=12)
    with wh.connect() as con:
        con.execute("DELETE FROM raw.request_counters WHERE service = 'api' AND ts >= ? AND ts < ?",
                    [noon, noon + timedelta(hours=2)])
    burn_asset = defs.resolve_assets_def(dg.AssetKey(["slo", "burn"]))  # its resources bound
    again = dg.materialize([burn_asset], partition_key="2026-03-08", instance=instance, selection=[burn_asset.key])
    data = {e.check_name: e for e in again.get_asset_check_evaluations() if e.check_name.endswith("___sli_data")}
    lost = data.pop("api_availability___sli_data")
    assert not lost.passed and lost.metadata["minutes_without_data"].value == 120
    assert lost.metadata["silences"].value == ["2026-03-08 13:00..15:00 America/Denver"]  # noon + 1h: DST began
    assert "no request_counters of service api for 120 min" in lost.description
    assert all(e.passed for e in data.values())  # api-latency reads the latency buckets, still whole
    mats = day.asset_materializations_for_node("raw__usage_events")
    assert mats[0].metadata["dagster/row_count"].value == wh.query(
        "SELECT count(*) AS n FROM raw.usage_events")["n"][0]

    # Re-deliveries in a later partition, with changed content that sorts first (a smaller
    # quantity): staging keeps a usage event's first delivery by its arrival day alone, and
    # a billing line's latest (a provider restating it).
    event = wh.query("SELECT source, id, quantity FROM raw.usage_events ORDER BY source, id LIMIT 1").row(0)
    line = wh.query("SELECT x_LineItemId, EffectiveCost FROM raw.billing_focus ORDER BY x_LineItemId LIMIT 1").row(0)
    with wh.connect() as con:
        for table, where, changed in (("usage_events", "source = ? AND id = ?", "quantity = quantity - 1"),
                                      ("billing_focus", "x_LineItemId = ?", "EffectiveCost = EffectiveCost + 1")):
            key = list(event[:2]) if table == "usage_events" else [line[0]]
            con.execute(f"CREATE TEMP TABLE again AS SELECT * FROM raw.{table} WHERE {where}", key)
            con.execute(f"UPDATE again SET {changed}, partition_key = '2026-03-09', "
                        "_source_file = replace(_source_file, 'dt=2026-03-08', 'dt=2026-03-09')")
            con.execute(f"INSERT INTO raw.{table} SELECT * FROM again")
            con.execute("DROP TABLE again")

    from assets.dbt import DBT_PROJECT

    repo_results = DBT_PROJECT.target_path / "run_results.json"
    before = repo_results.stat().st_mtime if repo_results.exists() else None
    staging = defs.resolve_job_def(DBT_JOB).execute_in_process(instance=instance, run_config=QUIET)
    assert staging.success
    # A build's run state goes to the state folder, never into the repository's dbt project.
    assert (state.home / "dbt" / "target" / "run_results.json").exists()
    assert (state.home / "dbt" / "target" / "dbt.log").exists()
    assert (repo_results.stat().st_mtime if repo_results.exists() else None) == before
    dbt_checks = [e for e in staging.get_asset_check_evaluations()]
    assert len(dbt_checks) >= 20 and all(e.passed for e in dbt_checks)
    counts = wh.table_counts()
    assert 0 < counts["staging.stg_usage_events"] == counts["raw.usage_events"] - 1
    assert counts["staging.stg_billing_focus"] == counts["raw.billing_focus"] - 1
    kept = wh.query("SELECT quantity, partition_key FROM staging.stg_usage_events "
                    "WHERE event_source = ? AND event_id = ?", list(event[:2]))
    assert kept.rows() == [(event[2], "2026-03-08")]
    kept = wh.query("SELECT effective_cost, partition_key FROM staging.stg_billing_focus WHERE line_item_id = ?",
                    [line[0]])
    assert kept.rows() == [(line[1] + 1, "2026-03-09")]


def test_corrupted_landing_file_fails_its_check_naming_file_and_field(tmp_path, state, small_world, instance):
    world = state.home / "world"
    world.unlink()
    shutil.copytree(small_world, world)
    target = world / "landing" / "billing_focus" / "dt=2026-03-07" / "focus-daily.parquet"
    pl.read_parquet(target).drop("BillingCurrency").write_parquet(target)
    defs = build_definitions(state)
    res = defs.resolve_job_def(DAILY_JOB).execute_in_process(partition_key="2026-03-07", instance=instance,
                                                             run_config=QUIET, raise_on_error=False)
    check = _checks(res)["raw/billing_focus:contract"]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "billing_focus/dt=2026-03-07/focus-daily.parquet" in check.description
    assert "BillingCurrency" in check.description
    # Other partitions are unaffected.
    other = defs.resolve_job_def(DAILY_JOB).execute_in_process(partition_key="2026-03-09", instance=instance,
                                                               run_config=QUIET)
    assert _checks(other)["raw/billing_focus:contract"].passed


def test_run_everything_is_idempotent(state, instance):
    defs = build_definitions(state)
    first = run_everything(defs, instance)
    wh = Warehouse(state.warehouse)
    counts = wh.table_counts()
    # The daemon's first tick (no cursor yet) would ask for the controller run the demo made:
    # that run carries the sensor's name and the request's key, so the daemon launches no second.
    from sensors.ramp import ramp_controller_sensor

    again = ramp_controller_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(again, dg.RunRequest), again
    made = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": again.run_key}))
    assert [r.tags.get("dagster/sensor_name") for r in made] == ["ramp_controller_sensor"]
    second = run_everything(defs, instance)
    assert not first.failed_runs and not second.failed_runs
    assert not [c for c in first.checks_failed if c.startswith("raw/")]  # contracts hold
    # Every SLO's source reports through every day, the partial first and last days included.
    assert not [c for c in first.checks_failed + first.checks_warned if c.endswith("___sli_data")]
    assert wh.table_counts() == counts
    assert counts["raw.usage_events"] > 0 and counts["staging.stg_billing_focus"] == counts["raw.billing_focus"]
    # Every column of the computed schemas says what it holds (a column added without it fails here).
    comments = wh.query("SELECT schema_name, table_name, column_name, comment FROM duckdb_columns() "
                        "WHERE schema_name IN ('slo', 'ramp', 'finops')")
    assert set(comments["schema_name"]) == {"slo", "ramp", "finops"}
    bare = comments.filter(pl.col("comment").is_null() | (pl.col("comment").str.len_chars() < 10))
    assert bare.height == 0, bare.rows()
    burn = dict(comments.filter(pl.col("table_name") == "burn_minutes").select("column_name", "comment").rows())
    assert burn["burn_1h"].startswith("burn rate over the 1h window: error_ratio_1h over the error budget")


def test_a_failed_run_is_reported_with_its_reason():
    import dagster as dg

    from sensors.runner import RunReport

    @dg.op
    def attribute_costs():
        raise ValueError("the bill mixes currencies (EUR, USD)\nmore detail")

    @dg.job
    def failing():
        attribute_costs()

    report = RunReport()
    report.add("finops", failing.execute_in_process(raise_on_error=False))
    assert report.failed_runs == ["finops"]
    assert report.failure_reasons == {"finops": "ValueError: the bill mixes currencies (EUR, USD)"}


def test_an_asset_materialized_before_its_raw_tables_fails_naming_the_job_to_run(state, instance):
    defs = build_definitions(state)  # its assets come with their resources bound
    for key, partition, said in ((["slo", "burn"], "2026-03-08", "run the ingest_daily job for 2026-03-08"),
                                 (["ramp", "verdicts"], "2026-03-08", "run ingest_catalog (ramp steps) and ingest_daily"),
                                 (["finops", "attribution"], None, "run ingest_catalog and ingest_daily")):
        asset = defs.resolve_assets_def(dg.AssetKey(key))
        res = dg.materialize([asset], partition_key=partition, instance=instance, raise_on_error=False)
        failure = next(e for e in res.all_events if e.is_step_failure).step_failure_data.error
        assert not res.success and "not in the warehouse" in failure.message and said in failure.message, failure.message
        assert "CatalogException" not in failure.message and "IOException" not in failure.message


def test_the_bills_quarantine_check_says_what_the_rows_cost():
    # A share of rows says little to FinOps: one refused row may be a tenth of the day's money.
    import json
    from types import SimpleNamespace

    from assets.raw import _quarantined_cost
    from ops_platform.contracts.definitions import CONTRACTS
    from ops_platform.ingest.pipeline import RESTATED

    def row(reason, **record):
        return {"reason": reason, "record": json.dumps(record)}

    quarantine = pl.DataFrame([row("x", EffectiveCost="-2.50", BillingCurrency="USD"),
                               row("y", EffectiveCost="10", BillingCurrency="USD"),
                               row("z", EffectiveCost="1,000.00", BillingCurrency="EUR"),
                               row(RESTATED, EffectiveCost="99", BillingCurrency="USD")])
    res = SimpleNamespace(quarantine=quarantine)
    assert _quarantined_cost(res, CONTRACTS["billing_focus"]) == "12.5 USD, 1 row(s) of unreadable cost"
    assert _quarantined_cost(res, CONTRACTS["usage_events"]) is None


def test_a_spent_error_budget_warns_with_its_numbers():
    from datetime import date

    from assets.slo import _budget_check
    from ops_platform.paths import SLO_DIR
    from ops_platform.slo.spec import load_slos

    slo = next(s for s in load_slos(SLO_DIR) if s.name == "api-availability")
    left = {"budget_remaining": -4.2276, "bad": 52_276, "total": 1_000_000, "window_first_day": date(2026, 2, 2),
            "days_stored": 2}
    check = _budget_check(slo, left, "2026-03-02")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("error budget spent: 422.8% over it, 5.23x the budget over 2 day(s) stored "
                                         "of its 28-day window (from 2026-02-02): 52,276 bad of 1,000,000"), \
        check.description
    fine = _budget_check(slo, left | {"budget_remaining": 0.75}, "2026-03-02")
    assert fine.passed and fine.description.startswith("75.0% of the error budget left")
    spent = _budget_check(slo, left | {"budget_remaining": 0.0}, "2026-03-02")  # exactly spent: warned
    assert not spent.passed and spent.description.startswith("error budget spent: 0.0% over it")
