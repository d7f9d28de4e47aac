"""Daily usage per tenant and meter from metering CloudEvents, with a late-data window.

A usage day (UTC) is final ``final_after_days`` days after it ends (T+2 by default): events
that arrive by then count in the day; events that arrive later become correction rows for
that day, listed apart and never folded silently into a day already invoiced. Events are
deduplicated on (source, id), the CloudEvents identity.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

FINAL_AFTER_DAYS = 2
# Quantities are summed as decimals (metered values carry at most 6 decimals), so the
# invoiced quantity is exactly the sum of the events, with no float drift.
QUANTITY = pl.Decimal(38, 6)
_ARRIVAL = r"dt=(\d{4}-\d{2}-\d{2})"


def arrival_date(source_file: pl.Expr) -> pl.Expr:
    """The day an event arrived: the landing file's ``dt=`` folder."""
    return source_file.str.extract(_ARRIVAL, 1).str.to_date("%Y-%m-%d")


def daily_usage(events: pl.DataFrame, final_after_days: int = FINAL_AFTER_DAYS,
                as_of: date | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(usage, corrections) from accepted usage events.

    ``usage``: utc_date, tenant_id, meter, quantity (Decimal), events, final (the day is past its
    window as of ``as_of``, default the latest arrival). ``corrections``: the same keys for
    events that arrived after their day was final, with their arrival date.
    """
    ev = (events.unique(subset=["source", "id"], keep="first", maintain_order=True)
          .select(pl.col("event_time").dt.date().alias("utc_date"), pl.col("subject").alias("tenant_id"),
                  "meter", pl.col("quantity").cast(QUANTITY), arrival_date(pl.col("_source_file")).alias("arrived")))
    if as_of is None:
        as_of = ev["arrived"].max() if ev.height else date.min
    deadline = pl.col("utc_date") + timedelta(days=final_after_days)
    on_time = ev.filter(pl.col("arrived").is_null() | (pl.col("arrived") <= deadline))
    late = ev.filter(pl.col("arrived") > deadline)
    keys = ["utc_date", "tenant_id", "meter"]
    usage = (on_time.group_by(keys).agg(pl.col("quantity").sum(), pl.len().alias("events"))
             .with_columns((pl.col("utc_date") + timedelta(days=final_after_days) < pl.lit(as_of)).alias("final"))
             .sort(keys))
    corrections = (late.group_by([*keys, "arrived"]).agg(pl.col("quantity").sum(), pl.len().alias("events"))
                   .sort([*keys, "arrived"]))
    return usage, corrections
