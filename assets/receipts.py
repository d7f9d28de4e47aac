"""The receipts ledger as an asset: counts, tree size, last verification, DuckDB copy."""

from pathlib import Path

import dagster as dg

from ops_platform.control.export import export_to_warehouse
from ops_platform.finops.export import unreceipted_files
from ops_platform.guard.runtime import file_digest_in, verify_store
from ops_platform.timezones import utcnow
from resources import DUCKDB_POOL
from resources.control import ControlStoreResource, SignerResource
from resources.warehouse import WarehouseResource

LEDGER_KEY = dg.AssetKey(["control", "receipts_ledger"])
LEDGER_CHECK = "ledger_verifies"


@dg.asset(
    key=LEDGER_KEY, group_name="control", kinds={"sqlite", "duckdb"}, owners=["team:sre"], pool=DUCKDB_POOL,
    description="Signed receipts of every privileged action (in-toto statements in DSSE envelopes, "
                "hash-chained, with signed Merkle tree heads), kept in the control store (<state>/control.sqlite, "
                "or the PostgreSQL database OPS_PLATFORM_CONTROL_URL names). Copied to the warehouse schema "
                "`control` with the action queue, Switchboard events, overrides and DLQ for ad hoc SQL.",
)
def receipts_ledger(context: dg.AssetExecutionContext, control: ControlStoreResource, signer: SignerResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    store = control.store()
    snapshot = store.ledger_snapshot()
    entries, checkpoints, _ = snapshot
    report = verify_store(store, signer.verifiers(), file_digest_in(Path(control.home)), snapshot=snapshot,
                          keys_dir=Path(signer.keys_dir))
    exported = export_to_warehouse(store, warehouse.get())
    actions = store.count_actions()
    context.log.info(f"ledger: {len(entries)} receipts, verification {'ok' if report.ok else report.first_bad}")
    return dg.MaterializeResult(metadata={
        "receipts": len(entries),
        "checkpoints": len(checkpoints),
        "tree_size": checkpoints[-1].tree_size if checkpoints else 0,
        "pending_receipt": actions.get("pending_receipt", 0),
        "dead_lettered": len(store.dlq_items()),
        "actions_by_status": dg.MetadataValue.json(actions),
        "last_verification": dg.MetadataValue.timestamp(utcnow()),
        "last_verification_ok": report.ok,
        "warehouse_tables": dg.MetadataValue.json({f"control.{k}": v for k, v in exported.items()}),
    })


@dg.asset_check(asset=LEDGER_KEY, name=LEDGER_CHECK, blocking=False,
                description="Every signature, chain link and signed tree head of the ledger verifies, and every "
                            "file a receipt names (flag snapshots, invoices) is on disk as it was signed, and no "
                            "released invoice folder holds a file its receipt does not name.")
def ledger_verifies(control: ControlStoreResource, signer: SignerResource) -> dg.AssetCheckResult:
    store = control.store()
    report = verify_store(store, signer.verifiers(), file_digest_in(Path(control.home)),
                          keys_dir=Path(signer.keys_dir))
    extra = unreceipted_files(store, Path(control.home), signer.verifiers()) if report.ok else []
    return dg.AssetCheckResult(
        passed=report.ok and not extra, severity=dg.AssetCheckSeverity.ERROR,
        description=("ledger verified" if not extra else f"released files not in their receipts: {extra[0]}")
        if report.ok else f"first bad: {report.first_bad}",
        metadata={"receipts": report.entries, "checkpoints": report.checkpoints,
                  "errors": dg.MetadataValue.json((report.errors or extra)[:20])})
