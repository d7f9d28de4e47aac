"""The FinOps pipeline from its inputs (the landing zone or the warehouse) to attribution,
anomalies and invoices; one path for the CLI, the Dagster assets and the score."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl

from ..contracts.definitions import CONTRACTS
from ..contracts.model import POLARS_TYPES
from ..ingest.landing import LandingZoneReader
from ..ingest.partitioning import PartitionSpace
from ..ingest.pipeline import RESTATED, ingest_partition, latest_deliveries, quarantine_rows
from ..settings import usage_final_after_days, world_partition_range
from ..timezones import utcnow
from .anomalies import detect_anomalies
from .attribution import CONFIDENCE_TARGET, Attribution, attribute, billed_days
from .invoices import Period, build_invoices, minor_units
from .repair import billing_for_attribution
from .usage import arrival_date, daily_usage, usage_from


@dataclass
class FinOpsInputs:
    usage: pl.DataFrame  # daily usage per tenant and meter (usage.usage_from)
    corrections: pl.DataFrame  # late events after their day was final
    billing: pl.DataFrame  # accepted FOCUS rows
    billing_quarantine: pl.DataFrame  # refused FOCUS rows (reason, record, file)
    services: pl.DataFrame
    tenants: pl.DataFrame
    price_list: pl.DataFrame
    superseded: pl.DataFrame  # later versions of usage events that changed content (usage.usage_from)
    # Rows of each raw table the run read (from_warehouse): stored with the books, so a release
    # can tell they were computed from what the warehouse holds now (``input_counts``).
    counts: pl.DataFrame | None = None

    @classmethod
    def from_landing(cls, world: Path, final_after_days: int | None = None) -> FinOpsInputs:
        """Straight from a landing zone, through the same contracts and day rules as ingestion
        (an event stamped after the date of the file that brought it is quarantined there too).
        ``final_after_days``: the usage finality window (default: the platform setting)."""
        reader = LandingZoneReader(world / "landing")
        days = world_partition_range(world)
        space = PartitionSpace(days.first, days.last, days.tz)
        billing = ingest_partition(CONTRACTS["billing_focus"], reader)
        usage, corrections, superseded = daily_usage(_accepted("usage_events", reader, space=space),
                                                     _window(final_after_days))
        return cls(usage, corrections, billing.accepted, billing.quarantine,
                   *(_accepted(t, reader, whole=True) for t in ("services", "tenants", "price_list")), superseded)

    @classmethod
    def from_warehouse(cls, wh, final_after_days: int | None = None) -> FinOpsInputs:
        """From the warehouse's raw layer (what the daily assets loaded); usage is aggregated
        inside DuckDB, so the events never leave it."""
        counts = input_counts(wh)  # first: rows landing while it reads make the books look stale, never fresh
        with wh.connect(read_only=True) as con:
            usage, corrections, superseded = usage_from(con, "raw.usage_events",
                                                        final_after_days=_window(final_after_days))
        billing, conflicts = _latest_deliveries(
            wh.query("SELECT * FROM raw.billing_focus ORDER BY partition_key, _source_file, _source_row"))
        quarantine = wh.query("SELECT reason, record, file FROM raw.quarantine WHERE source_table = 'billing_focus'")
        return cls(usage, corrections, billing, pl.concat([quarantine, conflicts], how="vertical_relaxed"),
                   wh.query("SELECT * FROM raw.services"), wh.query("SELECT * FROM raw.tenants"),
                   wh.query("SELECT * FROM raw.price_list"), superseded, counts)


def _accepted(table: str, reader: LandingZoneReader, whole: bool = False,
              space: PartitionSpace | None = None) -> pl.DataFrame:
    """The rows of ``table``'s landing files its contract accepts. A file the contract refuses
    whole is an error naming it (its rows would be missing from every figure without a word;
    a refused bill file is the exception, reported as its days unbilled); with ``whole`` (the
    catalog: tenants, tiers, prices), so is a row it quarantines, since a tenant or a price
    left out would read as usage of an unknown tenant or a meter without a price."""
    res = ingest_partition(CONTRACTS[table], reader, space)
    refused = list(res.schema_errors)
    if whole and res.quarantine.height:
        refused += [f"{r['file']}: {r['reason']}" for r in res.quarantine.head(3).iter_rows(named=True)]
        if res.quarantine.height > 3:
            refused.append(f"and {res.quarantine.height - 3} more row(s)")
    if refused:
        raise ValueError(f"the {table} landing files break their contract: {'; '.join(refused[:4])}")
    return res.accepted


# The raw tables the books are computed from.
INPUT_TABLES = ("usage_events", "billing_focus", "quarantine", "services", "tenants", "price_list")


def input_counts(wh) -> pl.DataFrame:
    """(table, raw_partition, rows, digest) of each raw table the books read, per partition
    (null for the unpartitioned catalog tables): the rows and an order-free digest of their
    content, so a partition reloaded with restated values differs even at the same count."""
    present = set(wh.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'")
                  ["table_name"].to_list())
    only = {"quarantine": " WHERE source_table IN ('usage_events', 'billing_focus')"}  # the ones the books read
    parts = [f"SELECT '{t}' AS \"table\", CAST(partition_key AS VARCHAR) AS raw_partition, count(*) AS \"rows\", "
             f"bit_xor(hash(r)) AS digest FROM raw.{t} r{only.get(t, '')} GROUP BY ALL" for t in INPUT_TABLES if t in present]
    schema = {"table": pl.String, "raw_partition": pl.String, "rows": pl.Int64, "digest": pl.UInt64}
    if not parts:
        return pl.DataFrame(schema=schema)
    return wh.query(" UNION ALL ".join(parts)).cast(schema).sort("table", "raw_partition")


def _window(final_after_days: int | None) -> int:
    return usage_final_after_days() if final_after_days is None else final_after_days


def _latest_deliveries(billing: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, restated) of the whole billing table: each partition (file date) was
    deduplicated on its own, so a line re-delivered in a later file date is in the table
    twice. Its latest delivery counts, as a provider's month-to-date export restates earlier
    days; an earlier copy with the same content is dropped, one with other content is listed
    (reason, record, file) as restated, never summed and never missing money."""
    contract = CONTRACTS["billing_focus"]
    names = [c for c in contract.names if c in billing.columns]
    rows, _, restated = latest_deliveries(billing, list(contract.unique_key), names, "partition_key")
    listed = quarantine_rows(contract, restated.rename({"_source_file": "_origin", "_source_row": "_row"})
                             .with_columns(pl.lit(RESTATED).alias("_why")), None)
    return rows, listed.select("reason", "record", "file")


