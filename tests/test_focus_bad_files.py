"""Bad FOCUS files a user may bring: refused or quarantined with a reason, never a traceback,
and `focus check` says exactly what ingestion would do with them."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import polars as pl
import pytest
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.contracts.definitions import BILLING_FOCUS
from ops_platform.finops.attribution import cost_lines
from ops_platform.ingest.check_file import check_file
from ops_platform.ingest.landing import LandingZoneReader
from ops_platform.ingest.pipeline import ingest_partition

HEADER = ("BilledCost,BillingAccountId,BillingAccountName,BillingCurrency,BillingPeriodEnd,BillingPeriodStart,"
          "ChargeCategory,ChargeClass,ChargeDescription,ChargePeriodEnd,ChargePeriodStart,ContractedCost,"
          "EffectiveCost,InvoiceIssuerName,ListCost,PricingQuantity,PricingUnit,ProviderName,PublisherName,"
          "ServiceCategory,ServiceName,Tags,x_LineItemId")
ROW = ("1.50,ba-1,Acme,USD,2026-04-01T00:00:00Z,2026-03-01T00:00:00Z,Usage,,vm,2026-03-03T00:00:00Z,"
       "2026-03-02T00:00:00Z,1.50,1.50,AWS,2.00,24,Hours,AWS,AWS,Compute,EC2,,L1")


def _row(**changes: str) -> str:
    values = dict(zip(HEADER.split(","), ROW.split(","), strict=True)) | changes
    return ",".join(values.values())


def _csv(tmp_path, *rows: str, name: str = "export.csv", header: str = HEADER):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _landing(tmp_path, *files):
    """A landing zone with ``files`` in one billing day's folder."""
    day = tmp_path / "landing" / "billing_focus" / "dt=2026-03-02"
    day.mkdir(parents=True)
    for f in files:
        f.rename(day / f.name)
    return LandingZoneReader(tmp_path / "landing")


def test_the_reference_row_loads(tmp_path):
    report = check_file(_csv(tmp_path, ROW), BILLING_FOCUS)
    assert report.loads and (report.rows, report.accepted, report.quarantined_rows) == (1, 1, 0)


# 1. A file that is not FOCUS (or not comma-separated) is refused naming what it lacks.

def test_a_non_focus_csv_is_refused_naming_the_missing_columns(tmp_path):
    path = _csv(tmp_path, "bob,3", header="name,age", name="people.csv")
    report = check_file(path, BILLING_FOCUS)
    assert not report.loads and report.accepted == 0 and report.quarantined_rows == report.rows == 1
    [error] = report.schema_errors
    assert "people.csv" in error and "missing columns" in error
    assert all(repr(c) in error for c in ("BilledCost", "EffectiveCost", "ServiceName"))
    res = CliRunner().invoke(main, ["focus", "check", str(path)])
    assert res.exit_code == 1 and "Traceback" not in res.output and "'BilledCost'" in res.output


# As a decimal-comma locale exports it: commas inside the amounts and the Tags JSON.
SEMI_ROW = ROW.replace(",", ";").replace("1.50", "1,50").replace(";EC2;;", ';EC2;"{""team"": ""a"", ""env"": ""b""}";')


@pytest.mark.parametrize("row", [ROW.replace(",", ";"), SEMI_ROW], ids=["no-commas", "decimal-commas-and-tags"])
def test_a_semicolon_separated_csv_is_refused_with_a_hint(tmp_path, row):
    path = _csv(tmp_path, row, header=HEADER.replace(",", ";"), name="semi.csv")
    report = check_file(path, BILLING_FOCUS)
    assert not report.loads
    [error] = report.schema_errors
    assert "semi.csv" in error and "semicolon-separated" in error, error
    res = CliRunner().invoke(main, ["focus", "check", str(path), "--json"])
    assert res.exit_code == 1 and json.loads(res.output)["loads"] is False
    gz = tmp_path / "semi.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert any("semicolon-separated" in e for e in check_file(gz, BILLING_FOCUS).schema_errors)


@pytest.mark.parametrize(("content", "said"), [
    ((HEADER + "\n" + ROW + "\n").replace(",", "\t").encode(), "tab-separated"),
    ((HEADER + "\n" + _row(ChargeDescription="caf\u00e9") + "\n").encode("latin-1"), "not UTF-8"),
    ((HEADER + "\n" + ROW + "\n").encode("utf-16"), "UTF-16"),
    # A binary file under a text name: said what it is (a Parquet file read as text was
    # "tab-separated"), with the name to give it.
    (b"PAR1" + bytes(range(256)) + b"PAR1", "a Parquet file named .csv: name it export.parquet"),
    (gzip.compress((HEADER + "\n" + ROW + "\n").encode()), "a gzip file named .csv: name it export.csv.gz"),
], ids=["tabs", "latin-1", "utf-16", "parquet", "gzip"])
def test_a_csv_in_another_shape_or_encoding_is_refused_saying_which(tmp_path, content, said):
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    [error] = check_file(path, BILLING_FOCUS).schema_errors
    assert error.startswith(f"{path}: ") and said in error, error  # the path, as every unreadable file is named


