"""Ingestion: contracts, quarantine against truth, idempotency, bad files, DST partitions."""

from __future__ import annotations

import functools
import json
import re
import shutil
from datetime import date

import polars as pl
import pytest

from ops_platform.contracts import ge_suite
from ops_platform.contracts.definitions import CONTRACTS, PARTITIONED_TABLES, STATIC_TABLES
from ops_platform.ingest import pipeline
from ops_platform.ingest.landing import LandingZoneReader
from ops_platform.ingest.partitioning import EARLY, LATE, PartitionSpace
from ops_platform.ingest.pipeline import ingest_partition
from ops_platform.timezones import partition_bounds
from ops_platform.warehouse import Warehouse
from ops_platform.world import load_manifest

from .conftest import KEYS, SPACE


@pytest.fixture(scope="module")
def ingested(small_world):
    reader = LandingZoneReader(small_world / "landing")
    out = {}
    for table, contract in CONTRACTS.items():
        keys = [None] if table in STATIC_TABLES else KEYS
        out[table] = [ingest_partition(contract, reader, SPACE, k) for k in keys]
    return out


def test_quarantined_ids_equal_truth_malformed_ids(ingested, small_world):
    truth = pl.read_parquet(small_world / "truth" / "malformed_records.parquet")
    q = pl.concat([r.quarantine for rs in ingested.values() for r in rs])
    assert q.height == truth.height
    assert set(zip(q["source_table"], q["record_id"], strict=True)) == set(
        zip(truth["source_table"], truth["record_id"], strict=True))
    # Every quarantine row names its file, row and a reason.
    assert q["file"].null_count() == 0 and q["row_number"].null_count() == 0
    assert (q["reason"].str.len_chars() > 0).all()
    by_id = dict(zip(q["record_id"], q["reason"], strict=True))
    for rid, kind in zip(truth["record_id"], truth["reason"], strict=True):
        field = {"missing_subject": "subject", "negative_quantity": "quantity", "bad_time": "time",
                 "unknown_meter": "meter", "bad_specversion": "specversion", "null_currency": "BillingCurrency",
                 "negative_cost": "BilledCost", "inverted_period": "ChargePeriodEnd", "bad_tags_json": "Tags",
                 "unknown_charge_category": "ChargeCategory"}[kind]
        assert by_id[rid].startswith(field), (rid, kind, by_id[rid])


def test_every_landing_row_is_accounted_for_exactly_once(ingested, small_world):
    rows = load_manifest(small_world)["rows"]
    for table in CONTRACTS:
        got = sum(r.accepted.height + r.quarantine.height + r.duplicates_removed for r in ingested[table])
        assert got == rows[table], table


def test_usage_events_are_unique_on_source_and_id(ingested):
    acc = pl.concat([r.accepted for r in ingested["usage_events"]])
    assert acc.select(pl.struct("source", "id").is_unique().all()).item()
    assert sum(r.duplicates_removed for r in ingested["usage_events"]) > 0


def test_contracts_pass_on_clean_partitions(ingested):
    for table in PARTITIONED_TABLES:
        for r in ingested[table]:
            assert r.contract_passed, (table, r.partition_key, r.schema_errors)


def test_rows_validated_in_batches_come_out_as_in_one(monkeypatch, small_world):
    """Great Expectations sees a large file in batches, so its pandas copy stays bounded: the
    rows accepted and quarantined, their reasons, and each expectation's count and verdict are
    those of one batch."""
    reader = LandingZoneReader(small_world / "landing")
    for table in ("billing_focus", "usage_events"):
        whole = ingest_partition(CONTRACTS[table], reader)
        batch_rows = whole.rows_read // 6 + 1  # about six batches, the last one short
        monkeypatch.setattr(pipeline, "validate_rows", functools.partial(ge_suite.validate_rows, batch_rows=batch_rows))
        batched = ingest_partition(CONTRACTS[table], reader)
        monkeypatch.undo()
        assert whole.quarantine.height >= 2, table
        assert [e.unexpected_count for e in whole.row_expectations if not e.success], table  # some fail
        assert batched.row_expectations == whole.row_expectations, table
        assert batched.accepted.equals(whole.accepted), table
        assert batched.quarantine.sort("file", "row_number").equals(whole.quarantine.sort("file", "row_number"))


