"""FinOps in Dagster: the attribution asset and its checks, the release sensor, the guarded job."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from assets.finops import ATTRIBUTION_KEY, CONFIDENCE_CHECK, SUMS_CHECK, finops_attribution
from ops_platform.cli import main
from ops_platform.finops.pipeline import final_period
from ops_platform.guard.runtime import file_digest_in, migrated_store, open_store
from ops_platform.receipts.keys import KeyRing
from ops_platform.receipts.ledger import verify_ledger
from resources import build_resources
from sensors.finops import SENSOR_ACTOR, invoice_release_sensor, release_invoices_job

from .conftest import load_warehouse


def test_attribution_checks_release_sensor_and_guarded_release(state):
    wh = load_warehouse(state.warehouse, state.landing)
    resources = build_resources(state)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([finops_attribution], resources=resources, instance=instance)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()
                  if e.asset_key == ATTRIBUTION_KEY}
        assert checks == {SUMS_CHECK: True, CONFIDENCE_CHECK: True}
        # Each check carries the numbers that decided it.
        meta = {e.check_name: e.metadata for e in result.get_asset_check_evaluations()}
        days = wh.query("SELECT count(*) AS n, sum(billed_micros) AS b, count(*) FILTER (final) AS f, "
                        "min(confidence) FILTER (final) AS c FROM finops.day").row(0, named=True)
        sums = meta[SUMS_CHECK]
        assert sums["days_checked"].value == days["n"] and sums["days_off"].value == {}
        assert sums["billed_micros"].value == sums["attributed_micros"].value == days["b"] > 0
        conf = meta[CONFIDENCE_CHECK]
        assert conf["final_days"].value == days["f"] > 0 and conf["target"].value == 0.95
        assert conf["min_confidence"].value == round(days["c"], 4) >= 0.95
        # The asset's amounts name their currency (a *_usd key would mislabel a bill in euros).
        asset_meta = result.asset_materializations_for_node("finops__attribution")[0].metadata
        assert asset_meta["currency"].value == "USD" and asset_meta["billed"].value == round(int(days["b"]) / 1e6, 6)

        # The world ends mid-month: the sensor holds March and says why.
        tick = invoice_release_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(tick, dg.SkipReason) and "held: 2026-03" in tick.skip_message
        from ops_platform.finops.pipeline import StoredFinOps

        stamp = StoredFinOps.from_warehouse(wh).stamp
        assert len(stamp) == 12  # the sensor's run keys carry the books
        # Computed again from the same raw rows, they are new books: a release that failed or
        # was denied (a roster fixed since) is asked for again under a new run key.
        assert dg.materialize([finops_attribution], resources=resources, instance=instance).success
        assert StoredFinOps.from_warehouse(wh).stamp not in ("", stamp)
        assert "no billing for" in tick.skip_message

        held = CliRunner().invoke(main, ["invoices", "export", "--period", "2026-03"])
        assert held.exit_code == 3 and "held: invoices for 2026-03" in held.output and "no billing for" in held.output

        period = final_period(wh.query("SELECT utc_date, final FROM finops.usage_daily")).name
        # Launched by hand from the UI under a look-alike of the sensor's name: refused, as the CLI does.
        with pytest.raises(dg.Failure, match="plain ASCII"):
            release_invoices_job.execute_in_process(run_config={"ops": {"release_invoices_op": {"config": {
                "period": period, "actor": "invoice\u2011release-sensor"}}}}, resources=resources, instance=instance)
        # A period that is none, or a blank rationale: a message, before anything is submitted.
        for config, said in (({"period": "2026-13"}, "2026-13"), ({"period": period, "rationale": " "}, "blank")):
            with pytest.raises(dg.Failure, match=said):
                release_invoices_job.execute_in_process(run_config={"ops": {"release_invoices_op": {"config": {
                    "actor": "finops-analyst", **config}}}}, resources=resources, instance=instance)
        # Who releases is asked for: the job's config has no default actor.
        with pytest.raises(dg.DagsterInvalidConfigError, match="actor"):
            release_invoices_job.execute_in_process(run_config={"ops": {"release_invoices_op": {"config": {
                "period": period}}}}, resources=resources, instance=instance)
        # The sensor's identity is refused on a run the sensor did not request.
        sensor_config = {"ops": {"release_invoices_op": {"config": {"period": period, "actor": SENSOR_ACTOR}}}}
        with pytest.raises(dg.Failure, match="release sensor's own"):
            release_invoices_job.execute_in_process(run_config=sensor_config, resources=resources, instance=instance)
        run = release_invoices_job.execute_in_process(
            run_config=sensor_config,
            resources=resources, instance=instance, tags={"dagster/sensor_name": "invoice_release_sensor"})
        assert run.success
        # What of March the released range left is proposed on its own (held: not final yet),
        # never March whole again, which would invoice the released days twice.
        start, end = period.split("..")
        tick = invoice_release_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(tick, dg.SkipReason) and f"{end}..2026-04-01: " in tick.skip_message, tick.skip_message
        assert start == "2026-03-01" or f"2026-03-01..{start}: " in tick.skip_message
        assert "overlaps" not in tick.skip_message and "2026-03:" not in tick.skip_message
        # A released file edited since: the sensor holds the rest as the run would, saying why.
        lines = state.invoices / period / "invoice_lines.csv"
        kept = lines.read_bytes()
        lines.write_bytes(kept + b"\n")
        tick = invoice_release_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(tick, dg.SkipReason) and "no longer matches its receipt" in tick.skip_message, \
            tick.skip_message
        lines.write_bytes(kept)
    # A period out already is answered by its release, whoever asks (never released twice,
    # which would rewrite the files under a second receipt), its files re-checked.
    before = {f.name: f.read_bytes() for f in (state.invoices / period).iterdir()}
    again = CliRunner().invoke(main, ["invoices", "export", "--period", period])
    assert again.exit_code == 0 and "completed already released" in again.output, again.output
    assert {f.name: f.read_bytes() for f in (state.invoices / period).iterdir()} == before
    # A denial does not hold a period against an actor allowed to release it.
    other = f"{period.split('..')[1]}..2026-04-01"
    with pytest.MonkeyPatch.context() as mp:  # the books hold it for nothing else
        mp.setattr("ops_platform.finops.pipeline.StoredFinOps.blockers", lambda self, p: [])
        denied = CliRunner().invoke(main, ["invoices", "export", "--period", other, "--actor", "dana"])
        assert denied.exit_code == 1 and "denied" in denied.output, denied.output
        # --store names the control store the release goes through (its receipt goes there).
        elsewhere = f"sqlite:///{state.home / 'elsewhere.sqlite'}"
        typo = CliRunner().invoke(main, ["invoices", "export", "--period", other, "--store", elsewhere])
        assert typo.exit_code == 1 and "no control store at" in typo.output, typo.output  # never started by --store
        migrated_store(elsewhere)  # set up beforehand, as the default store is on first use
        counted = open_store(state).receipt_count()
        refused = CliRunner().invoke(main, ["invoices", "export", "--period", other, "--actor", "dana",
                                            "--store", elsewhere])
        assert refused.exit_code == 1 and "denied" in refused.output, refused.output
        assert open_store(state, elsewhere).receipt_count() == 1 and open_store(state).receipt_count() == counted
        allowed = CliRunner().invoke(main, ["invoices", "export", "--period", other])
        assert allowed.exit_code == 0 and f"export_release {other}: completed" in allowed.output, allowed.output
    files = sorted((state.invoices / period).iterdir())
    assert [f.name for f in files] == ["invoice_lines.csv", "invoice_lines.parquet", "invoice_summary.csv",
                                       "invoice_summary.parquet"]
    store = open_store(state)
    report = verify_ledger(store.ledger_entries(), store.checkpoints(), KeyRing.load_or_create(state.keys_dir).verifiers(),
                           file_digest=file_digest_in(state.home))
    assert report.ok and report.entries >= 1
    for stem in ("invoice_lines", "invoice_summary"):  # the CSV says what the Parquet says, value for value
        parquet = pl.read_parquet(state.invoices / period / f"{stem}.parquet")
        csv = pl.read_csv(state.invoices / period / f"{stem}.csv", infer_schema=False)
        assert parquet.height > 0 and csv.columns == parquet.columns
        assert csv.equals(parquet.select(pl.all().cast(pl.String)))
    # A released file changed and another added beside them: `receipts verify` names both at
    # once (the added one was named only after the changed one was mended).
    summary_csv, added = state.invoices / period / "invoice_summary.csv", state.invoices / period / "extra.csv"
    kept = summary_csv.read_bytes()
    summary_csv.write_bytes(kept.replace(b",", b";", 1))
    added.write_text("invoice_id,total_minor\nINV-forged,100\n")
    verify = CliRunner().invoke(main, ["receipts", "verify"])
    said = " ".join(verify.output.split())
    assert verify.exit_code == 1 and "invoice_summary.csv" in said and f"{added} is in the released folder" in said, said
    summary_csv.write_bytes(kept)
    added.unlink()
    assert CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0
    # A billing row loaded after the attribution ran (or whose run then failed): the stored
    # books are not the warehouse's any more, and no period goes out from them.
    from datetime import date, timedelta

    import duckdb

    with duckdb.connect(str(state.warehouse)) as con:
        con.execute("INSERT INTO raw.billing_focus SELECT * FROM raw.billing_focus ORDER BY partition_key DESC LIMIT 1")
        day = date.fromisoformat(str(con.execute("SELECT max(partition_key) FROM raw.billing_focus").fetchone()[0]))
    touched = f"{day}..{day + timedelta(days=1)}"
    held = CliRunner().invoke(main, ["invoices", "export", "--period", touched])
    assert held.exit_code == 3 and "changed since finops/attribution last computed the books" in held.output, held.output
    assert "billing_focus" in held.output
    # A local day's partition holds the morning of the next UTC day: the period after it is held too.
    after = f"{day + timedelta(days=1)}..{day + timedelta(days=2)}"
    assert "changed since" in CliRunner().invoke(main, ["invoices", "export", "--period", after]).output
    # A billing row's charge may run over later days: an earlier billing partition holds a later period.
    later = f"{day + timedelta(days=5)}..{day + timedelta(days=6)}"
    assert "billing_focus" in CliRunner().invoke(main, ["invoices", "export", "--period", later]).output
    # A billing load holds even a period far before it: a later file date may restate its
    # lines (the latest delivery counts). A usage load after its late window does not.
    earlier = CliRunner().invoke(main, ["invoices", "export", "--period", "2026-01"])
    assert "changed since" in earlier.output and "billing_focus" in earlier.output, earlier.output
    with duckdb.connect(str(state.warehouse)) as con:
        con.execute("DELETE FROM raw.billing_focus WHERE rowid IN (SELECT max(rowid) FROM raw.billing_focus)")
        con.execute("INSERT INTO raw.usage_events SELECT * FROM raw.usage_events ORDER BY partition_key DESC LIMIT 1")
    earlier = CliRunner().invoke(main, ["invoices", "export", "--period", "2026-01"])
    assert "changed since" not in earlier.output, earlier.output
    # A price restated in place (the same number of rows) changes the books all the same.
    from ops_platform.finops.pipeline import input_counts

    before = input_counts(wh).filter(pl.col("table") == "price_list")
    with duckdb.connect(str(state.warehouse)) as con:
        column = con.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND "
                             "table_name = 'price_list' AND data_type = 'VARCHAR' LIMIT 1").fetchone()[0]
        con.execute(f"UPDATE raw.price_list SET {column} = {column} || '-restated' WHERE rowid = 0")
    after = input_counts(wh).filter(pl.col("table") == "price_list")
    assert before["rows"].to_list() == after["rows"].to_list() and before["digest"].to_list() != after["digest"].to_list()
    assert "price_list" in CliRunner().invoke(main, ["invoices", "export", "--period", "2026-01"]).output


def test_a_final_usage_day_without_billing_fails_the_confidence_check(state):
    wh = load_warehouse(state.warehouse, state.landing)
    utc_day = "CAST(timezone('UTC', ChargePeriodStart) AS DATE)"
    day = wh.query(f"SELECT min({utc_day}) AS d FROM raw.billing_focus")["d"][0]
    with wh.connect() as con:  # the provider's file for that day never arrived
        con.execute(f"DELETE FROM raw.billing_focus WHERE {utc_day} = ?", [day])
        con.execute("DELETE FROM raw.quarantine WHERE source_table = 'billing_focus' AND file LIKE ?", [f"%dt={day}%"])
    result = dg.materialize([finops_attribution], resources=build_resources(state))
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CONFIDENCE_CHECK]
    assert not check.passed and f"without billing (first {day})" in check.description
    assert check.metadata["unbilled_days"].value[0] == str(day)
