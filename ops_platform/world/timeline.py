"""The world's clock: per-minute UTC axis, local hour/weekday, seasonality factors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from ..timezones import local_day_bounds
from .config import WorldConfig


@dataclass(frozen=True)
class Timeline:
    start: datetime  # UTC, local midnight of the first day
    end: datetime  # UTC, local midnight after the last day (exclusive)
    tz: str
    minutes: int
    local_hour: np.ndarray  # fractional local hour of each minute (0..24)
    local_weekday: np.ndarray  # 0 = Monday, per minute

    @classmethod
    def build(cls, cfg: WorldConfig) -> Timeline:
        start, _ = local_day_bounds(cfg.start_date, cfg.tz)
        _, end = local_day_bounds(cfg.start_date + timedelta(days=cfg.days - 1), cfg.tz)
        minutes = int((end - start).total_seconds() // 60)
        ts = pl.datetime_range(start, end, "1m", closed="left", time_unit="ms", eager=True)
        local = ts.dt.convert_time_zone(cfg.tz)
        hour = (local.dt.hour().to_numpy() + local.dt.minute().to_numpy() / 60.0).astype(np.float64)
        weekday = (local.dt.weekday().to_numpy() - 1).astype(np.int8)
        return cls(start, end, cfg.tz, minutes, hour, weekday)

    def minute_ts_ms(self) -> np.ndarray:
        """Epoch milliseconds of the start of every minute."""
        base = int(self.start.timestamp() * 1000)
        return base + np.arange(self.minutes, dtype=np.int64) * 60_000

    def seasonality(self) -> np.ndarray:
        """Traffic multiplier per minute: a diurnal wave peaking mid-afternoon, quieter weekends."""
        diurnal = 0.55 + 0.45 * np.cos(2 * np.pi * (self.local_hour - 14.0) / 24.0)
        weekly = np.where(self.local_weekday >= 5, 0.6, 1.0)
        return diurnal * weekly

    def day_index(self) -> np.ndarray:
        """Local day number (0-based) of each minute."""
        ts = pl.datetime_range(self.start, self.end, "1m", closed="left", time_unit="ms", eager=True)
        local_date = ts.dt.convert_time_zone(self.tz).dt.date()
        first = local_date[0]
        return np.asarray((local_date - first).dt.total_days().to_numpy(), dtype=np.int32)


def diurnal_weight(local_hour: np.ndarray) -> np.ndarray:
    return 0.55 + 0.45 * np.cos(2 * np.pi * (np.asarray(local_hour) - 14.0) / 24.0)