def test_a_day_without_rows_breaks_a_continuous_source_contract(tmp_path, small_world):
    """A day whose counters never landed fails the contract, saying why, where an empty
    table would have passed; a day without ramp steps (events that come and go) passes."""
    world = _copy_world(small_world, tmp_path)
    for table in ("request_counters", "ramp_steps"):  # the local day spans two UTC file dates
        for day in ("dt=2026-03-09", "dt=2026-03-10"):
            shutil.rmtree(world / "landing" / table / day)
    reader = LandingZoneReader(world / "landing")
    res = ingest_partition(CONTRACTS["request_counters"], reader, SPACE, "2026-03-09")
    assert res.files_read == 0 and res.accepted.height == 0
    assert not res.contract_passed
    assert [e.reason for e in res.table_expectations if not e.success] == [
        "no rows accepted: request_counters reports every day, and this day has none "
        "(no file landed, or every row was quarantined)"]
    assert ingest_partition(CONTRACTS["request_counters"], reader, SPACE, "2026-03-08").contract_passed
    steps = ingest_partition(CONTRACTS["ramp_steps"], reader, SPACE, "2026-03-09")
    assert steps.accepted.height == 0 and steps.contract_passed
    # Ingested whole (no partition), an empty source is no missing day.
    assert ingest_partition(CONTRACTS["request_counters"], LandingZoneReader(tmp_path / "none")).contract_passed


def test_rematerializing_a_partition_is_idempotent(tmp_path, small_world):
    reader = LandingZoneReader(small_world / "landing")
    wh = Warehouse(tmp_path / "wh.duckdb")
    key = "2026-03-08"
    for table in ("usage_events", "billing_focus", "request_counters"):
        for _ in range(2):
            res = ingest_partition(CONTRACTS[table], reader, SPACE, key)
            wh.replace_partition(table, key, res.accepted, res.quarantine)
        other = ingest_partition(CONTRACTS[table], reader, SPACE, "2026-03-09")
        wh.replace_partition(table, "2026-03-09", other.accepted, other.quarantine)
        stored = wh.query(f"SELECT * FROM raw.{table} WHERE partition_key = ? ORDER BY ALL", [key])
        assert stored.height == res.accepted.height
        expected = res.accepted.sort(res.accepted.columns)
        assert stored.select(expected.columns).sort(expected.columns).equals(expected)
        q = wh.query("SELECT count(*) AS n FROM raw.quarantine WHERE source_table = ? AND partition_key = ?",
                     [table, key])
        assert q["n"][0] == res.quarantine.height


def _copy_world(small_world, tmp_path):
    dst = tmp_path / "world"
    shutil.copytree(small_world, dst)
    return dst


def test_file_missing_a_field_fails_the_contract_naming_file_and_field(tmp_path, small_world):
    world = _copy_world(small_world, tmp_path)
    target = world / "landing" / "usage_events" / "dt=2026-03-09" / "events-20260309.parquet"
    pl.read_parquet(target).drop("subject").write_parquet(target)
    reader = LandingZoneReader(world / "landing")
    res = ingest_partition(CONTRACTS["usage_events"], reader, SPACE, "2026-03-09")
    assert not res.contract_passed
    rel = str(target.relative_to(world / "landing"))
    assert any(rel in e and "'subject'" in e for e in res.schema_errors), res.schema_errors
    # No silent drop: every row of that file in this partition is quarantined with the reason.
    from_file = res.quarantine.filter(pl.col("file") == rel)
    assert from_file.height > 0
    assert from_file["reason"].str.contains("missing column 'subject'").all()


def test_unreadable_file_is_reported_not_skipped(tmp_path, small_world):
    world = _copy_world(small_world, tmp_path)
    target = world / "landing" / "billing_focus" / "dt=2026-03-07" / "focus-daily.parquet"
    target.write_bytes(b"PAR1 this is not parquet")
    res = ingest_partition(CONTRACTS["billing_focus"], LandingZoneReader(world / "landing"), SPACE, "2026-03-07")
    assert not res.contract_passed
    assert any("billing_focus/dt=2026-03-07/focus-daily.parquet" in e for e in res.schema_errors)
    assert res.quarantine.filter(pl.col("row_number").is_null()).height == 1