def test_excels_separator_line_is_skipped_and_another_separator_is_refused(tmp_path):
    # Excel writes "sep=," above the header for other locales to open the file right.
    path = tmp_path / "excel.csv"
    path.write_text("\ufeffsep=,\n" + HEADER + "\n" + ROW + "\n")
    report = check_file(path, BILLING_FOCUS)
    assert (report.rows, report.accepted) == (1, 1), report
    path.write_text("sep=;\n" + HEADER.replace(",", ";") + "\n")
    result = CliRunner().invoke(main, ["focus", "check", str(path)])
    assert result.exit_code == 1 and "'sep=;' says the file is not comma-separated" in result.output, result.output


def test_a_focus_0_5_file_is_told_the_columns_1_0_renamed(tmp_path):
    old = HEADER.replace("ChargeCategory", "ChargeType").replace("EffectiveCost", "AmortizedCost")
    report = check_file(_csv(tmp_path, ROW, header=old), BILLING_FOCUS)
    assert not report.loads
    assert "'ChargeType' is now 'ChargeCategory'; 'AmortizedCost' is now 'EffectiveCost'" in " ".join(report.schema_errors), report


def test_a_quoted_empty_field_is_no_value(tmp_path):
    # Python's csv.QUOTE_ALL and spreadsheets write an empty field as "": null, as unquoted.
    quoted = ",".join(f'"{v}"' for v in ROW.split(","))
    report = check_file(_csv(tmp_path, quoted), BILLING_FOCUS)
    assert (report.rows, report.accepted, report.quarantined_rows) == (1, 1, 0), report


def test_an_empty_text_in_a_parquet_file_is_no_value_as_in_a_csv(tmp_path):
    # Parquet converted from CSV (Spark, Snowflake unloads) keeps "" where the export had
    # nothing: ChargeClass "" was "must be null or Correction" and refused the whole file.
    frame = pl.read_csv(_csv(tmp_path, ROW, _row(x_LineItemId="L2")), infer_schema=False)
    frame.with_columns(pl.lit("").alias("ChargeClass")).write_parquet(tmp_path / "converted.parquet")
    report = check_file(tmp_path / "converted.parquet", BILLING_FOCUS)
    assert (report.rows, report.accepted, report.quarantined_rows) == (2, 2, 0), report


def test_tags_as_key_value_structs_with_more_fields_read_as_a_json_object(tmp_path):
    # Google's FOCUS view writes Tags as a list of {key, value, x_type, x_inherited,
    # x_namespace}: every row was refused as "not a JSON object". A key given twice (a
    # resource label and a project label) stays refused, not silently the last one.
    def tag(key, value):
        return {"key": key, "value": value, "x_type": "label", "x_inherited": False, "x_namespace": None}

    frame = pl.read_csv(_csv(tmp_path, ROW, _row(x_LineItemId="L2"), _row(x_LineItemId="L3")), infer_schema=False)
    tags = [[tag("tenant", "t-1"), tag("service", "api")], [], [tag("service", "api"), tag("service", "db")]]
    frame.with_columns(pl.Series("Tags", tags)).write_parquet(tmp_path / "gcp.parquet")
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, tmp_path / "gcp.parquet"))
    assert dict(zip(res.accepted["x_LineItemId"], res.accepted["Tags"].map_elements(json.loads, pl.Object),
                    strict=True)) == {"L1": {"tenant": "t-1", "service": "api"}, "L2": {}}
    assert res.quarantine["reason"].to_list() == ["Tags: not a JSON object of scalar values with unique keys"]


def test_ingestion_quarantines_a_non_focus_file_and_keeps_the_good_one(tmp_path):
    good = _csv(tmp_path, ROW, name="good.csv")
    people = _csv(tmp_path, "bob,3", header="name,age", name="people.csv")
    semi = _csv(tmp_path, SEMI_ROW, header=HEADER.replace(",", ";"), name="semi.csv")
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, good, people, semi))
    assert res.accepted["x_LineItemId"].to_list() == ["L1"]
    assert not res.contract_passed
    by_file = dict(zip(res.quarantine["file"].to_list(), res.quarantine["reason"].to_list(), strict=True))
    people_reason = by_file["billing_focus/dt=2026-03-02/people.csv"]
    # The file's reason, said once: not the missing values and broken rules that follow from it.
    assert people_reason.startswith("file schema:") and "'BilledCost'" in people_reason
    assert "missing value" not in people_reason
    assert "semicolon-separated" in by_file["billing_focus/dt=2026-03-02/semi.csv"]


# 2. Timestamps: ISO 8601 as providers export it; anything else refused, never guessed.

@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-02T00:00:00Z", datetime(2026, 3, 2, tzinfo=UTC)),
    ("2026-03-02T00:00:00.250Z", datetime(2026, 3, 2, 0, 0, 0, 250_000, tzinfo=UTC)),
    ("2026-03-01T17:00:00-07:00", datetime(2026, 3, 2, tzinfo=UTC)),
    ("2026-03-02T05:30:00+0530", datetime(2026, 3, 2, tzinfo=UTC)),
    ("2026-03-02T00:00:00", datetime(2026, 3, 2, tzinfo=UTC)),  # naive: UTC
    ("2026-03-02 00:00", datetime(2026, 3, 2, tzinfo=UTC)),
    ("2026-03-02", datetime(2026, 3, 2, tzinfo=UTC)),  # a date: its midnight, UTC
    ("2026-03-02 00:00:00 UTC", datetime(2026, 3, 2, tzinfo=UTC)),  # as BigQuery billing exports write it
    ("2026-03-02 00:00 utc", datetime(2026, 3, 2, tzinfo=UTC)),
    ('"2026-03-02T00:00:00,5Z"', datetime(2026, 3, 2, 0, 0, 0, 500_000, tzinfo=UTC)),  # a comma: quoted in CSV
])
def test_iso_8601_charge_periods_are_read(tmp_path, text, expected):
    path = _csv(tmp_path, _row(ChargePeriodStart=text))
    report = check_file(path, BILLING_FOCUS)
    assert report.accepted == 1, report.quarantined
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, path))
    assert res.accepted["ChargePeriodStart"].to_list() == [expected]


