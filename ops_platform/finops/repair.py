"""Documented repairs of quarantined billing rows, so a defect in one field does not lose a
row's cost from the reconciliation.

A billing row that breaks the FOCUS contract stays in quarantine (with its reason) in the
raw layer. Attribution may still count it when the defect is one of these, each a rule a
FinOps analyst would apply by hand, and the repair is recorded on the row:

| quarantine reason | repair |
|---|---|
| ChargePeriodEnd not after ChargePeriodStart | the period is the file's daily charge period: end = start + 1 day |
| not a FOCUS charge category | a FOCUS category spelt in another case (`tax`) is that category; else counted as Usage when its cost and list cost are both positive |
| ChargeClass not null or Correction | `correction` in another case is Correction |
| negative cost (billed or effective) on a Usage charge | a sign error when ListCost is positive and every negative cost's \\|cost\\| <= ListCost: their absolute values |
| BillingCurrency missing | the billing account's currency on its other rows (a currency given but not an ISO 4217 code, `eur`, is no missing one: refused) |
| PublisherName, InvoiceIssuerName, ProviderName or ServiceName missing (Azure leaves PublisherName empty on reservation usage, ServiceName on credits; AWS documents the same gaps) | none needed: attribution reads none of them |
| Tags not a JSON object of scalar values with unique keys | the tags the same ResourceId carries on other rows (a row without a ResourceId has no such rows) |

Anything else, or a row with several defects one of which has no repair, stays out and its
day's confidence pays for it. Repaired rows count as rule-based evidence in the confidence.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

import polars as pl

from ..contracts.definitions import BILLING_FOCUS, FOCUS_CHARGE_CATEGORIES
from ..contracts.model import POLARS_TYPES
from ..ingest.normalize import read_timestamp
from ..ingest.pipeline import RESTATED
from .usage import arrival_date

_PERIOD = "ChargePeriodEnd: not after ChargePeriodStart"
_CATEGORY = "ChargeCategory: not a FOCUS charge category"
_NEGATIVE = ("BilledCost: negative on a Usage charge", "EffectiveCost: negative on a Usage charge")
_CLASS = "ChargeClass: must be null or Correction"
_CURRENCY = "BillingCurrency"
# Columns FOCUS requires that attribution never reads, which providers document leaving empty.
_UNREAD = tuple(f"{c}: missing value" for c in ("PublisherName", "InvoiceIssuerName", "ProviderName", "ServiceName"))
_TAGS = "Tags"
_COST_COLUMNS = ("BilledCost", "EffectiveCost", "ContractedCost")
_SIGN_RULES = [r for r in BILLING_FOCUS.rules if r.reason.startswith(_NEGATIVE)]
_SIGN_COSTS = ("BilledCost", "EffectiveCost", "ListCost")


def repairable_from_other_rows(reason_text: str, record_text: str | None) -> bool:
    """Whether a refused row's every defect has a repair and one of them reads other rows (the
    billing account's currency, the same resource's tags), which other files may hold. Only a
    missing currency is the account's (``US$`` is no spelling of it), and only a row that
    names its resource can take that resource's tags."""
    reasons = _reasons(reason_text)
    try:
        record = json.loads(record_text) if record_text else {}
    except ValueError:
        record = {}
    own = (_PERIOD, _CATEGORY, _CLASS, *_NEGATIVE, *_UNREAD)
    other = (f"{_CURRENCY}: missing value",) + ((_TAGS,) if isinstance(record, dict) and record.get("ResourceId")
                                                 else ())
    return (any(r.startswith(other) for r in reasons)
            and all(r.startswith(own) or r.startswith(other) for r in reasons))


def _reasons(text: str) -> list[str]:
    return [r.strip() for r in (text or "").split(";") if r.strip()]


def _dec(value) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def _some_tags(text: str | None) -> bool:
    try:
        return bool(json.loads(text)) if text and text.strip() else False
    except ValueError:
        return False


def _sign_reasons(record: dict) -> list[str]:
    """The reasons the contract's own sign rules give a record as repaired (the rules, not a
    copy of them): its costs read as numbers, an unreadable one as no value."""
    columns = ("ChargeCategory", "ChargeClass")
    row = pl.DataFrame([{**{c: record.get(c) for c in columns},
                         **{c: float(v) if (v := _dec(record.get(c))) is not None else None for c in _SIGN_COSTS}}],
                       schema={**dict.fromkeys(columns, pl.String), **dict.fromkeys(_SIGN_COSTS, pl.Float64)})
    passed = row.select(r.expr.alias(r.name) for r in _SIGN_RULES).row(0)
    return [r.reason for r, ok in zip(_SIGN_RULES, passed, strict=True) if not ok]


