"""Which partition each landing record belongs to, so that every record lands exactly once.

Partitions are days of the display timezone, between a first and a last key. A record is
keyed by its own time (events, samples) or by its file's UTC date (billing). A partition
reads every file that may hold its records; the assignment below is written so that each
record is claimed by exactly one partition's read: records before the first partition or
after the last go to the edge partition, and records that arrive after the late-data
window go to the partition of their arrival date, flagged, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

from ..timezones import local_day_bounds

OUT_OF_RANGE = "outside the platform's partitions"
LATE = "arrived after the late-data window"
EARLY = "stamped after the date of the file that brought it"


@dataclass(frozen=True)
class PartitionSpace:
    first: date
    last: date
    tz: str

    @classmethod
    def from_keys(cls, first: str, last: str, tz: str) -> PartitionSpace:
        return cls(date.fromisoformat(first), date.fromisoformat(last), tz)

    def bounds(self, key: date) -> tuple[datetime, datetime]:
        return local_day_bounds(key, self.tz)

    def clamp(self, d: date) -> date:
        return min(max(d, self.first), self.last)

    def read_dates(self, key: date, late_days: int) -> tuple[date | None, date | None]:
        """Inclusive UTC file-date range a partition must read (None = unbounded)."""
        lo, hi = self._read_window(key, late_days)
        return (None if key == self.first else lo), (None if key == self.last else hi)

    def assign_event_time(self, frame: pl.DataFrame, time_col: str, late_days: int,
                          accept_late: bool = False) -> pl.DataFrame:
        """Add `partition_key` (Date) and `_assign_note` from a record's time and its file's date.

        `frame` must carry `_file_date` (UTC date of the landing file, may be null). A record
        from a file past its day's late window goes to the file's own partition: noted late
        (to be quarantined), or not when ``accept_late``.
        """
        # One time-zone conversion per row (the local date); the UTC read window of each
        # local date, [start date, end date + late window], comes from a handful of days.
        frame = frame.with_columns(pl.col(time_col).dt.convert_time_zone(self.tz).dt.date().alias("_local"))
        local = pl.col("_local")
        windows = {d: self._read_window(d, late_days) for d in frame["_local"].drop_nulls().unique().to_list()}
        win_lo = local.replace_strict({d: w[0] for d, w in windows.items()}, default=None, return_dtype=pl.Date)
        win_hi = local.replace_strict({d: w[1] for d, w in windows.items()}, default=None, return_dtype=pl.Date)
        fd = pl.col("_file_date")
        in_window = fd.is_null() | ((fd >= win_lo) & (fd <= win_hi))
        own = pl.when(local < self.first).then(pl.lit(self.first)).when(local > self.last).then(
            pl.lit(self.last)).otherwise(local)
        by_file = fd.clip(self.first, self.last)
        has_time = pl.col(time_col).is_not_null()
        key = pl.when(has_time & in_window).then(own).when(fd.is_not_null()).then(by_file).otherwise(
            pl.lit(self.first))
        note = (pl.when(has_time & in_window & ((local < self.first) | (local > self.last))).then(pl.lit(OUT_OF_RANGE))
                # stamped after its own file's date: no late arrival, a clock or a record gone wrong
                .when(has_time & ~in_window & (fd < win_lo)).then(pl.lit(EARLY))
                # accepted late (accept_late): a record from a file past its day's window
                .when(has_time & ~in_window & (not accept_late)).then(pl.lit(LATE))
                .otherwise(pl.lit(None, pl.String)))
        return frame.with_columns(key.alias("partition_key"), note.alias("_assign_note")).drop("_local")

    def _read_window(self, day: date, late_days: int) -> tuple[date, date]:
        """The UTC file dates that a local day's own partition reads."""
        start, end = self.bounds(day)
        return start.date(), (end - timedelta(microseconds=1)).date() + timedelta(days=late_days)

    def assign_file_date(self, frame: pl.DataFrame) -> pl.DataFrame:
        fd = pl.col("_file_date")
        out = (fd < self.first) | (fd > self.last)
        return frame.with_columns(
            fd.clip(self.first, self.last).alias("partition_key"),
            pl.when(out).then(pl.lit(OUT_OF_RANGE)).otherwise(pl.lit(None, pl.String)).alias("_assign_note"),
        )
