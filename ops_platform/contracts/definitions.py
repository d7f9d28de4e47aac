"""The contract of every landing source."""

from __future__ import annotations

import json

import polars as pl

from ..receipts.canonical import no_duplicate_keys
from ..world.billing import FOCUS_CHARGE_CATEGORIES, FOCUS_MANDATORY
from ..world.catalog import COHORTS, METERS, TIERS
from .model import Column, Contract, Rule

FOCUS_SERVICE_CATEGORIES = (
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
    "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
    "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
    "Storage", "Web", "Other",
)
PIPELINES = ("receipt", "approval", "metering")


def key_values_problem(s: str | None) -> str | None:
    """What keeps ``s`` from FOCUS's key-value format, in a few words (None when it is in it):
    a JSON object whose values are scalars (no nested objects or arrays) and whose keys are
    unique, or null (or empty, or the JSON text ``null``, as Spark and Athena unloads write a
    null map)."""
    if s is None or not s.strip():  # an empty field: no tags
        return None
    try:
        # A key given twice is refused: Python keeps the last, polars' decoder the first, so
        # {"tenant": "a", "tenant": "b"} would be attributed to whichever reader asked.
        value = json.loads(s, object_pairs_hook=no_duplicate_keys)
    except ValueError as exc:
        twice = str(exc).removeprefix("duplicate key ")
        return f"key {twice} given twice" if str(exc).startswith("duplicate key ") else "not JSON"
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"{_JSON_KIND.get(type(value), 'a value')}, not an object"
    nested = next((k for k, v in value.items() if isinstance(v, (dict, list))), None)
    return None if nested is None else f"key {nested!r} holds {_JSON_KIND[type(value[nested])]}, not a scalar"


_JSON_KIND = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number"}


def _key_values_or_null(s: str | None) -> bool:
    return key_values_problem(s) is None


# The reason a key-value column's rule gives (``key_values_problem`` says, per row, why).
KEY_VALUE_REASONS = {c: f"{c}: not a JSON object of scalar values with unique keys" for c in ("Tags", "AllocatedTags")}


def _decimal_string_ok(col: str) -> pl.Expr:
    return pl.col(col).str.contains(r"^[0-9]+(\.[0-9]+)?$").fill_null(False)


TENANTS = Contract(
    "tenants",
    (Column("tenant_id", nullable=False, regex=r"^t-[0-9]{5}$"), Column("name", nullable=False),
     Column("tier", nullable=False, allowed=TIERS), Column("cohort", nullable=False, allowed=COHORTS),
     Column("region", nullable=False), Column("signup_date", "date", nullable=False)),
    record_id="tenant_id", unique_key=("tenant_id",), partition_rule="static",
    description="Tenants with tier, deployment cohort and region.",
)
SERVICES = Contract(
    "services",
    (Column("service", nullable=False), Column("meter", nullable=False), Column("unit", nullable=False),
     Column("median_latency_s", "float", nullable=False, min=0)),
    record_id="service", unique_key=("service",), partition_rule="static",
    description="Services and the meter that drives each one's cost.",
)
PRICE_LIST = Contract(
    "price_list",
    (Column("tier", nullable=False, allowed=TIERS), Column("meter", nullable=False, allowed=METERS),
     Column("unit", nullable=False), Column("unit_price", nullable=False),
     Column("currency", nullable=False, regex=r"^[A-Z]{3}$"),
     # The UTC day a price takes effect (none: since always); the latest in effect by a usage
     # day prices it, so a price change is a new row, never an edit of the old one.
     Column("effective_from", "date", required=False)),
    rules=(Rule("unit_price_decimal", _decimal_string_ok("unit_price"), "unit_price: not a non-negative decimal"),),
    unique_key=("tier", "meter", "effective_from"), partition_rule="static",
    description="Rate card per tier and meter (decimal strings), each price from the day it takes effect.",
)
BUILDS = Contract(
    "builds",
    (Column("build_id", nullable=False), Column("service", nullable=False), Column("version", nullable=False),
     Column("commit_sha", nullable=False, regex=r"^[0-9a-f]{40}$"), Column("created_at", "timestamp", nullable=False)),
    record_id="build_id", unique_key=("build_id",), partition_rule="static",
    description="Builds per service with commit and creation time.",
)
RAMP_STEPS = Contract(
    "ramp_steps",
    (Column("build_id", nullable=False), Column("service", nullable=False), Column("step", "int", nullable=False, min=1),
     Column("percent", "int", nullable=False, min=0, max=100),
     Column("started_at", "timestamp", nullable=False), Column("ended_at", "timestamp"),
     *(Column(f"{c}_fraction", "float", nullable=False, min=0, max=1) for c in COHORTS)),
    unique_key=("build_id", "step"), time_column="started_at",
    description="Ramp steps of each deploy (percent of traffic and per-cohort share).",
)
# A count that is missing or did not cast has its own reason: the comparison says nothing then.
ERRORS_LE_REQUESTS = Rule("errors_le_requests", (pl.col("errors") <= pl.col("requests")).fill_null(True),
                          "errors: more errors than requests")

