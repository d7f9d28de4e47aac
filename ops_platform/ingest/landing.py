"""Reading landing-zone files: the embedded default source of every raw table.

A source reader yields batches of raw records with their origin (file path), so the
same ingestion pipeline can later read real systems (a Prometheus HTTP API, object
storage) by implementing `SourceReader`.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

import polars as pl

STATIC_FILES = {
    "tenants": "catalog/tenants.parquet",
    "services": "catalog/services.parquet",
    "price_list": "catalog/price_list.parquet",
    "builds": "releases/builds.parquet",
}
_DT = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


@dataclass
class RawBatch:
    """Records from one origin (a file), before any validation."""

    origin: str  # path relative to the landing root, used in every error and quarantine row
    file_date: date | None
    frame: pl.DataFrame | None  # None when the file could not be read at all
    error: str | None = None
    # Lines of a JSON-lines file that do not read, set aside so the others load: (data row,
    # reason, the line as written). ``frame`` then numbers its rows in ROW_COLUMN.
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


# A frame's own data-row numbers, when lines of its file were set aside (``read_any``).
ROW_COLUMN = "__data_row"


def read_any(path: Path) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Parquet; CSV read as text (so every cast and its failure is the contract's); JSON
    lines (CloudEvents as exporters stream them); CSV and JSON lines may be gzipped. With the
    rows, the lines set aside (``RawBatch.rejected``): a JSON line that does not read (a
    stream cut mid-line) is refused alone, not with the events around it."""
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a file (landing files go directly in their dt= folder)")
    name = path.name.lower()
    plain = name.removesuffix(".gz")
    if name.endswith(".parquet"):
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as exc:
            if "precision" not in str(exc):
                raise
            frame = _wide_decimals_as_text(path)
        # As in a CSV, an empty text is no value: Parquet converted from CSV (Spark, Snowflake
        # unloads) keeps "" where the export had nothing. 13 ms for 2.6 M events. (Derived
        # line ids hash it as a missing value now: a Parquet bill without line ids that has
        # "" fields, loaded before, is recognised again once its partitions are reloaded.)
        return frame.with_columns(pl.col(pl.String).replace("", None)), []
    if not name.endswith(".gz"):  # a binary file under a text name: say what it is, not how its bytes parse
        with path.open("rb") as fh:
            head = fh.read(4)
        for magic, what, suffix in ((b"PAR1", "a Parquet file", ".parquet"), (b"\x1f\x8b", "a gzip file", ".gz")):
            if head.startswith(magic):
                raise ValueError(f"{path}: {what} named {path.suffix or 'without a suffix'}: name it "
                                 f"{path.name + suffix if suffix == '.gz' else path.stem + suffix}")
    if plain.endswith((".csv", ".txt")):
        hint_line = _refuse_other_separators(path, gzipped=name.endswith(".gz"))
        try:
            frame = pl.read_csv(path, infer_schema=False, skip_rows=int(hint_line))
        except pl.exceptions.ComputeError as exc:
            if "utf-8" in str(exc).lower() or "utf8" in str(exc).lower():
                raise ValueError(f"{path}: not UTF-8 text (a Latin-1 or Windows-1252 export?): CSV files must "
                                 "be UTF-8") from None
            if "more fields" in str(exc):  # polars names no row: the csv module finds them
                _refuse_ragged_rows(path, gzipped=name.endswith(".gz"), skip=int(hint_line))
            raise
        # A header naming a column twice: polars keeps the second as `<name>_duplicated_0`, which
        # no contract reads, so whichever copy held the data could be lost without a word.
        twice = sorted({m[1] for c in frame.columns if (m := re.fullmatch(r"(.+)_duplicated_\d+", c))
                        and m[1] in frame.columns})
        if twice:
            raise ValueError(f"{path}: the header names column(s) {', '.join(map(repr, twice))} more than once: "
                             "which copy holds the data cannot be told; keep one")
        if frame.width and frame.height and frame[:, -1].null_count():
            _refuse_ragged_rows(path, gzipped=name.endswith(".gz"), skip=int(hint_line))
        # An empty field is no value, quoted ("" as spreadsheets and csv.QUOTE_ALL write it) or not.
        return frame.with_columns(pl.all().replace("", None)), []
    if plain.endswith((".jsonl", ".ndjson")):
        data, cut = _gunzipped(path.read_bytes()) if name.endswith(".gz") else (path.read_bytes(), False)
        data = data.removeprefix(b"\xef\xbb\xbf")  # a BOM, as the CSV reader takes one
        if not data.strip() and not cut:  # no line at all (a quiet hour): no events, not an unreadable file
            return pl.DataFrame(), []
        frame, rejected, why = None, [], "its lines do not read as one table"
        if not cut:
            try:
                # Every line read before the schema is fixed: a quantity of 3 early and 2.5 later is one column.
                frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
            except pl.exceptions.PolarsError as exc:
                why = str(exc).splitlines()[0]
        if frame is None:  # line by line, those that do not read set aside
            frame, rejected, found = _json_lines_apart(data)
            if frame is None:
                raise ValueError(f"{path}: {found or why}")
        if cut:  # one row more, where the missing lines begin (counted as read: rows add up)
            rejected.append((frame.height + len(rejected), GZIP_CUT, ""))
        return frame.with_columns(pl.col(pl.String).replace("", None)), rejected  # "" as in CSV and Parquet
    raise ValueError(f"{path}: unsupported file type (use .parquet, .csv or .jsonl, optionally .gz)")