def test_a_file_outside_a_day_folder_is_reported_not_skipped(tmp_path, small_world):
    # A file dropped beside the day folders, or in a folder whose name is no day (2026-3-16,
    # 2026-02-30), belongs to no partition: each partition's load says so, in its quarantine.
    world = _copy_world(small_world, tmp_path)
    base = world / "landing" / "billing_focus"
    day_file = base / "dt=2026-03-07" / "focus-daily.parquet"
    shutil.copy(day_file, base / "march.parquet")
    for name in ("dt=2026-3-16", "dt=2026-02-30"):
        (base / name).mkdir()
        shutil.copy(day_file, base / name / "focus-daily.parquet")
    (base / ".DS_Store").write_text("")  # a hidden file is no data
    reader = LandingZoneReader(world / "landing")
    res = ingest_partition(CONTRACTS["billing_focus"], reader, SPACE, "2026-03-07")
    unplaced = res.quarantine.filter(pl.col("row_number").is_null())["reason"].to_list()
    assert sorted(r.split(":")[0] for r in unplaced) == [
        "billing_focus/dt=2026-02-30", "billing_focus/dt=2026-3-16", "billing_focus/march.parquet"], unplaced
    assert all("not in a dt=YYYY-MM-DD folder" in r for r in unplaced) and not res.contract_passed
    assert res.accepted.height > 0  # the day's own file still loads


def test_json_lines_and_gzip_are_read_and_unknown_files_reported(tmp_path, small_world):
    import gzip

    world = _copy_world(small_world, tmp_path)
    folder = sorted((world / "landing" / "usage_events").glob("dt=*"))[1]
    files = sorted(folder.glob("*.parquet"))
    assert files
    contract, reader = CONTRACTS["usage_events"], LandingZoneReader(world / "landing")
    before = ingest_partition(contract, reader).accepted.drop("_source_file").sort("source", "id")
    # The same events as gzipped CloudEvents JSON lines, beside a writer's marker and a stray file.
    for parquet in files:
        (folder / f"{parquet.stem}.jsonl.gz").write_bytes(gzip.compress(pl.read_parquet(parquet).write_ndjson().encode()))
        parquet.unlink()
    (folder / "_SUCCESS").write_text("")
    (folder / "notes.xlsx").write_bytes(b"PK not a sheet")
    (folder / "nested").mkdir()
    after = ingest_partition(contract, reader)
    assert after.accepted.drop("_source_file").sort("source", "id").equals(before)
    assert any(f"usage_events/{folder.name}/notes.xlsx: unreadable file" in e for e in after.schema_errors)
    assert not any("_SUCCESS" in e for e in after.schema_errors)
    assert any("nested: a folder, not a file" in e for e in after.schema_errors)


def test_json_lines_types_come_from_every_line(tmp_path):
    from ops_platform.ingest.landing import read_any

    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps({"id": f"e{i}", "data": {"quantity": 3}}) for i in range(150)]
                               + [json.dumps({"id": "e150", "data": {"quantity": 2.5}})]))
    frame, rejected = read_any(path)
    assert frame.height == 151 and not rejected and frame["data"].struct.field("quantity")[-1] == 2.5


def test_json_lines_with_a_bom_or_no_line_read_and_a_broken_line_is_named(tmp_path):
    from ops_platform.ingest.landing import read_any

    lines = [json.dumps({"id": f"e{i}", "data": {"quantity": 3}}) for i in range(3)]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())  # as the CSV reader takes one
    assert read_any(bom)[0]["id"].to_list() == ["e0", "e1", "e2"]
    quiet = tmp_path / "quiet.jsonl"
    quiet.write_bytes(b"")  # an hour without events: no rows, not an unreadable file
    assert read_any(quiet)[0].height == 0
    # No line reads: not a JSON-lines file at all, refused whole naming the first line.
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("id,quantity\ne0,3\n")
    with pytest.raises(ValueError, match=r"garbage.jsonl: line 1 is not JSON"):
        read_any(garbage)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([*lines, json.dumps({"id": "e9", "data": {"quantity": {"n": 3}}})]))
    with pytest.raises(ValueError, match=r"line 4: 'data.quantity' is an object there but a value on line 1"):
        read_any(mixed)