@pytest.mark.parametrize("text", ["03/02/2026", "02.03.2026", "2026/03/02", "2026-02-30T00:00:00Z", "next week"])
def test_non_iso_charge_periods_are_quarantined_not_guessed(tmp_path, text):
    path = _csv(tmp_path, _row(ChargePeriodStart=text, ChargePeriodEnd="03/03/2026" if "/" in text else "2026-03-03"))
    report = check_file(path, BILLING_FOCUS)
    assert report.accepted == 0 and report.quarantined_rows == 1
    [reason] = report.quarantined
    assert "ChargePeriodStart: not a valid timestamp (ISO 8601 expected)" in reason
    assert "ChargePeriodStart: missing value" not in reason
    assert "not after ChargePeriodStart" not in reason  # two unread times compare to nothing
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, path))
    assert res.accepted.height == 0 and res.quarantine["reason"].to_list() == [reason]


# 3. A Usage charge whose billed and effective costs disagree in sign is a sign slip; one
# negative in both is a refund within the period, which FOCUS 1.2 allows.

def test_a_usage_cost_negative_in_one_column_only_is_quarantined_as_a_sign_slip(tmp_path):
    refund = {"EffectiveCost": "-1.50", "BilledCost": "-1.50", "ContractedCost": "-1.50"}
    slip = "BilledCost: negative on a Usage charge that is no refund (its EffectiveCost is not negative or its " \
           "ListCost is positive: a sign slip)"
    path = _csv(tmp_path, _row(EffectiveCost="-1.50"), _row(**refund, ListCost="-1.80", x_LineItemId="L2"),
                _row(EffectiveCost="-1.50", ChargeCategory="Credit", x_LineItemId="L3"),
                _row(BilledCost="-1.50", x_LineItemId="L4"), _row(**refund, ListCost="1.80", x_LineItemId="L5"))
    report = check_file(path, BILLING_FOCUS)
    assert report.accepted == 2 and report.quarantined == {  # L2 (a refund) and L3 (a credit) load
        "EffectiveCost: negative on a Usage charge whose BilledCost is not (a sign slip)": 1,
        slip: 2}  # L4, and L5: negative at a positive list price
    only_slips = _csv(tmp_path, _row(BilledCost="-1.50"), name="slips.csv")
    assert "loads, but accepts no row" in CliRunner().invoke(main, ["focus", "check", str(only_slips)]).output


def test_a_negative_usage_correction_is_a_refund_and_loads(tmp_path):
    # FOCUS ChargeClass Correction: a refund of an earlier charge is negative by nature; it
    # was quarantined as a sign slip and lost from the books.
    refund = _row(BilledCost="-0.50", EffectiveCost="-0.50", ContractedCost="-0.50", ListCost="-0.60",
                  ChargeClass="Correction", x_LineItemId="L2")
    slip = _row(BilledCost="-0.50", x_LineItemId="L3")
    report = check_file(_csv(tmp_path, ROW, refund, slip), BILLING_FOCUS)
    assert (report.rows, report.accepted) == (3, 2), report
    assert report.quarantined == {"BilledCost: negative on a Usage charge that is no refund (its EffectiveCost is not "
                                  "negative or its ListCost is positive: a sign slip)": 1}


# 4. A number too large for the contract's decimal: quarantined, in Parquet as in CSV.

@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_out_of_range_cost_is_quarantined_not_a_crash(tmp_path, fmt):
    frame = pl.read_csv(_csv(tmp_path, ROW, _row(x_LineItemId="L2"), _row(x_LineItemId="L3"), name="src.csv"),
                        infer_schema=False)
    # 10^13 fits the contract's decimal but not attribution's 64-bit micro-units: refused too.
    frame = frame.with_columns(pl.Series("EffectiveCost", [1.5, 1e30, float("nan")]),
                               pl.col("BilledCost", "ListCost", "ContractedCost").cast(pl.Float64))
    frame = pl.concat([frame, frame.head(1).with_columns(pl.lit("L4").alias("x_LineItemId"),
                                                         pl.lit(1e13).alias("EffectiveCost"))])
    path = tmp_path / f"export.{fmt}"
    frame.write_parquet(path) if fmt == "parquet" else frame.write_csv(path)
    report = check_file(path, BILLING_FOCUS)
    assert report.loads and report.accepted == 1
    assert report.quarantined == {"EffectiveCost: not a valid decimal (out of range)": 1,
                                  "EffectiveCost: not a valid decimal": 1,
                                  "EffectiveCost: 1e+12 or more in absolute value, beyond what attribution sums": 1}
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, path))
    assert res.accepted["x_LineItemId"].to_list() == ["L1"] and res.quarantine.height == 3


# 5. focus check says what ingestion would do: same rows accepted, quarantined, and why.

