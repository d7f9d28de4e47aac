"""The SLO burn asset gives the same series from Prometheus as from the landing zone."""

from __future__ import annotations

import dagster as dg
import polars as pl

from assets.slo import build_slo_assets
from ops_platform.definitions import build_definitions, daily_partitions
from ops_platform.slo.prometheus import PrometheusServer, backfill, write_openmetrics
from resources import build_resources
from resources.sli import SLISourceResource
from sensors import DAILY_JOB
from sensors.runner import QUIET

from .test_prometheus_source import _require_prometheus

DAY = "2026-03-09"  # the world starts 2026-03-06: the 3-day lookback is fully inside it
BURN_COLS = ["ts", "slo", "service", "cohort", "build_id", "bad", "total", "burn_5m", "burn_1h", "burn_6h",
             "burn_3d", "firing_fast", "firing_medium", "firing_slow"]


def _burn(state) -> pl.DataFrame:
    from ops_platform.warehouse import Warehouse

    frame = Warehouse(state.warehouse).query(
        "SELECT * FROM slo.burn_minutes WHERE partition_key = ? AND slo LIKE 'api-%'", [DAY])
    return frame.select(BURN_COLS).sort(["slo", "service", "cohort", "build_id", "ts"])


def test_burn_series_from_prometheus_equal_the_landing_path(state, small_world, tmp_path):
    _require_prometheus()
    defs = build_definitions(state)
    daily = defs.resolve_job_def(DAILY_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("2026-03-06", "2026-03-07", "2026-03-08", DAY):
            assert daily.execute_in_process(partition_key=key, instance=instance, run_config=QUIET).success
    from_landing = _burn(state)
    assert from_landing.height > 0 and from_landing["firing_fast"].dtype == pl.Boolean

    counters = pl.read_parquet(small_world / "landing" / "request_counters" / "*" / "*.parquet")
    latency = pl.read_parquet(small_world / "landing" / "latency_buckets" / "*" / "*.parquet")
    write_openmetrics(counters, latency, tmp_path / "world.om")
    backfill(tmp_path / "world.om", tmp_path / "tsdb")
    with PrometheusServer(tmp_path / "tsdb") as server:
        resources = {**build_resources(state), "sli": SLISourceResource(prometheus_url=server.url)}
        (asset,) = build_slo_assets(daily_partitions(state))
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([asset], partition_key=DAY, resources=resources, instance=instance,
                                selection=[asset.key])
        assert result.success
        # The rows below must come from Prometheus, not from a recompute over the landing zone.
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        assert any(f"SLIs from Prometheus at {server.url}" in m for m in logs)
        # Every minute of the day answered: no SLO's source reads as silent from Prometheus either.
        data = [e for e in result.get_asset_check_evaluations() if e.check_name.endswith("___sli_data")]
        assert len(data) == 5 and all(e.passed for e in data), [e.description for e in data if not e.passed]
    from_prometheus = _burn(state)
    assert from_prometheus.equals(from_landing)