REQUEST_COUNTERS = Contract(
    "request_counters",
    (Column("ts", "timestamp", nullable=False), Column("service", nullable=False),
     Column("cohort", nullable=False, allowed=COHORTS), Column("build_id", nullable=False),
     Column("requests", "int", nullable=False, min=0), Column("errors", "int", nullable=False, min=0)),
    rules=(ERRORS_LE_REQUESTS,),
    unique_key=("ts", "service", "cohort", "build_id"), time_column="ts",
    continuous=True,
    description="Per-minute request and error counter increases per service x cohort x build.",
)
LATENCY_BUCKETS = Contract(
    "latency_buckets",
    (Column("ts", "timestamp", nullable=False), Column("service", nullable=False),
     Column("cohort", nullable=False, allowed=COHORTS), Column("build_id", nullable=False),
     Column("le", "float", nullable=False, min=0), Column("count", "int", nullable=False, min=0)),
    unique_key=("ts", "service", "cohort", "build_id", "le"), time_column="ts",
    continuous=True,
    description="Per-minute cumulative latency histogram buckets (Prometheus `le`, +Inf last).",
)
LAG_SAMPLES = Contract(
    "lag_samples",
    (Column("sample_id", nullable=False), Column("ts", "timestamp", nullable=False),
     Column("pipeline", nullable=False, allowed=PIPELINES), Column("lag_seconds", "float", nullable=False, min=0)),
    record_id="sample_id", unique_key=("sample_id",), time_column="ts",
    continuous=True,
    description="Receipt, approval and metering lag samples.",
)
TENANT_SLIS = Contract(
    "tenant_slis",
    (Column("hour", "timestamp", nullable=False), Column("tenant_id", nullable=False),
     Column("requests", "int", nullable=False, min=0), Column("errors", "int", nullable=False, min=0),
     Column("latency_p95_ms", "float", nullable=False, min=0)),
    rules=(ERRORS_LE_REQUESTS,),
    unique_key=("hour", "tenant_id"), time_column="hour",
    continuous=True,
    description="Hourly per-tenant request, error and p95 latency SLIs.",
)
# One event's quantity at most 10^15: a day's sum of 10^8 such events still fits the exact
# decimal sums (finops.usage), and a larger one is a unit mistake, quarantined with its reason.
MAX_QUANTITY = 1e15
USAGE_EVENTS = Contract(
    "usage_events",
    (Column("specversion", nullable=False, allowed=("1.0",)), Column("id", nullable=False),
     Column("source", nullable=False), Column("type", nullable=False, regex=r"^com\.summit\.usage\."),
     Column("time", nullable=False), Column("subject", nullable=False),
     Column("datacontenttype", required=False),
     Column("meter", nullable=False, allowed=METERS), Column("quantity", "float", nullable=False, min=0, max=MAX_QUANTITY),
     Column("event_time", "timestamp", nullable=False, source="time")),
    record_id="id", unique_key=("source", "id"), time_column="event_time", late_window_days=3, late_rows="arrival",
    flatten={"data.meter": "meter", "data.quantity": "quantity"},
    continuous=True,
    description="Metering events as CloudEvents 1.0, deduplicated on (source, id).",
)
MAX_CHARGE_DAYS = 366  # a year's commitment, leap day included
# Attribution sums costs in micro-units of 64-bit integers (up to 9.2 x 10^12 units a day):
# a line of 10^12 or more (in any currency) is beyond that, refused with its reason rather
# than overflowing the books.
MAX_LINE_COST = 10**12
# FOCUS ChargeClass "Correction": a refund or fix of an earlier charge, negative by nature.
_NOT_CORRECTION = pl.col("ChargeClass").ne_missing(pl.lit("Correction"))
FOCUS_NOT_NULL = ("BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
                  "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost", "EffectiveCost",
                  "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName", "ServiceCategory",
                  "ServiceName")
FOCUS_TYPES = {"BilledCost": "decimal", "ContractedCost": "decimal", "EffectiveCost": "decimal",
               "ListCost": "decimal", "PricingQuantity": "float", "BillingPeriodEnd": "timestamp",
               "BillingPeriodStart": "timestamp", "ChargePeriodEnd": "timestamp", "ChargePeriodStart": "timestamp"}


def _focus_column(name: str) -> Column:
    return Column(name, FOCUS_TYPES.get(name, "string"), nullable=name not in FOCUS_NOT_NULL)


