"""Ingest one partition of one landing source: read, normalise, place, validate, dedup, split."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import polars as pl

from ..contracts.ge_suite import ExpectationOutcome, validate_rows, validate_table
from ..contracts.model import POLARS_TYPES, Contract
from .landing import RawBatch, SourceReader
from .normalize import SCHEMA_PREFIX, column_where, line_ids, normalize_batch
from .partitioning import PartitionSpace

QUARANTINE_SCHEMA = {
    "source_table": pl.String, "partition_key": pl.String, "file": pl.String, "row_number": pl.Int64,
    "record_id": pl.String, "reason": pl.String, "record": pl.String,
}
LINEAGE = ["partition_key", "_origin", "_row"]


@dataclass
class IngestResult:
    table: str
    partition_key: str | None
    accepted: pl.DataFrame
    quarantine: pl.DataFrame
    files_read: int = 0
    rows_read: int = 0
    duplicates_removed: int = 0
    schema_errors: list[str] = field(default_factory=list)
    row_expectations: list[ExpectationOutcome] = field(default_factory=list)
    table_expectations: list[ExpectationOutcome] = field(default_factory=list)

    @property
    def contract_passed(self) -> bool:
        return not self.schema_errors and all(e.success for e in self.table_expectations)

    def quarantine_by_reason(self) -> dict[str, int]:
        if self.quarantine.height == 0:
            return {}
        counts = self.quarantine.group_by("reason").len().sort("reason")
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


def _read_dates(contract: Contract, space: PartitionSpace | None, key: date | None):
    if contract.partition_rule == "static" or space is None or key is None:
        return None
    if contract.partition_rule == "file_date":
        return (None if key == space.first else key), (None if key == space.last else key)
    return space.read_dates(key, contract.late_window_days)


def ingest_partition(contract: Contract, reader: SourceReader, space: PartitionSpace | None = None,
                     partition_key: str | None = None) -> IngestResult:
    key = date.fromisoformat(partition_key) if partition_key else None
    frames, schema_errors, unreadable, set_aside = [], [], [], []
    files = 0

    def file_row(batch: RawBatch, row: int | None, reason: str, record: str | None) -> dict:
        return {"source_table": contract.table, "partition_key": partition_key, "file": batch.origin,
                "row_number": row, "record_id": None, "reason": reason, "record": record}

    def placed(frame: pl.DataFrame) -> pl.DataFrame:
        """``frame``'s rows in their partitions, and only the rows of this one."""
        if contract.partition_rule == "event_time" and space is not None:
            frame = space.assign_event_time(frame, contract.time_column, contract.late_window_days,
                                            accept_late=contract.late_rows == "arrival")
        elif contract.partition_rule == "file_date" and space is not None:
            frame = space.assign_file_date(frame)
        else:
            frame = frame.with_columns(pl.lit(None, pl.Date).alias("partition_key"),
                                       pl.lit(None, pl.String).alias("_assign_note"))
        return frame if key is None else frame.filter(pl.col("partition_key") == key)

    # A row's partition is its own (its time, its file's date): each file's rows are placed as it
    # is read, and only this partition's kept, so a partition that reads the files of its late
    # window holds its own rows, not the window's. Derived line ids come first, numbered over
    # every file of a delivery: then the files are placed together, once all are read.
    place_each = not contract.line_id
    for batch in reader.read(contract.table, _read_dates(contract, space, key)):
        files += 1
        # What is wrong with the file itself (unreadable, or lines set aside) is reported once,
        # by the partition that owns the file's date, or by a read of the whole landing zone.
        owned = key is None or not (space and batch.file_date) or space.clamp(batch.file_date) == key
        if batch.frame is None:
            if owned:
                unreadable.append(file_row(batch, None, batch.error or f"{batch.origin}: unreadable", None))
            continue
        norm, errors = normalize_batch(batch, contract)
        frames.append(placed(norm) if place_each else norm)
        schema_errors += errors
        if owned:
            set_aside += [file_row(batch, row, reason, text) for row, reason, text in batch.rejected]
        del batch  # its raw rows, once normalised (the last batch's would live on beside every copy below)
    data = pl.concat(frames, how="vertical") if frames else None
    del frames
    if data is None:
        # The accepted rows' own schema, no rows: a first write creates the table from it, and
        # a day without files must not create one of untyped strings for every later day.
        empty = pl.DataFrame(schema={**{c.name: POLARS_TYPES[c.dtype] for c in contract.columns},
                                     "partition_key": pl.String, "_source_file": pl.String, "_source_row": pl.Int64})
        return IngestResult(contract.table, partition_key, empty,
                            pl.DataFrame(unreadable, schema=QUARANTINE_SCHEMA), files, 0, 0,
                            schema_errors + [u["reason"] for u in unreadable],
                            table_expectations=validate_table(empty, contract, partitioned=partition_key is not None))
    if not place_each:
        data = placed(line_ids(data, contract))
    # Schema errors only concern files that contributed rows to this partition.
    origins = set(data["_origin"].unique().to_list())
    schema_errors = [e for e in schema_errors if any(o in e for o in origins)] + [u["reason"] for u in unreadable]
    order = ["_file_date", "_origin", "_row"]
    if not _in_order(data, order):  # one file's rows are (a copy of every column spared)
        data = data.sort(order, nulls_last=False)
    data = data.with_row_index("_row_key").with_columns(pl.col("_row_key").cast(pl.Int64))

    failing, row_outcomes = validate_rows(data, contract)
    ge_reasons = failing.group_by("_row_key").agg(pl.col("reason"))
    # A row's reasons are put together beside its key alone, then set on the rows (which are in
    # key order): joined into the whole frame, they would copy every column of a large file.
    reasons = data.select("_row_key", "_reasons", "_assign_note").join(
        ge_reasons, on="_row_key", how="left", maintain_order="left")
    flagged = (pl.col("_reasons").list.len() > 0) | pl.col("reason").is_not_null() | pl.col("_assign_note").is_not_null()
    why = pl.concat_list(
        pl.col("_reasons"), pl.col("reason").fill_null(pl.lit([], pl.List(pl.String))),
        pl.when(pl.col("_assign_note").is_not_null()).then(pl.concat_list(pl.col("_assign_note")))
        .otherwise(pl.lit([], pl.List(pl.String))),
    ).list.unique(maintain_order=True).map_elements(_without_implied, return_dtype=pl.List(pl.String)).list.join("; ")
    data = data.with_columns(column_where(reasons, flagged, "_why", why, pl.lit(""), "_row_key")["_why"])
    bad = data.filter(pl.col("_why") != "")
    good = data.filter(pl.col("_why") == "")
    considered = data.height
    del data, reasons  # their rows live on in bad and good

    duplicates = 0
    conflicts = good.clear()
    if contract.unique_key and good.height:
        key = list(contract.unique_key)
        if contract.restatements == "latest":
            # Within a file date the first delivery counts; across them the latest.
            good, duplicates, conflicts = split_redeliveries(good, [*key, "_file_date"], contract.content)
            good, repeated, restated = latest_deliveries(good, key, contract.content, "_file_date")
            duplicates += repeated
        else:
            good, duplicates, conflicts = split_redeliveries(good, key, contract.content)
            restated = conflicts.clear()
        conflicts = pl.concat([
            conflicts.with_columns(pl.lit(f"conflicting re-delivery of {', '.join(key)}").alias("_why")),
            restated.with_columns(pl.lit(RESTATED).alias("_why"))])

    quarantine = pl.concat([quarantine_rows(contract, bad, partition_key),
                            quarantine_rows(contract, conflicts, partition_key),
                            pl.DataFrame(unreadable + set_aside, schema=QUARANTINE_SCHEMA)])
    accepted = good.select(contract.names + LINEAGE).with_columns(
        pl.col("partition_key").cast(pl.String), pl.col("_origin").alias("_source_file"),
        pl.col("_row").alias("_source_row")).drop("_origin", "_row")
    table_outcomes = validate_table(accepted, contract, partitioned=partition_key is not None)
    return IngestResult(contract.table, partition_key, accepted, quarantine, files, considered + len(set_aside),
                        duplicates,
                        schema_errors, row_outcomes, table_outcomes)