@dataclass
class FinOpsRun:
    usage: pl.DataFrame
    corrections: pl.DataFrame
    attribution: Attribution
    anomalies: pl.DataFrame
    # The refused billing rows counted after a documented repair: line id, charge start, cost,
    # and the repair (raw.quarantine keeps each one's original record and reason).
    repairs: pl.DataFrame
    # Per charge day, the refused billing rows (and their money) still missing from the books,
    # days without any accepted line included (``repair.billing_for_attribution``'s quality).
    quality: pl.DataFrame

    def unbilled_days(self, final_only: bool = True) -> list[date]:
        """Final usage days (any usage day, without ``final_only``) with no billing at all:
        nothing attributed, no evidence, no confidence."""
        days = self.usage.group_by("utc_date").agg(pl.col("final").all())
        if final_only:
            days = days.filter(pl.col("final"))
        billed = billed_days(self.attribution.day).implode()
        return sorted(days.filter(~pl.col("utc_date").is_in(billed))["utc_date"].to_list())


def bill_currencies(billing: pl.DataFrame) -> list[str]:
    """The currencies a bill's rows are in, sorted: attribution works in one (summing two would
    add dollars to euros), and ``focus check`` warns of a file with more."""
    if "BillingCurrency" not in billing.columns:
        return []
    return sorted(billing["BillingCurrency"].drop_nulls().unique().to_list())


