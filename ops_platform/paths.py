"""Where local state lives.

All state sits under one git-ignored folder (``.ops_platform/`` at the repo root, or
``OPS_PLATFORM_HOME``) so a user can wipe or move it in one step. Private keys are the
exception: they live under the user's config directory, never inside the repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LIVE_FLAGS = Path("flags") / "flags.flagd.json"  # the live flagd file, under the state folder
SLO_DIR = REPO_ROOT / "slos"  # the platform's OpenSLO files (golden SLOs and their alert tiers)


def _config_home() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME")
    return Path(base) if base else Path.home() / ".config"


@dataclass(frozen=True)
class StatePaths:
    """Every path the platform writes to, derived from one home folder."""

    home: Path
    keys_dir: Path

    @classmethod
    def from_env(cls) -> StatePaths:
        home = Path(os.environ.get("OPS_PLATFORM_HOME", REPO_ROOT / ".ops_platform")).resolve()
        keys = Path(os.environ.get("OPS_PLATFORM_KEYS_DIR", _config_home() / "ops-platform" / "keys"))
        return cls(home=home, keys_dir=keys.resolve())

    @property
    def world(self) -> Path:
        return self.home / "world"

    @property
    def landing(self) -> Path:
        return self.world / "landing"

    @property
    def truth(self) -> Path:
        return self.world / "truth"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def control_store(self) -> Path:
        return self.home / "control.sqlite"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def spool_file(self) -> Path:
        """Guarded requests waiting for the control store (replayed by the retry job)."""
        return self.home / "spool" / "requests.jsonl"

    @property
    def live_flags(self) -> Path:
        """The platform's live flagd file (ramp.switchboard.live_flag_file seeds it)."""
        return self.home / LIVE_FLAGS

    @property
    def invoices(self) -> Path:
        """Released invoice files, one folder per billing period."""
        return self.home / "invoices"

    def ensure(self) -> StatePaths:
        """Create the state folders (idempotent)."""
        for p in (self.home, self.dagster_home):
            p.mkdir(parents=True, exist_ok=True)
        return self
