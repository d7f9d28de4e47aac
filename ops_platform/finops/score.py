"""Score the attribution against the world's truth (true cost per tenant and UTC day).

Reads the landing zone through the same contracts as ingestion (bad rows quarantined, the
rest accepted), attributes, and compares: mean absolute percentage error per tenant-day,
and the share of tenant-days within 5% of the truth. Only the scoring reads the truth.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from .anomalies import score_anomalies
from .attribution import UNALLOCATED, Attribution
from .pipeline import FinOpsInputs, bill_currency, run

MAPE_TARGET = 0.01
WITHIN_5_TARGET = 0.99
ANOMALY_TARGET = 0.9  # precision and recall of the model


def score_world(world: Path) -> dict:
    """Attribution accuracy and anomaly precision/recall of both detectors on ``world``."""
    inputs = FinOpsInputs.from_landing(world)
    result = run(inputs)
    if not result.attribution.day.height:
        raise ValueError(f"{world / 'landing' / 'billing_focus'} holds no bill the FOCUS contract accepts: "
                         "there is no attributed cost to score")
    figures = score_attribution(result.attribution,
                                pl.read_parquet(world / "truth" / "tenant_daily_cost.parquet"),
                                result.usage["utc_date"].max() if result.usage.height else None)
    # The money figures (named *_usd for the usual case) are in the bill's own currency.
    figures["currency"] = bill_currency(inputs.billing) or "USD"
    figures["anomalies"] = score_anomalies(result.anomalies,
                                           pl.read_parquet(world / "truth" / "cost_anomalies.parquet"))
    # A day whose bill file was refused is missing from every figure above but the truth: name it.
    figures["unbilled_days"] = [d.isoformat() for d in result.unbilled_days()]
    # Rows the FOCUS contract quarantined: some are repaired by the documented rules and
    # attributed (at a lower confidence), the rest are left out (refused).
    quarantined = inputs.billing_quarantine
    repaired = int(result.attribution.day["repaired_rows"].sum()) if result.attribution.day.height else 0
    figures["quarantined_billing_rows"] = quarantined.height
    figures["quarantined_billing_files"] = (sorted(set(quarantined["file"].drop_nulls().to_list()))
                                            if quarantined.height else [])
    figures["repaired_billing_rows"] = repaired
    figures["refused_billing_rows"] = quarantined.height - repaired
    # What the refused rows leave out of the books, by size (a refused credit is as missing as
    # a charge), and how many of them have a cost that does not read at all: over every charge
    # day, those without any accepted line too (finops.day lists only days with a bill).
    figures["refused_billing_micros"] = int(result.quality["refused_micros"].sum())
    figures["unreadable_billing_rows"] = int(result.quality["unreadable_rows"].sum())
    return figures


def score_attribution(result: Attribution, truth: pl.DataFrame, last_usage_day: date | None = None) -> dict:
    """Accuracy per tenant-day against ``truth`` (utc_date, tenant_id, true_cost_usd).

    Days after ``last_usage_day`` (a monthly fee amortized over days no usage has reached
    yet) carry cost no meter can place yet: they count in the bill and the attributed total,
    not in the day confidences, and are reported apart (``days_past_usage``)."""
    ours = (result.tenant_day.filter(pl.col("tenant_id") != UNALLOCATED)
            .select("utc_date", "tenant_id", (pl.col("total_micros") / 1e6).alias("cost_usd")))
    both = truth.join(ours, on=["utc_date", "tenant_id"], how="left").with_columns(pl.col("cost_usd").fill_null(0.0))
    ape = ((pl.col("cost_usd") - pl.col("true_cost_usd")).abs() / pl.col("true_cost_usd"))
    both = both.filter(pl.col("true_cost_usd") > 0).with_columns(ape.alias("ape"))
    day = result.day
    ahead = day.filter(pl.col("utc_date") > last_usage_day) if last_usage_day is not None else day.clear()
    judged = day.filter(pl.col("utc_date") <= last_usage_day) if last_usage_day is not None else day
    return {
        "tenant_days": both.height,
        "mape": float(both["ape"].mean()),
        "p99_ape": float(both["ape"].quantile(0.99)),
        "within_5pct": float((both["ape"] <= 0.05).mean()),
        "worst_tenant_day": both.sort("ape", descending=True).head(1).select(
            pl.col("utc_date").cast(pl.String), "tenant_id", "ape").to_dicts()[0] if both.height else None,
        # Exact in micro-units (a float of dollars loses micro-dollars past about 10^10 dollars);
        # the *_usd floats are for a glance.
        "billed_micros": int(day["billed_micros"].sum()),
        "attributed_micros": int(day["attributed_micros"].sum()),
        "unallocated_micros": int(day["unallocated_micros"].sum()),
        "billed_usd": float(day["billed_micros"].sum() / 1e6),
        "attributed_usd": float(day["attributed_micros"].sum() / 1e6),
        "unallocated_usd": float(day["unallocated_micros"].sum() / 1e6),
        "days_summing_exactly": int((day["billed_micros"] == day["attributed_micros"]).sum()),
        "days": day.height,
        "min_day_confidence": float(judged["confidence"].min()) if judged.height else None,
        # What the release check (at least 0.95) judges: days past their late-data window.
        "min_final_day_confidence": (float(final.min()) if (final := day.filter(pl.col("final"))["confidence"]).len()
                                     else None),
        "mean_day_confidence": float(judged["confidence"].mean()) if judged.height else None,
        "days_past_usage": ahead.height, "billed_past_usage_micros": int(ahead["billed_micros"].sum()),
        "targets": {"mape": MAPE_TARGET, "within_5pct": WITHIN_5_TARGET},
    }
