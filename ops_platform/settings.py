"""Platform settings derived from the environment and the generated world."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from .paths import StatePaths
from .world.config import PRESETS, WorldConfig
from .world.generate import load_manifest, world_exists


class SettingError(ValueError):
    """An environment setting that does not parse: a one-line error naming it, not a traceback."""


def _check_zone(tz: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingError(f"OPS_PLATFORM_TZ={tz!r} is not an IANA time zone (e.g. America/Denver, UTC)") from None


@dataclass(frozen=True)
class PartitionRange:
    """Inclusive first and last daily partition keys, in the display timezone."""

    first: date
    last: date
    tz: str


def partition_range(paths: StatePaths) -> PartitionRange:
    """The partitions the platform manages: the world's days, or an explicit override.

    `OPS_PLATFORM_PARTITIONS=YYYY-MM-DD:YYYY-MM-DD` overrides; otherwise the generated
    world decides, and before any world exists the default demo preset does.
    """
    return world_partition_range(paths.world)


def world_partition_range(world: Path) -> PartitionRange:
    """``partition_range`` for the world in ``world`` (a landing zone read straight, as
    `finops report --world` does), with the same settings."""
    tz = os.environ.get("OPS_PLATFORM_TZ")
    if tz is not None:
        _check_zone(tz)
    override = os.environ.get("OPS_PLATFORM_PARTITIONS")
    if override:
        try:
            a, b = override.split(":")
            return PartitionRange(date.fromisoformat(a), date.fromisoformat(b), tz or "America/Denver")
        except ValueError:
            raise SettingError(f"OPS_PLATFORM_PARTITIONS={override!r} must look like 2026-03-01:2026-03-14") from None
    cfg: WorldConfig = PRESETS["S"]
    if world_exists(world):
        cfg = WorldConfig.from_json(load_manifest(world)["config"])
    return PartitionRange(cfg.start_date, cfg.start_date + timedelta(days=cfg.days - 1), tz or cfg.tz)


def usage_final_after_days() -> int:
    """Days after a usage day ends before it is final (T+2 by default); events that arrive
    later become corrections. ``OPS_PLATFORM_USAGE_FINAL_AFTER_DAYS`` overrides."""
    from .finops.usage import FINAL_AFTER_DAYS, MAX_FINAL_AFTER_DAYS

    text = os.environ.get("OPS_PLATFORM_USAGE_FINAL_AFTER_DAYS")
    if text is None:
        return FINAL_AFTER_DAYS
    if not (text.strip().isascii() and text.strip().isdigit()) or int(text) > MAX_FINAL_AFTER_DAYS:
        raise SettingError(f"OPS_PLATFORM_USAGE_FINAL_AFTER_DAYS={text!r} must be a whole number of days, "
                           f"0 to {MAX_FINAL_AFTER_DAYS}")
    return int(text)