def bill_currency(billing: pl.DataFrame) -> str | None:
    """The currency the bill's money is in, as reports name it; the currencies joined by '+'
    for a bill in several (which ``run`` refuses); None for a bill without any."""
    return "+".join(bill_currencies(billing)) or None


def _where_currencies(billing: pl.DataFrame) -> str:
    """Each currency's row count, the rarer ones with their first line id and file: a bill of
    50,000 dollar rows and one euro row must say which row to convert or drop."""
    file = pl.col("_source_file") if "_source_file" in billing.columns else pl.lit(None, pl.String)
    per = (billing.filter(pl.col("BillingCurrency").is_not_null())
           .group_by("BillingCurrency").agg(pl.len().alias("rows"), pl.col("x_LineItemId").first().alias("line"),
                                            file.first().alias("file"))
           .sort("rows", "BillingCurrency", descending=[True, False]))
    parts = []
    for i, r in enumerate(per.iter_rows(named=True)):
        where = "" if i == 0 else f", first {r['line']}" + (f" in {r['file']}" if r["file"] else "")
        parts.append(f"{r['BillingCurrency']} {r['rows']:,} row(s){where}")
    return ", ".join(parts)


def run(inputs: FinOpsInputs) -> FinOpsRun:
    currencies = bill_currencies(inputs.billing)
    if len(currencies) > 1:  # summing them would add dollars to euros
        raise ValueError(f"the bill mixes currencies ({', '.join(currencies)}: {_where_currencies(inputs.billing)}); "
                         "attribution works in one "
                         "currency: convert the rows first or attribute each currency's bill apart")
    usage, corrections = inputs.usage, inputs.corrections
    rows, quality = billing_for_attribution(inputs.billing, inputs.billing_quarantine)
    known = inputs.tenants["tenant_id"] if "tenant_id" in inputs.tenants.columns and inputs.tenants.height else None
    result = attribute(rows, usage, inputs.services, quality, known)
    repairs = rows.filter(pl.col("repair").is_not_null()).select(
        "x_LineItemId", pl.col("ChargePeriodStart").dt.convert_time_zone("UTC").alias("charge_start"),
        # The cost as it counted, in the type raw.billing_focus holds it (DECIMAL(38, 12)).
        pl.col("EffectiveCost").cast(POLARS_TYPES["decimal"]).alias("effective_cost"), "repair")
    return FinOpsRun(usage, corrections, result, detect_anomalies(usage, result.reconciliation), repairs, quality)


def write_tables(wh, result: FinOpsRun, counts: pl.DataFrame | None = None) -> pl.DataFrame:
    """Store a run in the warehouse schema ``finops`` (tenant_day, day with its ``final``
    flag, tenant_service_day, reconciliation, usage_daily, usage_corrections, anomalies,
    repairs, and ``inputs``: the rows of each raw table it was computed from); returns the
    day table."""
    day = result.attribution.day
    tables = {"tenant_day": result.attribution.tenant_day, "day": day,
              "reconciliation": result.attribution.reconciliation, "usage_daily": result.usage,
              "usage_corrections": result.corrections, "anomalies": result.anomalies}
    tables["repairs"] = result.repairs
    if result.attribution.parts is not None:
        tables["tenant_service_day"] = result.attribution.tenant_service_day()
    # Always: a run without a stamp must not leave an older run's stamp beside its books.
    tables["inputs"] = counts if counts is not None else input_counts(wh).clear()
    # When: books computed again from the same raw rows are new books all the same (the
    # release sensor asks again for a period whose release failed or was denied).
    tables["books_computed"] = pl.DataFrame({"computed_at": [utcnow()]})
    wh.replace_partition_tables("finops", "all", {k: v.with_columns(pl.lit("all").alias("partition_key"))
                                                 for k, v in tables.items()})
    return day


class BooksUnavailable(Exception):
    """The stored books cannot be read now; the message says why and what to do."""


