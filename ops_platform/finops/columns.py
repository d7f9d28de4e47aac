"""What each column of the warehouse schema ``finops`` holds, stored as DuckDB column comments.

An analyst in DuckDB reads them with ``SELECT table_name, column_name, comment FROM
duckdb_columns() WHERE schema_name = 'finops'``. Money is in the bill's currency (the
``BillingCurrency`` of ``raw.billing_focus``; attribution refuses a bill in two): ``*_micros``
in millionths of it, ``*_usd`` (named for the usual case) in whole units. A test holds every
column the books write to a description here.
"""

from __future__ import annotations

_DAY = "UTC charge or usage day"
_TENANT = "tenant id (tenant_id of raw.tenants); '(unallocated)' for cost no tenant carries"
_KINDS = {
    "direct_micros": "cost of rows tagged with the tenant, in micro-units of the bill's currency",
    "serving_micros": "share of a service's untagged cost, by the tenant's share of the service's meter (micro-units)",
    "idle_micros": "share of warm-pool (idle) cost, by the same meter as the service's serving cost (micro-units)",
    "overhead_micros": "share of platform and account-level cost (taxes, credits), by share of api_calls (micro-units)",
    "total_micros": "direct + serving + idle + overhead (micro-units); a day's lines sum to its bill exactly",
}
_PARTITION = "the books' partition: always 'all' (each run replaces the whole schema)"

FINOPS_COLUMNS: dict[str, dict[str, str]] = {
    "tenant_day": {
        "utc_date": _DAY, "tenant_id": _TENANT, **_KINDS,
        "confidence": "share of the line attributed with direct evidence (tags and metered shares count fully, idle "
                      "and overhead at 0.9) times the day's source_factor; 0 for the unallocated line",
        "partition_key": _PARTITION,
    },
    "tenant_service_day": {
        "utc_date": _DAY, "tenant_id": _TENANT,
        "service": "the service whose cost it is ('(account)' for account-level rows; null for rows without one)",
        **_KINDS, "partition_key": _PARTITION,
    },
    "day": {
        "utc_date": _DAY,
        "rows": "billing lines booked on the day (a charge over several days counts on each)",
        "billed_micros": "the day's bill, rounded once to micro-units of the bill's currency",
        "feed_lines": "lines of a day or less falling on the day: the day counts as billed when there is one",
        "unknown_tenant_micros": "cost tagged with, or metered for, a tenant the catalog does not know (micro-units; "
                                 "part of the unallocated line)",
        "repaired_rows": "refused rows counted after a documented repair (finops.repairs)",
        "refused_rows": "refused rows still missing from the books (raw.quarantine says why)",
        "refused_micros": "money of the refused rows whose cost reads, by size (micro-units)",
        "unreadable_rows": "refused rows whose cost does not read: the day's bill is not known",
        "final": "whether the day's usage is past its late-data window",
        "source_factor": "1 less the missing share (refused rows or money, the larger; repaired rows count half), "
                         "times 0.95 while usage is not final, 0 with an unreadable row",
        "attributed_micros": "sum of the day's tenant lines, unallocated included (micro-units); equals billed_micros",
        "unallocated_micros": "cost no tenant carries (micro-units)",
        "confidence": "the tenant lines' confidence weighted by their size; invoices are held below 0.95",
        "tenants": "tenants with a line on the day",
        "partition_key": _PARTITION,
    },
    "reconciliation": {
        "utc_date": _DAY,
        "service": "service tag of the billing lines (null for lines without one; '(account)' for account-level rows)",
        "meter": "the meter that drives the service's shared cost (services catalog); null if none",
        "cost_micros": "the service's shared cost on the day: serving, idle and overhead, what its meter drives "
                       "(micro-units)",
        "idle_micros": "its warm-pool (idle) part (micro-units)",
        "direct_micros": "the service's cost tagged with a tenant: dedicated capacity (micro-units)",
        "total_micros": "cost_micros + direct_micros (micro-units): a day's services add up to its bill",
        "quantity": "the meter's metered quantity on the day (exact to 6 places)",
        "unexplained_micros": "shared cost no usage explained: it went to the unallocated line (micro-units)",
        "unit_cost_usd": "shared cost per unit of the meter, in the bill's currency: what one more unit costs",
        "loaded_unit_cost_usd": "total cost per unit of the meter, in the bill's currency",
        "partition_key": _PARTITION,
    },
    "usage_daily": {
        "utc_date": _DAY, "tenant_id": "tenant id (the events' subject)", "meter": "meter name",
        "quantity": "events' quantities summed exactly, rounded once to 6 places",
        "events": "distinct events (CloudEvents source and id) counted",
        "final": "whether the day is past its late-data window (T+2 by default)",
        "partition_key": _PARTITION,
    },
    "usage_corrections": {
        "utc_date": _DAY, "tenant_id": "tenant id (the events' subject)", "meter": "meter name",
        "arrived": "the day the late events arrived, after their usage day was final",
        "quantity": "late events' quantities summed exactly, to 6 places (billed in the next open period)",
        "events": "distinct late events", "partition_key": _PARTITION,
    },
    "anomalies": {
        "kind": "tenant_usage_spike or service_capacity_spike",
        "utc_date": _DAY, "tenant_id": "the tenant (null for a capacity spike)",
        "service": "the service whose cost the spike drives",
        "meter": "the meter that spiked (null for a capacity spike)",
        "value": "the day's value: the meter's quantity, or the service's idle cost in the bill's currency",
        "expected": "the seasonal expectation (series median with the weekday effect)",
        "expected_low": "expected range, low end (median - 3 MADs)",
        "expected_high": "expected range, high end (median + 3 MADs)",
        "z": "robust z-score of the seasonal residual (the baseline flags above 4)",
        "model_score": "IsolationForest decision function (the model flags below its threshold)",
        "impact_usd": "excess over the expected value, in the bill's currency",
        "baseline_flag": "flagged by the robust z-score baseline",
        "model_flag": "flagged by the IsolationForest model",
        "partition_key": _PARTITION,
    },
    "repairs": {
        "x_LineItemId": "line id of the refused row counted after a repair",
        "charge_start": "its ChargePeriodStart, in UTC",
        "effective_cost": "its EffectiveCost as counted, DECIMAL(38, 12) like raw.billing_focus",
        "repair": "the documented repair applied (docs/finops.md, Repairs)",
        "partition_key": _PARTITION,
    },
    "inputs": {
        "table": "raw table the books read", "raw_partition": "its partition",
        "rows": "rows read from it",
        "digest": "order-free digest of their content: a release checks the books were computed from what raw holds",
        "partition_key": _PARTITION,
    },
    "books_computed": {"computed_at": "when the books were computed (UTC)", "partition_key": _PARTITION},
}
