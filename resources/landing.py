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

    def scored_world(self) -> Path:
        """The generated world this landing zone belongs to, for the backtests: they score
        the platform's decisions against its truth folder, so it must have one."""
        world = Path(self.root).parent
        if not (world / "truth").is_dir():
            raise dg.Failure(description=f"no truth folder at {world / 'truth'}: the backtests score decisions "
                                         "against a generated world's ground truth")
        return world