def _refuse_ragged_rows(path: Path, gzipped: bool, skip: int) -> None:
    """Rows with another number of fields than the header, refused naming them. A short row
    (a file cut mid-line, a field lost in an edit): polars fills the missing fields with
    nulls, so a cost row would load without its tags and be attributed elsewhere without a
    word; run only when the last column has nulls (a short row always leaves it empty). A
    long row (a trailing comma on the data rows): polars refuses the file naming no row."""
    import csv
    import sys

    csv.field_size_limit(sys.maxsize)  # a long Tags field is a field, not an error (polars read it)
    with (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if gzipped
          else path.open(encoding="utf-8-sig", newline="")) as f:
        rows = csv.reader(f)
        for _ in range(skip):  # the separator hint
            next(rows, None)
        width = len(next(rows, []))
        ragged = [(i, len(r)) for i, r in enumerate(rows) if r and len(r) != width]
    for kind, wrong in (("fewer", [(i, n) for i, n in ragged if n < width]),
                        ("more", [(i, n) for i, n in ragged if n > width])):
        if wrong:
            said = ", ".join(f"data row {i} ({n} fields)" for i, n in wrong[:3]) + (
                f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
            why = ("a file cut short or a row that lost a field" if kind == "fewer"
                   else "a trailing separator, or a field with a comma that is not quoted")
            raise ValueError(f"{path}: {len(wrong)} row(s) have {kind} fields than the header's {width}: {said}; "
                             f"{why}: export it again")


# Reasons for JSON lines set aside: fixed texts, so a quarantine groups them (the line is
# the quarantine row's data row, and its text the record).
NOT_JSON = "not a JSON line: a file cut short or a line written half"
NOT_OBJECT = "a JSON line that is not an object"
GZIP_CUT = "the gzip stream ends early: the file was cut short, its lines from this data row on are missing"


def _gunzipped(raw: bytes) -> tuple[bytes, bool]:
    """A gzipped file's bytes, and whether its stream was cut short: then what it holds up to
    the cut (a stream cut mid-way keeps its lines before the cut, as a plain one does)."""
    try:
        return gzip.decompress(raw), False
    except EOFError:
        pass
    out, rest = [], raw
    while rest:  # member by member (a stream may be several), up to the one cut short
        inflate = zlib.decompressobj(wbits=31)
        try:
            out.append(inflate.decompress(rest))
        except zlib.error:
            raise ValueError("not a gzip stream that reads") from None
        if not inflate.eof:
            break
        rest = inflate.unused_data
    data = b"".join(out)
    if not data.strip():
        raise ValueError("a gzip stream cut short before its first line")
    return data, True


def _json_lines_apart(data: bytes) -> tuple[pl.DataFrame | None, list[tuple[int, str, str]], str | None]:
    """The lines of a JSON-lines file that read as JSON objects, numbered by their data row
    (ROW_COLUMN, blank lines not counted), and the others set aside with the reason. None
    when no line reads (not a JSON-lines file at all) or the lines that do still do not make
    one table (a member of ``data`` an object on one line and a value on another): the file
    is refused whole, with why (the third item), naming the line."""
    kept, rows, records, rejected = [], [], [], []
    first_bad = None
    for row, (number, line) in enumerate((n, t) for n, t in enumerate(data.splitlines(), start=1) if t.strip()):
        try:
            record = json.loads(line)
        except ValueError as exc:
            rejected.append((row, NOT_JSON, line.decode("utf-8", errors="replace")))
            first_bad = first_bad or f"line {number} is not JSON ({exc}): a file cut short or a line written half"
            continue
        if not isinstance(record, dict):
            rejected.append((row, NOT_OBJECT, line.decode("utf-8", errors="replace")))
            first_bad = first_bad or f"line {number} is not a JSON object"
            continue
        kept.append(line)
        rows.append(row)
        records.append((number, record))
    if not kept:
        return None, [], first_bad
    try:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(kept)), infer_schema_length=None)
    except pl.exceptions.PolarsError:
        return None, [], _member_conflict(records)
    return frame.with_columns(pl.Series(ROW_COLUMN, rows, pl.Int64)), rejected, None


