"""Bring one raw batch to its contract's shape: flatten, cast, and note type errors per row."""

from __future__ import annotations

import hashlib
import json

import polars as pl

from ..contracts.model import POLARS_TYPES, Column, Contract
from .landing import ROW_COLUMN, RawBatch

SCHEMA_PREFIX = "file schema"
AMOUNT_TYPES = ("decimal", "float", "int")  # a charge's amounts: not part of what identifies it


def _json_text(c: pl.Expr, src: pl.DataType) -> pl.Expr:
    """A nested value as the JSON text a text column holds: a list of key/value structs (a
    Parquet map, as AWS exports ``Tags``; Google's FOCUS view adds ``x_`` fields to each,
    which say where a label came from) becomes a JSON object of those keys and values."""
    if isinstance(src, pl.Struct):
        return c.struct.json_encode()
    inner = getattr(src, "inner", None)
    if isinstance(inner, pl.Struct) and {"key", "value"} <= {f.name for f in inner.fields}:
        return c.map_elements(_pairs_object, return_dtype=pl.String)
    return c.map_elements(lambda v: json.dumps(v.to_list() if isinstance(v, pl.Series) else v, default=str),
                          return_dtype=pl.String)


def _pairs_object(pairs) -> str:
    """Key/value pairs as a JSON object's text, every pair kept: a key given twice (a
    resource label and a project label of one name) stays visible to the contract, which
    refuses it, rather than the last one silently winning."""
    return "{" + ", ".join(f"{json.dumps(p['key'], default=str)}: {json.dumps(p['value'], default=str)}"
                           for p in pairs) + "}"


# The contract's decimals hold 26 digits before the point.
DECIMAL_LIMIT = 10.0 ** (POLARS_TYPES["decimal"].precision - POLARS_TYPES["decimal"].scale)


def _as_float(c: pl.Expr, src: pl.DataType) -> pl.Expr:
    """A number or its text as a float (null for text that is no number)."""
    return c.cast(pl.Float64, strict=src != pl.String)


def _in_decimal_range(c: pl.Expr, src: pl.DataType) -> pl.Expr:
    value = _as_float(c, src)
    return value.is_finite() & (value.abs() < DECIMAL_LIMIT)


def _out_of_range(source: str, src: pl.DataType) -> pl.Expr:
    """Rows whose `source` holds a finite number too large for the contract's decimal."""
    return (~_in_decimal_range(pl.col(source), src) & _as_float(pl.col(source), src).is_finite()).fill_null(False)


def _cast(col: Column, src: pl.DataType) -> pl.Expr:
    target = POLARS_TYPES[col.dtype]
    c = pl.col(col.name)
    if col.dtype == "string" and src.is_nested():
        return _json_text(c, src)
    if col.dtype in ("timestamp", "date") and src.is_numeric():
        # A bare number has no unit (seconds, milliseconds, days since 1970?): guessed, a bill
        # lands in 1970. Unread, so each row is quarantined as an invalid time, as in a CSV.
        return pl.lit(None, target)
    if col.dtype == "timestamp":
        if src == pl.String:  # RFC 3339 (the usual case); other ISO 8601 layouts afterwards
            return _rfc3339(c)
        if isinstance(src, pl.Datetime) and src.time_zone is None:
            return c.dt.replace_time_zone("UTC").cast(target)
        return c.cast(target, strict=False)
    if col.dtype == "date" and src == pl.String:
        return c.str.to_date(strict=False)
    if col.dtype == "float" and (src.is_float() or src == pl.String):
        # NaN is no quantity: unread (quarantined as "not a valid float"), not a value that
        # the contract's null check reads as missing.
        value = c.cast(target, strict=False)
        return pl.when(value.is_nan()).then(None).otherwise(value)
    if col.dtype == "decimal" and src.is_numeric():
        # A number past the decimal's range (or NaN, infinite) does not cast: null, like the
        # same text in a CSV, not an error for the whole file.
        return pl.when(_in_decimal_range(c, src)).then(c).cast(target, strict=False)
    return c.cast(target, strict=False)


def _unread(source: str, cast: str) -> pl.Expr:
    """Rows where `source` has a value but its cast (column `cast`) came out null."""
    return pl.col(source).is_not_null() & pl.col(cast).is_null()