BILLING_FOCUS = Contract(
    "billing_focus",
    (*(_focus_column(c) for c in FOCUS_MANDATORY),
     Column("ResourceId", required=False), Column("Tags", required=False),
     # Our line id (a custom column): a file without it gets one derived from each row.
     Column("x_LineItemId", nullable=False, required=False),
     # FOCUS 1.3 split cost allocation: a provider-split charge names its method and the
     # resource (and tags) it was allocated to; absent in 1.2 files, kept when present.
     Column("AllocatedMethodId", required=False), Column("AllocatedResourceId", required=False),
     Column("AllocatedTags", required=False)),
    rules=(
        # A missing currency is refused by its own reason (missing value), which FinOps repairs.
        Rule("currency_code", pl.col("BillingCurrency").str.contains(r"^[A-Z]{3}$").fill_null(True),
             "BillingCurrency: not an ISO 4217 code"),
        Rule("charge_category", pl.col("ChargeCategory").is_in(FOCUS_CHARGE_CATEGORIES).fill_null(False),
             "ChargeCategory: not a FOCUS charge category"),
        Rule("charge_class", pl.col("ChargeClass").is_null() | (pl.col("ChargeClass") == "Correction"),
             "ChargeClass: must be null or Correction"),
        Rule("service_category", pl.col("ServiceCategory").is_in(FOCUS_SERVICE_CATEGORIES).fill_null(False),
             "ServiceCategory: not a FOCUS service category"),
        # A period end or start that is missing or unreadable is refused by its own reason.
        Rule("charge_period", (pl.col("ChargePeriodEnd") > pl.col("ChargePeriodStart")).fill_null(True),
             "ChargePeriodEnd: not after ChargePeriodStart"),
        # Attribution amortizes a charge over the days of its period: an open-ended sentinel
        # (9999-12-31) would spread a cost over millions of days.
        Rule("charge_period_length", (pl.col("ChargePeriodEnd") - pl.col("ChargePeriodStart")
                                      <= pl.duration(days=MAX_CHARGE_DAYS)).fill_null(True),
             f"ChargePeriodEnd: more than {MAX_CHARGE_DAYS} days after ChargePeriodStart"),
        # FOCUS 1.2 Usage rows may be negative (a refund within the billing period, ChargeClass
        # null): a refund is negative in its billed and its effective cost, and its list cost
        # is not positive. A negative usage cost any other way contradicts its own row (a
        # positive list price, or costs of both signs): taken for a sign slip, refused with its
        # reason (finops/repair.py may still count it), unless the row is a ChargeClass
        # Correction, FOCUS's fix of an earlier period. A row negative in both costs says it
        # once, by the first rule.
        Rule("usage_cost_non_negative",
             ~((pl.col("ChargeCategory") == "Usage") & _NOT_CORRECTION
               & (pl.col("BilledCost").cast(pl.Float64) < 0)
               & ~((pl.col("EffectiveCost").cast(pl.Float64) < 0)
                   & (pl.col("ListCost").cast(pl.Float64) <= 0)).fill_null(False)).fill_null(False),
             "BilledCost: negative on a Usage charge that is no refund (its EffectiveCost is not negative "
             "or its ListCost is positive: a sign slip)"),
        Rule("usage_effective_cost_non_negative",
             ~((pl.col("ChargeCategory") == "Usage") & _NOT_CORRECTION
               & (pl.col("EffectiveCost").cast(pl.Float64) < 0)
               & (pl.col("BilledCost").cast(pl.Float64) >= 0)).fill_null(False),
             "EffectiveCost: negative on a Usage charge whose BilledCost is not (a sign slip)"),
        Rule("effective_cost_range", (pl.col("EffectiveCost").cast(pl.Float64).abs() < MAX_LINE_COST).fill_null(True),
             f"EffectiveCost: {MAX_LINE_COST:.0e} or more in absolute value, beyond what attribution sums"),
        *(Rule(name, pl.col(column).map_elements(_key_values_or_null, return_dtype=pl.Boolean, skip_nulls=False),
               KEY_VALUE_REASONS[column]) for name, column in (("tags_json", "Tags"),
                                                               ("allocated_tags_json", "AllocatedTags"))),
    ),
    record_id="x_LineItemId", unique_key=("x_LineItemId",), partition_rule="file_date", line_id="x_LineItemId",
    # FOCUS columns that name what a charge is for, not how it is priced (a commitment
    # applied later restates PricingCategory and CommitmentDiscountId): two linked accounts'
    # tax rows, or one resource's traffic in two regions, differ only there.
    line_identity=("SubAccountId", "RegionId", "AvailabilityZone", "SkuId", "ResourceType", "ChargeFrequency"),
    # A month-to-date export back-fills a newly activated cost-allocation tag onto the
    # month's earlier lines: the restated line must keep its id, or it counts twice.
    line_labels=("Tags", "AllocatedTags"),
    restatements="latest",
    # FOCUS 0.5 names that 1.0 renamed.
    former_names={"ChargeType": "ChargeCategory", "AmortizedCost": "EffectiveCost"},
    continuous=True,
    description="Infrastructure billing in FOCUS 1.2 (with 1.3's split cost allocation columns when "
                "present), one file per UTC charge day.",
)
CONTRACTS: dict[str, Contract] = {c.table: c for c in (
    TENANTS, SERVICES, PRICE_LIST, BUILDS, RAMP_STEPS, REQUEST_COUNTERS, LATENCY_BUCKETS, LAG_SAMPLES,
    TENANT_SLIS, USAGE_EVENTS, BILLING_FOCUS)}
STATIC_TABLES = tuple(t for t, c in CONTRACTS.items() if c.partition_rule == "static")
PARTITIONED_TABLES = tuple(t for t, c in CONTRACTS.items() if c.partition_rule != "static")