def _member_conflict(records: list[tuple[int, dict]]) -> str | None:
    """What keeps JSON lines that each read from making one table, with the line number: a
    member of an object field (``data.quantity``) that is an object on one line and a value
    on another (null fits either). A top-level field mixed so is read as text, no conflict."""
    def kind(value: object) -> str | None:
        if value is None:
            return None
        return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else "a value"

    first: dict[str, tuple[str, int]] = {}  # member -> (kind, first line)
    for number, record in records:
        for name, value in ((f"{k}.{sub}", inner) for k, v in record.items() if isinstance(v, dict)
                            for sub, inner in v.items()):
            if (now := kind(value)) is None:
                continue
            was, at = first.setdefault(name, (now, number))
            if was != now:
                return f"line {number}: {name!r} is {now} there but {was} on line {at}"
    return None


def _wide_decimals_as_text(path: Path) -> pl.DataFrame:
    """A Parquet file with a decimal wider than 38 digits (BigQuery's BIGNUMERIC, 76), which
    polars cannot hold: those columns are read as their exact text, so the contract casts
    (or refuses) them like a CSV's, and an extra ``x_`` column of that type costs nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    wide = [i for i, f in enumerate(table.schema) if pa.types.is_decimal256(f.type) and f.type.precision > 38]
    for i in wide:
        table = table.set_column(i, table.schema[i].name, table.column(i).cast(pa.string()))
    return pl.from_arrow(table)


def _refuse_other_separators(path: Path, gzipped: bool) -> bool:
    """A header with ';' and no ',' is a semicolon-separated export (a decimal-comma locale):
    said so up front, since its rows would otherwise fail to parse with a bare field-count error.
    True when the first line is Excel's ``sep=,`` hint (skipped: the header follows it)."""
    with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
        head = f.read(4096)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path}: UTF-16 text (as some spreadsheet exports write it): CSV files must be UTF-8")
    lines = head.decode("utf-8", errors="replace").removeprefix("\ufeff").splitlines()
    first = lines[0].strip(" \r\n") if lines else ""
    hint = first.startswith("sep=")
    if hint and first != "sep=,":
        raise ValueError(f"{path}: the first line {first!r} says the file is not comma-separated "
                         "(CSV files must be comma-separated)")
    header = lines[int(hint)] if len(lines) > int(hint) else ""
    for sep, name in ((";", "semicolon"), ("\t", "tab")):
        if sep in header and "," not in header:
            raise ValueError(f"{path}: the header holds {sep!r} and no ',': the file looks {name}-separated "
                             "(CSV files must be comma-separated)")
    return hint


