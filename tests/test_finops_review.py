"""A FinOps analyst's edges: a tier priced in two currencies, a world without a bill, catalog
files the contract refuses, one month written two ways, and settings or periods past what the
calendar can hold."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.finops.export import released_file_problems
from ops_platform.finops.invoices import parse_period


def _world(small_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(small_world, world, ignore=shutil.ignore_patterns("truth"))
    return world


def _report(world, *args):
    return CliRunner().invoke(main, ["finops", "report", "--world", str(world), *args])


def test_a_tenant_invoiced_in_two_currencies_is_one_row_and_its_cost_counts_once(small_world, tmp_path):
    world = _world(small_world, tmp_path)
    prices = world / "landing" / "catalog" / "price_list.parquet"
    frame = pl.read_parquet(prices)
    euro = (pl.col("tier") == "pro") & (pl.col("meter") == "api_calls")
    frame.with_columns(pl.when(euro).then(pl.lit("EUR")).otherwise("currency").alias("currency")).write_parquet(prices)
    res = _report(world, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    tenants, tiers = pl.DataFrame(out["tenants"]), pl.DataFrame(out["tiers"])
    assert tenants["tenant_id"].is_unique().all()
    # Every tenant's cost once: the tiers add up to the tenants (before, a pro tenant's cost
    # was counted in a USD row and again in a EUR row).
    assert tiers["cost_micros"].sum() == tenants["cost_micros"].sum()
    pro = tenants.filter(pl.col("tier") == "pro")
    assert pro.height and set(pro["invoice_currency"].to_list()) == {"EUR+USD"}
    assert pro["revenue_micros"].is_null().all() and pro["margin_micros"].is_null().all()
    first = pro.row(0, named=True)["revenue_by_currency"]
    assert [c["currency"] for c in first] == ["EUR", "USD"] and all(c["revenue_micros"] > 0 for c in first)
    (mixed,) = tiers.filter(pl.col("currency") == "EUR+USD").iter_rows(named=True)
    assert (mixed["tenants"], mixed["revenue_micros"], mixed["margin_micros"]) == (pro.height, None, None)
    text = _report(world, "--top", "50")
    assert text.exit_code == 0, text.output
    n = tenants.height
    losing = tenants.filter(pl.col("margin_micros") < 0).height
    assert f"{losing} of {n} tenant(s) cost more than they pay" in text.output
    assert f"{pro.height} tenant(s) are invoiced in another currency than the bill's, or in more than one" in \
        " ".join(text.output.split())
    assert " EUR + " in text.output  # the revenue shown in each of its currencies


def test_a_world_without_a_bill_is_a_clear_error_for_score_and_report(small_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    shutil.rmtree(world / "landing" / "billing_focus")
    (world / "landing" / "billing_focus").mkdir()
    score = CliRunner().invoke(main, ["finops", "score", "--world", str(world)])
    assert score.exit_code == 1 and "holds no bill the FOCUS contract accepts" in score.output, score.output
    report = _report(world)
    assert report.exit_code == 1 and "holds no bill the FOCUS contract accepts" in report.output, report.output
    assert "Traceback" not in score.output + report.output


@pytest.mark.parametrize(("file", "damage", "named"), [
    ("tenants.parquet", lambda p: p.write_text("garbage"), "tenants"),
    ("price_list.parquet", lambda p: pl.read_parquet(p).drop("currency").write_parquet(p), "'currency'")])
def test_a_catalog_file_the_contract_refuses_is_named_not_read_as_unknown_tenants(small_world, tmp_path, file,
                                                                                  damage, named):
    world = _world(small_world, tmp_path)
    damage(world / "landing" / "catalog" / file)
    res = _report(world)
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "landing files break their contract" in text and file in text and named in text, text
    assert "does not know" not in text and "no rate card price" not in text


def test_a_month_written_as_its_days_is_that_month():
    assert parse_period("2026-02-01..2026-03-01") == parse_period("2026-02")
    assert parse_period("2024-02-01..2024-03-01").name == "2024-02"  # a leap month
    assert parse_period("2026-02-01..2026-02-28").name == "2026-02-01..2026-02-28"  # not the whole month
    assert parse_period("2026-02-02..2026-03-02").name == "2026-02-02..2026-03-02"


def test_a_release_receipt_names_its_period_however_it_was_written(tmp_path):
    # A receipt written before both spellings named one period still vouches for its days.
    from types import SimpleNamespace

    from ops_platform.receipts import build_entry
    from ops_platform.receipts.keys import KeyRing
    from ops_platform.receipts.statement import make_statement, target_subject

    ring = KeyRing.load_or_create(tmp_path / "keys")
    entry = build_entry(None, make_statement([target_subject("invoice_period", "2026-02-01..2026-03-01")],
                                             "export_release", {"action": "export_release", "executed": True,
                                                                "target": {"kind": "invoice_period",
                                                                           "id": "2026-02-01..2026-03-01"}}),
                        ring.signer())
    store = SimpleNamespace(entry=lambda rid: entry, ledger_id=lambda: entry.entry_hash)
    assert released_file_problems(store, entry.receipt_id, tmp_path, ring.verifiers(), parse_period("2026-02")) == []
    problems = released_file_problems(store, entry.receipt_id, tmp_path, ring.verifiers(), parse_period("2026-03"))
    assert problems and "is not the release of 2026-03" in problems[0]


def test_a_late_data_window_past_a_year_is_a_setting_error(small_world, monkeypatch):
    for text in ("99999999999", "367", "²"):
        monkeypatch.setenv("OPS_PLATFORM_USAGE_FINAL_AFTER_DAYS", text)
        res = CliRunner().invoke(main, ["finops", "score", "--world", str(small_world)])
        assert res.exit_code == 1 and "must be a whole number of days, 0 to 366" in res.output, res.output


def test_a_focus_csv_naming_a_column_twice_is_refused(tmp_path):
    import csv

    path = tmp_path / "bill.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["BilledCost", "Tags", "Tags"], ["1.00", "{}", '{"tenant": "t-1"}']])
    res = CliRunner().invoke(main, ["focus", "check", str(path)])
    assert res.exit_code == 1 and "the header names column(s) 'Tags' more than once" in res.output, res.output


def test_report_help_gives_its_default_period():
    res = CliRunner().invoke(main, ["finops", "report", "--help"])
    assert "the first usage day to the last day the bill covers" in " ".join(res.output.split())


def test_the_report_checks_the_zone_setting_as_every_command_does(small_world, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_TZ", "Nowhere/Zone")
    res = _report(small_world)
    assert res.exit_code == 1 and "OPS_PLATFORM_TZ='Nowhere/Zone' is not an IANA time zone" in res.output, res.output


def test_the_report_quarantines_events_stamped_after_their_file_as_ingestion_does(small_world, tmp_path):
    # An event stamped two days after the file that brought it is a clock gone wrong: the
    # daily assets quarantine it, and the report read it as usage (a tenant billed for it).
    world = _world(small_world, tmp_path)
    before = json.loads(_report(world, "--json").output)["tenants"]
    folders = sorted((world / "landing" / "usage_events").glob("dt=*"))
    tenant = before[0]["tenant_id"]
    day = folders[1].name.removeprefix("dt=")
    skewed = {"specversion": "1.0", "source": "//summit/api", "type": "com.summit.usage.recorded.v1",
              "time": f"{folders[3].name.removeprefix('dt=')}T18:00:00Z", "subject": tenant,
              "datacontenttype": "application/json", "data": {"meter": "api_calls", "quantity": 1_000_000}}
    (folders[1] / f"events-skewed-{day}.jsonl").write_text(
        "".join(json.dumps({**skewed, "id": f"ev-skewed-{i}"}) + "\n" for i in range(3)))
    res = _report(world, "--json")
    assert res.exit_code == 0, res.output
    after = {t["tenant_id"]: t for t in json.loads(res.output)["tenants"]}
    assert after[tenant]["revenue_micros"] == before[0]["revenue_micros"]
