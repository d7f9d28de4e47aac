"""The single place that wires assets, checks, jobs, schedules and resources together."""

from __future__ import annotations

import warnings
from datetime import timedelta

import dagster as dg

from assets.dbt import summit_dbt_models
from assets.finops import finops_attribution
from assets.ramp import build_ramp_assets, ramp_backtest
from assets.raw import build_raw_assets
from assets.receipts import ledger_verifies, receipts_ledger
from assets.slo import build_slo_assets, slo_alert_backtest
from assets.world import landing_zone, truth_folder
from ops_platform.paths import StatePaths
from ops_platform.settings import partition_range
from resources import build_resources
from sensors import build_jobs, build_schedules, build_sensors

# Dagster warns that a sensor's `owners` is beta whenever Definitions copies a sensor to attach
# its jobs' resources (the copy passes the sensor's empty owner list back in): our sensors set
# no owners, and the warning would open every `ops-platform demo` and run.
warnings.filterwarnings("ignore", message="Parameter `owners` of initializer `SensorDefinition", category=dg.BetaWarning)


def daily_partitions(paths: StatePaths) -> dg.DailyPartitionsDefinition:
    rng = partition_range(paths)
    return dg.DailyPartitionsDefinition(start_date=rng.first.isoformat(),
                                        end_date=(rng.last + timedelta(days=1)).isoformat(), timezone=rng.tz)


def build_definitions(paths: StatePaths | None = None) -> dg.Definitions:
    paths = paths or StatePaths.from_env()
    partitions = daily_partitions(paths)
    jobs = build_jobs()
    return dg.Definitions(
        assets=[*build_raw_assets(partitions), *build_slo_assets(partitions), *build_ramp_assets(partitions),
                summit_dbt_models, receipts_ledger, ramp_backtest, slo_alert_backtest, finops_attribution,
                landing_zone, truth_folder],
        asset_checks=[ledger_verifies],
        jobs=jobs,
        schedules=build_schedules(jobs),
        sensors=build_sensors(jobs),
        resources=build_resources(paths),
    )


defs = build_definitions()