def read_world_table(world: Path, table: str) -> pl.DataFrame:
    """Every Parquet file of a generated world's landing table, as one frame, for the
    whole-history replays (backtests); a table without files is a clear error."""
    files = sorted((world / "landing" / table).glob("*/*.parquet"))
    if not files:
        raise ValueError(f"{world / 'landing' / table} holds no Parquet files: the backtest replays the "
                         f"world's {table}")
    try:
        return pl.read_parquet(files)
    except (OSError, pl.exceptions.PolarsError) as exc:
        for f in files:  # name the file that does not read (only on this failure path)
            try:
                pl.read_parquet_schema(f)
                pl.read_parquet(f)
            except (OSError, pl.exceptions.PolarsError) as bad:
                raise ValueError(f"{f}: unreadable Parquet ({str(bad).splitlines()[0]})") from None
        raise ValueError(f"{world / 'landing' / table}: {str(exc).splitlines()[0]}") from None


def _day(text: str) -> date | None:
    """The day a ``dt=`` folder names, None for one that does not exist (``2026-02-30``)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _is_marker(path: Path) -> bool:
    """Hidden files and writers' markers (``.crc``, ``_SUCCESS``), which hold no rows: the
    only entries a folder scan leaves out. Anything else, a subfolder included, is read or
    reported unreadable."""
    return path.name.startswith((".", "_"))


class SourceReader(Protocol):
    def read(self, table: str, dates: tuple[date | None, date | None] | None) -> Iterator[RawBatch]: ...


class LandingZoneReader:
    """Reads `<root>/<table>/dt=YYYY-MM-DD/*.parquet|*.csv` and the static catalog files."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def files(self, table: str, dates: tuple[date | None, date | None] | None = None) -> list[tuple[date | None, Path]]:
        if table in STATIC_FILES:
            p = self.root / STATIC_FILES[table]
            return [(None, p)] if p.exists() else []
        base = self.root / table
        if not base.exists():
            return []
        lo, hi = dates if dates else (None, None)
        out, misplaced = [], []
        for d in sorted(base.iterdir()):
            if _is_marker(d):
                continue
            m = _DT.match(d.name)
            dt = _day(m.group(1)) if m else None
            if not (d.is_dir() and dt):
                misplaced.append((None, d))  # in no day's folder: reported by every read (``read``)
                continue
            if (lo and dt < lo) or (hi and dt > hi):
                continue
            out += [(dt, f) for f in sorted(d.iterdir()) if not _is_marker(f)]
        return out + misplaced

    def read(self, table: str, dates: tuple[date | None, date | None] | None = None) -> Iterator[RawBatch]:
        for dt, path in self.files(table, dates):
            origin = str(path.relative_to(self.root))
            if dt is None and table not in STATIC_FILES:
                yield RawBatch(origin, None, None, f"{origin}: not in a dt=YYYY-MM-DD folder (a day that exists), so "
                                                   "its rows belong to no day: move it into the folder of its day")
                continue
            try:
                frame, rejected = read_any(path)
            except Exception as exc:  # a corrupt or unknown file is reported, never skipped silently
                yield RawBatch(origin, dt, None, f"{origin}: unreadable file ({exc})")
                continue
            yield RawBatch(origin, dt, frame, rejected=rejected)