def test_check_file_reports_what_ingestion_does(tmp_path):
    rows = [ROW,
            _row(EffectiveCost="2.50"),  # L1 again with other content: a conflicting re-delivery
            ROW,  # L1 again, unchanged: a duplicate
            _row(BilledCost="abc", x_LineItemId="L2"),  # one reason, not "missing value" too
            _row(x_LineItemId="L3")]
    path = _csv(tmp_path, *rows)
    report = check_file(path, BILLING_FOCUS)
    assert report.quarantined == {"conflicting re-delivery of x_LineItemId": 1, "BilledCost: not a valid decimal": 1}
    assert (report.rows, report.accepted, report.quarantined_rows, report.duplicates_removed) == (5, 2, 2, 1)
    assert report.rows == report.accepted + report.quarantined_rows + report.duplicates_removed
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, path))
    assert res.accepted.height == report.accepted and res.quarantine_by_reason() == report.quarantined
    assert res.duplicates_removed == report.duplicates_removed
    out = json.loads(CliRunner().invoke(main, ["focus", "check", str(tmp_path / "landing" / "billing_focus" /
                                                                    "dt=2026-03-02" / "export.csv"), "--json"]).output)
    assert out["quarantined_rows"] == 2 and out["duplicates_removed"] == 1


def test_an_empty_non_focus_file_is_still_refused(tmp_path):
    report = check_file(_csv(tmp_path, header="name,age"), BILLING_FOCUS)
    assert not report.loads and report.rows == 0


# 6. A bill in two currencies loads, with a warning: attribution will refuse it.

def test_a_bill_mixing_currencies_gets_a_warning(tmp_path):
    path = _csv(tmp_path, ROW, _row(BillingCurrency="EUR", x_LineItemId="L2"))
    report = check_file(path, BILLING_FOCUS)
    assert report.loads and report.accepted == 2
    [warning] = report.warnings
    assert "EUR, USD" in warning and "attribution" in warning
    out = json.loads(CliRunner().invoke(main, ["focus", "check", str(path), "--json"]).output)
    assert out["warnings"] == [warning]
    text = CliRunner().invoke(main, ["focus", "check", str(path)])
    assert text.exit_code == 0 and f"warning: {warning}" in text.output
    assert "2 rows, 2 accepted, 0 quarantined" in text.output
    assert check_file(_csv(tmp_path, ROW, name="one.csv"), BILLING_FOCUS).warnings == []


def test_tags_under_another_spelling_are_warned_of(tmp_path):
    # AWS writes user-defined tags as "user:tenant"; attribution reads "tenant" exactly, so
    # without a warning every dollar of the file would go to the unallocated line.
    tagged = _row(Tags='"{""user:tenant"": ""t-1"", ""Service"": ""api""}"')
    report = check_file(_csv(tmp_path, tagged), BILLING_FOCUS)
    assert report.loads and report.accepted == 1
    [warning] = report.warnings
    assert "'Service', 'user:tenant'" in warning and "unallocated" in warning
    mixed = check_file(_csv(tmp_path, tagged, _row(Tags='"{""tenant"": ""t-2""}"', x_LineItemId="L2"),
                            name="mixed.csv"), BILLING_FOCUS)
    assert len(mixed.warnings) == 1 and "'user:tenant'" in mixed.warnings[0]
    plain = check_file(_csv(tmp_path, _row(Tags='"{""tenant"": ""t-1""}"'), name="plain.csv"), BILLING_FOCUS)
    assert plain.warnings == []


def test_a_bignumeric_extra_column_does_not_make_a_parquet_file_unreadable(tmp_path):
    # BigQuery exports NUMERIC wider than 38 digits as decimal256(76, 38), which polars cannot
    # hold: the column is read as its exact text, and an x_ column of it costs nothing.
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pl.read_csv(_csv(tmp_path, ROW), infer_schema=False).to_arrow()
    rate = pa.array([decimal.Decimal("1.23456789012345678901234567890123456789")], pa.decimal256(76, 38))
    pq.write_table(table.append_column("x_ExchangeRate", rate), tmp_path / "bq.parquet")
    report = check_file(tmp_path / "bq.parquet", BILLING_FOCUS)
    assert report.loads and (report.rows, report.accepted) == (1, 1), report


def test_a_row_with_fewer_fields_than_the_header_is_refused_not_padded(tmp_path):
    # polars pads a short row with nulls: a bill cut mid-line (or a row that lost a field)
    # loaded with its tags gone, and its cost went to another tenant without a word.
    cut = ROW.rsplit(",", 2)[0]  # the row without its Tags and line id
    path = _csv(tmp_path, _row(x_LineItemId="L0"), cut)
    report = check_file(path, BILLING_FOCUS)
    assert not report.loads and "1 row(s) have fewer fields than the header's 23: data row 1 (21 fields)" in \
        str(report), report
    # A row whose last field is empty (no tags) has all its fields: it loads.
    header, row = HEADER.removesuffix(",x_LineItemId"), _row(Tags="").removesuffix(",L1")
    assert row.endswith(",") and check_file(_csv(tmp_path, row, name="untagged.csv", header=header),
                                            BILLING_FOCUS).accepted == 1
    # Rows with a field too many (a trailing comma): named, not polars' bare parser error.
    long = _csv(tmp_path, _row(x_LineItemId="L0"), _row() + ",", _row() + ",", name="long.csv")
    report = check_file(long, BILLING_FOCUS)
    assert not report.loads and "2 row(s) have more fields than the header's 23: data row 1 (24 fields), data row " \
        "2 (24 fields); a trailing separator" in str(report), report


