"""Daily usage per tenant and meter from metering CloudEvents, with a late-data window.

A usage day (UTC) is final ``final_after_days`` days after it ends (T+2 by default): events
that arrive by then count in the day; events that arrive later become correction rows for
that day, listed apart and never folded silently into a day already invoiced. Events are
deduplicated on (source, id), the CloudEvents identity.

One DuckDB query does it, over whatever holds the events (a frame, the warehouse's
``raw.usage_events``, Parquet files), so 10^8 events are aggregated without ever being
loaded into Python.
"""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl

FINAL_AFTER_DAYS = 2
# Quantities are summed as decimals (metered values carry at most 6 decimals), so the
# invoiced quantity is exactly the sum of the events, with no float drift.
QUANTITY = pl.Decimal(38, 6)
_ARRIVAL = r"dt=([0-9]+-[0-9]+-[0-9]+)"  # no braces: it is spliced into format strings
# Accepted events as the ingest stores them (a frame or the warehouse table).
ACCEPTED_EVENTS = ("SELECT source, id, subject AS tenant_id, meter, quantity, event_time, "
                   f"CAST(regexp_extract(_source_file, '{_ARRIVAL}', 1) AS DATE) AS arrived FROM {{relation}}")


def arrival_date(source_file: pl.Expr) -> pl.Expr:
    """The day an event arrived: the landing file's ``dt=`` folder."""
    return source_file.str.extract(_ARRIVAL, 1).str.to_date("%Y-%m-%d")


def _query(events_sql: str, final_after_days: int) -> str:
    late = f"arrived > utc_date + INTERVAL {int(final_after_days)} DAY"
    return f"""
        WITH ev AS (SELECT *, CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS utc_date FROM ({events_sql})),
        once AS (  -- one row per event: a re-delivery has the same (source, id) and content
            SELECT source, id, tenant_id, meter, quantity, utc_date, min(arrived) AS arrived
            FROM ev GROUP BY ALL)
        SELECT utc_date, tenant_id, meter, sum(CAST(quantity AS DECIMAL(38, 6))) AS quantity, count(*) AS events,
               coalesce({late}, false) AS late, CASE WHEN {late} THEN arrived END AS arrived,
               max(arrived) AS last_arrival
        FROM once GROUP BY ALL"""


def usage_from(con: duckdb.DuckDBPyConnection, events_sql: str, final_after_days: int = FINAL_AFTER_DAYS,
               as_of: date | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(usage, corrections) from the events ``events_sql`` selects (columns source, id,
    tenant_id, meter, quantity, event_time, arrived (DATE); e.g. ACCEPTED_EVENTS), on ``con``.

    ``usage``: utc_date, tenant_id, meter, quantity (Decimal), events, final (the day is past
    its window as of ``as_of``, default the latest arrival). ``corrections``: the same keys
    for events that arrived after their day was final, with their arrival date. A
    re-delivery is the same (source, id) with the same content; the ingest quarantines
    conflicting ones before they get here.
    """
    agg = pl.from_arrow(con.sql(_query(events_sql, final_after_days)).to_arrow_table())
    agg = agg.with_columns(pl.col("quantity").cast(QUANTITY), pl.col("events").cast(pl.UInt32),
                           pl.col("utc_date").cast(pl.Date), pl.col("arrived").cast(pl.Date),
                           pl.col("last_arrival").cast(pl.Date))
    if as_of is None:
        as_of = agg["last_arrival"].max() or date.min
    keys = ["utc_date", "tenant_id", "meter"]
    usage = (agg.filter(~pl.col("late")).group_by(keys).agg(pl.col("quantity").sum(), pl.col("events").sum())
             .with_columns((pl.col("utc_date") + pl.duration(days=final_after_days) < pl.lit(as_of)).alias("final"))
             .sort(keys))
    corrections = (agg.filter(pl.col("late")).group_by([*keys, "arrived"])
                   .agg(pl.col("quantity").sum(), pl.col("events").sum()).sort([*keys, "arrived"]))
    return usage, corrections


def daily_usage(events: pl.DataFrame, final_after_days: int = FINAL_AFTER_DAYS,
                as_of: date | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``usage_from`` over a frame of accepted events (as ``raw.usage_events`` holds them)."""
    con = duckdb.connect()
    try:
        frame = events.select("source", "id", "subject", "meter", "quantity", "event_time", "_source_file")
        con.register("accepted_events", frame.to_arrow())
        return usage_from(con, ACCEPTED_EVENTS.format(relation="accepted_events"), final_after_days, as_of)
    finally:
        con.close()