def _in_case(value, allowed: tuple[str, ...]) -> str | None:
    """The allowed value ``value`` spells in another case (``tax`` for Tax), as some exports
    write FOCUS' values; None when it is none of them, or already one as it stands."""
    if not isinstance(value, str) or value in allowed:
        return None
    return next((a for a in allowed if a.lower() == value.strip().lower()), None)


def _fix(record: dict, reason: str, tags_of: dict[str, str], currency_of: dict[str, str]) -> str | None:
    """Apply the repair for ``reason`` in place; the repair's description, or None if none applies."""
    if reason.startswith(_PERIOD):
        return "period end set to start + 1 day"
    if reason in _UNREAD:
        return f"{reason.split(':')[0]} missing (attribution does not read it)"
    if reason.startswith(_CATEGORY):
        spelt = _in_case(record.get("ChargeCategory"), FOCUS_CHARGE_CATEGORIES)
        if spelt is not None:
            record["ChargeCategory"] = spelt
            return f"charge category read as {spelt}"
        cost, listed = _dec(record.get("EffectiveCost")), _dec(record.get("ListCost"))
        if cost is not None and listed is not None and cost > 0 and listed > 0:
            record["ChargeCategory"] = "Usage"
            return "unknown charge category counted as Usage"
        return None
    if reason.startswith(_CLASS):
        if _in_case(record.get("ChargeClass"), ("Correction",)) is None:
            return None
        record["ChargeClass"] = "Correction"
        return "charge class read as Correction"
    if reason.startswith(_NEGATIVE):
        if record.get("ChargeClass") == "Correction":  # `correction` read as Correction: negative by nature
            return "negative cost of a correction kept"
        listed = _dec(record.get("ListCost"))
        costs = {c: _dec(record.get(c)) for c in _COST_COLUMNS}
        negative = {c: v for c, v in costs.items() if v is not None and v < 0}
        if (listed is None or listed <= 0 or None in costs.values() or not negative
                or any(-v > listed for v in negative.values())):
            return None
        for c, v in negative.items():
            record[c] = str(-v)
        return "negative usage cost taken as a sign error"
    if reason.startswith(_CURRENCY):
        account = currency_of.get(record.get("BillingAccountId"))
        # Only a missing currency (or one this row's other reason set already) is the
        # account's: `eur` or `¥` is a currency, and summing it as dollars would be wrong.
        if account is None or (record.get("BillingCurrency") or "").strip() not in ("", account):
            return None
        record["BillingCurrency"] = account
        return f"currency {account} from the billing account"
    if reason.startswith(_TAGS):
        tags = tags_of.get(record.get("ResourceId")) if record.get("ResourceId") else None
        if tags is None:
            return None
        record["Tags"] = tags
        return "tags from the same resource's other rows"
    return None


