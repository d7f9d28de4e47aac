"""Data contracts as small typed objects, independent of any validation engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

DType = Literal["string", "int", "float", "decimal", "timestamp", "date", "bool"]
PartitionRule = Literal["event_time", "file_date", "static"]

POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(), "int": pl.Int64(), "float": pl.Float64(), "decimal": pl.Decimal(38, 12),
    "timestamp": pl.Datetime("us", "UTC"), "date": pl.Date(), "bool": pl.Boolean(),
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: DType = "string"
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    regex: str | None = None
    required: bool = True  # must be present in every file
    source: str | None = None  # derive this column by casting another one (e.g. time -> event_time)


@dataclass(frozen=True)
class Rule:
    """A row rule over a derived boolean column (for cross-field conditions)."""

    name: str
    expr: pl.Expr
    reason: str


@dataclass(frozen=True)
class Contract:
    table: str
    columns: tuple[Column, ...]
    rules: tuple[Rule, ...] = ()
    record_id: str | None = None  # column that names a record in quarantine rows
    unique_key: tuple[str, ...] = ()  # unique in the accepted table (after dedup)
    partition_rule: PartitionRule = "event_time"
    time_column: str | None = None  # timestamp that decides the partition
    late_window_days: int = 0  # how long after a partition ends its records may still arrive
    # A record later than that: quarantined, or accepted in the partition of the file that
    # brought it ("arrival"), for sources whose consumers handle lateness themselves (usage
    # events become corrections of their day).
    late_rows: Literal["quarantine", "arrival"] = "quarantine"
    # A line-id column that files may lack (custom, not part of the standard): derived from
    # each row's content then (``normalize._with_line_keys`` and ``normalize.line_ids``).
    line_id: str | None = None
    # Columns outside the contract that tell charges apart in a derived line id when a file
    # has them (a linked account, a region, a SKU): never amounts, which a restatement changes.
    line_identity: tuple[str, ...] = ()
    # Columns of the contract a provider may change on a line it already delivered (tags it
    # back-fills once a new one is activated): like the amounts, no part of a derived line
    # id's content, only of the order that numbers lines otherwise alike.
    line_labels: tuple[str, ...] = ()
    # A record re-sent with other content in a later file date: refused (the first delivery
    # counts), or the latest delivery counts ("latest": a provider restating a bill line as
    # its month-to-date export settles), the earlier one kept in quarantine as restated.
    restatements: Literal["refused", "latest"] = "refused"
    # Column names an earlier version of the source's spec used -> today's: a file still
    # using one is refused with the rename it needs, not a bare "missing column".
    former_names: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # The source reports all day, every day (counters, samples, usage, the daily bill): a
    # partition that accepts no row breaks the contract, a day that did not land, rather than
    # passing empty. Sources of events that come and go (ramp steps) leave it False.
    continuous: bool = False
    flatten: dict[str, str] = field(default_factory=dict)  # struct field path -> column name

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def content(self) -> list[str]:
        """The columns two deliveries of one record are compared on. A text column another
        column parses (a CloudEvents ``time``, read as ``event_time``) counts by its parsed
        value: one instant written two ways (``Z``, ``+00:00``) is the same delivery."""
        parsed = {c.source for c in self.columns if c.source}
        return [n for n in self.names if n not in parsed]
