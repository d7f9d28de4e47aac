"""Infrastructure billing as FOCUS 1.2 rows, and the true per-tenant cost behind it.

Per UTC charge day: shared serving nodes per service (sized by that day's usage), warm
pool (idle) nodes, per-tenant storage volumes and enterprise dedicated nodes (tagged with
the tenant), and platform overhead. The truth folder gets each tenant's true daily cost
under the documented rule: direct cost + each service's serving and idle cost by the
tenant's share of the service's meter + platform overhead by share of API calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ..files import write_parquet
from .catalog import CURRENCY, REGIONS, SERVICES
from .config import WorldConfig
from .writer import micros_to_decimal

# FOCUS 1.2 columns whose feature level is Mandatory.
FOCUS_MANDATORY = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
)
FOCUS_CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
DISCOUNT = 0.85  # committed-use discount: contracted = effective = billed = 85% of list
STORAGE_USD_PER_GB_HOUR = 0.00012
ENTERPRISE_NODE_DAILY_USD = 9.6
MALFORMED_BILLING_KINDS = ("null_currency", "negative_cost", "inverted_period", "bad_tags_json",
                           "unknown_charge_category")


@dataclass
class BillingResult:
    tenant_daily_cost: pl.DataFrame  # truth
    anomalies: pl.DataFrame  # truth: service capacity spikes
    malformed: pl.DataFrame  # truth
    rows_written: int
    files: list[Path]


def plan_capacity_anomalies(cfg: WorldConfig, rng: np.random.Generator) -> pl.DataFrame:
    pool = np.arange(1, max(2, cfg.days - 1))
    days = rng.choice(pool, size=min(max(1, cfg.days // 7), len(pool)), replace=False)
    rows = [{"anomaly_id": f"anom-c{i + 1:02d}", "kind": "service_capacity_spike",
             "date": cfg.start_date + timedelta(days=int(d)), "tenant_id": None,
             "service": SERVICES[int(rng.integers(0, len(SERVICES)))].name, "meter": None,
             "factor": round(float(rng.uniform(4, 8)), 3)} for i, d in enumerate(sorted(days))]
    return pl.DataFrame(rows, schema={"anomaly_id": pl.String, "kind": pl.String, "date": pl.Date,
                                      "tenant_id": pl.String, "service": pl.String, "meter": pl.String,
                                      "factor": pl.Float64})


def generate_billing(cfg: WorldConfig, tenants: pl.DataFrame, true_usage: pl.DataFrame, landing: Path,
                     rng: np.random.Generator) -> BillingResult:
    anomalies = plan_capacity_anomalies(cfg, rng)
    tenant_ids = tenants["tenant_id"].to_numpy().astype(str)
    enterprise = tenants.filter(pl.col("tier") == "enterprise")
    ent_nodes = np.maximum(1, np.round(enterprise["activity"].to_numpy())).astype(np.int64)
    cost_parts, malformed_parts, files, rows_written = [], [], [], 0
    line_no = 0
    for d in range(cfg.days):
        day = cfg.start_date + timedelta(days=d)
        usage = true_usage.filter(pl.col("utc_date") == day)
        by_meter = usage.group_by("meter").agg(pl.col("quantity").sum())
        totals = dict(zip(by_meter["meter"].to_list(), by_meter["quantity"].to_list(), strict=True))
        rows: list[dict] = []
        # Shared serving and warm-pool nodes per service.
        for svc in SERVICES:
            used = totals.get(svc.meter, 0.0)
            serving = max(2, int(np.ceil(used / svc.units_per_node_day)))
            warm = max(1, int(np.ceil(0.25 * serving)))
            spike = anomalies.filter((pl.col("date") == day) & (pl.col("service") == svc.name))
            if len(spike):
                warm = int(np.ceil(warm * spike["factor"][0]))
            price = svc.node_hourly_usd * (1 + 0.08 * rng.standard_normal(serving + warm)).clip(0.8, 1.2)
            for i in range(serving + warm):
                pool = "serving" if i < serving else "warm"
                rows.append(_row(f"node/{svc.name}/{i:04d}", f"{svc.name} {pool} node {i}", "Virtual Machine",
                                 "Compute", "Summit Compute", price[i], 24.0, "Hours",
                                 {"service": svc.name, "pool": pool, "env": "prod"}))
        # Tenant storage volumes (direct, tagged).
        st = usage.filter(pl.col("meter") == "storage_gb_hours").select("tenant_id", "quantity")
        st_map = dict(zip(st["tenant_id"].to_list(), st["quantity"].to_list(), strict=True))
        for tid in tenant_ids:
            gbh = st_map.get(tid, 0.0)
            rows.append(_row(f"vol/{tid}", f"volume {tid}", "Block Volume", "Storage", "Summit Block Storage",
                             STORAGE_USD_PER_GB_HOUR, gbh, "GB-Hours", {"tenant": tid, "service": "storage"}))
        # Enterprise dedicated compute (direct, tagged).
        for tid, k in zip(enterprise["tenant_id"].to_list(), ent_nodes, strict=True):
            for i in range(int(k)):
                rows.append(_row(f"node/dedicated/{tid}/{i}", f"dedicated node {tid}/{i}", "Virtual Machine",
                                 "Compute", "Summit Compute", ENTERPRISE_NODE_DAILY_USD / 24, 24.0, "Hours",
                                 {"tenant": tid, "service": "api", "pool": "dedicated"}))
        # Platform overhead: networking and monitoring, shared by everyone.
        api_calls = totals.get("api_calls", 0.0)
        for name, cat, per_m in (("egress", "Networking", 0.9), ("monitoring", "Management and Governance", 0.3),
                                 ("load-balancer", "Networking", 0.2)):
            qty = max(1.0, round(api_calls / 1e6, 3))
            rows.append(_row(f"platform/{name}", f"platform {name}", "Service", cat, f"Summit {name.title()}",
                             per_m, qty, "Million Requests", {"service": "platform"}))

        frame = pl.DataFrame(rows, infer_schema_length=None)
        n = len(frame)
        ids = [f"li-{day:%Y%m%d}-{line_no + i:07d}" for i in range(n)]
        line_no += n
        frame = frame.with_columns(pl.Series("x_LineItemId", ids))
        cost_parts.append(_true_cost(day, frame, usage, tenant_ids))
        bad = rng.random(n) < cfg.billing_malformed_rate
        if d == 0 and not bad.any():
            bad[int(rng.integers(0, n))] = True  # every world exercises the quarantine path
        kinds = np.where(bad, np.array(MALFORMED_BILLING_KINDS)[rng.integers(0, 5, n)], "")
        table = _focus_table(frame, day, kinds)
        path = landing / "billing_focus" / f"dt={day:%Y-%m-%d}" / "focus-daily.parquet"
        rows_written += write_parquet(table, path)
        files.append(path)
        if bad.any():
            malformed_parts.append(pl.DataFrame({
                "source_table": "billing_focus", "record_id": np.array(ids)[bad],
                "event_source": None, "reason": kinds[bad], "file": str(path.relative_to(landing))},
                schema_overrides={"event_source": pl.String}))
    malformed = pl.concat(malformed_parts) if malformed_parts else pl.DataFrame()
    return BillingResult(pl.concat(cost_parts).sort(["utc_date", "tenant_id"]), anomalies, malformed,
                         rows_written, files)


def _row(rid, name, rtype, category, service_name, unit_price, qty, unit, tags) -> dict:
    list_micros = int(round(float(unit_price) * float(qty) * 1e6))
    return {"ResourceId": rid, "ResourceName": name, "ResourceType": rtype, "ServiceCategory": category,
            "ServiceName": service_name, "ListUnitPrice": float(unit_price), "PricingQuantity": float(qty),
            "PricingUnit": unit, "list_micros": list_micros,
            "billed_micros": int(round(list_micros * DISCOUNT)), "tags_json": json.dumps(tags, sort_keys=True),
            "tag_tenant": tags.get("tenant"), "tag_service": tags.get("service")}


def _true_cost(day: date, frame: pl.DataFrame, usage: pl.DataFrame, tenant_ids: np.ndarray) -> pl.DataFrame:
    """True per-tenant cost of one UTC day under the world's rule (see module docstring)."""
    lines = frame.select(pl.col("tag_tenant").alias("tenant"), pl.col("tag_service").alias("service"),
                         (pl.col("billed_micros") / 1e6).alias("cost"))
    direct = lines.filter(pl.col("tenant").is_not_null()).group_by("tenant").agg(pl.col("cost").sum())
    shared = lines.filter(pl.col("tenant").is_null()).group_by("service").agg(pl.col("cost").sum())
    meter_of = pl.DataFrame({"service": [s.name for s in SERVICES] + ["platform"],
                             "meter": [s.meter for s in SERVICES] + ["api_calls"]})
    share = usage.with_columns((pl.col("quantity") / pl.col("quantity").sum().over("meter")).alias("share"))
    alloc = (shared.join(meter_of, on="service").join(share, on="meter")
             .group_by("tenant_id").agg((pl.col("cost") * pl.col("share")).sum().alias("shared")))
    out = (pl.DataFrame({"tenant_id": tenant_ids})
           .join(direct.rename({"tenant": "tenant_id", "cost": "direct"}), on="tenant_id", how="left")
           .join(alloc, on="tenant_id", how="left")
           .select(pl.lit(day).alias("utc_date"), "tenant_id",
                   (pl.col("direct").fill_null(0) + pl.col("shared").fill_null(0)).round(6).alias("true_cost_usd")))
    return out