def test_tags_written_as_json_null_are_no_tags(tmp_path):
    # FOCUS: Tags MAY be null; Spark and Athena unloads write a null map as the text null.
    frame = pl.read_csv(_csv(tmp_path, ROW), infer_schema=False).with_columns(pl.lit("null").alias("Tags"))
    frame.write_parquet(tmp_path / "unload.parquet")
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, tmp_path / "unload.parquet"))
    assert res.accepted.height == 1 and res.quarantine.height == 0
    lines = cost_lines(res.accepted)
    assert lines.select("tenant", "service", "kind").rows() == [(None, None, "serving")]


def test_tags_naming_a_key_twice_are_quarantined_as_ambiguous(tmp_path):
    # {"tenant": "a", "tenant": "b"}: Python's json keeps the last, polars' decoder (which
    # attribution uses) the first, so the cost went to a tenant the check never saw.
    twice = _row(Tags='"{""tenant"": ""t-00001"", ""tenant"": ""t-00002""}"', x_LineItemId="L2")
    report = check_file(_csv(tmp_path, ROW, twice), BILLING_FOCUS)
    assert (report.accepted, report.quarantined_rows) == (1, 1), report
    [reason] = report.quarantined
    assert "Tags: not a JSON object of scalar values with unique keys" in reason, reason


@pytest.mark.parametrize("scale", [1, 1000])  # epoch seconds, epoch milliseconds
def test_charge_periods_as_bare_numbers_are_quarantined_not_read_as_microseconds(tmp_path, scale):
    # A number has no unit: read as microseconds, a March bill landed in January 1970 and the
    # report's period stretched to 1970. Each row is quarantined, saying why.
    import pyarrow.parquet as pq

    frame = pl.read_csv(_csv(tmp_path, ROW), infer_schema=False).with_columns(
        pl.lit(int(datetime(2026, 3, 2, tzinfo=UTC).timestamp()) * scale).alias("ChargePeriodStart"),
        pl.lit(int(datetime(2026, 3, 3, tzinfo=UTC).timestamp()) * scale).alias("ChargePeriodEnd"))
    pq.write_table(frame.to_arrow(), tmp_path / "epoch.parquet")
    report = check_file(tmp_path / "epoch.parquet", BILLING_FOCUS)
    assert (report.accepted, report.quarantined_rows) == (0, 1), report
    [reason] = report.quarantined
    assert "ChargePeriodStart: not a valid timestamp (a number, whose unit is unknown" in reason
    assert "missing value" not in reason


def test_a_value_that_does_not_cast_is_kept_as_written_in_the_quarantine_record(tmp_path):
    # The analyst sees what to fix ("50,000.00"), not a null where the value was.
    bad = _row(BilledCost='"50,000.00"', ChargePeriodStart="03/02/2026", x_LineItemId="L9")
    res = ingest_partition(BILLING_FOCUS, _landing(tmp_path, _csv(tmp_path, ROW, bad)))
    [record] = [json.loads(r) for r in res.quarantine["record"].to_list()]
    assert (record["BilledCost"], record["ChargePeriodStart"], record["x_LineItemId"]) == ("50,000.00", "03/02/2026", "L9")
    assert record["EffectiveCost"] == "1.500000000000"  # a value that cast reads as cast
    assert res.accepted["x_LineItemId"].to_list() == ["L1"] and "_raw" not in res.accepted.columns


def test_a_file_none_of_whose_rows_would_load_is_refused_unless_finops_repairs_some(tmp_path):
    # Every row breaks a rule FinOps does not repair: nothing of the file would ever be
    # billed, so a check in CI must fail.
    path = _csv(tmp_path, _row(BilledCost='"1,234.56"'), _row(ChargePeriodStart="03/02/2026", x_LineItemId="L2"))
    res = CliRunner().invoke(main, ["focus", "check", str(path), "--json"])
    report = json.loads(res.output)
    assert res.exit_code == 1 and not report["loads"] and report["nothing_accepted"], res.output
    assert "FinOps repairs none" in report["schema_errors"][0]
    # A period end not after its start is repaired (start + 1 day): the file is said so, in
    # the text and in the JSON's warnings alike, and not refused.
    fixable = _csv(tmp_path, _row(ChargePeriodEnd="2026-03-02T00:00:00Z"), name="fixable.csv")
    res = CliRunner().invoke(main, ["focus", "check", str(fixable)])
    assert res.exit_code == 0 and "no row would be accepted as it is; FinOps would repair 1 of the 1" in res.output
    warnings = json.loads(CliRunner().invoke(main, ["focus", "check", str(fixable), "--json"]).output)["warnings"]
    assert any("FinOps would repair 1" in w for w in warnings), warnings
    ok = CliRunner().invoke(main, ["focus", "check", str(_csv(tmp_path, ROW, name="ok.csv"))])
    assert ok.exit_code == 0 and "no row would be accepted" not in ok.output and "warning" not in ok.output, ok.output
    header_only = CliRunner().invoke(main, ["focus", "check", str(_csv(tmp_path, name="empty.csv")), "--json"])
    assert header_only.exit_code == 0 and json.loads(header_only.output)["nothing_accepted"] is True
    assert "the file holds no row" in json.loads(header_only.output)["warnings"]
    # No currency on any row: FinOps takes the billing account's from the bill's other files,
    # so the file is not refused for what this file alone cannot repair.
    no_currency = _csv(tmp_path, _row(BillingCurrency=""), name="no_currency.csv")
    res = CliRunner().invoke(main, ["focus", "check", str(no_currency)])
    assert res.exit_code == 0 and "may repair 1 more from other files' rows" in res.output, res.output
    # A currency that is no ISO code (US$) is not the account's: no repair is promised, the
    # file is refused (it said FinOps "may repair" it, which FinOps never does).
    spelt = _csv(tmp_path, _row(BillingCurrency="US$"), name="spelt.csv")
    res = CliRunner().invoke(main, ["focus", "check", str(spelt)])
    assert res.exit_code == 1 and "may repair" not in res.output and "FinOps repairs none" in res.output, res.output


