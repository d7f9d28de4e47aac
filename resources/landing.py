"""Landing-zone source resource (the embedded default SourceReader)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ops_platform.ingest.landing import LandingZoneReader


class LandingZoneResource(dg.ConfigurableResource):
    """Reads the world's landing zone; swap for a real-source resource in production."""

    root: str

    def reader(self) -> LandingZoneReader:
        return LandingZoneReader(Path(self.root))
