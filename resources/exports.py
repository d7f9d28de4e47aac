"""Where released exports (invoices) are written."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class ExportsResource(dg.ConfigurableResource):
    """The folder released invoice files go to, one sub-folder per billing period."""

    invoices_dir: str

    def invoices(self) -> Path:
        return Path(self.invoices_dir)