@pytest.mark.parametrize("header", [HEADER.replace(",Tags,", ",tags,"), HEADER.replace(",Tags,", ",")])
def test_a_file_without_a_tags_column_is_warned_of(tmp_path, header):
    # Tags is optional in the contract, but attribution reads tenant, service and pool from
    # it: without it (or spelt otherwise) every row's cost is left unallocated.
    row = ROW if ",tags," in header else ROW.replace(",,L1", ",L1")
    report = check_file(_csv(tmp_path, row, header=header), BILLING_FOCUS)
    assert report.loads and report.accepted == 1, report
    [warning] = report.warnings
    assert warning.startswith("Tags: the file has no Tags column") and "unallocated" in warning
    assert ("'tags' is not spelt 'Tags'" in warning) == (",tags," in header)


def test_the_check_names_the_rows_it_would_quarantine(tmp_path):
    # Counts per reason say what is wrong; the first rows of each (data row and line id) say where.
    rows = [_row(x_LineItemId=f"L{i}", **({"EffectiveCost": "-1.50"} if i in (2, 4, 5, 6) else {}))
            for i in range(1, 8)]
    path = _csv(tmp_path, *rows)
    report = check_file(path, BILLING_FOCUS)
    [(reason, n)] = report.quarantined.items()
    assert n == 4 and report.examples == {reason: [{"row_number": r, "record_id": f"L{r + 1}"} for r in (1, 3, 4)]}
    # Numbered as ingestion numbers them in raw.quarantine, so the two are read side by side.
    from ops_platform.ingest.check_file import _OneFile
    from ops_platform.ingest.landing import RawBatch, read_any
    from ops_platform.ingest.pipeline import ingest_partition

    quarantine = ingest_partition(BILLING_FOCUS, _OneFile(RawBatch(str(path), None, read_any(path)[0]))).quarantine
    assert dict(quarantine.select("record_id", "row_number").iter_rows())["L2"] == 1
    text = CliRunner().invoke(main, ["focus", "check", str(path)]).output
    assert f"4 row(s) would be quarantined: {reason}\n    first: data row 1 (L2), data row 3 (L4), data row 4 (L5)" \
        in text, text
    # Scripts get the rows as objects, not the sentence.
    assert json.loads(CliRunner().invoke(main, ["focus", "check", str(path), "--json"]).output)["examples"] == \
        {reason: [{"row_number": 1, "record_id": "L2"}, {"row_number": 3, "record_id": "L4"},
                  {"row_number": 4, "record_id": "L5"}]}


def test_headers_in_another_case_are_told_names_are_case_sensitive(tmp_path):
    path = _csv(tmp_path, ROW, header=HEADER.lower())
    [error] = check_file(path, BILLING_FOCUS).schema_errors
    assert "(21 of the 21 required)" in error and "column names are case-sensitive" in error, error
    assert "'billedcost' for 'BilledCost'" in error and "and 18 more" in error, error
    one = _csv(tmp_path, ROW, header=HEADER.replace("ServiceName", "servicename"), name="one.csv")
    [error] = check_file(one, BILLING_FOCUS).schema_errors
    assert error.endswith("missing column 'ServiceName' (column names are case-sensitive: the file has "
                          "'servicename' for 'ServiceName')"), error
    # A header written "A, B, C" (spaces after the commas): said, not just "missing columns".
    spaced = _csv(tmp_path, ROW, header=HEADER.replace(",", ", "), name="spaced.csv")
    [error] = check_file(spaced, BILLING_FOCUS).schema_errors
    assert "(20 of the 21 required) (column names are matched as written, spaces included: the file has " \
           "' BillingAccountId' for 'BillingAccountId'" in error, error


def test_charges_of_two_linked_accounts_in_two_part_files_are_two_lines(tmp_path):
    # A provider splits its export into parts; no provider writes x_LineItemId. The tax rows
    # of two linked accounts differ only in SubAccountId, a column the contract does not
    # hold: one in each part, the second was dropped as a re-delivery ($7.50 of $15 lost).
    # The same parts delivered again the next day are still recognised as a re-delivery.
    header = HEADER.removesuffix(",x_LineItemId") + ",SubAccountId"
    tax = ",".join(_row(ChargeCategory="Tax", ServiceName="Tax").split(",")[:-1])
    landing = tmp_path / "landing" / "billing_focus"
    for day in ("dt=2026-03-02", "dt=2026-03-03"):
        (landing / day).mkdir(parents=True)
        for part, account in (("part-00000.csv", "111111111111"), ("part-00001.csv", "222222222222")):
            (landing / day / part).write_text(f"{header}\n{tax},{account}\n")
    res = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert res.accepted.height == 2 and res.accepted["x_LineItemId"].n_unique() == 2
    assert res.accepted["_source_file"].str.contains("dt=2026-03-03").all() and res.duplicates_removed == 2
    assert res.quarantine.height == 0