def test_a_broken_json_line_is_quarantined_alone_and_the_others_load(tmp_path):
    # A stream cut mid-line, and a line that is JSON but no object: each is quarantined with
    # its data row, the reason and the line as written; the events around them load (the
    # whole file was refused before: a day's usage lost for one half-written line).
    from ops_platform.ingest.check_file import _OneFile
    from ops_platform.ingest.landing import RawBatch, read_any

    def event(i: int, **changes) -> str:
        return json.dumps({"specversion": "1.0", "id": f"e{i}", "source": "//s", "time": "2026-03-09T12:00:00Z",
                           "type": "com.summit.usage.recorded.v1", "subject": "t-00001",
                           "data": {"meter": "api_calls", "quantity": 3}} | changes)

    path = tmp_path / "events.jsonl"
    cut = event(2)[:30]
    path.write_text("\n".join([event(0), event(1), cut, "", '["e3"]', event(4, subject=None), event(5)]) + "\n")
    frame, rejected = read_any(path)
    assert frame["id"].to_list() == ["e0", "e1", "e4", "e5"]
    assert [(row, text) for row, _, text in rejected] == [(2, cut), (3, '["e3"]')]
    batch = RawBatch("usage_events/dt=2026-03-09/events.jsonl", date(2026, 3, 9), frame, rejected=rejected)
    res = ingest_partition(CONTRACTS["usage_events"], _OneFile(batch))
    assert res.accepted["id"].to_list() == ["e0", "e1", "e5"] and res.rows_read == 6
    q = {r["row_number"]: r for r in res.quarantine.iter_rows(named=True)}
    assert sorted(q) == [2, 3, 4], q  # data rows, as a CSV's: blank lines are none
    # Fixed reasons, so a quarantine groups them; the row and the record say which line.
    assert q[2]["reason"] == "not a JSON line: a file cut short or a line written half" and q[2]["record"] == cut
    assert q[3]["reason"] == "a JSON line that is not an object" and q[3]["record"] == '["e3"]'
    assert q[4]["reason"] == "subject: missing value" and q[4]["record_id"] == "e4"
    assert res.contract_passed  # a row's problem, counted by the quarantine rate, not the file's schema


def test_a_nan_quantity_is_not_a_valid_float_not_a_missing_value(tmp_path):
    from ops_platform.ingest.check_file import _OneFile
    from ops_platform.ingest.landing import RawBatch

    events = pl.DataFrame({"specversion": ["1.0"] * 2, "id": ["e1", "e2"], "source": ["//s"] * 2,
                           "type": ["com.summit.usage.recorded.v1"] * 2, "time": ["2026-03-09T12:00:00Z"] * 2,
                           "subject": ["t-00001"] * 2, "meter": ["api_calls"] * 2, "quantity": [float("nan"), 2.0]})
    res = ingest_partition(CONTRACTS["usage_events"], _OneFile(RawBatch("usage_events/dt=2026-03-09/e.parquet",
                                                                        date(2026, 3, 9), events)))
    assert res.accepted["id"].to_list() == ["e2"]
    assert res.quarantine["reason"].to_list() == ["quantity: not a valid float"]


def test_wrong_type_is_quarantined_with_field_name(tmp_path, small_world):
    world = _copy_world(small_world, tmp_path)
    target = sorted((world / "landing" / "request_counters" / "dt=2026-03-09").glob("*.parquet"))[0]
    df = pl.read_parquet(target).with_columns(pl.col("requests").cast(pl.String))
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == pl.len() - 3).then(pl.lit("many")).otherwise(pl.col("requests"))
                         .alias("requests"))
    df.write_parquet(target)
    res = ingest_partition(CONTRACTS["request_counters"], LandingZoneReader(world / "landing"), SPACE, "2026-03-09")
    bad = res.quarantine.filter(pl.col("reason").str.contains("requests: not a valid int"))
    assert bad.height == 1 and bad["row_number"][0] == df.height - 3
    # The null the contract then sees is that failed cast, said once: no "missing value" too,
    # and no cross-field reason the missing count cannot support.
    assert "requests: missing value" not in bad["reason"][0]
    assert "more errors than requests" not in bad["reason"][0]


def test_a_same_content_redelivery_is_a_duplicate_and_a_different_one_a_conflict(tmp_path, small_world):
    world = _copy_world(small_world, tmp_path)
    folder = world / "landing" / "request_counters" / "dt=2026-03-09"
    target = sorted(folder.glob("*.parquet"))[0]
    df = pl.read_parquet(target)
    before = ingest_partition(CONTRACTS["request_counters"], LandingZoneReader(world / "landing"), SPACE, "2026-03-09")
    # Two rows delivered again in a second file: one unchanged, one with other counts.
    again = df.tail(2).with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.col("requests") + 7)
                                         .otherwise(pl.col("requests")).alias("requests"))
    again.write_parquet(folder / "zz-redelivered.parquet")
    res = ingest_partition(CONTRACTS["request_counters"], LandingZoneReader(world / "landing"), SPACE, "2026-03-09")
    assert res.duplicates_removed == before.duplicates_removed + 1
    assert res.accepted.height == before.accepted.height  # the first delivery of each key is kept
    conflict = res.quarantine.filter(pl.col("reason").str.starts_with("conflicting re-delivery"))
    assert conflict.height == 1 and conflict["file"][0].endswith("zz-redelivered.parquet")
    assert res.accepted.equals(before.accepted)


