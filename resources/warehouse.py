"""DuckDB warehouse resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ops_platform.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB analytics warehouse file. Writers must run in the `duckdb` pool."""

    path: str

    def get(self) -> Warehouse:
        return Warehouse(Path(self.path))