@dataclass
class StoredFinOps:
    """What the ``finops/attribution`` asset stored: releasing from it releases exactly the
    numbers its checks passed, without recomputing them."""

    day: pl.DataFrame
    usage: pl.DataFrame
    corrections: pl.DataFrame
    tenant_day: pl.DataFrame
    tenants: pl.DataFrame
    price_list: pl.DataFrame
    # Landing files of usage or billing that did not load (unreadable, or not the contract's
    # columns): source_table, file, reason. Their rows are missing from the books.
    unloaded: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"source_table": pl.String, "file": pl.String, "reason": pl.String}))
    # Why the stored books are not those of a period's raw rows as they are now (None: they are).
    stale: Callable[[Period], str | None] | None = None
    # Rate card rows the contract refused (reason, record): a new price among them would leave
    # the old one pricing the invoices without a word, so a release waits for the fix.
    refused_prices: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"reason": pl.String, "record": pl.String}))
    # Which computation the books are (a digest of their input stamp): a new attribution is
    # new books, so a release the sensor asked for and that failed may be asked for again.
    stamp: str = ""

    @classmethod
    def from_warehouse(cls, wh) -> StoredFinOps:
        """The stored books; ``BooksUnavailable`` says why they cannot be read now: a warehouse
        a run holds for writing (wait), or no attribution stored yet (materialize it)."""
        try:
            return cls._read(wh)
        except duckdb.IOException as exc:  # the file lock: nothing to rebuild, only to wait
            raise BooksUnavailable("the warehouse is busy (a run is writing it): try again when it is done "
                                   f"({str(exc).splitlines()[0]})") from None
        except duckdb.Error as exc:  # no finops tables yet
            raise BooksUnavailable("no cost attribution in the warehouse yet: materialize finops/attribution "
                                   f"(job reconcile_costs) or run `make demo` ({str(exc).splitlines()[0]})") from None

    @classmethod
    def _read(cls, wh) -> StoredFinOps:
        unloaded = wh.query(
            "SELECT DISTINCT source_table, file, reason FROM raw.quarantine "
            "WHERE source_table IN ('usage_events', 'billing_focus') "
            "AND (record IS NULL OR reason LIKE 'file schema:%') ORDER BY file")
        stale, stamp = _stale_and_stamp(wh)
        refused = wh.query("SELECT reason, CAST(record AS VARCHAR) AS record FROM raw.quarantine "
                           "WHERE source_table = 'price_list' ORDER BY row_number")
        return cls(*(wh.query(f"SELECT * FROM finops.{t}") for t in ("day", "usage_daily", "usage_corrections",
                                                                     "tenant_day")),
                   wh.query("SELECT * FROM raw.tenants"), wh.query("SELECT * FROM raw.price_list"), unloaded,
                   stale=stale, stamp=stamp, refused_prices=refused)

    @classmethod
    def from_run(cls, inputs: FinOpsInputs, result: FinOpsRun) -> StoredFinOps:
        """The same view of a run that has not been stored (for scores and tests)."""
        return cls(result.attribution.day, result.usage, result.corrections, result.attribution.tenant_day,
                   inputs.tenants, inputs.price_list)

    def blockers(self, period: Period) -> list[str]:
        """Why the period's invoices may not be released yet (empty: they may)."""
        if self.stale is not None and (why := self.stale(period)):
            return [why]
        day = self.day.filter(period.covers())
        have = set(billed_days(self.day).to_list())  # the feed is judged on the whole bill
        wanted = [period.start + timedelta(days=i) for i in range((period.end - period.start).days)]
        reasons = []
        missing = [d for d in wanted if d not in have]
        if missing:
            hint = ""
            if have and missing[0] > max(have):  # a period not over in the bill: said, not only "missing"
                hint = f"; the bill so far runs to {max(have)}: those days are not billed yet"
            elif have and missing[-1] < min(have):
                hint = f"; the bill begins on {min(have)}"
            reasons.append(f"no billing for {len(missing)} of {len(wanted)} day(s) (first {missing[0]}{hint})")
        unequal = day.filter(pl.col("billed_micros") != pl.col("attributed_micros"))
        if unequal.height:
            reasons.append(f"attribution does not sum to the bill on {unequal.height} day(s) (first "
                           f"{unequal['utc_date'][0]})")
        strangers = pl.Series([], dtype=pl.String)
        if "tenant_id" in self.tenants.columns and self.tenants.height:  # as attribution, with a catalog loaded
            strangers = (pl.concat([self.usage.filter(period.covers()).select("tenant_id"),
                                    self.corrections.filter(period.covers("arrived")).select("tenant_id")])
                         .filter(~pl.col("tenant_id").is_in(self.tenants["tenant_id"].implode()))["tenant_id"]
                         .unique().sort())
        if strangers.len():  # no tier, so no price: their usage cannot be invoiced
            reasons.append(f"usage metered for {strangers.len()} tenant(s) the catalog does not know ("
                           f"{', '.join(strangers.head(5).to_list())}{', ...' if strangers.len() > 5 else ''}): add "
                           "them to the tenant catalog (raw.tenants) or fix the events' subject")
        open_days = self.usage.filter(period.covers() & ~pl.col("final"))["utc_date"].unique().sort()
        if open_days.len():
            reasons.append(f"usage not final yet for {open_days.len()} day(s) (first {open_days[0]}; a day is final once its late-data window has passed)")
        if "refused_micros" in day.columns:  # books stored before refused money was counted lack it
            unreadable = day.filter(pl.col("unreadable_rows") > 0)
            if unreadable.height:
                reasons.append(f"{int(unreadable['unreadable_rows'].sum())} refused billing row(s) whose cost does "
                               f"not read, so the bill is not known (first day {unreadable['utc_date'][0]}): fix "
                               "and reload them (raw.quarantine says why each was refused)")
            # As floats: a sum of refused costs near the Int64 edge must not wrap negative.
            refused = float(day["refused_micros"].cast(pl.Float64).sum())
            billed = float(day["billed_micros"].cast(pl.Float64).abs().sum())
            if refused > (1 - CONFIDENCE_TARGET) * (billed + refused):
                reasons.append(f"refused billing rows add up to {refused / 1e6:,.2f} of the period's bill "
                               f"({refused / (billed + refused):.1%}, over {1 - CONFIDENCE_TARGET:.0%}): fix and "
                               "reload them (raw.quarantine says why each was refused)")
        low = day.filter(pl.col("confidence") < CONFIDENCE_TARGET)
        if low.height:
            why = ""
            if "unallocated_micros" in low.columns and (unallocated := int(low["unallocated_micros"].sum())):
                # The usual cause, named: cost no tenant carries counts as no evidence at all.
                why = (f"; {unallocated / 1e6:,.2f} of their cost is unallocated (a row with no tenant or "
                       "service tag, a tenant the catalog does not know, or a service without usage): "
                       "see the (unallocated) lines of finops.tenant_service_day")
            reasons.append(f"reconciliation confidence under {CONFIDENCE_TARGET:.0%} on {low.height} day(s) "
                           f"(first {low['utc_date'][0]}: {low['confidence'][0]:.3f}{why})")
        # A price in a currency invoices cannot be written in (no minor unit in ISO 4217, XTS
        # say): held here with the reason, not left to fail the release's own run.
        for currency in sorted(self.price_list["currency"].drop_nulls().unique().to_list()
                               if "currency" in self.price_list.columns else []):
            try:
                minor_units(currency)
            except ValueError as exc:
                reasons.append(f"{exc} (a price in raw.price_list): fix the price list")
        # A file that arrived while the period's usage or bill could still arrive, and did not
        # load: its rows are missing, and the invoices would bill short.
        arrived = arrival_date(pl.col("file"))
        last = period.end + timedelta(days=usage_final_after_days())
        if self.refused_prices.height:
            first = self.refused_prices.row(0, named=True)
            reasons.append(f"{self.refused_prices.height} rate card row(s) were refused, so a price the invoices "
                           f"need may be missing and an older one used (first: {first['reason']}: {first['record']}): "
                           "fix the rate card and load it again (raw.quarantine says why each was refused)")
        unloaded = self.unloaded.filter(arrived.is_null() | ((arrived >= period.start) & (arrived <= last)))
        if unloaded.height:
            reasons.append(f"{unloaded.height} usage or billing file(s) did not load, so their rows are missing "
                           f"(first {unloaded['file'][0]}: {unloaded['reason'][0]})")
        return reasons

    def invoices(self, period: Period, carried: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        return build_invoices(period, self.usage, self.corrections, self.tenants, self.price_list, self.tenant_day,
                              carried)


def final_period(usage: pl.DataFrame) -> Period:
    """The run of whole days, from the first usage day, whose usage is final (``usage``:
    utc_date, final): what can be invoiced now."""
    final = usage.group_by("utc_date").agg(pl.col("final").all()).sort("utc_date")
    days: list[date] = final.filter(pl.col("final"))["utc_date"].to_list()
    if not days:
        raise ValueError("no final usage day yet")
    end = days[0]
    for d in days:
        if d != end:
            break
        end = d + timedelta(days=1)
    return Period(f"{days[0]}..{end}", days[0], end)


def _stale_and_stamp(wh) -> tuple[Callable[[Period], str | None], str]:
    """(why, stamp) of the stored books (``finops.inputs``, read once). ``why(period)``: why
    they are not those of the period's raw rows now; a later load whose attribution failed
    or has not run would otherwise be invoiced from old numbers. Only the partitions that
    can change the period count (up to the end of its late window, every billing partition,
    and the catalog): a usage load of today's partition does not hold last month. The raw tables are
    hashed at the first question, not when the books are read for their invoices.
    ``stamp``: a short digest of the stored stamp and of when the books were computed, empty
    without a stamp."""
    try:
        stored = wh.query('SELECT "table", raw_partition, "rows", digest FROM finops.inputs ORDER BY ALL')
    except duckdb.Error:  # no stamp: books stored before it existed
        stored = None
    try:
        computed = wh.query("SELECT max(computed_at) AS t FROM finops.books_computed")["t"][0]
    except duckdb.Error:  # books stored before it existed
        computed = None
    stamp = (hashlib.sha256(repr((stored.rows(), computed)).encode()).hexdigest()[:12]
             if stored is not None else "")
    now: list[pl.DataFrame] = []

    def why(period: Period) -> str | None:
        if stored is None or not stored.height:
            return ("the stored attribution does not say which raw rows it was computed from: materialize "
                    "finops/attribution again")
        if not now:
            now.append(input_counts(wh))
        last = period.end + timedelta(days=usage_final_after_days())
        day = pl.col("raw_partition").str.slice(0, 10).str.to_date(strict=False)
        # Any partition up to the window's end: a billing row's charge may run over later days
        # (a monthly fee is amortized), and late usage loaded into an earlier arrival folder
        # after its period went out is billed with this one (``carried_corrections``). Any
        # billing partition at all: a later file date may restate the period's lines.
        inside = (pl.col("raw_partition").is_null() | day.is_null() | (day <= last)
                  | pl.col("table").is_in(["billing_focus", "quarantine"]))
        keys = ["table", "raw_partition"]
        both = (now[0].filter(inside).join(stored.cast(now[0].schema).filter(inside), on=keys, how="full",
                                           coalesce=True, suffix="_stored", nulls_equal=True)
                .filter(~pl.col("rows").eq_missing(pl.col("rows_stored"))
                        | ~pl.col("digest").eq_missing(pl.col("digest_stored"))))
        if not both.height:
            return None
        changed = sorted(set(both["table"].to_list()))
        return (f"the raw rows of this period changed since finops/attribution last computed the books "
                f"({', '.join(changed)}: {both.height} partition(s), first {both['raw_partition'][0] or 'all'}): "
                "materialize finops/attribution again")
    return why, stamp
