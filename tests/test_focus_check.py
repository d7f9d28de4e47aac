"""Any FOCUS file a user brings either loads or is refused with a clear message."""

from __future__ import annotations

import json

import polars as pl
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.contracts.definitions import BILLING_FOCUS
from ops_platform.ingest.check_file import check_file


def _world_file(small_world):
    return sorted((small_world / "landing" / "billing_focus").glob("*/*.parquet"))[0]


def _malformed_in(small_world, path) -> int:
    truth = pl.read_parquet(small_world / "truth" / "malformed_records.parquet")
    ids = set(pl.read_parquet(path)["x_LineItemId"])
    return truth.filter(pl.col("record_id").is_in(list(ids))).height


def test_world_export_loads_and_flags_its_malformed_rows(small_world):
    path = _world_file(small_world)
    report = check_file(path, BILLING_FOCUS)
    assert report.loads and report.rows == pl.read_parquet(path).height
    assert report.rows - report.accepted == _malformed_in(small_world, path)


def test_provider_style_csv_loads(small_world, tmp_path):
    src = pl.read_parquet(_world_file(small_world))
    csv = src.with_columns(
        pl.col(pl.Decimal).cast(pl.Float64),  # providers often export floats
        pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        pl.lit("eu").alias("x_ProviderRegionGroup"))
    out = tmp_path / "focus-export.csv"
    csv.write_csv(out)
    report = check_file(out, BILLING_FOCUS)
    assert report.loads, report.schema_errors
    assert report.rows - report.accepted == _malformed_in(small_world, _world_file(small_world))


def test_missing_mandatory_column_is_refused_by_name(small_world, tmp_path):
    out = tmp_path / "no-billed-cost.csv"
    pl.read_parquet(_world_file(small_world)).drop("BilledCost").with_columns(
        pl.col(pl.Decimal).cast(pl.Float64)).write_csv(out)
    res = CliRunner().invoke(main, ["focus", "check", str(out)])
    assert res.exit_code == 1
    assert "refused" in res.output and "BilledCost" in res.output and "no-billed-cost.csv" in res.output


def test_garbage_is_refused_not_a_traceback(tmp_path):
    bad = tmp_path / "export.parquet"
    bad.write_bytes(b"not parquet at all")
    res = CliRunner().invoke(main, ["focus", "check", str(bad), "--json"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert json.loads(res.output)["loads"] is False


def test_a_provider_export_without_our_line_id_and_with_map_tags_loads(small_world, tmp_path):
    from ops_platform.ingest.landing import LandingZoneReader
    from ops_platform.ingest.pipeline import ingest_partition

    src = pl.read_parquet(_world_file(small_world)).drop("x_LineItemId")
    # Tags as a Parquet map (a list of key/value pairs), as some providers write them.
    pairs = [None if t is None else [{"key": k, "value": v} for k, v in json.loads(t).items()]
             for t in src["Tags"].to_list()]
    export = src.with_columns(pl.Series("Tags", pairs, dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.String}))))
    out = tmp_path / "provider.parquet"
    export.write_parquet(out)
    report = check_file(out, BILLING_FOCUS)
    assert report.loads, report.schema_errors
    assert report.rows - report.accepted == _malformed_in(small_world, _world_file(small_world))
    # The same file delivered twice (another day's folder) is recognised: the derived ids match.
    landing = tmp_path / "landing" / "billing_focus"
    for day in ("dt=2026-03-06", "dt=2026-03-07"):
        (landing / day).mkdir(parents=True)
        export.write_parquet(landing / day / "provider.parquet")
    res = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert res.duplicates_removed == report.accepted and res.accepted.height == report.accepted
    # A restated copy (one cost changed) keeps its line's id: from a later file date it counts
    # (a provider's month-to-date export restating the line), the earlier copy is kept apart.
    restated = export.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col("EffectiveCost") + 1)
                                   .otherwise(pl.col("EffectiveCost")).alias("EffectiveCost"))
    restated.write_parquet(landing / "dt=2026-03-07" / "provider.parquet")
    again = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert again.accepted.height == report.accepted
    assert again.quarantine_by_reason() == {"restated in a later file date (the later delivery counts)": 1} | {
        r: n for r, n in res.quarantine_by_reason().items()}
    line = again.quarantine.filter(pl.col("reason").str.starts_with("restated"))["record_id"][0]
    kept = again.accepted.filter(pl.col("x_LineItemId") == line)
    assert kept["_source_file"][0].startswith("billing_focus/dt=2026-03-07")
    # The same restatement in one file date is a conflict: the first delivery counts.
    restated.write_parquet(landing / "dt=2026-03-06" / "restated.parquet")
    (landing / "dt=2026-03-07" / "provider.parquet").unlink()
    third = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert third.quarantine_by_reason().get("conflicting re-delivery of x_LineItemId") == 1
    assert res.accepted["x_LineItemId"].str.starts_with("row-").all()
    assert res.accepted["Tags"].drop_nulls().map_elements(lambda t: isinstance(json.loads(t), dict),
                                                          return_dtype=pl.Boolean).all()