# ISO 8601 / RFC 3339 as providers export it: a date, optionally a time (seconds and a
# fraction, after '.' or ',', optional) and a zone (Z, +05:30, +0530, +05, or " UTC" as
# BigQuery exports write it). Nothing else is read: a layout such as 03/02/2026 is
# ambiguous (March 2 or February 3), so it is refused, never guessed.
ISO_8601 = (r"^(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2})(:\d{2}(?:[.,]\d+)?)?"
            r"([Zz]| ?(?i:utc)|[+-]\d{2}(?::?\d{2})?)?)?$")


def _iso_timestamp(source: str, unread: pl.Expr) -> pl.Expr:
    """The `unread` rows' timestamps in the other ISO 8601 layouts (no seconds, an offset
    without a colon or minutes, no zone, a date alone), brought to RFC 3339 and read; a time
    without a zone, and a date alone (its midnight), are taken as UTC."""
    parts = pl.when(unread).then(pl.col(source)).str.extract_groups(ISO_8601)
    zone = parts.struct.field("4").str.to_uppercase().str.strip_chars()
    zone = (pl.when(zone.is_null() | zone.is_in(["Z", "UTC"])).then(pl.lit("+00:00"))
            .when(zone.str.len_chars() == 3).then(zone + ":00")
            .when(zone.str.len_chars() == 5).then(zone.str.slice(0, 3) + ":" + zone.str.slice(3))
            .otherwise(zone))
    text = pl.concat_str([parts.struct.field("1"), pl.lit("T"), parts.struct.field("2").fill_null("00:00"),
                          parts.struct.field("3").fill_null(":00").str.replace(",", ".", literal=True), zone])
    return (text.str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
            .dt.convert_time_zone("UTC"))


def _rfc3339(text: pl.Expr) -> pl.Expr:
    """RFC 3339 text as a UTC timestamp (null where it is not RFC 3339)."""
    return (text.str.replace(r"Z$", "+00:00")
            .str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
            .dt.convert_time_zone("UTC"))


def read_timestamp(source: str) -> pl.Expr:
    """The ISO 8601 text of column ``source`` as a UTC timestamp, read as the contract reads a
    timestamp column (RFC 3339 first, then the other layouts ``ISO_8601`` allows); null when it
    does not read."""
    first = _rfc3339(pl.col(source))
    return first.fill_null(_iso_timestamp(source, pl.col(source).is_not_null() & first.is_null()))


# Columns a file without its own line ids carries until its delivery is read whole (``line_ids``).
LINE_DIGEST, LINE_ORDER = "_line_digest", "_line_order"
_NO_LINE_KEYS = (pl.lit(None, pl.String).alias(LINE_DIGEST), pl.lit(None, pl.String).alias(LINE_ORDER))