def _in_order(frame: pl.DataFrame, columns: list[str]) -> bool:
    """Whether ``frame`` is sorted by ``columns`` (nulls first), checked as one file's rows
    come: every column but the last holds a single value, and the last never decreases."""
    *constant, last = columns
    return (all(frame[c].n_unique() <= 1 for c in constant)
            and frame[last].null_count() == 0 and frame[last].is_sorted())


def _without_implied(reasons: list[str]) -> list[str]:
    """A row's reasons without "F: missing value" where F's value was there but did not
    cast ("F: not a valid ..."): the null the contract saw is the failed cast, said once.
    A row of a file that fails its schema keeps only that reason: its missing values and
    the rules they break follow from the missing columns."""
    schema = [r for r in reasons if r.startswith(SCHEMA_PREFIX)]
    if schema:
        return schema
    unread = {r.split(": ", 1)[0] for r in reasons if ": not a valid " in r}
    return [r for r in reasons if not (r.endswith(": missing value") and r.split(": ", 1)[0] in unread)]


def split_redeliveries(rows: pl.DataFrame, key: list[str], content: list[str]) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """(first rows, count of re-deliveries, conflicts) of ``rows``, taken in their order.

    The first row of each ``key`` is kept; a later one is a re-delivery when its ``content``
    columns equal the first's (dropped, counted), a conflict otherwise (returned, for the
    caller to refuse with its reason). Only the later rows (few) are joined, and compared on
    the content itself, never on a hash of it.
    """
    first = rows.select(pl.struct(key).is_first_distinct())[:, 0]
    if first.all():  # every key once (the usual case): no copy of the rows
        return rows, 0, rows.clear()
    rows = rows.with_columns(first.alias("_first"))
    later = rows.filter(~pl.col("_first")).drop("_first")
    firsts = rows.filter(pl.col("_first")).drop("_first")
    fields = pl.struct(content)
    first_content = firsts.join(later.select(key).unique(), on=key, nulls_equal=True).select(
        *key, fields.alias("_first_content"))
    later = later.join(first_content, on=key, how="left", nulls_equal=True)
    same = fields.eq_missing(pl.col("_first_content"))
    return firsts, int(later.select(same.sum()).item()), later.filter(~same).drop("_first_content")