def repair_billing(quarantine: pl.DataFrame, accepted: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(repaired, unrepaired) quarantined billing rows.

    ``repaired`` has the columns attribution reads (ChargePeriodStart, ChargePeriodEnd,
    x_LineItemId, EffectiveCost as Decimal(38,12), Tags, ChargeCategory) plus ``repair`` and
    the ``file`` it came in; ``unrepaired`` keeps the
    quarantine rows that no rule covers.
    """
    # A resource's tags from its rows that have some: an empty field, `null` or `{}` is no
    # tags, never copied onto a refused row (its tenant's cost would move to shared).
    tagged = accepted.filter(pl.col("ResourceId").is_not_null())
    tags_of = {r: t for r, t in zip(tagged["ResourceId"].to_list(), tagged["Tags"].to_list(), strict=True)
               if _some_tags(t)}
    # A repaired row joins the bill only in the bill's own currency.
    currencies = set(accepted["BillingCurrency"].drop_nulls().to_list())
    currency_of = dict(zip(accepted["BillingAccountId"].to_list(), accepted["BillingCurrency"].to_list(),
                           strict=True))
    fixed, left = [], []
    for row in quarantine.iter_rows(named=True):
        try:
            record = json.loads(row["record"]) if row.get("record") else None
        except ValueError:
            record = None
        notes = []
        if record is not None:
            reasons = _reasons(row["reason"])
            for reason in reasons:
                note = _fix(record, reason, tags_of, currency_of)
                if note is None:
                    notes = []
                    break
                notes.append(note)
            # A category read in another case (`usage`) never met the contract's sign rules:
            # the row as repaired meets them, or their own repair, or stays out.
            if notes and _CATEGORY in reasons and (signs := _sign_reasons(record)):
                note = _fix(record, signs[0], tags_of, currency_of)
                notes = [*notes, note] if note else []
        if not notes or (currencies and record.get("BillingCurrency") not in currencies):
            left.append(row)
            continue
        fixed.append({"ChargePeriodStart": record["ChargePeriodStart"], "x_LineItemId": record["x_LineItemId"],
                      "EffectiveCost": record["EffectiveCost"], "Tags": record["Tags"],
                      "repair": "; ".join(dict.fromkeys(notes)),
                      "ChargeCategory": record.get("ChargeCategory"), "file": row.get("file"),
                      "ChargePeriodEnd": None if _PERIOD in (row["reason"] or "") else record.get("ChargePeriodEnd")})
    repaired = pl.DataFrame(fixed, schema={"ChargePeriodStart": pl.String, "x_LineItemId": pl.String,
                                           "EffectiveCost": pl.String, "Tags": pl.String, "repair": pl.String,
                                           "ChargeCategory": pl.String, "file": pl.String,
                                           "ChargePeriodEnd": pl.String})
    stamp = "%Y-%m-%d %H:%M:%S%.f%:z"
    start = pl.col("ChargePeriodStart").str.to_datetime(stamp, time_zone="UTC")
    repaired = repaired.with_columns(
        start, pl.col("EffectiveCost").cast(POLARS_TYPES["decimal"]),
        # The period repair (and a record without an end) is the file's daily charge period.
        pl.col("ChargePeriodEnd").str.to_datetime(stamp, time_zone="UTC").fill_null(start + pl.duration(days=1)))
    return repaired, pl.DataFrame(left, schema=quarantine.schema)


# A refused charge is spread over at most this many days (a period end in the year 9999 is no
# reason to list every day up to it); a longer one counts on its first day, as an unread one.
_MAX_SPREAD_DAYS = 400


def record_cost(record: pl.Expr) -> pl.Expr:
    """A quarantined bill row's EffectiveCost, read from its record (JSON text) as the contract
    types it; null where it does not read."""
    return record.str.json_path_match("$.EffectiveCost").cast(POLARS_TYPES["decimal"], strict=False)


def _over_charge_days(refused: pl.DataFrame) -> pl.DataFrame:
    """Refused rows, a charge over several UTC days split over them by the time it covers in
    each (as attribution splits an accepted line), so a refused monthly fee weighs on each
    day of the month and not all on its first; a row whose period does not read, or whose cost
    does not, stays on its one day: the UTC day its start falls on when the start reads (a start
    written at 20:00 -07:00 is the next UTC day, as for a row spread), else ``utc_date``."""
    start, end = pl.col("_start"), pl.col("_end")
    spread = (start.is_not_null() & end.is_not_null() & (end > start) & pl.col("_micros").is_not_null()
              & ((end - start) <= pl.duration(days=_MAX_SPREAD_DAYS)))
    one_day = refused.filter(~spread).with_columns(
        pl.coalesce(start.dt.date(), pl.col("utc_date")).alias("utc_date")).drop("_start", "_end")
    several = refused.filter(spread).with_columns(
        pl.date_ranges(start.dt.date(), (end - pl.duration(microseconds=1)).dt.date()).alias("_day")).explode("_day")
    day_start = pl.col("_day").cast(pl.Datetime("us", "UTC"))
    covered = (pl.min_horizontal(end, day_start + pl.duration(days=1)) - pl.max_horizontal(start, day_start))
    several = several.with_columns(
        (pl.col("_micros") * covered.dt.total_microseconds() / (end - start).dt.total_microseconds())
        .round(0).cast(pl.Int64).alias("_micros"), pl.col("_day").alias("utc_date"))
    return pl.concat([one_day, several.select(one_day.columns)])


def billing_for_attribution(accepted: pl.DataFrame, quarantine: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, quality): accepted rows plus repaired ones, and per UTC charge day the count
    of repaired and of still-refused rows (which lower that day's confidence), the money of
    the refused rows whose cost reads (``refused_micros``, by size: a refused credit is as
    missing as a charge) and the count of those whose cost does not (``unreadable_rows``:
    a charge of unknown size). A refused row counts on its charge days (UTC) when they read,
    else on the date its start is written with, else on the day its file arrived."""
    repaired, left = repair_billing(quarantine, accepted)
    cols = ["ChargePeriodStart", "ChargePeriodEnd", "x_LineItemId", "EffectiveCost", "Tags"]
    cols += [c for c in ("ChargeCategory", "AllocatedMethodId", "AllocatedTags") if c in accepted.columns]
    source = pl.col("_source_file") if "_source_file" in accepted.columns else pl.lit(None, pl.String)
    rows = pl.concat([accepted.select(*cols, pl.lit(None, pl.String).alias("repair"), source.alias("file")),
                      repaired.with_columns(pl.col(c).dt.cast_time_unit(accepted.schema[c].time_unit)
                                            for c in ("ChargePeriodStart", "ChargePeriodEnd"))],
                     how="diagonal_relaxed")
    # One row per line, its latest delivery (restatements: ``Contract.restatements``): a
    # repaired copy replaces an earlier accepted one, and is replaced by a later one; on the
    # same file date the accepted copy counts.
    delivered = arrival_date(pl.col("file"))
    rows = (rows.with_columns(delivered.alias("_delivered"), pl.col("repair").is_null().alias("_accepted"))
            .sort("_delivered", "_accepted", descending=True, nulls_last=True, maintain_order=True)
            .unique("x_LineItemId", keep="first", maintain_order=True))
    repaired = repaired.filter(pl.col("x_LineItemId").is_in(
        rows.filter(pl.col("repair").is_not_null())["x_LineItemId"].implode()))
    latest = rows.select("x_LineItemId", pl.col("_delivered").alias("_latest"), pl.lit(True).alias("_in_rows"))
    rows = rows.drop("_delivered", "_accepted", "file")
    day = pl.col("ChargePeriodStart").dt.date()
    field = pl.col("record").cast(pl.String)
    cost = record_cost(field)
    start = field.str.json_path_match("$.ChargePeriodStart")
    charged = start.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    # Still missing from the books: not a restated copy (the copy that counts is in them),
    # nor a line delivered again, as it reads, on the same file date or later. A refused
    # copy later than the line's last readable one is missing: the books still hold the line
    # as it was before. A conflicting re-delivery (one id, two contents in one delivery) is
    # money in doubt: which copy is right is unknown, and with an id derived from the rows it
    # may be a second charge alike in everything but its amounts (one in each part file of a
    # delivery); it counts, as any refused row.
    line = field.str.json_path_match("$.x_LineItemId")
    superseded = (left.select(line.alias("x_LineItemId"), arrival_date(pl.col("file")).alias("_refused_on"))
                  .join(latest, on="x_LineItemId", how="left", maintain_order="left")
                  .select(pl.col("_in_rows").fill_null(False)
                          & (pl.col("_latest").is_null() | pl.col("_refused_on").is_null()
                             | (pl.col("_latest") >= pl.col("_refused_on"))))
                  .to_series())
    conflict = pl.col("reason").str.starts_with("conflicting re-delivery")
    refused = left.with_columns(superseded.alias("_superseded")).filter(
        pl.col("file").is_not_null() & ~pl.col("reason").str.starts_with(RESTATED)
        & (conflict | ~pl.col("_superseded"))).drop("_superseded").with_columns(
        pl.coalesce(charged, arrival_date(pl.col("file"))).alias("utc_date"),
        # Through a float: a size is all the tolerance needs, and a cost past 9.2e12 reads as unknown.
        (cost.cast(pl.Float64).abs() * 1e6).round(0).cast(pl.Int64, strict=False).alias("_micros"),
        start.alias("_start"), field.str.json_path_match("$.ChargePeriodEnd").alias("_end"))
    refused = _over_charge_days(refused.with_columns(read_timestamp("_start"), read_timestamp("_end")))
    quality = pl.concat([
        repaired.group_by(day.alias("utc_date")).agg(pl.len().alias("repaired_rows"), pl.lit(0).alias("refused_rows")),
        refused.group_by("utc_date").agg(pl.lit(0).alias("repaired_rows"), pl.len().alias("refused_rows"),
                                         pl.col("_micros").cast(pl.Float64).sum().alias("refused_micros"),
                                         pl.col("_micros").is_null().sum().alias("unreadable_rows")),
    ], how="diagonal_relaxed").group_by("utc_date").agg(
        pl.col("repaired_rows").sum(), pl.col("refused_rows").sum(),
        # Summed as floats and capped: two refused costs near the Int64 edge must not wrap negative.
        pl.col("refused_micros").sum().clip(upper_bound=2.0**62).cast(pl.Int64),
        pl.col("unreadable_rows").sum().cast(pl.Int64))
    return rows, quality
