"""The DuckDB analytics warehouse: idempotent partition writes and the quarantine table.

One writer at a time (DuckDB's rule): every writer runs in the `duckdb` concurrency pool
in Dagster; readers open the file read-only.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from .finops.columns import FINOPS_COLUMNS
from .ramp.columns import RAMP_COLUMNS
from .slo.columns import SLO_COLUMNS

RAW_SCHEMA = "raw"
# What each column of the computed schemas holds (table -> column -> text), stored as DuckDB
# column comments with every write, so an analyst reads them beside the data.
COLUMN_DOCS = {"finops": FINOPS_COLUMNS, "slo": SLO_COLUMNS, "ramp": RAMP_COLUMNS}
# Columns renamed since a warehouse may have been written: (schema, table) -> {old: new}.
# A warehouse written before the rename gets its old column renamed (or, if a write since
# already added the new one beside it, folded into it and dropped), so no stale column stays.
RENAMED_COLUMNS = {
    ("slo", "budget_daily"): {"budget_consumed": "burn_rate"},  # it always held the burn rate
    # `end` is an SQL keyword; the budget columns always held the candidate's burn rate
    ("ramp", "verdicts"): {"start": "ramp_start", "end": "ramp_end", "budget_consumed": "burn_rate",
                           "budget_consumed_before_action": "burn_rate_before_action"},
}


class Warehouse:
    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.path), read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    def replace_partition(self, table: str, partition_key: str | None, frame: pl.DataFrame,
                          quarantine: pl.DataFrame) -> None:
        """Replace one raw partition's rows and its quarantine rows in one transaction (idempotent).

        `partition_key` None replaces the whole (unpartitioned) table.
        """
        if partition_key is None:
            self._replace(RAW_SCHEMA, [(table, frame, "TRUE", []),
                                       ("quarantine", quarantine, "source_table = ?", [table])])
        else:
            self._replace(RAW_SCHEMA, [(table, frame, "partition_key = ?", [partition_key]),
                                       ("quarantine", quarantine, "source_table = ? AND partition_key = ?",
                                        [table, partition_key])])

    def replace_partition_tables(self, schema: str, partition_key: str, tables: dict[str, pl.DataFrame]) -> None:
        """Replace one partition's rows of several tables in one transaction (idempotent).

        Every frame carries a `partition_key` column; tables are created on first write.
        """
        self._replace(schema, [(name, frame, "partition_key = ?", [partition_key])
                               for name, frame in tables.items()])

    def replace_partitions(self, schema: str, name: str, frames: dict[str, pl.DataFrame]) -> None:
        """Replace several partitions' rows of one table (``frames``: partition key -> rows,
        each with its `partition_key` column) in one transaction (idempotent)."""
        self._replace(schema, [(name, frame, "partition_key = ?", [key]) for key, frame in frames.items()])

    def _replace(self, schema: str, writes: list[tuple[str, pl.DataFrame, str, list]]) -> None:
        """For each (table, rows, where, params): delete what `where` selects, insert the rows;
        all in one transaction. Tables are created from their first rows' schema."""
        with self.connect() as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            for i, (name, frame, _, _) in enumerate(writes):
                con.register(f"incoming_{i}", frame.to_arrow())
                con.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{name} AS SELECT * FROM incoming_{i} LIMIT 0")
                _rename_old_columns(con, schema, name)
                _add_new_columns(con, schema, name, f"incoming_{i}")
            _comment_columns(con, schema, [name for name, *_ in writes])
            con.execute("BEGIN TRANSACTION")
            try:
                for i, (name, _, where, params) in enumerate(writes):
                    con.execute(f"DELETE FROM {schema}.{name} WHERE {where}", params)
                    con.execute(f"INSERT INTO {schema}.{name} BY NAME SELECT * FROM incoming_{i}")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    def missing_tables(self, names: list[str]) -> list[str]:
        """Which of ``names`` ("schema.table") the warehouse does not hold: all of them when
        there is no warehouse file yet."""
        if not self.path.exists():
            return list(names)
        held = {f"{a}.{b}" for a, b in self.query(
            "SELECT table_schema, table_name FROM information_schema.tables").rows()}
        return [n for n in names if n not in held]

    def table_counts(self, schema: str | None = None) -> dict[str, int]:
        if not self.path.exists():
            return {}
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                + ("WHERE table_schema = ? " if schema else "") + "ORDER BY 1, 2",
                [schema] if schema else []).fetchall()
            return {f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in rows}

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """Run a read-only query; timestamps come back in UTC (DuckDB says Etc/UTC)."""
        with self.connect(read_only=True) as con, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the extra Arrow copy is fine at query sizes
            frame = pl.from_arrow(con.execute(sql, params or []).to_arrow_table())
        return frame.with_columns(pl.col(pl.Datetime(time_zone="*")).dt.convert_time_zone("UTC"))


