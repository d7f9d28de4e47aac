"""Raw assets: one per landing source, validated by its data contract.

Each materialization reads the partition's landing files, quarantines rows that break
the contract (with file, row and reason), writes the rest idempotently, and reports two
asset checks: the contract (schema, types, keys) and the quarantine count.
"""


import dagster as dg
import polars as pl

from assets import check_spec
from assets.world import LANDING_KEY
from ops_platform.contracts.definitions import CONTRACTS
from ops_platform.contracts.model import POLARS_TYPES, Contract
from ops_platform.finops.repair import record_cost
from ops_platform.ingest.partitioning import PartitionSpace
from ops_platform.ingest.pipeline import RESTATED, IngestResult, ingest_partition
from resources import DUCKDB_POOL, LandingZoneResource, WarehouseResource

CONTRACT_CHECK = "contract"
QUARANTINE_CHECK = "quarantine_rate"
MAX_QUARANTINE_RATE = 0.01
OWNERS = {"billing_focus": ["team:finops"], "usage_events": ["team:finops"], "price_list": ["team:finops"]}
_DECIMAL = POLARS_TYPES["decimal"]
_TABLE_SCHEMA_TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE",
                       "decimal": f"DECIMAL({_DECIMAL.precision},{_DECIMAL.scale})",
                       "timestamp": "TIMESTAMPTZ", "date": "DATE", "bool": "BOOLEAN"}


def _column_schema(contract: Contract) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(c.name, _TABLE_SCHEMA_TYPES[c.dtype],
                                                  constraints=dg.TableColumnConstraints(nullable=c.nullable))
                                   for c in contract.columns])


def _results(res: IngestResult, contract: Contract, key: dg.AssetKey):
    # A restated copy is kept apart, not refused: it is no quarantine the rate should count.
    restated = res.quarantine.filter(pl.col("reason") == RESTATED).height
    n_q = res.quarantine.height - restated
    considered = res.accepted.height + n_q + res.duplicates_removed
    rate = n_q / considered if considered else 0.0
    meta: dict = {"dagster/row_count": res.accepted.height, "dagster/table_name": f"raw.{contract.table}",
                  "files_read": res.files_read, "rows_read": res.rows_read,
                  "duplicates_removed": res.duplicates_removed, "quarantined": n_q, "restated": restated}
    if contract.time_column and res.accepted.height:
        col = res.accepted[contract.time_column]
        # Timestamps, which the UI shows in the viewer's zone, not text.
        meta["time_min"] = dg.MetadataValue.timestamp(col.min())
        meta["time_max"] = dg.MetadataValue.timestamp(col.max())
    yield dg.MaterializeResult(asset_key=key, metadata=meta)
    unmet = [e for e in res.table_expectations if not e.success]
    failed = [f"{e.expectation}({e.column or ''})" for e in unmet]
    # The contract holds when the file and the accepted rows meet it; rows it quarantined (a
    # broken row expectation, a conflicting re-delivery, an unreadable line) are said, with
    # their reasons, rather than "satisfied".
    reasons = (res.quarantine.filter(pl.col("reason") != RESTATED).group_by("reason").len()
               .sort(["len", "reason"], descending=[True, False]))
    held = (f"schema and table expectations met; {n_q} row(s) quarantined: "
            + "; ".join(f"{r} ({n})" for r, n in reasons.head(3).iter_rows())
            + (f"; and {reasons.height - 3} other reason(s)" if reasons.height > 3 else "")
            if n_q else "contract satisfied: every row met every expectation")
    yield dg.AssetCheckResult(
        asset_key=key, check_name=CONTRACT_CHECK, passed=res.contract_passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(res.schema_errors + [e.reason for e in unmet]) or held,
        metadata={"schema_errors": dg.MetadataValue.json(res.schema_errors),
                  "failed_table_expectations": dg.MetadataValue.json(failed),
                  "row_expectations": dg.MetadataValue.json(
                      [{"expectation": e.expectation, "column": e.column, "unexpected": e.unexpected_count}
                       for e in res.row_expectations if not e.success])})
    yield dg.AssetCheckResult(
        asset_key=key, check_name=QUARANTINE_CHECK, passed=rate <= MAX_QUARANTINE_RATE,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{n_q} of {considered} rows quarantined ({rate:.3%}); threshold {MAX_QUARANTINE_RATE:.0%}"
                    + (f"; their cost {money}" if (money := _quarantined_cost(res, contract)) else ""),
        metadata={"quarantined": n_q, "rows_considered": considered, "quarantine_rate": rate,
                  "threshold": MAX_QUARANTINE_RATE,
                  "by_reason": dg.MetadataValue.json(res.quarantine_by_reason()),
                  **({"quarantined_cost": money} if money else {})})


def _quarantined_cost(res: IngestResult, contract: Contract) -> str | None:
    """For the bill: what the quarantined rows cost (EffectiveCost by size, per currency, as
    their records read; rows whose cost does not read are counted apart), which FinOps needs
    more than a share of rows."""
    if contract.table != "billing_focus" or not res.quarantine.height:
        return None
    record = pl.col("record").cast(pl.String)
    rows = res.quarantine.filter(pl.col("reason") != RESTATED).select(
        record_cost(record).abs().alias("cost"),
        record.str.json_path_match("$.BillingCurrency").fill_null("?").alias("currency"))
    if not rows.height:
        return None
    per = rows.drop_nulls("cost").group_by("currency").agg(pl.col("cost").sum()).sort("currency")
    unread = rows["cost"].null_count()
    parts = [f"{c['cost'].normalize():f} {c['currency']}" for c in per.iter_rows(named=True)]
    parts += [f"{unread} row(s) of unreadable cost"] if unread else []
    return ", ".join(parts) or None


def build_raw_asset(contract: Contract, partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    key = dg.AssetKey(["raw", contract.table])
    partitioned = contract.partition_rule != "static"

    @dg.asset(
        key=key, partitions_def=partitions_def if partitioned else None, group_name="raw", deps=[LANDING_KEY],
        description=contract.description + " Validated against its data contract; bad rows go to raw.quarantine.",
        kinds={"duckdb", "parquet"}, owners=OWNERS.get(contract.table, ["team:sre"]), pool=DUCKDB_POOL,
        check_specs=[check_spec(CONTRACT_CHECK, key, "Great Expectations data contract",
                                partitions_def if partitioned else None),
                     check_spec(QUARANTINE_CHECK, key, "Share of rows quarantined", partitions_def if partitioned else None)],
        metadata={"dagster/column_schema": _column_schema(contract)},
    )
    def _raw(context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource):
        pkey = context.partition_key if partitioned else None
        space = None
        if partitioned:
            keys = partitions_def.get_partition_keys()
            space = PartitionSpace.from_keys(keys[0], keys[-1], partitions_def.timezone)
        res = ingest_partition(contract, landing.reader(), space, pkey)
        warehouse.get().replace_partition(contract.table, pkey, res.accepted, res.quarantine)
        context.log.info(f"raw.{contract.table}[{pkey or 'all'}]: {res.accepted.height} rows, "
                         f"{res.quarantine.height} quarantined, {res.duplicates_removed} duplicates removed")
        yield from _results(res, contract, key)

    return _raw


def build_raw_assets(partitions_def: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [build_raw_asset(c, partitions_def) for c in CONTRACTS.values()]