RESTATED = "restated in a later file date (the later delivery counts)"


def latest_deliveries(rows: pl.DataFrame, key: list[str], content: list[str], date: str,
                      ) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """(rows, count of re-deliveries, restated) of ``rows`` whose ``key`` is unique within
    each ``date``: each key's row of the latest date counts; an earlier one with the same
    content is a re-delivery (dropped, counted), with other content it was restated
    (returned). The rows keep their order."""
    if rows[date].n_unique() <= 1:  # one date: each key is once already (a copy of every row spared)
        return rows, 0, rows.clear()
    order = pl.int_range(pl.len()).alias("_order")
    latest_first = rows.with_columns(order).sort(date, descending=True, nulls_last=True, maintain_order=True)
    kept, repeated, restated = split_redeliveries(latest_first, key, content)
    return kept.sort("_order").drop("_order"), repeated, restated.sort("_order").drop("_order")


def quarantine_rows(contract: Contract, bad: pl.DataFrame, partition_key: str | None) -> pl.DataFrame:
    """Quarantine rows for ``bad``: the contract's columns, ``_origin``, ``_row``, the reason in ``_why``."""
    if bad.height == 0:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    rid = pl.col(contract.record_id).cast(pl.String) if contract.record_id else pl.lit(None, pl.String)
    # A value that did not cast is shown as it was written (``_raw``), not as null.
    raw = "_raw" in bad.columns
    values = [pl.coalesce(pl.col(c).cast(pl.String), pl.col("_raw").str.json_path_match(f"$.{c}")).alias(c) if raw
              else pl.col(c).cast(pl.String) for c in contract.names]
    return bad.select(
        pl.lit(contract.table).alias("source_table"), pl.lit(partition_key, pl.String).alias("partition_key"),
        pl.col("_origin").alias("file"), pl.col("_row").cast(pl.Int64).alias("row_number"),
        rid.alias("record_id"), pl.col("_why").alias("reason"),
        pl.struct(values).struct.json_encode().alias("record"),
    )
