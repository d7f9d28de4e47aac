"""The live release-flag file the controller and the Switchboard change."""

from pathlib import Path

import dagster as dg

from ops_platform.ramp.flag_executor import FlagFileExecutor
from ops_platform.ramp.switchboard import live_flag_file


class FlagsResource(dg.ConfigurableResource):
    """`home/flags/flags.flagd.json`, seeded from the world's initial flags on first use."""

    home: str
    world: str

    def executor(self) -> FlagFileExecutor:
        return FlagFileExecutor(live_flag_file(Path(self.home), Path(self.world)))