def test_an_event_delivered_again_with_its_time_written_another_way_is_a_duplicate(tmp_path, small_world):
    # The same instant as "...Z" and as "...+00:00" (or with ".000"): one event delivered
    # twice, not a conflict to quarantine (its parsed time is compared, not its text).
    world = _copy_world(small_world, tmp_path)
    folder = world / "landing" / "usage_events" / "dt=2026-03-09"
    events = pl.read_parquet(sorted(folder.glob("*.parquet"))[0]).head(2)
    assert events["time"].str.ends_with("Z").all()
    respelt = events.with_columns(pl.col("time").str.replace("Z$", "+00:00"))
    respelt.write_parquet(folder / "zz-redelivered.parquet")
    reader = LandingZoneReader(world / "landing")
    quarantined = [ingest_partition(CONTRACTS["usage_events"], reader, SPACE, day).quarantine
                   for day in events.select(pl.col("time").str.to_datetime(time_zone="UTC")
                                            .dt.convert_time_zone(SPACE.tz).dt.date().cast(pl.String).unique())
                   .to_series().to_list()]  # the days its events belong to
    again = pl.concat(quarantined).filter(pl.col("file").str.ends_with("zz-redelivered.parquet"))
    assert again.height == 0, again["reason"].to_list()


def test_iso_8601_timestamps_are_read_as_utc_and_other_layouts_get_a_reason():
    from datetime import UTC, datetime

    from ops_platform.ingest.landing import RawBatch
    from ops_platform.ingest.normalize import normalize_batch

    times = ["2026-03-09T07:00:02.5Z", "2026-03-09T09:00:02+02:00", "2026-03-09 07:00:02", "soon", None,
             "03/09/2026 07:00:02", "2026-03-09T12:30:02+0530"]
    frame = pl.DataFrame({"specversion": "1.0", "id": [f"e{i}" for i in range(7)], "source": "//s", "type": "t",
                          "time": times, "subject": "t-1", "datacontenttype": "application/json",
                          "data": [{"meter": "api_calls", "quantity": 1.0}] * 7})
    out, errors = normalize_batch(RawBatch("usage_events/dt=2026-03-09/x.parquet", None, frame),
                                  CONTRACTS["usage_events"])
    assert errors == []
    at = datetime(2026, 3, 9, 7, 0, 2, tzinfo=UTC)
    assert out["event_time"].to_list() == [at.replace(microsecond=500_000), at, at, None, None, None, at]
    bad = ["time: not a valid timestamp (ISO 8601 expected)"]  # a US date is ambiguous: refused, not guessed
    assert out["_reasons"].to_list() == [[], [], [], bad, [], bad, []]  # a missing time is not a cast error
    assert out["_row"].to_list() == list(range(7))


@pytest.mark.parametrize(("key", "hours"), [("2026-03-08", 23), ("2026-11-01", 25), ("2026-03-09", 24)])
def test_denver_partitions_survive_dst(key, hours):
    start, end = partition_bounds(key, "America/Denver")
    assert (end - start).total_seconds() == hours * 3600
    assert start.utcoffset().total_seconds() == 0


def test_accepting_late_rows_keeps_a_late_record_but_never_one_stamped_after_its_file():
    space = PartitionSpace(date(2026, 3, 1), date(2026, 3, 30), "America/Denver")
    ts = pl.Series(["2026-03-02T12:00:00Z", "2026-03-25T12:00:00Z"]).str.to_datetime(time_zone="UTC")
    frame = pl.DataFrame({"t": ts, "_file_date": [date(2026, 3, 12), date(2026, 3, 5)]})
    out = space.assign_event_time(frame, "t", late_days=3, accept_late=True)
    assert out["_assign_note"].to_list() == [None, EARLY]  # late: kept; twenty days early: quarantined
    assert out["partition_key"][0] == date(2026, 3, 12)


def test_late_events_beyond_the_window_are_flagged_not_dropped():
    space = PartitionSpace(date(2026, 3, 1), date(2026, 3, 10), "America/Denver")
    ts = pl.Series(["2026-03-02T12:00:00Z", "2026-03-02T12:00:00Z", "2026-02-20T12:00:00Z"]).str.to_datetime(
        time_zone="UTC")
    frame = pl.DataFrame({"t": ts, "_file_date": [date(2026, 3, 3), date(2026, 3, 9), date(2026, 3, 1)]})
    out = space.assign_event_time(frame, "t", late_days=3)
    assert out["partition_key"].to_list() == [date(2026, 3, 2), date(2026, 3, 9), date(2026, 3, 1)]
    assert out["_assign_note"].to_list()[0] is None
    assert out["_assign_note"][1] == LATE
    assert out["_assign_note"][2] is not None


