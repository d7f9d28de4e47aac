"""Cost, revenue and margin per tenant over a period, from the books the platform computes.

The attributed cost of each tenant (every kind of line, in micro-units of the bill's
currency) beside what its invoice for the period bills at the rate card (the same
``build_invoices`` the export runs, corrections included), so an analyst sees which tenants
and tiers cost more than they pay, with the attribution's lowest confidence on their days.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from .attribution import UNALLOCATED, billed_days
from .invoices import Period, build_invoices, minor_units
from .pipeline import FinOpsInputs, FinOpsRun, bill_currencies


def usage_period(usage: pl.DataFrame) -> Period:
    """Every usage day the books hold, as one period (end exclusive)."""
    if not usage.height:
        raise ValueError("the books hold no usage: nothing to report")
    start, last = usage["utc_date"].min(), usage["utc_date"].max()
    end = last + timedelta(days=1)
    return Period(f"{start}..{end}", start, end)


def billed_period(result: FinOpsRun) -> Period:
    """The days from the first usage or bill to the last day the bill covers (end exclusive):
    the default report. Usage past the bill's last day has no cost yet to set against its
    revenue, and would read as pure margin. Without any bill, every usage day."""
    billed = billed_days(result.attribution.day)
    held = usage_period(result.usage)
    if not billed.len():
        return held
    start, end = min(held.start, billed.min()), billed.max() + timedelta(days=1)
    return Period(f"{start}..{end}", start, end)


def unbilled_in(result: FinOpsRun, period: Period) -> list[date]:
    """The days of ``period`` with usage the bill does not cover: revenue with no cost beside it."""
    return [d for d in result.unbilled_days(final_only=False) if period.start <= d < period.end]


# Margin as a share of revenue; none without revenue.
_MARGIN_SHARE = pl.when(pl.col("revenue_micros") > 0).then(pl.col("margin_micros") / pl.col("revenue_micros"))


def tenant_margins(inputs: FinOpsInputs, result: FinOpsRun, period: Period) -> pl.DataFrame:
    """One row per tenant with cost or revenue in ``period``: tenant_id, tier, cost_micros,
    revenue_micros (the invoice subtotal, in micro-units), margin_micros, margin (a share of
    revenue, null without revenue), min_confidence, the two currencies, and
    revenue_by_currency (each invoice currency's subtotal).

    Margin is left null when the invoice's currency is not the bill's: subtracting dollars
    from euros would be a number without a meaning. A tenant whose tier prices its meters in
    two currencies has two invoices: its ``invoice_currency`` names both (``EUR+USD``) and
    its revenue, with no one currency to add it up in, is only in ``revenue_by_currency``.
    """
    tenant_day = result.attribution.tenant_day
    cost = (tenant_day.filter(period.covers() & (pl.col("tenant_id") != UNALLOCATED))
            .group_by("tenant_id")
            .agg(pl.col("total_micros").sum().alias("cost_micros"), pl.col("confidence").min().alias("min_confidence")))
    _, summary = build_invoices(period, result.usage, result.corrections, inputs.tenants, inputs.price_list)
    currencies = summary["currency"].unique().to_list()
    to_micros = pl.DataFrame({"currency": currencies, "_scale": [10 ** (6 - minor_units(c)) for c in currencies]},
                             schema={"currency": pl.String, "_scale": pl.Int64})
    one = pl.col("currency").n_unique() == 1
    revenue = (summary.join(to_micros, on="currency")
               .with_columns((pl.col("subtotal_minor") * pl.col("_scale")).alias("revenue_micros"))
               .sort("tenant_id", "currency")
               .group_by("tenant_id")
               .agg(pl.col("currency").str.join("+").alias("invoice_currency"),
                    pl.when(one).then(pl.col("revenue_micros").sum()).alias("revenue_micros"),
                    pl.struct("currency", "revenue_micros").alias("revenue_by_currency")))
    if not (bill := bill_currencies(inputs.billing)):
        raise ValueError("the landing zone holds no bill the FOCUS contract accepts: there is no cost to set "
                         "against revenue")
    bill_currency = bill[0]
    # No invoice is no revenue in any currency: the margin is then the cost, lost.
    same = pl.col("invoice_currency").is_null() | (pl.col("invoice_currency") == pl.lit(bill_currency, pl.String))
    margin = pl.when(same).then(pl.col("revenue_micros").fill_null(0) - pl.col("cost_micros").fill_null(0))
    out = (cost.join(revenue, on="tenant_id", how="full", coalesce=True)
           .join(inputs.tenants.select("tenant_id", "tier"), on="tenant_id", how="left"))  # priced by tier
    return (out.with_columns(pl.col("cost_micros").fill_null(0), margin.alias("margin_micros"),
                             pl.lit(bill_currency, pl.String).alias("cost_currency"))
            .with_columns(_MARGIN_SHARE.alias("margin"))
            .select("tenant_id", "tier", "cost_micros", "revenue_micros", "margin_micros", "margin",
                    "min_confidence", "cost_currency", "invoice_currency", "revenue_by_currency")
            .sort("cost_micros", "tenant_id", descending=[True, False]))


def tier_margins(tenants: pl.DataFrame) -> pl.DataFrame:
    """``tenant_margins`` summed per tier and invoice currency (a tenant without an invoice
    counts in the bill's; one invoiced in two currencies, in a row of its own, ``EUR+USD``,
    without revenue): tenants, cost (the bill's currency), revenue (``currency``), margin and
    how many lose money. Revenue in another currency than the bill's is no sum with its
    cost: margin, margin share and below_cost are then null."""
    same = pl.col("currency").eq_missing(pl.col("cost_currency"))
    return (tenants.with_columns(pl.coalesce("invoice_currency", "cost_currency").alias("currency"))
            .group_by("tier", "currency")
            .agg(pl.len().alias("tenants"), pl.col("cost_micros").sum(), pl.col("revenue_micros").sum(),
                 pl.col("margin_micros").sum(), (pl.col("margin_micros") < 0).sum().alias("below_cost"),
                 pl.col("cost_currency").first())
            .with_columns(pl.when(same).then(pl.col(c)).alias(c) for c in ("margin_micros", "below_cost"))
            .with_columns(pl.when(~pl.col("currency").str.contains("+", literal=True)).then("revenue_micros")
                          .alias("revenue_micros"))  # dollars and euros in one sum mean nothing
            .with_columns(_MARGIN_SHARE.alias("margin"))
            .drop("cost_currency")
            .sort(["cost_micros", "tier", "currency"], descending=[True, False, False]))
