"""Resources, and the one place that chooses them per environment."""

from __future__ import annotations

import os

import dagster as dg

from ops_platform.guard.policy import policy_settings_from_env
from ops_platform.guard.runtime import CONTROL_URL_ENV, control_url
from ops_platform.paths import StatePaths

from .control import ControlStoreResource, GuardResource, SignerResource
from .exports import ExportsResource
from .flags import FlagsResource
from .landing import LandingZoneResource
from .sli import SLISourceResource
from .warehouse import WarehouseResource

DUCKDB_POOL = "duckdb"


def build_resources(paths: StatePaths) -> dict:
    """Local (embedded) resources; production swaps sources here, nowhere else."""
    from assets.dbt import dbt_resource

    return {
        "landing": LandingZoneResource(root=str(paths.landing)),
        "warehouse": WarehouseResource(path=str(paths.warehouse)),
        "dbt": dbt_resource(),
        # From the environment at run time when set there: the URL may hold a password, which
        # then stays out of the run's stored config (and the UI's view of it).
        "control": ControlStoreResource(url=dg.EnvVar(CONTROL_URL_ENV) if os.environ.get(CONTROL_URL_ENV)
                                        else control_url(paths), spool_path=str(paths.spool_file),
                                        home=str(paths.home)),
        "signer": SignerResource(keys_dir=str(paths.keys_dir)),
        "flags": FlagsResource(home=str(paths.home), world=str(paths.world)),
        "sli": SLISourceResource(prometheus_url=os.environ.get("OPS_PLATFORM_PROMETHEUS_URL") or None),
        "exports": ExportsResource(invoices_dir=str(paths.invoices)),
        "guard": GuardResource(**policy_settings_from_env()),
    }


__all__ = ["DUCKDB_POOL", "ControlStoreResource", "ExportsResource", "FlagsResource", "GuardResource", "LandingZoneResource", "SignerResource",
           "SLISourceResource", "WarehouseResource", "build_resources"]
