"""Per-tenant daily cost attribution, reconciled to the bill to the last micro-dollar.

The rules, per UTC charge day (a charge over several days is amortized over them, ``_by_day``):
- **direct**: a cost row tagged with a tenant (``Tags.tenant``) is that tenant's.
- **serving**: an untagged row of a service (``Tags.service``) is shared by the tenants in
  proportion to the service's cost-driving meter that day (the catalog's service -> meter).
- **idle**: warm-pool capacity (``Tags.pool = "warm"``) is spread by the same meter as its
  service's serving cost (whoever drives a service's load drives its headroom), and is
  reported as its own line.
- **overhead**: platform rows (``Tags.service = "platform"``: networking, monitoring) are
  spread by API calls, and so are account-level rows without a tenant, service or pool tag
  (``ChargeCategory`` Tax, Credit or Adjustment: providers tag no tax, account credit or
  adjustment), under their own service ``(account)`` so that no service's unit cost (what
  a usage spike is priced at) carries a tax or a credit.
- **unallocated**: a shared pool whose meter saw no usage, or a resource's row (Usage,
  Purchase) with no service tag, goes to the ``(unallocated)`` line: reported, never dropped.

Each pool is split with largest-remainder allocation in integer micro-dollars, so every
day's tenant lines sum exactly to the day's bill. The bill's own precision (up to 12 decimals)
is kept until each day is rounded to micro-dollars, once (``_micros``).
Confidence per tenant-day is the share of its cost attributed with direct evidence: tagged
and metered shares count fully, rule-based ones (idle, overhead) at ``RULE_WEIGHT``. It is
scaled down for usage days not yet final, and by the day's refused (and, half as much,
repaired) billing rows. The day's confidence is the mean weighted by each line's size
(credits count by their amount), unallocated cost counting zero; a share stays in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from .allocation import allocate

UNALLOCATED = "(unallocated)"
OVERHEAD_METER = "api_calls"
KINDS = ("direct", "serving", "idle", "overhead")
RULE_WEIGHT = 0.9  # evidence weight of a share set by a rule rather than by the tenant's own meter
NOT_FINAL_WEIGHT = 0.95  # usage still inside its late-data window may change
CONFIDENCE_TARGET = 0.95
PICO_DIGITS = 12  # cost digits kept from the bill until each day is rounded to micro-dollars, once
TAG_KEYS = ("tenant", "service", "pool")  # the tag keys attribution reads, exactly
# FOCUS charge categories of the account rather than a resource: untagged, they are overhead.
ACCOUNT_CATEGORIES = ("Tax", "Credit", "Adjustment")
ACCOUNT_SERVICE = "(account)"  # the service such rows are booked to, spread like platform overhead
_TAGS = pl.Struct({k: pl.String for k in TAG_KEYS})


@dataclass
class Attribution:
    tenant_day: pl.DataFrame  # utc_date, tenant_id, <kind>_micros..., total_micros, confidence
    day: pl.DataFrame  # utc_date, billed_micros, attributed_micros, unallocated_micros, confidence, feed_lines, ...
    reconciliation: pl.DataFrame  # utc_date, service, meter, shared, direct and total cost, quantity, unit costs, ...
    # utc_date, tenant_id, service, kind, micros: every tenant line split by the service whose
    # cost it is (null for a row without a service tag); a day's rows sum to its bill.
    parts: pl.DataFrame | None = None

    def tenant_service_day(self) -> pl.DataFrame:
        """Cost per tenant, service and day, a column per kind: the tenant lines by service."""
        if self.parts is None:
            raise ValueError("this attribution kept no per-service parts")
        wide = self.parts.group_by("utc_date", "tenant_id", "service").agg(
            pl.col("micros").filter(pl.col("kind") == k).sum().alias(f"{k}_micros") for k in KINDS)
        return (wide.with_columns(pl.sum_horizontal([f"{k}_micros" for k in KINDS]).alias("total_micros"))
                .sort("utc_date", "tenant_id", "service", nulls_last=True))


def _fits_in_micros(lines: pl.DataFrame) -> None:
    """Refuse a day whose costs add up past what 64-bit micro-units hold (9.2 x 10^12 in the
    bill's currency): its sums would wrap silently, the bill and the attribution alike, and
    reconcile. The contract bounds each line; many lines of one day can still go past."""
    limit = 2**63 - 1
    over = (lines.group_by("utc_date").agg(pl.col("micros").cast(pl.Int128).abs().sum().alias("_abs"))
            .filter(pl.col("_abs") > limit).sort("utc_date"))
    if over.height:
        raise ValueError(f"the costs of {over.height} day(s) add up past {limit / 1e6:.3e} in the bill's currency "
                         f"(first {over['utc_date'][0]}), beyond what attribution sums exactly in micro-units: "
                         "check those days' billing rows (a cost in the wrong unit?)")


def _decoded(text: pl.Expr) -> pl.Expr:
    """A Tags JSON text as the tags attribution reads; an empty field (some exports write ""
    for no tags) is no tags."""
    return pl.when(text.str.strip_chars() != "").then(text).str.json_decode(_TAGS)


def cost_lines(billing: pl.DataFrame) -> pl.DataFrame:
    """Accepted FOCUS rows -> (utc_date, line_id, micros, tenant, service, kind).

    A FOCUS 1.3 allocated charge (``AllocatedMethodId`` set) adds its ``AllocatedTags`` to
    the origin charge's ``Tags``, which it carries too (FOCUS: AllocatedTags hold only the
    tags the split added): a tenant-tagged part is direct cost like any tenant-tagged row, of
    the origin's service, and an untagged part (unused capacity) stays the origin's service
    and pool. Where both name a key, the allocated tag counts.
    """
    tags = _decoded(pl.col("Tags"))
    if "AllocatedTags" in billing.columns and "AllocatedMethodId" in billing.columns:
        added = pl.when(pl.col("AllocatedMethodId").is_not_null()).then(_decoded(pl.col("AllocatedTags")))
        tags = pl.struct(pl.coalesce(added.struct.field(k), tags.struct.field(k)).alias(k) for k in TAG_KEYS)
    end = (pl.col("ChargePeriodEnd").dt.convert_time_zone("UTC") if "ChargePeriodEnd" in billing.columns
           else pl.lit(None, pl.Datetime("us", "UTC")))
    category = (pl.col("ChargeCategory") if "ChargeCategory" in billing.columns
                else pl.lit(None, pl.String)).alias("_category")
    lines = billing.select(
        pl.col("ChargePeriodStart").dt.convert_time_zone("UTC").alias("_start"), end.alias("_end"),
        pl.col("x_LineItemId").alias("line_id"),
        (pl.col("EffectiveCost").cast(pl.Decimal(38, PICO_DIGITS)) * 10**PICO_DIGITS).cast(pl.Int128).alias("_pico"),
        tags.alias("tags"), category).unnest("tags")
    untagged = pl.all_horizontal(pl.col(k).is_null() for k in TAG_KEYS)
    lines = lines.with_columns(
        pl.when(untagged & pl.col("_category").is_in(ACCOUNT_CATEGORIES)).then(pl.lit(ACCOUNT_SERVICE))
        .otherwise(pl.col("service")).alias("service")).drop("_category")
    lines = _micros(_by_day(lines))
    kind = (pl.when(pl.col("tenant").is_not_null()).then(pl.lit("direct"))
            .when(pl.col("service").is_in(["platform", ACCOUNT_SERVICE])).then(pl.lit("overhead"))
            .when(pl.col("pool") == "warm").then(pl.lit("idle"))
            .otherwise(pl.lit("serving")))
    return lines.with_columns(kind.alias("kind"))


def _by_day(lines: pl.DataFrame) -> pl.DataFrame:
    """Each line on the UTC days its charge period covers (``utc_date``), its exact cost
    (``_pico``) split by the time it spent in each day; ``feed_day``: for a line of a day or
    less, the day the middle of its period falls on (null for longer ones).

    A charge within one UTC day (the usual daily or hourly export) stays whole on that day.
    A longer one (a monthly fee, a recurring commitment, a day in another time zone) is
    amortized, as FOCUS' EffectiveCost intends, instead of landing on its first day: each
    day's part is floored to the pico-dollar and the pico-dollars left go to the parts with
    the largest remainders, so the parts sum to the line exactly and each day is still
    rounded once (``_micros``). A part's line id is the line's with ``@`` and its day. A
    missing end (a file without the column) books the line on its start day.
    """
    day = pl.duration(days=1)
    first = pl.col("_start").dt.date()
    last = (pl.col("_end") - pl.duration(microseconds=1)).dt.date()
    middle = (pl.col("_start") + (pl.col("_end") - pl.col("_start")) / 2).dt.date()
    feed_day = (pl.when(pl.col("_end").is_null()).then(first)
                .when(pl.col("_end") - pl.col("_start") <= day).then(middle).alias("feed_day"))
    spread = pl.col("_end").is_not_null() & (last > first)
    lines = lines.with_columns(feed_day)
    whole = lines.filter(~spread).with_columns(first.alias("utc_date"))
    parts = lines.filter(spread)
    if not parts.height:
        return whole.drop("_start", "_end")
    day_start = pl.col("utc_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    inside = (pl.min_horizontal(pl.col("_end"), day_start + day)
              - pl.max_horizontal(pl.col("_start"), day_start)).dt.total_microseconds().cast(pl.Int128)
    span = (pl.col("_end") - pl.col("_start")).dt.total_microseconds().cast(pl.Int128)
    exact = pl.col("_pico") * pl.col("_in")
    parts = (parts.with_row_index("_line").with_columns(pl.date_ranges(first, last).alias("utc_date"))
             .explode("utc_date")
             .with_columns(inside.alias("_in"), span.alias("_span"))
             .with_columns((exact // pl.col("_span")).alias("_floor"), (exact % pl.col("_span")).alias("_rest")))
    left = pl.col("_pico").first() - pl.col("_floor").sum()  # in [0, days of the line)
    rank = pl.struct(pl.col("_rest"), pl.col("utc_date")).rank("ordinal", descending=True)
    parts = parts.with_columns(
        (pl.col("_floor") + (rank.over("_line") <= left.over("_line")).cast(pl.Int128)).alias("_pico"),
        (pl.col("line_id") + "@" + pl.col("utc_date").cast(pl.String)).alias("line_id"),
    ).drop("_line", "_in", "_span", "_floor", "_rest")
    return pl.concat([whole, parts], how="vertical_relaxed").drop("_start", "_end")


def billed_days(day: pl.DataFrame) -> pl.Series:
    """The days a bill covers, from ``Attribution.day``: with a daily (or finer) feed, the
    days one of its lines of a day or less falls on, so a monthly fee spread over a day
    whose daily file never came does not make it look billed; a bill of longer charges only
    covers the days they cover."""
    if "feed_lines" in day.columns and day["feed_lines"].sum() > 0:
        return day.filter(pl.col("feed_lines") > 0)["utc_date"]
    return day["utc_date"]


def _micros(lines: pl.DataFrame) -> pl.DataFrame:
    """Each line's cost in whole micro-dollars (``micros``, Int64) from its exact cost in
    pico-dollars (``_pico``), rounded once per day: the day's exact total is rounded (half to
    even), every line is floored, and the micro-dollars left go to the lines with the
    largest fractions (ties by line id). A bill of sub-micro-dollar lines (per-request
    charges) keeps its total instead of losing each line's fraction."""
    unit = 10**(PICO_DIGITS - 6)
    days = lines.group_by("utc_date").agg(pl.col("_pico").sum().alias("_total"),
                                          (pl.col("_pico") // unit).sum().alias("_floors"))
    left = {}
    for day, total, floors in days.iter_rows():
        whole, rest = divmod(int(total), unit)
        whole += rest * 2 > unit or (rest * 2 == unit and whole % 2 == 1)  # half to even
        left[day] = whole - int(floors)  # in [0, lines): floors never exceed the floor of the total
    rank = pl.struct((pl.col("_pico") % unit).alias("frac"), pl.col("line_id")).rank("ordinal", descending=True)
    extra = pl.col("utc_date").replace_strict(left, return_dtype=pl.Int64, default=0)
    return lines.with_columns(
        ((pl.col("_pico") // unit) + (rank.over("utc_date") <= extra).cast(pl.Int128)).cast(pl.Int64).alias("micros")
    ).drop("_pico")


def attribute(billing: pl.DataFrame, usage: pl.DataFrame, services: pl.DataFrame,
              quality: pl.DataFrame | None = None, tenants: pl.Series | None = None) -> Attribution:
    """Attribute every cost row of ``billing`` to tenants (see the module docstring).

    ``billing``: accepted (and repaired) FOCUS rows; ``usage``: daily_usage() output;
    ``services``: catalog (service, meter); ``quality``: (utc_date, repaired_rows,
    refused_rows) from ``repair.billing_for_attribution``, which lower that day's confidence;
    ``tenants``: the catalog's tenant ids. A row tagged with a tenant the catalog does not
    know (``T-00028`` for ``t-00028``) is nobody's direct cost: it goes to the unallocated
    line (confidence 0), and the day counts it in ``unknown_tenant_micros``. So does the share
    of shared cost that usage metered for such a tenant drives: it is no tenant's to bill, and
    spreading it over the others would bill them for it.
    """
    lines = cost_lines(billing)
    _fits_in_micros(lines)
    unknown = pl.lit(False)
    if tenants is not None:
        unknown = (pl.col("kind") == "direct") & ~pl.col("tenant").is_in(tenants.implode())
    lines = lines.with_columns(unknown.alias("_unknown_tenant"))
    # Overhead is spread by API calls whatever the catalog says of "platform": one meter per
    # service, so one pool per (day, service, kind).
    meter_of = pl.concat([services.filter(~pl.col("service").is_in(["platform", ACCOUNT_SERVICE]))
                          .select("service", "meter"),
                          pl.DataFrame({"service": ["platform", ACCOUNT_SERVICE], "meter": [OVERHEAD_METER] * 2})])
    direct = (lines.filter((pl.col("kind") == "direct") & ~pl.col("_unknown_tenant"))
              .group_by("utc_date", pl.col("tenant").alias("tenant_id"), "service", "kind")
              .agg(pl.col("micros").sum()))
    stray = (lines.filter(pl.col("_unknown_tenant"))
             .group_by("utc_date", "service", "kind").agg(pl.col("micros").sum())
             .select("utc_date", pl.lit(UNALLOCATED).alias("tenant_id"), "service", "kind", "micros"))
    pools = (lines.filter(pl.col("kind") != "direct")
             .group_by("utc_date", "service", "kind").agg(pl.col("micros").sum().alias("amount"))
             .join(meter_of, on="service", how="left"))
    weights = usage.select("utc_date", "meter", "tenant_id", pl.col("quantity").cast(pl.Float64).alias("weight"))
    shares = allocate(pools, pools.select("utc_date", "service", "kind", "meter").join(
        weights, on=["utc_date", "meter"], how="inner"), ["utc_date", "service", "kind"], "tenant_id",
        out="micros")
    stranger = (~pl.col("tenant_id").is_in(tenants.implode()) if tenants is not None else pl.lit(False))
    shares = shares.with_columns(stranger.alias("_unknown_tenant"))
    unknown_usage = (shares.filter(pl.col("_unknown_tenant")).group_by("utc_date")
                     .agg(pl.col("micros").sum().alias("_unknown_usage_micros")))
    shares = shares.with_columns(pl.when(pl.col("_unknown_tenant")).then(pl.lit(UNALLOCATED))
                                 .otherwise(pl.col("tenant_id")).alias("tenant_id"))
    placed = shares.group_by("utc_date", "service", "kind").agg(pl.col("micros").sum().alias("placed"))
    left = (pools.join(placed, on=["utc_date", "service", "kind"], how="left")
            .with_columns((pl.col("amount") - pl.col("placed").fill_null(0)).alias("micros"))
            .filter(pl.col("micros") != 0))
    unalloc = left.select("utc_date", pl.lit(UNALLOCATED).alias("tenant_id"), "service", "kind", "micros")
    columns = ["utc_date", "tenant_id", "service", "kind", "micros"]
    parts = pl.concat([direct.select(columns), shares.select(columns), unalloc, stray])
    # One row per tenant-day with a column per kind (a kind the day lacks sums to 0).
    wide = parts.group_by("utc_date", "tenant_id").agg(
        pl.col("micros").filter(pl.col("kind") == k).sum().alias(f"{k}_micros") for k in KINDS)
    wide = wide.with_columns(pl.sum_horizontal([f"{k}_micros" for k in KINDS]).alias("total_micros"))

    # Confidence: evidence share, then the day's source penalties.
    final = usage.group_by("utc_date").agg(pl.col("final").all())
    day_rows = lines.group_by("utc_date").agg(pl.len().alias("rows"), pl.col("micros").sum().alias("billed_micros"),
                                              pl.col("micros").abs().sum().alias("_gross_micros"),
                                              (pl.col("feed_day") == pl.col("utc_date")).sum().alias("feed_lines"),
                                              pl.col("micros").filter(pl.col("_unknown_tenant")).sum()
                                              .alias("unknown_tenant_micros"))
    counts = ("repaired_rows", "refused_rows", "refused_micros", "unreadable_rows")
    q = (quality if quality is not None and quality.height else pl.DataFrame(schema={"utc_date": pl.Date}))
    q = q.with_columns(pl.lit(0, pl.Int64).alias(c) for c in counts if c not in q.columns)
    day_rows = (day_rows.join(q, on="utc_date", how="left").join(final, on="utc_date", how="left")
                .join(unknown_usage, on="utc_date", how="left")
                .with_columns(*(pl.col(c).fill_null(0) for c in counts), pl.col("final").fill_null(False),
                              (pl.col("unknown_tenant_micros") + pl.col("_unknown_usage_micros").fill_null(0))
                              .alias("unknown_tenant_micros"))
                .drop("_unknown_usage_micros"))
    # A refused row costs its share of the day's rows (a repaired one, half of that), or the
    # refused money's share of the day's money when that is larger: one refused charge of a
    # third of the day is a third of the day missing, not one row in a hundred. A refused row
    # whose cost does not read is a charge of unknown size: the day's bill is not known.
    by_rows = (pl.col("refused_rows") + 0.5 * pl.col("repaired_rows")) / (pl.col("rows") + pl.col("refused_rows"))
    refused = pl.col("refused_micros").cast(pl.Float64)
    by_money = (refused / (pl.col("_gross_micros").cast(pl.Float64) + refused)).fill_nan(0.0)
    missing = pl.max_horizontal(by_rows, by_money)
    factor = ((1 - missing) * pl.when(pl.col("final")).then(1.0).otherwise(NOT_FINAL_WEIGHT)
              * pl.when(pl.col("unreadable_rows") > 0).then(0.0).otherwise(1.0))
    day_rows = day_rows.with_columns(factor.alias("source_factor")).drop("_gross_micros")
    evidence = (pl.col("direct_micros") + pl.col("serving_micros")
                + RULE_WEIGHT * (pl.col("idle_micros") + pl.col("overhead_micros")))
    tenant_day = (wide.join(day_rows.select("utc_date", "source_factor"), on="utc_date", how="left")
                  .with_columns(pl.when(pl.col("tenant_id") == UNALLOCATED).then(0.0)
                                .when(pl.col("total_micros") != 0)
                                # credits can make the evidence share leave [0, 1]: a share stays a share
                                .then((evidence / pl.col("total_micros")).clip(0.0, 1.0) * pl.col("source_factor"))
                                .otherwise(pl.col("source_factor")).alias("confidence"))
                  .drop("source_factor").sort("utc_date", "tenant_id"))
    per_day = tenant_day.group_by("utc_date").agg(
        pl.col("total_micros").sum().alias("attributed_micros"),
        pl.col("total_micros").filter(pl.col("tenant_id") == UNALLOCATED).sum().alias("unallocated_micros"),
        # Weighted by the size of each line, credits included; a day whose lines are all zero
        # has no cost to attribute and keeps its sources' factor (below).
        ((pl.col("confidence") * pl.col("total_micros").abs()).sum()
         / pl.col("total_micros").abs().sum()).fill_nan(None).alias("confidence"),
        (pl.col("tenant_id") != UNALLOCATED).sum().alias("tenants"))
    day = (day_rows.join(per_day, on="utc_date", how="left")
           .with_columns(pl.col("confidence").fill_null(pl.col("source_factor"))).sort("utc_date"))
    return Attribution(tenant_day, day, _reconcile(lines, usage, meter_of, left), parts)


def _reconcile(lines: pl.DataFrame, usage: pl.DataFrame, meter_of: pl.DataFrame,
               left: pl.DataFrame) -> pl.DataFrame:
    """Metering vs infrastructure per service and day.

    ``cost_micros`` is the service's shared cost (serving, idle, overhead): what its meter
    drives, so ``unit_cost_usd`` is what one more unit of the meter costs, the figure a usage
    spike is priced at. ``direct_micros`` is its tenant-tagged cost (dedicated capacity);
    ``total_micros`` both, so a day's services (a line without a service tag under a null
    service) add up to its bill, and ``loaded_unit_cost_usd`` is the fully loaded unit cost.
    """
    micros = pl.col("micros")
    cost = (lines.group_by("utc_date", "service")
            .agg(micros.filter(pl.col("kind") != "direct").sum().alias("cost_micros"),
                 micros.filter(pl.col("kind") == "idle").sum().alias("idle_micros"),
                 micros.filter(pl.col("kind") == "direct").sum().alias("direct_micros"),
                 micros.sum().alias("total_micros")))
    # Summed as the usage is held (exact decimals): a float sum shows 14765405.243999999 for .244.
    metered = usage.group_by("utc_date", "meter").agg(pl.col("quantity").sum())
    unexplained = left.group_by("utc_date", "service").agg(micros.sum().alias("unexplained_micros"))

    def per_unit(column: str) -> pl.Expr:
        return pl.when(pl.col("quantity") > 0).then(pl.col(column) / 1e6 / pl.col("quantity").cast(pl.Float64)).otherwise(None)

    return (cost.join(meter_of, on="service", how="left")
            .join(metered, on=["utc_date", "meter"], how="left")
            .join(unexplained, on=["utc_date", "service"], how="left", nulls_equal=True)  # untagged rows too
            # A service no meter drives has no quantity (null, not 0: nothing was measured).
            .with_columns(pl.when(pl.col("meter").is_not_null()).then(pl.col("quantity").fill_null(0)).alias("quantity"),
                          pl.col("unexplained_micros").fill_null(0))
            .with_columns(per_unit("cost_micros").alias("unit_cost_usd"),
                          per_unit("total_micros").alias("loaded_unit_cost_usd"))
            .select("utc_date", "service", "meter", "cost_micros", "idle_micros", "direct_micros", "total_micros",
                    "quantity", "unexplained_micros", "unit_cost_usd", "loaded_unit_cost_usd")
            .sort("utc_date", "service", nulls_last=True))