def test_a_line_keeps_its_derived_id_when_a_later_export_adds_empty_or_pricing_columns(tmp_path):
    # A month-to-date export switched to a newer FOCUS version gains columns (empty for this
    # line), and a commitment applied since restates the line's pricing: the same line,
    # counted once as last delivered, not twice.
    header = HEADER.removesuffix(",x_LineItemId")
    row = ",".join(_row().split(",")[:-1])
    restated = ",".join(_row(EffectiveCost="1.00", BilledCost="1.00").split(",")[:-1])
    landing = tmp_path / "landing" / "billing_focus"
    (landing / "dt=2026-03-02").mkdir(parents=True)
    (landing / "dt=2026-03-02" / "focus.csv").write_text(f"{header},SubAccountId\n{row},111\n")
    (landing / "dt=2026-03-03").mkdir(parents=True)
    (landing / "dt=2026-03-03" / "focus.csv").write_text(
        f"{header},SubAccountId,AvailabilityZone,PricingCategory,CommitmentDiscountId\n{restated},111,,Committed,cd-1\n")
    res = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert res.accepted["EffectiveCost"].cast(pl.Float64).to_list() == [1.0]
    assert res.quarantine_by_reason() == {"restated in a later file date (the later delivery counts)": 1}
    # Without any of these columns a file's ids are what they were before they were read, and
    # an optional column (Tags, AllocatedTags) carried empty changes none.
    plain = ingest_partition(BILLING_FOCUS, _landing(tmp_path / "plain", _csv(tmp_path, row, header=header)))
    assert plain.accepted["x_LineItemId"].to_list() == ["row-c963f360931a6cadc5ef9de7-0"]  # as computed before
    bare = header.replace(",Tags", "") + ",AllocatedMethodId,AllocatedTags"
    empty = ingest_partition(BILLING_FOCUS, _landing(tmp_path / "empty", _csv(
        tmp_path, ",".join(row.split(",")[:-1]) + ",,", header=bare, name="empty.csv")))
    assert empty.accepted["x_LineItemId"].to_list() == plain.accepted["x_LineItemId"].to_list()


def test_a_line_whose_tags_a_later_export_back_fills_counts_once(tmp_path):
    # A month-to-date export re-delivers day 2's line with a tag activated since: the same
    # line, as last delivered, not a second $10 beside the first (the tags were part of the
    # derived id, so the back-filled line was another line, counted twice).
    header = HEADER.removesuffix(",x_LineItemId")
    day2 = ",".join(_row(Tags='"{""service"": ""api""}"').split(",")[:-1])
    day2_tagged = ",".join(_row(Tags='"{""service"": ""api"", ""tenant"": ""t-1""}"').split(",")[:-1])
    day3 = ",".join(_row(ChargePeriodStart="2026-03-03T00:00:00Z", ChargePeriodEnd="2026-03-04T00:00:00Z",
                         Tags='"{""service"": ""api""}"').split(",")[:-1])
    landing = tmp_path / "landing" / "billing_focus"
    (landing / "dt=2026-03-02").mkdir(parents=True)
    (landing / "dt=2026-03-02" / "focus.csv").write_text(f"{header}\n{day2}\n")
    (landing / "dt=2026-03-03").mkdir(parents=True)
    (landing / "dt=2026-03-03" / "focus.csv").write_text(f"{header}\n{day2_tagged}\n{day3}\n")
    res = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert res.accepted.height == 2, res.accepted
    assert set(res.accepted["Tags"].map_elements(lambda t: json.loads(t).get("tenant"), pl.String)) == {"t-1", None}
    assert res.quarantine_by_reason() == {"restated in a later file date (the later delivery counts)": 1}


def test_charges_told_apart_only_by_tags_in_two_part_files_are_two_lines(tmp_path):
    # Two tenants' shares of one resource, alike but for their tags, one in each part file
    # of a delivery: two lines, not one delivered twice; delivered again the next day with
    # the parts swapped, each is recognised as a re-delivery of its own line.
    header = HEADER.removesuffix(",x_LineItemId")
    a = ",".join(_row(Tags='"{""tenant"": ""t-a""}"').split(",")[:-1])
    b = ",".join(_row(Tags='"{""tenant"": ""t-b""}"').split(",")[:-1])
    landing = tmp_path / "landing" / "billing_focus"
    for day, parts in (("dt=2026-03-02", (a, b)), ("dt=2026-03-03", (b, a))):
        (landing / day).mkdir(parents=True)
        for n, row in enumerate(parts):
            (landing / day / f"part-{n:05d}.csv").write_text(f"{header}\n{row}\n")
    res = ingest_partition(BILLING_FOCUS, LandingZoneReader(tmp_path / "landing"))
    assert res.accepted.height == 2 and res.accepted["x_LineItemId"].n_unique() == 2, res.accepted
    assert set(res.accepted["Tags"].map_elements(lambda t: json.loads(t)["tenant"], pl.String)) == {"t-a", "t-b"}
    assert res.duplicates_removed == 2 and res.quarantine.height == 0, res.quarantine


