"""Invoices per tenant and billing period: line items priced by the rate card, a summary,
and deterministic Parquet/CSV files written atomically.

A line is a tenant's metered quantity over the period (usage days inside the period, as
final when invoiced) times the rate card's unit price for the tenant's tier, rounded once
to the currency's minor units (half to even). A rate card row may take effect on a day
(``effective_from``; none: since always): each usage day is priced at the row in effect on
it, so a price change inside a period splits the meter's line in two, one per price. Late events that arrived after their day was
final appear as their own correction lines, never folded into the day, in the period they
arrived in. The summary carries
subtotal, credits, total and the period's reconciliation confidence for the tenant.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import polars as pl
from iso4217 import Currency

from ..files import atomic_folder, file_sha256, write_parquet, write_text
from .usage import MAX_FINAL_AFTER_DAYS

# ``period`` names the period as released (end exclusive); ``first_day`` and ``last_day`` say
# which days it holds, both inclusive. ``amount`` and ``total`` are the minor-unit integers in
# the currency's major unit, as exact decimal text (12.34 USD), for a spreadsheet.
# invoice_id (INV-<period>-<tenant>-<currency>: one invoice per currency, as billing
# systems issue them) and line_id (the invoice's, its kind, meter and usage
# day) are derived from what the line is, so a billing system importing the files twice
# (Lago-style, keyed on external ids) recognises every invoice and line.
LINE_SCHEMA = {"invoice_id": pl.String, "line_id": pl.String,
               "tenant_id": pl.String, "period": pl.String, "first_day": pl.Date, "last_day": pl.Date,
               "meter": pl.String, "line_kind": pl.String, "usage_date": pl.Date, "quantity": pl.String,
               "unit": pl.String, "unit_price": pl.String, "amount_minor": pl.Int64, "amount": pl.String,
               "currency": pl.String}
SUMMARY_SCHEMA = {"invoice_id": pl.String, "tenant_id": pl.String, "tenant_name": pl.String,
                  "period": pl.String, "first_day": pl.Date, "last_day": pl.Date,
                  "tier": pl.String, "lines": pl.Int64, "subtotal_minor": pl.Int64, "credits_minor": pl.Int64,
                  "total_minor": pl.Int64, "total": pl.String, "currency": pl.String,
                  "reconciliation_confidence": pl.Float64}


@dataclass(frozen=True)
class Period:
    """A billing period of whole UTC days, [start, end)."""

    name: str
    start: date
    end: date

    def same_days(self, other: Period) -> bool:
        """Whether ``other`` is this period, however either is named."""
        return (self.start, self.end) == (other.start, other.end)

    def covers(self, column: str = "utc_date") -> pl.Expr:
        """Rows whose ``column`` (a date) falls inside the period."""
        return (pl.col(column) >= self.start) & (pl.col(column) < self.end)


# The last day a period may end: its usage is final only a late-data window later.
LAST_PERIOD_END = date.max - timedelta(days=MAX_FINAL_AFTER_DAYS + 1)


def _month_end(first: date) -> date:
    """The day after the month that starts on ``first`` (``date.max`` past the calendar's end)."""
    days = calendar.monthrange(first.year, first.month)[1]
    return first + timedelta(days=days) if first < date(9999, 12, 1) else date.max


def parse_period(text: str) -> Period:
    """``2026-03`` (a calendar month, the default kind) or ``2026-03-01..2026-03-15`` (end
    exclusive). A range that is exactly one calendar month is that month, named ``2026-03``:
    one period, whichever way it is written (its release, folder and receipt are the month's)."""
    # ASCII digits only: a period written in other digits (２０２６-０３) would name its
    # release, folder and invoice ids in them, and 2026-03 would never be found again.
    if m := re.fullmatch(r"([0-9]{4})-([0-9]{2})", text):
        year, month = int(m[1]), int(m[2])
        if year < 1:
            raise ValueError(f"period {text!r}: there is no year 0000")
        if not 1 <= month <= 12:
            raise ValueError(f"period {text!r}: month must be 01-12")
        start = date(year, month, 1)
        period = Period(text, start, _month_end(start))
    elif m := re.fullmatch(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.\.([0-9]{4}-[0-9]{2}-[0-9]{2})", text):
        try:
            start, end = date.fromisoformat(m[1]), date.fromisoformat(m[2])
        except ValueError as exc:  # 2026-02-30, a month 13, year 0000
            raise ValueError(f"period {text!r}: {exc}: not a day of the calendar") from None
        if end <= start:
            raise ValueError(f"period {text!r}: the end must be after the start")
        month = f"{start.year:04d}-{start.month:02d}"
        period = Period(month if start.day == 1 and end == _month_end(start) else text, start, end)
    else:
        raise ValueError(f"period {text!r}: expected YYYY-MM or YYYY-MM-DD..YYYY-MM-DD")
    if period.end > LAST_PERIOD_END:
        raise ValueError(f"period {text!r} ends after {LAST_PERIOD_END}: its usage would be final only after the "
                         "last date the calendar has")
    return period


def minor_units(currency: str) -> int:
    """Digits after the decimal point of ``currency``'s minor unit, from ISO 4217 (KRW 0,
    USD 2, KWD 3). A code with no minor unit (XTS, XXX, metals) or an unknown one is an
    error: guessing 2 would bill a won amount a hundred times over."""
    try:
        exponent = Currency(currency).exponent
    except ValueError:
        raise ValueError(f"currency {currency!r} is not an ISO 4217 code") from None
    if exponent is None:
        raise ValueError(f"currency {currency!r} has no minor unit in ISO 4217: it cannot be invoiced")
    return exponent


def _amount(quantity: Decimal, unit_price: Decimal, currency: str) -> int:
    exp = minor_units(currency)
    return int((quantity * unit_price * (Decimal(10) ** exp)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _major(minor: int, currency: str) -> str:
    """Minor units as exact decimal text in the major unit (1234 USD cents -> 12.34)."""
    exp = minor_units(currency)
    return f"{Decimal(minor).scaleb(-exp):.{exp}f}"


def _text(d: Decimal) -> str:
    """A decimal as plain text, no exponent, no trailing zeros (1.500000 -> 1.5)."""
    s = format(d.normalize(), "f")
    return s if s not in ("-0",) else "0"


def carried_corrections(usage: pl.DataFrame, corrections: pl.DataFrame, period: Period, out: list[Period],
                        billed: pl.DataFrame) -> pl.DataFrame:
    """(tenant_id, meter, utc_date, quantity) the books owe for the periods whose invoices are
    ``out`` and that no invoice billed, so ``period``'s release bills it, once: usage of those
    periods an on-time file loaded after their release added, and corrections that arrived
    in them after their release (a late file loaded into an arrival folder).

    Owed and billed are matched per tenant, meter and the released period holding the usage
    day (a day in none: the day itself), so an event billed once as a correction and later
    counted as on-time usage of its period (its first delivery found) is not billed again.
    ``billed``: the lines of the invoices out (period, line_kind, tenant_id, meter,
    usage_date, quantity). A correction that arrived in a period not out yet is that period's
    to bill. Less is never credited here: a released invoice is not reissued.

    The other way round, the released invoices may have billed more than the books now count
    for a released period: usage that was on time under a longer late-data window, and is a
    correction under today's shorter one. Such a correction arriving in ``period`` was billed
    already; it comes back as a negative row on its own usage day (earliest arrivals first,
    those the longer window held), which ``build_invoices`` sets against it.
    """
    keys = ["tenant_id", "meter", "utc_date"]
    qty = corrections.schema.get("quantity", usage.schema["quantity"])
    schema = {"tenant_id": pl.String, "meter": pl.String, "utc_date": pl.Date, "quantity": qty}
    if not out:
        return pl.DataFrame(schema=schema)

    def held_by(day: str) -> pl.Expr:
        """The first day of the released period holding ``day``, or the day itself."""
        return pl.coalesce(*(pl.when(p.covers(day)).then(pl.lit(p.start)) for p in out), pl.col(day))

    owed = pl.concat([
        usage.filter(pl.any_horizontal(p.covers() for p in out)).select("tenant_id", "meter", "utc_date", "quantity"),
        corrections.filter(pl.any_horizontal(p.covers("arrived") for p in out))
        .select("tenant_id", "meter", "utc_date", "quantity")]).cast(schema)
    owed = owed.with_columns(held_by("utc_date").alias("utc_date")).group_by(keys).agg(pl.col("quantity").sum())
    starts = {p.name: p.start for p in out}
    done = (billed.filter(pl.col("period").is_in(list(starts)))
            .select("tenant_id", "meter", pl.col("quantity").cast(qty),
                    pl.when(pl.col("line_kind") == "usage")
                    .then(pl.col("period").replace_strict(starts, return_dtype=pl.Date))
                    .otherwise(pl.col("usage_date")).alias("utc_date"))
            .with_columns(held_by("utc_date").alias("utc_date"))
            .group_by(keys).agg(pl.col("quantity").sum().alias("done")))
    net = (owed.join(done, on=keys, how="full", coalesce=True)
           .with_columns((pl.col("quantity").fill_null(0) - pl.col("done").fill_null(0)).alias("quantity")))
    missed = net.filter(pl.col("quantity") > 0).select(list(schema))
    over = net.filter(pl.col("quantity") < 0).select(*keys, (-pl.col("quantity")).alias("over"))
    # This period's own arrivals for days of released periods, set against what those billed over.
    arrivals = (corrections.filter(period.covers("arrived"))
                .select("tenant_id", "meter", "utc_date", "arrived", pl.col("quantity").cast(qty))
                .with_columns(held_by("utc_date").alias("_held"))
                .join(over.rename({"utc_date": "_held"}), on=["tenant_id", "meter", "_held"])
                .sort("tenant_id", "meter", "_held", "arrived", "utc_date"))
    upto = pl.col("quantity").cum_sum().over("tenant_id", "meter", "_held")
    billed_already = (arrivals.with_columns(
        (pl.min_horizontal(upto, pl.col("over")) - pl.min_horizontal(upto - pl.col("quantity"), pl.col("over")))
        .alias("quantity"))
        .filter(pl.col("quantity") > 0).group_by("tenant_id", "meter", "utc_date")
        .agg((-pl.col("quantity").sum()).alias("quantity")).select(list(schema)))
    return pl.concat([missed, billed_already.cast(schema)]).sort(keys)


def build_invoices(period: Period, usage: pl.DataFrame, corrections: pl.DataFrame, tenants: pl.DataFrame,
                   price_list: pl.DataFrame, confidence: pl.DataFrame | None = None,
                   carried: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(lines, summary) for ``period``.

    ``usage``/``corrections``: daily_usage() output (usage by its day, corrections by the day
    they arrived); ``tenants``: tenant_id, tier;
    ``price_list``: tier, meter, unit, unit_price (decimal string), currency;
    ``confidence``: tenant-day attribution (utc_date, tenant_id, total_micros, confidence);
    ``carried``: corrections an earlier release missed (``carried_corrections``), billed here too,
    and negative rows for this period's corrections that a release billed already.
    """
    inside = period.covers()
    # A correction is billed in the period it arrives in: the period of its usage day may
    # have gone out already, and a released invoice is never reissued.
    owed = corrections.filter(period.covers("arrived")).select("tenant_id", "meter", "utc_date", "quantity")
    if carried is not None and carried.height:
        owed = pl.concat([owed, carried.select(owed.columns).cast(owed.schema)])
    # A negative carried row is a correction billed already (as on-time usage of a released
    # period): it cancels this period's arrival on that day, and a day cancelled whole has no line.
    late = (owed.group_by("tenant_id", "meter", "utc_date")
            .agg(pl.col("quantity").sum(), (pl.col("quantity") < 0).any().alias("_cancelled"))
            .filter(~(pl.col("_cancelled") & (pl.col("quantity") <= 0)))
            .select("tenant_id", "meter", "quantity", pl.lit("correction").alias("line_kind"),
                    pl.col("utc_date").alias("usage_date")))
    price_cols = ["unit", "unit_price", "currency", "price_from"]
    # Usage is priced day by day (the price in effect on each day), then summed per price.
    regular = (_priced(usage.filter(inside).select("tenant_id", "meter", "utc_date", "quantity"), tenants, price_list)
               .group_by("tenant_id", "tier", "meter", *price_cols).agg(pl.col("quantity").sum())
               .with_columns(pl.lit("usage").alias("line_kind"), pl.lit(None, pl.Date).alias("usage_date")))
    late = _priced(late.with_columns(pl.col("usage_date").alias("utc_date")), tenants, price_list)
    cols = ["tenant_id", "tier", "meter", "quantity", "line_kind", "usage_date", *price_cols]
    priced = pl.concat([regular.select(cols), late.select(cols)])
    rows = []
    for r in priced.sort("tenant_id", "line_kind", "meter", "usage_date", "price_from",
                         nulls_last=False).iter_rows(named=True):
        qty, price = Decimal(r["quantity"]), Decimal(r["unit_price"])
        minor = _amount(qty, price, r["currency"])
        invoice = invoice_id(period, r["tenant_id"], r["currency"])
        # A price that took effect on a day names its line (two prices in a period, two lines);
        # a rate card without effective days gives the ids it always gave.
        meter = r["meter"] + (f"@{r['price_from']}" if r["price_from"] is not None and r["line_kind"] == "usage" else "")
        line = "/".join([invoice, r["line_kind"], meter, *([str(r["usage_date"])] if r["usage_date"] else [])])
        rows.append({"invoice_id": invoice, "line_id": line,
                     "tenant_id": r["tenant_id"], "period": period.name, "first_day": period.start,
                     "last_day": period.end - timedelta(days=1), "meter": r["meter"],
                     "line_kind": r["line_kind"], "usage_date": r["usage_date"], "quantity": _text(qty),
                     "unit": r["unit"], "unit_price": _text(price), "amount_minor": minor,
                     "amount": _major(minor, r["currency"]), "currency": r["currency"]})
    lines = pl.DataFrame(rows, schema=LINE_SCHEMA)
    conf = _confidence(period, confidence)
    names = tenants["name"] if "name" in tenants.columns else pl.Series("name", [None] * tenants.height, pl.String)
    summary = (lines.group_by("invoice_id", "tenant_id", "period", "first_day", "last_day", "currency")
               .agg(pl.len().cast(pl.Int64).alias("lines"), pl.col("amount_minor").sum().alias("subtotal_minor"))
               .join(tenants.select("tenant_id", "tier", names.alias("tenant_name")), on="tenant_id", how="left")
               .join(conf, on="tenant_id", how="left")
               .with_columns(pl.lit(0, pl.Int64).alias("credits_minor"))
               .with_columns((pl.col("subtotal_minor") - pl.col("credits_minor")).alias("total_minor")))
    summary = (summary.with_columns(pl.Series("total", [_major(m, c) for m, c in
                                                        zip(summary["total_minor"], summary["currency"], strict=True)],
                                              dtype=pl.String))
               .select(list(SUMMARY_SCHEMA)).sort("tenant_id", "currency"))  # one invoice per currency
    return lines, summary.cast(SUMMARY_SCHEMA)


def _priced(rows: pl.DataFrame, tenants: pl.DataFrame, price_list: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (tenant_id, meter, utc_date, ...) with the tenant's tier and the rate card row
    in effect on ``utc_date`` (unit, unit_price, currency, price_from: its ``effective_from``,
    null for a row in effect since always): the latest that took effect by that day. A tenant
    the catalog does not know, or a day no row prices, is an error naming them."""
    card = price_list.select("tier", "meter", "unit", "unit_price", "currency",
                             (pl.col("effective_from").cast(pl.Date) if "effective_from" in price_list.columns
                              else pl.lit(None, pl.Date)).alias("price_from"))
    rows = rows.join(tenants.select("tenant_id", "tier"), on="tenant_id", how="left").with_row_index("_r")
    strangers = rows.filter(pl.col("tier").is_null())["tenant_id"].unique().sort()
    if strangers.len():
        raise ValueError(f"usage metered for {strangers.len()} tenant(s) the tenant catalog does not know "
                         f"(first {strangers[0]}): no tier, so no price; add them to the catalog or fix the "
                         "events' subject")
    # Every row the tier and meter have that took effect by the day; the latest of them counts.
    best = (rows.select("_r", "tier", "meter", "utc_date").join(card, on=["tier", "meter"], how="inner")
            .filter(pl.col("price_from").is_null() | (pl.col("price_from") <= pl.col("utc_date")))
            .sort("_r", "price_from", nulls_last=False).unique("_r", keep="last")
            .select("_r", "unit", "unit_price", "currency", "price_from"))
    priced = rows.join(best, on="_r", how="left").drop("_r")
    missing = priced.filter(pl.col("unit_price").is_null())
    if missing.height:
        first = missing.sort("utc_date").row(0, named=True)
        raise ValueError(f"no rate card price for tier {first['tier']!r} and meter {first['meter']!r} on "
                         f"{first['utc_date']} (tenant {first['tenant_id']}): {missing.height} usage row(s) cannot "
                         "be priced; add a price in effect that day")
    return priced


def invoice_id(period: Period, tenant_id: str, currency: str) -> str:
    """The invoice's id: one per tenant, period and currency, the same in every export of it."""
    return f"INV-{period.name}-{tenant_id}-{currency}"


def _confidence(period: Period, tenant_day: pl.DataFrame | None) -> pl.DataFrame:
    if tenant_day is None or tenant_day.height == 0:
        return pl.DataFrame(schema={"tenant_id": pl.String, "reconciliation_confidence": pl.Float64})
    inside = tenant_day.filter(period.covers())
    # Weighted by each day's cost whatever its sign (a credit day weighs by its amount), as
    # the day's confidence is; days without cost weigh equally. A share stays in [0, 1].
    weight = pl.col("total_micros").cast(pl.Float64).abs()
    weighted = (pl.col("confidence") * weight).sum() / weight.sum()
    return inside.group_by("tenant_id").agg(
        pl.when(weight.sum() > 0).then(weighted).otherwise(pl.col("confidence").mean()).clip(0.0, 1.0).round(6)
        .alias("reconciliation_confidence"))


# Text of the catalogs (a tenant's name, a meter, a tier) that a spreadsheet would run as a
# formula (=, +, -, @, a tab or a carriage return first): written to the CSV behind a ', as
# OWASP advises for CSV exports; the Parquet keeps it as it is. Numbers written as text
# (quantities, prices, amounts, a credit's minus sign) are not text of this kind.
_CATALOG_TEXT = ("tenant_name", "meter", "unit", "tier")


def _csv_safe(frame: pl.DataFrame) -> pl.DataFrame:
    risky = [c for c in _CATALOG_TEXT if c in frame.columns]
    return frame.with_columns(pl.when(pl.col(c).str.contains(r"^[=+\-@\t\r]")).then(pl.lit("'") + pl.col(c))
                              .otherwise(pl.col(c)).alias(c) for c in risky)


def write_invoices(lines: pl.DataFrame, summary: pl.DataFrame, out_dir: Path) -> dict[Path, str]:
    """Parquet and CSV of both tables under ``out_dir``, the folder written atomically (all
    four files or none: a write that fails half-way leaves no invoice a billing import could
    pick up, nor a folder a later release would take for a released period); same inputs,
    same bytes (rows sorted, fixed writer settings). Returns each file's sha256, taken in the
    hidden staging folder before the folder is in place: what was written, not what someone
    may have made of it since."""
    files = {}
    with atomic_folder(out_dir) as staging:
        for name, frame in (("invoice_lines", lines), ("invoice_summary", summary)):
            write_parquet(frame, staging / f"{name}.parquet")
            write_text(_csv_safe(frame).write_csv(), staging / f"{name}.csv")
            for file in (f"{name}.parquet", f"{name}.csv"):
                files[out_dir / file] = file_sha256(staging / file)
    return files