def test_a_usage_event_past_its_window_is_kept_in_its_arrival_partition_and_becomes_a_correction(
        tmp_path, small_world):
    from ops_platform.finops.usage import daily_usage

    world = _copy_world(small_world, tmp_path)
    folders = sorted((world / "landing" / "usage_events").glob("dt=*"))
    first = pl.read_parquet(sorted(folders[0].glob("*.parquet"))[0]).head(1)
    # A new event of the first day that arrives in the last folder, past the three-day window.
    late = first.with_columns(pl.lit("late-event-1").alias("id"))
    late.write_parquet(folders[-1] / "late.parquet")
    arrival = date.fromisoformat(folders[-1].name[3:])
    assert (arrival - date.fromisoformat(folders[0].name[3:])).days > 3
    reader = LandingZoneReader(world / "landing")
    results = [ingest_partition(CONTRACTS["usage_events"], reader, SPACE, k) for k in KEYS]
    accepted = pl.concat([r.accepted for r in results])
    assert accepted.filter(pl.col("id") == "late-event-1").height == 1
    assert not any((r.quarantine["record_id"] == "late-event-1").any() for r in results)
    _, corrections, _ = daily_usage(accepted)
    assert corrections.filter(pl.col("arrived") == arrival).height >= 1


def test_a_contract_that_gains_an_optional_column_evolves_the_stored_table(tmp_path):
    from ops_platform.warehouse import Warehouse

    wh = Warehouse(tmp_path / "w.duckdb")
    empty_q = pl.DataFrame(schema={"source_table": pl.String, "partition_key": pl.String})
    wh.replace_partition("t", "2026-03-01", pl.DataFrame({"a": [1], "partition_key": ["2026-03-01"]}), empty_q)
    wh.replace_partition("t", "2026-03-02", pl.DataFrame({"a": [2], "b": ["new"], "partition_key": ["2026-03-02"]}),
                         empty_q)
    got = wh.query("SELECT a, b FROM raw.t ORDER BY a")
    assert got.to_dicts() == [{"a": 1, "b": None}, {"a": 2, "b": "new"}]
    # A cost column the contract widened (6 to 12 decimals) is widened, not rounded on insert.
    from decimal import Decimal

    wh.replace_partition("c", "2026-03-01", pl.DataFrame({"cost": [Decimal("1.5")], "partition_key": ["2026-03-01"]},
                                                         schema_overrides={"cost": pl.Decimal(18, 6)}), empty_q)
    wh.replace_partition("c", "2026-03-02", pl.DataFrame({"cost": [Decimal("0.0000004")], "partition_key": ["2026-03-02"]},
                                                         schema_overrides={"cost": pl.Decimal(38, 12)}), empty_q)
    assert wh.query("SELECT cost FROM raw.c ORDER BY partition_key")["cost"].to_list() == [
        Decimal("1.5"), Decimal("0.0000004")]
    from ops_platform.warehouse import _wider_decimal

    assert _wider_decimal("DECIMAL(18,6)", "DECIMAL(18,12)") == "DECIMAL(24,12)"  # keeps 12 integer digits
    assert _wider_decimal("DECIMAL(38,12)", "DECIMAL(18,6)") is None


def test_a_warehouse_written_before_a_column_rename_is_brought_up_to_date(tmp_path):
    # slo.budget_daily.budget_consumed became burn_rate, ramp.verdicts start/end became
    # ramp_start/ramp_end and its budget_consumed burn_rate: an old warehouse keeps its rows
    # under the new names, no stale column.
    wh = Warehouse(tmp_path / "w.duckdb")
    with wh.connect() as con:
        con.execute("CREATE SCHEMA slo")
        con.execute("CREATE TABLE slo.budget_daily AS SELECT 'a' AS slo, 2.5 AS budget_consumed, '2026-03-01' AS partition_key")
        con.execute("CREATE SCHEMA ramp")
        # written once after the rename: the new columns were added beside the old ones
        con.execute('CREATE TABLE ramp.verdicts AS SELECT 1 AS "start", 2 AS "end", NULL::INTEGER AS ramp_start, '
                    "NULL::INTEGER AS ramp_end, 3.5 AS budget_consumed, '2026-03-01' AS partition_key UNION ALL "
                    "SELECT NULL, NULL, 5, 6, 0.5, '2026-03-02'")
    wh.replace_partition_tables("slo", "2026-03-02", {"budget_daily": pl.DataFrame(
        {"slo": ["a"], "burn_rate": [0.5], "partition_key": ["2026-03-02"]})})
    wh.replace_partition_tables("ramp", "2026-03-03", {"verdicts": pl.DataFrame(
        {"ramp_start": [7], "ramp_end": [8], "burn_rate": [1.5], "partition_key": ["2026-03-03"]})})
    budget = wh.query("SELECT * FROM slo.budget_daily ORDER BY partition_key")
    assert budget.columns == ["slo", "burn_rate", "partition_key"]
    assert budget["burn_rate"].to_list() == [2.5, 0.5]
    verdicts = wh.query("SELECT * FROM ramp.verdicts ORDER BY partition_key")
    assert verdicts.columns == ["ramp_start", "ramp_end", "burn_rate", "partition_key"]
    assert verdicts.select("ramp_start", "ramp_end", "burn_rate").rows() == [(1, 2, 3.5), (5, 6, 0.5), (7, 8, 1.5)]