def test_a_missing_currency_is_refused_for_being_missing_only(tmp_path):
    # Not also "not an ISO 4217 code": FinOps repairs a missing currency from the account's,
    # and the reason should say only what is wrong.
    report = check_file(_csv(tmp_path, _row(BillingCurrency=""), _row(BillingCurrency="eur")), BILLING_FOCUS)
    assert report.quarantined == {"BillingCurrency: missing value": 1, "BillingCurrency: not an ISO 4217 code": 1}, \
        report.quarantined


def test_a_file_too_large_for_the_memory_is_refused_before_it_is_read(tmp_path):
    """A file whose check would not fit in memory is refused up front with its size and
    what to do, not read until the kernel kills the process; with the memory, it loads."""
    from ops_platform.ingest.check_file import BASE_BYTES, ROW_BYTES, estimated_rows

    rows = [_row(x_LineItemId=f"L{i}") for i in range(3000)]
    plain = _csv(tmp_path, *rows)
    frame = pl.read_csv(plain, infer_schema=False)
    frame.write_parquet(tmp_path / "export.parquet")
    zipped = tmp_path / "export.csv.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert estimated_rows(tmp_path / "export.parquet") == 3000
    assert estimated_rows(zipped) == estimated_rows(plain)  # under the 1 MiB sample: the text itself
    assert abs(estimated_rows(plain) - 3000) <= 30  # the header counts as a line of the sample
    # Past the sample, a gzipped text's size comes from its trailer, exact for one whole
    # stream; a stream of several members or cut short has no such trailer: its size is the
    # ratio of its first MiB's, not a trailer's number taken for it.
    big = _csv(tmp_path, *[_row(x_LineItemId=f"L{i}") for i in range(14_000)], name="big.csv").read_bytes()
    half, whole = len(big) // 2, gzip.compress(big)
    for name, data, rows in (("whole", whole, 14_000),
                             ("members", gzip.compress(big[:half]) + gzip.compress(big[half:]), 14_000),
                             ("cut", whole[:len(whole) * 3 // 4], 14_000 * 3 // 4)):
        (tmp_path / f"{name}.csv.gz").write_bytes(data)
        assert abs(estimated_rows(tmp_path / f"{name}.csv.gz") - rows) <= rows // 5, name
    assert estimated_rows(tmp_path / "whole.csv.gz") == estimated_rows(tmp_path / "big.csv")
    for path in (plain, tmp_path / "export.parquet", zipped):
        short = check_file(path, BILLING_FOCUS, available_memory=BASE_BYTES + 1000 * ROW_BYTES)
        assert not short.loads and short.rows == 0
        (why,) = short.schema_errors
        assert "too large to check here: about 3,0" in why and "parts of at most 1,000 rows" in why
        enough = check_file(path, BILLING_FOCUS, available_memory=BASE_BYTES + 4000 * ROW_BYTES)
        assert enough.loads and enough.accepted == 3000


def test_focus_check_refuses_a_file_too_large_for_the_memory_it_may_take(tmp_path, monkeypatch):
    import ops_platform.ingest.check_file as check

    path = _csv(tmp_path, *[_row(x_LineItemId=f"L{i}") for i in range(2000)])
    monkeypatch.setattr(check, "free_memory", lambda: check.BASE_BYTES + 500 * check.ROW_BYTES)  # what is free
    out = CliRunner().invoke(main, ["focus", "check", str(path), "--json"])
    assert out.exit_code == 1
    report = json.loads(out.output)
    assert not report["loads"] and report["rows"] == 0
    assert "too large to check here" in report["schema_errors"][0]
    assert "split the export into parts, on a larger machine" in report["schema_errors"][0]
    # --max-memory, the user's word, stands for what is free: more lets the file through, less refuses it
    assert CliRunner().invoke(main, ["focus", "check", str(path), "--max-memory", "1"]).exit_code == 0
    monkeypatch.setattr(check, "free_memory", lambda: 2**40)
    out = CliRunner().invoke(main, ["focus", "check", str(path), "--max-memory", "0.3"])
    assert out.exit_code == 1 and "and 0.3 GiB is available" in out.output


def test_a_json_lines_export_with_lines_that_do_not_read_is_reported_not_a_traceback(tmp_path):
    """Lines set aside keep their text as the record, which need not be JSON: the report's
    examples (which look into a refused row's Tags) take them as they are."""
    good = dict(zip(HEADER.split(","), ROW.split(","), strict=True))
    lines = [json.dumps(good), json.dumps({**good, "x_LineItemId": "L2", "Tags": '{"tenant": ["t-1"]}'}),
             '{"BilledCost": "1", "x_Line', "[1, 2]"]
    path, zipped = tmp_path / "export.jsonl", tmp_path / "export.jsonl.gz"
    path.write_text("\n".join(lines) + "\n")
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    for file in (path, zipped):
        report = check_file(file, BILLING_FOCUS)
        assert report.loads and (report.rows, report.accepted, report.quarantined_rows) == (4, 1, 3), report
        details = [e.get("detail") for es in report.examples.values() for e in es]
        assert details.count("Tags: key 'tenant' holds an array, not a scalar") == 1 and details.count(None) == 2
