"""Bring one raw batch to its contract's shape: flatten, cast, and note type errors per row."""

from __future__ import annotations

import polars as pl

from ..contracts.model import POLARS_TYPES, Column, Contract
from .landing import RawBatch

SCHEMA_PREFIX = "file schema"


def _cast(col: Column, src: pl.DataType) -> pl.Expr:
    target = POLARS_TYPES[col.dtype]
    c = pl.col(col.name)
    if col.dtype == "timestamp":
        if src == pl.String:
            return (c.str.replace(r"Z$", "+00:00")
                    .str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
                    .dt.convert_time_zone("UTC")
                    .fill_null(c.str.to_datetime(strict=False, time_unit="us").dt.replace_time_zone("UTC")))
        if isinstance(src, pl.Datetime) and src.time_zone is None:
            return c.dt.replace_time_zone("UTC").cast(target)
        return c.cast(target, strict=False)
    if col.dtype == "date" and src == pl.String:
        return c.str.to_date(strict=False)
    return c.cast(target, strict=False)


def normalize_batch(batch: RawBatch, contract: Contract) -> tuple[pl.DataFrame, list[str]]:
    """Return the batch in contract shape plus file-level schema errors.

    Columns: the contract's columns, `_origin`, `_row` (0-based row in the file),
    `_file_date` and `_reasons` (list of per-row problems found while casting).
    """
    frame = batch.frame
    assert frame is not None
    for path, name in contract.flatten.items():
        parent, child = path.split(".", 1)
        if parent in frame.columns and isinstance(frame.schema[parent], pl.Struct):
            fields = {f.name for f in frame.schema[parent].fields}
            if child in fields:
                frame = frame.with_columns(pl.col(parent).struct.field(child).alias(name))
    errors = []
    present = set(frame.columns)
    exprs, reasons = [], []
    for col in contract.columns:
        if col.source is not None:
            if col.source in present:
                cast = _cast(Column(col.source, col.dtype), frame.schema[col.source]).alias(col.name)
                exprs.append(cast)
                reasons.append(pl.when(pl.col(col.source).is_not_null() & cast.is_null())
                               .then(pl.lit(f"{col.source}: not a valid {col.dtype}")))
            else:
                exprs.append(pl.lit(None, POLARS_TYPES[col.dtype]).alias(col.name))
            continue
        if col.name not in present:
            if col.required:
                errors.append(f"{SCHEMA_PREFIX}: {batch.origin}: missing column {col.name!r}")
            exprs.append(pl.lit(None, POLARS_TYPES[col.dtype]).alias(col.name))
            continue
        src = frame.schema[col.name]
        cast = _cast(col, src).alias(col.name)
        exprs.append(cast)
        if src != POLARS_TYPES[col.dtype]:
            reasons.append(pl.when(pl.col(col.name).is_not_null() & cast.is_null())
                           .then(pl.lit(f"{col.name}: not a valid {col.dtype}")))
    out = frame.with_row_index("_row").with_columns(
        *exprs,
        pl.lit(batch.origin).alias("_origin"),
        pl.lit(batch.file_date, pl.Date).alias("_file_date"),
        pl.concat_list(reasons).list.drop_nulls().alias("_reasons") if reasons
        else pl.lit([], pl.List(pl.String)).alias("_reasons"),
    )
    if errors:  # the whole file fails its contract: every row is quarantined with the reason
        out = out.with_columns(pl.lit(errors, pl.List(pl.String)).alias("_reasons"))
    keep = contract.names + ["_origin", "_row", "_file_date", "_reasons"]
    out = out.select(keep).with_columns(pl.col("_row").cast(pl.Int64))
    return out, errors