def test_money_stored_as_decimal_text_becomes_the_decimal_new_rows_bring(tmp_path):
    # finops.repairs.effective_cost was text; a warehouse written then takes today's rows
    # (DECIMAL(38, 12)) with its old rows read as decimals, not the new ones cast to text.
    from decimal import Decimal

    wh = Warehouse(tmp_path / "w.duckdb")
    with wh.connect() as con:
        con.execute("CREATE SCHEMA finops")
        con.execute("CREATE TABLE finops.repairs AS SELECT 'li-1' AS x_LineItemId, '3.809044000000' AS effective_cost, "
                    "'old' AS partition_key")
    wh.replace_partition_tables("finops", "all", {"repairs": pl.DataFrame(
        {"x_LineItemId": ["li-2"], "effective_cost": [Decimal("1.5")], "partition_key": ["all"]},
        schema_overrides={"effective_cost": pl.Decimal(38, 12)})})
    rows = wh.query("SELECT x_LineItemId, effective_cost FROM finops.repairs ORDER BY 1")
    assert rows.schema["effective_cost"] == pl.Decimal(38, 12)
    assert rows["effective_cost"].to_list() == [Decimal("3.809044"), Decimal("1.5")]


def test_a_backtest_table_with_a_corrupt_file_names_the_file(tmp_path, small_world):
    from ops_platform.ingest.landing import read_world_table

    table = tmp_path / "landing" / "request_counters"
    shutil.copytree(small_world / "landing" / "request_counters", table)
    victim = sorted(table.glob("*/*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(ValueError, match=re.escape(str(victim))):
        read_world_table(tmp_path, "request_counters")


def test_a_day_without_files_written_first_leaves_a_typed_table_for_the_days_after(tmp_path, small_world):
    # A new warehouse whose first write of a table is a day with no landing file: the table
    # gets the accepted rows' schema (times as times), so the next day's rows load and read.
    world = _copy_world(small_world, tmp_path)
    for key in KEYS[:2]:  # the first day's files, and the next day's (which may hold its late samples)
        shutil.rmtree(world / "landing" / "lag_samples" / f"dt={key}")
    reader, wh = LandingZoneReader(world / "landing"), Warehouse(tmp_path / "wh.duckdb")
    for key in (KEYS[0], KEYS[2]):
        res = ingest_partition(CONTRACTS["lag_samples"], reader, SPACE, key)
        wh.replace_partition("lag_samples", key, res.accepted, res.quarantine)
        assert (res.accepted.height == 0) == (key == KEYS[0])
    start, end = partition_bounds(KEYS[2], SPACE.tz)
    rows = wh.query("SELECT count(*) AS n FROM raw.lag_samples WHERE ts >= ? AND ts < ? AND partition_key = ?",
                    [start, end, KEYS[2]])["n"][0]
    assert rows > 0
    types = dict(wh.query("SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_schema = 'raw' AND table_name = 'lag_samples'").rows())
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE" and types["lag_seconds"] == "DOUBLE" and "_source_row" in types


def test_a_gzipped_stream_cut_short_keeps_its_lines_before_the_cut(tmp_path):
    # Review: a .jsonl.gz cut mid-stream was refused whole (EOFError), all its events lost,
    # while a plain file cut mid-line lost only that line.
    import gzip

    from ops_platform.ingest.landing import read_any

    lines = [json.dumps({"id": f"e{i}", "data": {"quantity": 3}}) for i in range(2000)]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    frame, rejected = read_any(path)
    assert 0 < frame.height < 2000 and frame["id"].to_list() == [f"e{i}" for i in range(frame.height)]
    *cut, (row, reason, _) = rejected
    assert reason.startswith("the gzip stream ends early") and row == frame.height + len(cut)
    assert all(r == "not a JSON line: a file cut short or a line written half" for _, r, _ in cut) and len(cut) <= 1
    (tmp_path / "none.jsonl.gz").write_bytes(whole[:12])
    with pytest.raises(ValueError, match="cut short before its first line"):
        read_any(tmp_path / "none.jsonl.gz")


def test_a_refused_json_lines_file_names_the_line_that_keeps_it_from_reading(tmp_path):
    # Review: with a cut line set aside, a field that is an object on one line and a value on
    # another still refuses the file, and the message named the cut line instead.
    from ops_platform.ingest.landing import read_any

    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([json.dumps({"id": "e0", "data": {"quantity": 3}}),
                               json.dumps({"id": "e1", "data": {"quantity": {"n": 3}}}), '{"id": "e2", "da']))
    with pytest.raises(ValueError, match=r"line 2: 'data.quantity' is an object there but a value on line 1"):
        read_any(path)


def test_a_read_of_the_whole_landing_zone_reports_its_unreadable_files_and_lines(tmp_path):
    # Review: with a partition space but no partition (as FinOps reads usage from landing),
    # no partition owned an unreadable file or a set-aside line: both vanished unreported.
    from ops_platform.ingest.landing import LandingZoneReader
    from ops_platform.ingest.partitioning import PartitionSpace

    event = {"specversion": "1.0", "id": "e0", "source": "//s", "time": "2026-03-09T12:00:00Z",
             "type": "com.summit.usage.recorded.v1", "subject": "t-00001", "data": {"meter": "api_calls", "quantity": 3}}
    folder = tmp_path / "landing" / "usage_events" / "dt=2026-03-09"
    folder.mkdir(parents=True)
    (folder / "e.jsonl").write_text(json.dumps(event) + "\n" + json.dumps(event | {"id": "e1"})[:40] + "\n")
    (folder / "broken.jsonl").write_text("not json at all\n")
    space = PartitionSpace(date(2026, 3, 8), date(2026, 3, 12), "UTC")
    res = ingest_partition(CONTRACTS["usage_events"], LandingZoneReader(tmp_path / "landing"), space)
    assert res.accepted["id"].to_list() == ["e0"] and res.rows_read == 2
    assert sorted(res.quarantine["file"].to_list()) == ["usage_events/dt=2026-03-09/broken.jsonl",
                                                        "usage_events/dt=2026-03-09/e.jsonl"]
    assert any("broken.jsonl: unreadable file" in e for e in res.schema_errors)


def test_a_cut_gzipped_stream_loads_what_a_whole_one_would(tmp_path):
    # Review: once a line was set aside, any top-level field typed differently on two lines
    # refused the file, which polars reads as text when nothing is cut.
    import gzip

    from ops_platform.ingest.landing import ROW_COLUMN, read_any

    lines = [json.dumps({"id": "e0", "subject": {"x": 1}}), json.dumps({"id": "e1", "subject": "t"}),
             json.dumps({"id": "e2", "subject": "t"})]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    (tmp_path / "whole.jsonl.gz").write_bytes(whole)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole + gzip.compress(b'{"id": "e3", "subj')[:-9])
    full, _ = read_any(tmp_path / "whole.jsonl.gz")
    cut, rejected = read_any(tmp_path / "cut.jsonl.gz")
    assert cut.drop(ROW_COLUMN).equals(full) and [r for _, r, _ in rejected][-1].startswith("the gzip stream ends")


def test_ramp_verdicts_reads_a_warehouse_no_run_has_written_since_the_rename(state):
    # `ramp verdicts` opens the warehouse read-only, so it cannot rename a column in place as a
    # writer does: it read budget_consumed_before_action and failed with a KeyError traceback.
    from click.testing import CliRunner

    from ops_platform.cli import main

    with Warehouse(state.warehouse).connect() as con:
        con.execute("CREATE SCHEMA ramp")
        con.execute("CREATE TABLE ramp.verdicts AS SELECT 'api-101' AS build_id, 'api' AS service, "
                    "TIMESTAMPTZ '2026-03-02 10:00:00+00' AS ramp_start, 'rollback' AS action, "
                    "TIMESTAMPTZ '2026-03-02 10:05:00+00' AS acted_at, 'errors: 7/128' AS reason, "
                    "true AS trusted_baseline, 'canary' AS cohorts_reached, 10.9375::DOUBLE AS budget_consumed, "
                    "10.9375::DOUBLE AS budget_consumed_before_action, '2026-03-02' AS partition_key")
    res = CliRunner().invoke(main, ["ramp", "verdicts", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ramps"][0]["burn_rate_before_action"] == 10.9375