def _focus_table(frame: pl.DataFrame, day: date, kinds: np.ndarray) -> pa.Table:
    n = len(frame)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    bp_start = datetime(day.year, day.month, 1, tzinfo=UTC)
    bp_end = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=UTC)
    billed = frame["billed_micros"].to_numpy().copy()
    billed[kinds == "negative_cost"] *= -1
    tags = frame["tags_json"].to_list()
    tags = [t if k != "bad_tags_json" else t[:-1] for t, k in zip(tags, kinds, strict=True)]
    chg_start = np.full(n, start)
    chg_end = np.where(kinds == "inverted_period", start - timedelta(hours=1), end)
    ts = pa.timestamp("us", tz="UTC")
    region = np.array(REGIONS)[np.arange(n) % len(REGIONS)]
    cols = {
        "BilledCost": micros_to_decimal(billed),
        "BillingAccountId": pa.array(["ba-summit-001"] * n),
        "BillingAccountName": pa.array(["Summit CompanyOS"] * n),
        "BillingAccountType": pa.array(["Billing Account"] * n),
        "BillingCurrency": pa.array([None if k == "null_currency" else CURRENCY for k in kinds], pa.string()),
        "BillingPeriodEnd": pa.array([bp_end] * n, ts),
        "BillingPeriodStart": pa.array([bp_start] * n, ts),
        "ChargeCategory": pa.array(["Usage" if k != "unknown_charge_category" else "Usage-ish" for k in kinds]),
        "ChargeClass": pa.array([None] * n, pa.string()),
        "ChargeDescription": pa.array([f"{r} for {day:%Y-%m-%d}" for r in frame["ResourceName"].to_list()]),
        "ChargeFrequency": pa.array(["Usage-Based"] * n),
        "ChargePeriodEnd": pa.array(list(chg_end), ts),
        "ChargePeriodStart": pa.array(list(chg_start), ts),
        "ConsumedQuantity": pa.array(frame["PricingQuantity"].to_numpy()),
        "ConsumedUnit": frame["PricingUnit"].to_arrow(),
        "ContractedCost": micros_to_decimal(billed),
        "ContractedUnitPrice": pa.array(np.round(frame["ListUnitPrice"].to_numpy() * DISCOUNT, 8)),
        "EffectiveCost": micros_to_decimal(billed),
        "InvoiceIssuerName": pa.array(["Summit Cloud"] * n),
        "ListCost": micros_to_decimal(frame["list_micros"].to_numpy()),
        "ListUnitPrice": pa.array(np.round(frame["ListUnitPrice"].to_numpy(), 8)),
        "PricingCategory": pa.array(["Committed"] * n),
        "PricingQuantity": pa.array(frame["PricingQuantity"].to_numpy()),
        "PricingUnit": frame["PricingUnit"].to_arrow(),
        "ProviderName": pa.array(["Summit Cloud"] * n),
        "PublisherName": pa.array(["Summit Cloud"] * n),
        "RegionId": pa.array(region),
        "RegionName": pa.array(region),
        "ResourceId": frame["ResourceId"].to_arrow(),
        "ResourceName": frame["ResourceName"].to_arrow(),
        "ResourceType": frame["ResourceType"].to_arrow(),
        "ServiceCategory": frame["ServiceCategory"].to_arrow(),
        "ServiceName": frame["ServiceName"].to_arrow(),
        "SubAccountId": pa.array(["sa-prod"] * n),
        "SubAccountName": pa.array(["production"] * n),
        "Tags": pa.array(tags),
        "x_LineItemId": frame["x_LineItemId"].to_arrow(),
    }
    return pa.table(cols)
