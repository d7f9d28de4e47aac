"""The retry job of the guarded action path, and its schedule."""

from pathlib import Path

import dagster as dg

from assets.receipts import LEDGER_KEY
from ops_platform.executors import guarded_executors
from resources import DUCKDB_POOL
from resources.control import ControlStoreResource, GuardResource, SignerResource, build_protocol
from resources.exports import ExportsResource
from resources.flags import FlagsResource
from resources.warehouse import WarehouseResource

RETRY_JOB = "retry_guarded_actions"


# In the DuckDB pool: a retried invoice release reads the warehouse a running asset may hold.
@dg.op(description="Receipt protective actions that waited for the signer, retry failed and "
                   "abandoned actions (bounded, then DLQ), and drain the local spool.", pool=DUCKDB_POOL)
def retry_guarded_actions_op(context: dg.OpExecutionContext, control: ControlStoreResource,
                             signer: SignerResource, guard: GuardResource, flags: FlagsResource,
                             warehouse: WarehouseResource, exports: ExportsResource) -> None:
    # Every executor: a retried action may be any of them.
    store = control.store()
    executors = guarded_executors(store, lambda: flags.executor().path, Path(warehouse.path), exports.invoices())
    report = build_protocol(control, signer, guard, executors, store=store).retry()
    context.log.info(f"retry: {report}")
    context.log_event(dg.AssetObservation(asset_key=LEDGER_KEY, metadata={
        "retry_receipted": report.receipted, "retry_retried": report.retried,
        "retry_dead_lettered": report.to_dlq, "spool_left": report.spool_left}))


@dg.job(name=RETRY_JOB, description="Complete the guarded action path after signer or store outages.")
def retry_guarded_actions_job():
    retry_guarded_actions_op()


