"""FinOps asset: per-tenant cost attribution reconciled to the bill, with cost anomalies."""

import dagster as dg
import polars as pl

from assets import require_tables
from ops_platform.finops.attribution import CONFIDENCE_TARGET, UNALLOCATED
from ops_platform.finops.pipeline import FinOpsInputs, bill_currency, run, write_tables
from resources import DUCKDB_POOL
from resources.warehouse import WarehouseResource

ATTRIBUTION_KEY = dg.AssetKey(["finops", "attribution"])
SUMS_CHECK = "attribution_sums_to_bill"
CONFIDENCE_CHECK = "confidence_at_least_95"
_RAW = ("billing_focus", "usage_events", "services", "tenants", "price_list")


@dg.asset(
    key=ATTRIBUTION_KEY, group_name="finops", owners=["team:finops"], kinds={"duckdb", "polars"}, pool=DUCKDB_POOL,
    deps=[dg.AssetKey(["raw", t]) for t in _RAW],
    check_specs=[
        dg.AssetCheckSpec(SUMS_CHECK, asset=ATTRIBUTION_KEY,
                          description="Every day's tenant lines (with the unallocated line) sum exactly, to the "
                                      "micro-dollar, to the day's bill."),
        dg.AssetCheckSpec(CONFIDENCE_CHECK, asset=ATTRIBUTION_KEY,
                          description="Every day whose usage is final has billing, and its reconciliation "
                                      "confidence is at least 95%."),
    ],
    description="Per-tenant daily cost (direct, serving, idle, overhead; warehouse finops.tenant_day), the "
                "daily reconciliation of metering against infrastructure cost (finops.reconciliation), the "
                "day totals and confidence (finops.day), each tenant's lines per service "
                "(finops.tenant_service_day), daily usage with late corrections (finops.usage_daily, "
                "finops.usage_corrections), the billing rows counted after a documented repair (finops.repairs), "
                "the raw rows the books were computed from (finops.inputs), and cost anomalies from both "
                "detectors (finops.anomalies).",
)
def finops_attribution(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    wh = warehouse.get()
    require_tables(wh, [f"raw.{t}" for t in (*_RAW, "quarantine")],
                   "run ingest_catalog and ingest_daily (for the days to attribute)")
    inputs = FinOpsInputs.from_warehouse(wh)
    result = run(inputs)
    att = result.attribution
    day = write_tables(wh, result, inputs.counts)
    unequal = day.filter(pl.col("billed_micros") != pl.col("attributed_micros"))
    final = day.filter(pl.col("final"))
    low = final.filter(pl.col("confidence") < CONFIDENCE_TARGET)
    weakest = final.sort("confidence", "utc_date", nulls_last=True).row(0, named=True) if final.height else None
    unbilled = result.unbilled_days()
    tenants = att.tenant_day.filter(pl.col("tenant_id") != UNALLOCATED)
    context.log.info(f"attribution: {day.height} day(s), {tenants['tenant_id'].n_unique()} tenant(s)")
    yield dg.MaterializeResult(metadata={
        "days": day.height,
        # In the bill's own currency, named beside them (the check's figures are its micro-units).
        "currency": bill_currency(inputs.billing) or "USD",
        "billed": round(int(day["billed_micros"].sum()) / 1e6, 6),
        "unallocated": round(int(day["unallocated_micros"].sum()) / 1e6, 6),
        # No final day yet: no measure (a 0.0 would read as a measurement).
        **({"min_final_day_confidence": round(float(weakest["confidence"]), 4)} if weakest else {}),
        "late_corrections": result.corrections.height,
        # events re-sent with other content in a later partition: the first arrival counts
        "superseded_usage_events": int(inputs.superseded["events"].sum()),
        "anomalies_flagged": int(result.anomalies["model_flag"].sum()),
    })
    yield dg.AssetCheckResult(
        check_name=SUMS_CHECK, passed=unequal.height == 0, severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{unequal.height} day(s) do not sum to the bill" if unequal.height
                     else f"{day.height} day(s) sum exactly to the bill"),
        # The numbers that decided it: each day off with its bill, its lines' sum and the gap.
        metadata={"days_checked": day.height, "billed_micros": int(day["billed_micros"].sum()),
                  "attributed_micros": int(day["attributed_micros"].sum()),
                  "days_off": dg.MetadataValue.json({
                      str(r["utc_date"]): {"billed_micros": r["billed_micros"], "attributed_micros": r["attributed_micros"],
                                           "off_micros": r["attributed_micros"] - r["billed_micros"]}
                      for r in unequal.sort("utc_date").iter_rows(named=True)})})
    problems = ([f"{low.height} final day(s) under {CONFIDENCE_TARGET:.0%}"] if low.height else []) + (
        [f"{len(unbilled)} final usage day(s) without billing (first {unbilled[0]})"] if unbilled else [])
    yield dg.AssetCheckResult(
        check_name=CONFIDENCE_CHECK, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or (f"every final day billed and at or above {CONFIDENCE_TARGET:.0%}"
                                            if final.height else "no final day yet: nothing judged (a usage day "
                                            "is final once its late-data window has passed)"),
        metadata={"target": CONFIDENCE_TARGET, "final_days": final.height,
                  **({"min_confidence": round(float(weakest["confidence"]), 4),
                      "min_confidence_day": str(weakest["utc_date"])} if weakest else {}),
                  "low_days": dg.MetadataValue.json({str(r["utc_date"]): round(r["confidence"], 4)
                                                     for r in low.sort("utc_date").iter_rows(named=True)}),
                  "unbilled_days": dg.MetadataValue.json([str(d) for d in unbilled])})