def test_tags_with_nested_values_are_refused_with_the_reason_not_a_traceback(small_world, tmp_path):
    src = pl.read_parquet(_world_file(small_world))
    nested = src.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit('{"service": ["api"]}'))
                              .otherwise(pl.col("Tags")).alias("Tags"))
    out = tmp_path / "nested.parquet"
    nested.write_parquet(out)
    res = CliRunner().invoke(main, ["focus", "check", str(out)])
    assert "Traceback" not in res.output and "Tags: not a JSON object of scalar values" in res.output
    # which key is wrong, which the reason (shared by every such row) does not say
    assert "data row 0 " in res.output and "[Tags: key 'service' holds an array, not a scalar]" in res.output
    twice = nested.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit('{"tenant": "t-1", "tenant": "t-2"}'))
                                .otherwise(pl.col("Tags")).alias("Tags"))
    twice.write_parquet(out)
    report = json.loads(CliRunner().invoke(main, ["focus", "check", str(out), "--json"]).output)
    (first,) = [e for r, es in report["examples"].items() if r.startswith("Tags:") for e in es if e["row_number"] == 0]
    assert first["detail"] == "Tags: key 'tenant' given twice"


def test_charges_alike_but_for_their_amounts_keep_their_ids_in_any_row_order(small_world, tmp_path):
    from ops_platform.ingest.landing import LandingZoneReader
    from ops_platform.ingest.pipeline import ingest_partition

    row = pl.read_parquet(_world_file(small_world)).drop("x_LineItemId").head(1)
    two = pl.concat([row, row.with_columns(pl.col("EffectiveCost") * 2, pl.col("BilledCost") * 2)])
    landing = tmp_path / "landing" / "billing_focus"
    for day, frame in (("dt=2026-03-06", two), ("dt=2026-03-07", two.reverse())):
        (landing / day).mkdir(parents=True)
        frame.write_parquet(landing / day / "export.parquet")
    res = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert res.accepted.height == 2 and res.duplicates_removed == 2 and res.quarantine.height == 0


def test_an_open_ended_charge_period_is_quarantined_with_its_reason(small_world, tmp_path):
    from datetime import UTC, datetime

    src = pl.read_parquet(_world_file(small_world))
    sentinel = datetime(9999, 12, 31, tzinfo=UTC)  # some exports' "no end"
    out = tmp_path / "open-ended.parquet"
    src.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(sentinel).cast(src.schema["ChargePeriodEnd"]))
                     .otherwise(pl.col("ChargePeriodEnd")).alias("ChargePeriodEnd")).write_parquet(out)
    report = check_file(out, BILLING_FOCUS)
    assert report.loads and report.rows - report.accepted == _malformed_in(small_world, _world_file(small_world)) + 1
    res = CliRunner().invoke(main, ["focus", "check", str(out)])
    assert "ChargePeriodEnd: more than 366 days after ChargePeriodStart" in res.output