def current_names(frame: pl.DataFrame, schema: str, table: str) -> pl.DataFrame:
    """``frame``, read from a table a writer has not brought up to date yet, under today's
    column names (RENAMED_COLUMNS): a reader opens the warehouse read-only, so it cannot
    rename in place as a writer does."""
    for old, new in RENAMED_COLUMNS.get((schema, table), {}).items():
        if old in frame.columns and new in frame.columns:
            frame = frame.with_columns(pl.coalesce(new, old).alias(new)).drop(old)
        elif old in frame.columns:
            frame = frame.rename({old: new})
    return frame


def _comment_columns(con: duckdb.DuckDBPyConnection, schema: str, tables: list[str]) -> None:
    """Give the written ``tables``' columns their description (``COLUMN_DOCS``) as a DuckDB
    comment, which ``duckdb_columns()`` shows; only where it differs from the stored one, so a
    write of the same schema sets none. A name ending in ``*`` covers every column it starts
    (``burn_*``: one per burn window the SLO files give), ``{}`` in its text replaced by the
    rest of the name; a column without one keeps none."""
    docs = COLUMN_DOCS.get(schema)
    if not docs:
        return
    rows = con.execute("SELECT table_name, column_name, comment FROM duckdb_columns() "
                       "WHERE schema_name = ? AND list_contains(?, table_name)", [schema, tables]).fetchall()
    for table, column, stored in rows:
        text = _column_doc(docs.get(table, {}), column)
        if text is not None and text != stored:
            quoted = "'" + text.replace("'", "''") + "'"
            con.execute(f'COMMENT ON COLUMN {schema}.{table}."{column}" IS {quoted}')


def _column_doc(columns: dict[str, str], name: str) -> str | None:
    """The description ``columns`` gives ``name``: its own, else the longest ``prefix*`` it
    starts with, the rest of the name put in for ``{}``."""
    if name in columns:
        return columns[name]
    prefixes = [k for k in columns if k.endswith("*") and name.startswith(k[:-1])]
    if not prefixes:
        return None
    best = max(prefixes, key=len)
    return columns[best].replace("{}", name[len(best) - 1:])


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    return dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [schema, table]).fetchall())


def _rename_old_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> None:
    """Bring a table written before a column was renamed (RENAMED_COLUMNS) up to date."""
    renamed = RENAMED_COLUMNS.get((schema, table))
    if not renamed:  # most tables: no query on the write path
        return
    have = _columns(con, schema, table)
    for old, new in renamed.items():
        if old not in have:
            continue
        if new in have:  # the new column was added beside the old one: old rows keep their values
            con.execute(f'UPDATE {schema}.{table} SET "{new}" = coalesce("{new}", "{old}")')
            con.execute(f'ALTER TABLE {schema}.{table} DROP COLUMN "{old}"')
        else:
            con.execute(f'ALTER TABLE {schema}.{table} RENAME COLUMN "{old}" TO "{new}"')


def _add_new_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str, incoming: str) -> None:
    """Schema evolution: a column the incoming rows have and the table lacks (a contract
    gained an optional column) is added, null for the rows already stored; a decimal column
    that the contract widened (more digits or scale) is widened, so new rows are not rounded
    to the old type on insert; money once stored as decimal text (``finops.repairs``'s
    ``effective_cost``) becomes the DECIMAL the rows now bring, its text read as one."""
    have = _columns(con, schema, table)
    for row in con.execute(f"DESCRIBE {incoming}").fetchall():
        col, dtype = row[0], row[1]
        if col not in have:
            con.execute(f'ALTER TABLE {schema}.{table} ADD COLUMN "{col}" {dtype}')
        elif (wider := _wider_decimal(have[col], dtype)) is not None:
            con.execute(f'ALTER TABLE {schema}.{table} ALTER COLUMN "{col}" TYPE {wider}')
        elif have[col] == "VARCHAR" and dtype.startswith("DECIMAL"):
            con.execute(f'ALTER TABLE {schema}.{table} ALTER COLUMN "{col}" TYPE {dtype}')


def _wider_decimal(stored: str, incoming: str) -> str | None:
    """The DECIMAL holding both ``stored`` and ``incoming`` (the most integer digits and the
    largest scale, at most 38 digits) when it holds more than ``stored``; else None."""
    a, b = (re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", t.replace(" ", "")) for t in (stored, incoming))
    if not (a and b):
        return None
    scale = max(int(a[2]), int(b[2]))
    digits = min(38, max(int(a[1]) - int(a[2]), int(b[1]) - int(b[2])) + scale)
    return f"DECIMAL({digits},{scale})" if (digits, scale) != (int(a[1]), int(a[2])) else None