def _with_line_keys(frame: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """For a file without its line-id column: ``_line_digest``, a digest of what identifies
    the charge (the contract's required columns but its amounts, costs and quantities, and
    its labels, ``line_labels``; then its optional columns and each ``line_identity`` column
    the row has a value in, as name=value, so a file that lacks such a column or leaves it
    empty gives the id it gave before), and
    ``_line_order``, what numbers the rows of a delivery alike in it: their labels, then
    their place in the order of their amounts among the file's rows alike (two charges alike
    stay two lines). ``line_ids`` numbers them once the delivery's files are all read."""
    present = [c for c in contract.columns if c.name in frame.columns]

    def text_of(c: str) -> pl.Expr:
        value = _json_text(pl.col(c), frame.schema[c]) if frame.schema[c].is_nested() else pl.col(c).cast(pl.String)
        return value.fill_null("\x00")

    what = [c for c in present if c.dtype not in AMOUNT_TYPES and c.name not in contract.line_labels]
    cols = sorted(c.name for c in what if c.required)
    if not cols:  # nothing identifies a charge (not this source's file): no id to derive
        return frame.with_columns(_NO_LINE_KEYS)
    text = pl.concat_str([text_of(c) for c in cols], separator="\x1f")
    # Optional columns, and identity columns outside the contract, count as name=value where
    # the row has a value: an export that starts carrying one empty (a newer FOCUS version
    # mid-month) gives the ids it gave before, instead of re-keying every line.
    extra = [c.name for c in what if not c.required] + [
        c for c in contract.line_identity if c in frame.columns and c not in contract.names
        and not frame.schema[c].is_nested()]
    if extra:
        text = pl.concat_str([text, *(pl.when(pl.col(c).is_not_null()).then(pl.lit(f"\x1e{c}=") + text_of(c))
                                      .otherwise(pl.lit("")) for c in sorted(extra))])
    # A column first: hashed once, then grouped on.
    frame = frame.with_columns(text.map_elements(lambda t: hashlib.sha256(t.encode()).hexdigest()[:24],
                                                 return_dtype=pl.String).alias(LINE_DIGEST))
    # Rows alike are told apart by their labels, then numbered in the order of their amounts
    # (not of the file: the same rows delivered in another order get the same ids). Labels
    # tell rows apart across the part files of a delivery; amounts only within a file, so a
    # part file restating another's amount is a conflict, not a second charge.
    labels = sorted(c.name for c in present if c.name in contract.line_labels)
    amounts = sorted(c.name for c in present if c.dtype in AMOUNT_TYPES)
    tagged = pl.concat_str([text_of(c) for c in labels], separator="\x1f") if labels else pl.lit("")
    frame = frame.with_columns(tagged.alias(LINE_ORDER))
    nth = pl.int_range(pl.len()).over(LINE_DIGEST, LINE_ORDER,
                                      order_by=[pl.col(a).cast(pl.String) for a in amounts] or None)
    return frame.with_columns(pl.concat_str([pl.col(LINE_ORDER), pl.lit("\x1e"), nth.cast(pl.String).str.zfill(10)])
                              .alias(LINE_ORDER))


def line_ids(data: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """The derived line ids of the rows that came without one: ``row-<digest>-<n>``, n the
    row's place among the rows of its delivery (file date) with its digest. Numbered over
    the whole delivery, not each file: two charges told apart only by their labels, one in
    each part file of a split export, stay two lines, and a line whose tags a later export
    back-fills keeps its id (the later delivery counts, once)."""
    nth = pl.col(LINE_ORDER).rank("dense").over(LINE_DIGEST, "_file_date").cast(pl.Int64) - 1
    derived = pl.concat_str([pl.lit("row-"), pl.col(LINE_DIGEST), pl.lit("-"), nth.cast(pl.String)])
    line_id = contract.line_id
    assert line_id is not None
    return data.with_columns(pl.when(pl.col(LINE_DIGEST).is_not_null()).then(derived)
                             .otherwise(pl.col(line_id)).alias(line_id)).drop(LINE_DIGEST, LINE_ORDER)


def column_where(frame: pl.DataFrame, flag: pl.Expr, name: str, value: pl.Expr, default: pl.Expr,
                 order: str) -> pl.DataFrame:
    """Add column `name`: `value` on the rows where `flag` holds, `default` on the others,
    rows kept in `order`. `value` is computed on the flagged rows only: list and string work
    on every row is slow when only a few rows need it (rejection reasons)."""
    flagged = frame.with_columns(flag.alias("_flag"))
    return (pl.concat([flagged.filter(~pl.col("_flag")).with_columns(default.alias(name)),
                       flagged.filter(pl.col("_flag")).with_columns(value.alias(name))])
            .sort(order).drop("_flag"))


def _schema_errors(frame: pl.DataFrame, contract: Contract, origin: str) -> list[str]:
    """The file-level problem of ``frame``: the required columns it lacks, named in one
    message (a semicolon-separated CSV is refused before, by ``landing.read_any``)."""
    missing = [c.name for c in contract.columns
               if c.source is None and c.required and c.name not in frame.columns]
    if not missing:
        return []
    names = ", ".join(repr(n) for n in missing)
    required = sum(1 for c in contract.columns if c.source is None and c.required)
    renames = [f"{old!r} is now {new!r}" for old, new in contract.former_names.items()
               if old in frame.columns and new in missing]
    hint = f" (an earlier version of the spec: {'; '.join(renames)})" if renames else ""
    # Names are matched exactly, as the spec spells them: say so when only spaces around a
    # name (a header written "A, B") or the case differ.
    spaced = {c.strip(): c for c in frame.columns if c != c.strip()}
    padded = [f"{spaced[n]!r} for {n!r}" for n in missing if n in spaced]
    if padded:
        hint += (f" (column names are matched as written, spaces included: the file has {', '.join(padded[:3])}"
                 + (f" and {len(padded) - 3} more" if len(padded) > 3 else "") + ")")
    spelt = {c.strip().lower(): c for c in frame.columns}
    cased = [f"{spelt[n.lower()]!r} for {n!r}" for n in missing if n not in spaced and n.lower() in spelt]
    if cased:
        hint += (f" (column names are case-sensitive: the file has {', '.join(cased[:3])}"
                 + (f" and {len(cased) - 3} more" if len(cased) > 3 else "") + ")")
    return [f"{SCHEMA_PREFIX}: {origin}: missing column {names}{hint}" if len(missing) == 1 else
            f"{SCHEMA_PREFIX}: {origin}: missing columns {names} ({len(missing)} of the {required} required){hint}"]


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
    errors = _schema_errors(frame, contract, batch.origin)
    if contract.line_id:  # its keys, for ``line_ids`` to number once the delivery is read
        if contract.line_id in frame.columns or errors:
            frame = frame.with_columns(_NO_LINE_KEYS)
        else:
            frame = _with_line_keys(frame, contract).with_columns(pl.lit(None, pl.String).alias(contract.line_id))
    present = set(frame.columns)
    casts, checked, loose = [], [], []  # checked: (source column, cast column, reason when the cast fails)
    for col in contract.columns:
        source = col.source if col.source is not None else col.name
        if source not in present:
            casts.append(pl.lit(None, POLARS_TYPES[col.dtype]).alias(f"__{col.name}"))
            continue
        src = frame.schema[source]
        casts.append(_cast(Column(source, col.dtype), src).alias(f"__{col.name}"))
        if col.source is not None or src != POLARS_TYPES[col.dtype] or col.dtype == "float":
            why = pl.lit(f"{source}: not a valid {col.dtype}")
            if col.dtype in ("timestamp", "date") and src.is_numeric():
                why = pl.lit(f"{source}: not a valid {col.dtype} (a number, whose unit is unknown: write ISO "
                             "8601 text or a Parquet timestamp)")
            elif col.dtype == "timestamp":
                why = pl.lit(f"{source}: not a valid timestamp (ISO 8601 expected)")
            elif col.dtype == "decimal" and (src.is_numeric() or src == pl.String):
                why = pl.when(_out_of_range(source, src)).then(
                    pl.lit(f"{source}: not a valid decimal (out of range)")).otherwise(why)
            checked.append((source, f"__{col.name}", why))
        if col.dtype == "timestamp" and src == pl.String:
            loose.append((source, f"__{col.name}"))
    # Each cast once, into its own column, so the failure test below compares two columns.
    # A file whose unreadable lines were set aside numbers its rows itself (``landing.read_any``).
    rows = frame.rename({ROW_COLUMN: "_row"}) if ROW_COLUMN in frame.columns else frame.with_row_index("_row")
    out = rows.with_columns(*casts)
    for source, name in loose:  # the second parser only runs when the first one failed somewhere
        unread = _unread(source, name)
        if out.select(unread.any()).item():
            out = out.with_columns(pl.col(name).fill_null(_iso_timestamp(source, unread)))
    failed = [_unread(source, name) for source, name, _ in checked]
    none = pl.lit([], pl.List(pl.String))
    if failed:  # the reason lists, and the text that did not cast, for the rows that failed a cast
        reasons = pl.concat_list([pl.when(f).then(why) for f, (_, _, why) in zip(failed, checked, strict=True)])
        # "50,000.00" kept as written: the quarantine record shows what to fix, not a null.
        raw = pl.struct([pl.when(f).then(pl.col(source).cast(pl.String)).alias(name.removeprefix("__"))
                         for f, (source, name, _) in zip(failed, checked, strict=True)]).struct.json_encode()
        out = column_where(out, pl.any_horizontal(failed), "_failure",
                           pl.struct(reasons.list.drop_nulls().alias("_reasons"), raw.alias("_raw")),
                           pl.struct(none.alias("_reasons"), pl.lit(None, pl.String).alias("_raw")), "_row"
                           ).unnest("_failure")
    else:
        out = out.with_columns(none.alias("_reasons"), pl.lit(None, pl.String).alias("_raw"))
    out = out.with_columns(*[pl.col(f"__{c.name}").alias(c.name) for c in contract.columns],
                           pl.lit(batch.origin).alias("_origin"), pl.lit(batch.file_date, pl.Date).alias("_file_date"))
    if errors:  # the whole file fails its contract: every row is quarantined with the reason
        out = out.with_columns(pl.lit(errors, pl.List(pl.String)).alias("_reasons"))
    keep = contract.names + ["_origin", "_row", "_file_date", "_reasons", "_raw"] + (
        [LINE_DIGEST, LINE_ORDER] if contract.line_id else [])
    out = out.select(keep).with_columns(pl.col("_row").cast(pl.Int64))
    return out, errors
