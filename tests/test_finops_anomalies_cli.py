"""`ops-platform finops anomalies`: the flagged cost anomalies an analyst reads, costliest
first, filtered by detector, tenant and period, from a world or from the warehouse."""

from __future__ import annotations

import json
from datetime import date, timedelta

import duckdb
import polars as pl
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.finops.anomalies import listed


def _anomalies(*args):
    return CliRunner().invoke(main, ["finops", "anomalies", *args])


def test_a_worlds_anomalies_are_listed_costliest_first_with_their_detectors(small_world):
    res = _anomalies("--world", str(small_world), "--json", "--top", "0")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    rows = pl.DataFrame(out["listed"])
    assert out["currency"] == "USD" and out["anomalies"] == rows.height > 0
    assert rows["impact_usd"].to_list() == sorted(rows["impact_usd"].to_list(), reverse=True)
    named = {"model, baseline": (True, True), "model": (True, False), "baseline": (False, True)}
    assert [named[f] for f in rows["flagged_by"]] == list(zip(rows["model_flag"], rows["baseline_flag"], strict=True))
    # Every injected anomaly of the world is among them (the detectors' recall on this world).
    truth = pl.read_parquet(small_world / "truth" / "cost_anomalies.parquet")
    spikes = truth.filter(pl.col("kind") == "tenant_usage_spike")
    got = set(rows.select("utc_date", "tenant_id", "meter").iter_rows())
    assert spikes.height and all((str(d), t, m) in got for d, t, m in spikes.select("date", "tenant_id", "meter").iter_rows())

    tenant = spikes["tenant_id"][0]
    mine = json.loads(_anomalies("--world", str(small_world), "--json", "--tenant", tenant, "--by", "model").output)
    assert mine["listed"] and all(r["tenant_id"] == tenant and r["model_flag"] for r in mine["listed"])
    text = _anomalies("--world", str(small_world), "--top", "2")
    assert text.exit_code == 0, text.output
    first = rows.row(0, named=True)
    assert f"{rows.height} anomalies" in text.output and "the 2 costliest" in text.output
    assert (first["tenant_id"] or first["service"]) in text.output and f"{first['impact_usd']:,.2f} USD" in text.output


def test_a_mistyped_tenant_or_period_is_told_not_listed_as_nothing(small_world):
    res = _anomalies("--world", str(small_world), "--tenant", "t-99999")
    assert res.exit_code == 2 and "no tenant 't-99999'" in res.output, res.output
    res = _anomalies("--world", str(small_world), "--period", "2026-13")
    assert res.exit_code == 2 and "month must be 01-12" in res.output, res.output
    day = pl.read_parquet(small_world / "truth" / "cost_anomalies.parquet")["date"].min()
    one_day = json.loads(_anomalies("--world", str(small_world), "--json", "--period",
                                    f"{day}..{day + timedelta(days=1)}").output)
    assert one_day["listed"] and {r["utc_date"] for r in one_day["listed"]} == {str(day)}


def test_the_warehouse_is_read_or_its_absence_said(state):
    res = _anomalies()
    assert res.exit_code == 1 and "no warehouse at" in res.output, res.output
    con = duckdb.connect(str(state.warehouse))
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.tenants AS SELECT 't-00001' AS tenant_id")
    con.close()
    res = _anomalies("--period", "2026-03")
    assert res.exit_code == 1 and "cannot read finops.anomalies" in res.output, res.output
    assert "materialize the finops assets first" in res.output and "Traceback" not in res.output
    con = duckdb.connect(str(state.warehouse))
    con.execute("CREATE SCHEMA finops")
    con.execute("CREATE TABLE raw.billing_focus AS SELECT 'EUR' AS BillingCurrency")
    con.execute("CREATE TABLE finops.anomalies AS SELECT 'service_capacity_spike' AS kind, DATE '2026-04-02' AS utc_date, "
                "NULL::VARCHAR AS tenant_id, 'graph' AS service, NULL::VARCHAR AS meter, 12.5 AS value, 2.0 AS expected, "
                "1.0 AS expected_low, 3.0 AS expected_high, 9.0 AS z, 0.3 AS model_score, 10.5 AS impact_usd, "
                "true AS baseline_flag, false AS model_flag, 'all' AS partition_key")
    con.close()
    res = _anomalies("--period", "2026-03")
    assert res.exit_code == 0 and "no anomaly flagged by either detector in 2026-03" in res.output, res.output
    res = _anomalies("--by", "baseline")
    assert res.exit_code == 0 and "10.50 EUR" in res.output and "idle cost" in res.output, res.output


def test_listed_filters_and_orders_ties_by_day():
    found = pl.DataFrame({
        "kind": ["tenant_usage_spike"] * 3 + ["service_capacity_spike"],
        "utc_date": [date(2026, 3, 2), date(2026, 3, 1), date(2026, 3, 3), date(2026, 3, 1)],
        "tenant_id": ["t-1", "t-1", "t-2", None], "service": ["api"] * 3 + ["graph"],
        "meter": ["api_calls"] * 3 + [None], "impact_usd": [5.0, 5.0, 1.0, 9.0],
        "model_flag": [True, False, True, True], "baseline_flag": [True, True, False, False]})
    every = listed(found)
    assert every["impact_usd"].to_list() == [9.0, 5.0, 5.0, 1.0]
    assert every["utc_date"].to_list()[1:3] == [date(2026, 3, 1), date(2026, 3, 2)]  # a tie: the earlier day first
    assert every["flagged_by"].to_list() == ["model", "baseline", "model, baseline", "model"]
    assert listed(found, detector="baseline")["impact_usd"].to_list() == [5.0, 5.0]
    assert listed(found, tenant="t-1", detector="model").height == 1
    assert listed(found, start=date(2026, 3, 2), end=date(2026, 3, 3))["utc_date"].to_list() == [date(2026, 3, 2)]
