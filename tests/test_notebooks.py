"""Every notebook executes top to bottom against a real warehouse and says something true."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

from ops_platform.finops.pipeline import FinOpsInputs, run, write_tables
from ops_platform.warehouse import Warehouse

from .conftest import load_warehouse

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def warehouse(small_world, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nb") / "warehouse.duckdb"
    wh = load_warehouse(path, small_world / "landing")
    write_tables(wh, run(FinOpsInputs.from_warehouse(wh)))  # what the finops/attribution asset writes
    return path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, warehouse, small_world, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # an analyst's zone far from UTC: the answers must not move
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    last = nb.cells[-1].outputs[-1]["data"]["text/plain"]
    if path.stem == "landing_quality":
        malformed = pl.read_parquet(small_world / "truth" / "malformed_records.parquet").height
        assert f"'quarantined': {malformed}" in last
        # the world's only DST change in America/Denver, and no other day short or long
        assert "'dst_days': [datetime.date(2026, 3, 8)]" in last
    if path.stem == "finops":
        days = Warehouse(warehouse).query("SELECT count(*) AS n FROM finops.day")["n"][0]
        summary = ast.literal_eval(last)
        assert summary["days_exact"] == summary["days"] == days  # every day sums to the bill
        assert summary["tenants_usd"] == summary["billed_usd"] > 0
        assert summary["services_usd"] == summary["billed_usd"]  # per service, shared and tagged cost
        assert summary["tenant_services_usd"] == summary["billed_usd"]  # per tenant and service
        injected = pl.read_parquet(small_world / "truth" / "cost_anomalies.parquet").height
        assert injected <= summary["anomalies"] <= 2 * injected


def test_there_are_notebooks():
    assert NOTEBOOKS


def test_every_finops_column_says_what_it_holds(warehouse):
    # An analyst in DuckDB reads the descriptions beside the columns; a column added to the
    # books without one fails here.
    comments = Warehouse(warehouse).query(
        "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE schema_name = 'finops'")
    assert comments.height > 60
    bare = comments.filter(pl.col("comment").is_null() | (pl.col("comment").str.len_chars() < 10))
    assert bare.height == 0, bare.rows()
    money = comments.filter(pl.col("column_name").str.ends_with("_micros"))
    assert money.height and money["comment"].str.contains("micro-units").all(), money.rows()
