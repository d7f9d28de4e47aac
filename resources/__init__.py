"""Resources, and the one place that chooses them per environment."""

from __future__ import annotations

from ops_platform.paths import StatePaths

from .landing import LandingZoneResource
from .warehouse import WarehouseResource

DUCKDB_POOL = "duckdb"


def build_resources(paths: StatePaths) -> dict:
    """Local (embedded) resources; production swaps sources here, nowhere else."""
    from assets.dbt import dbt_resource

    return {
        "landing": LandingZoneResource(root=str(paths.landing)),
        "warehouse": WarehouseResource(path=str(paths.warehouse)),
        "dbt": dbt_resource(),
    }


__all__ = ["DUCKDB_POOL", "LandingZoneResource", "WarehouseResource", "build_resources"]
