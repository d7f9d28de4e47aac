"""World presets and overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a generated world; the same config gives the same bytes."""

    seed: int = 7
    tenants: int = 50
    days: int = 14
    # The first local (display-timezone) day. 2026-03-01 puts the spring-forward
    # DST day (2026-03-08, 23 hours in America/Denver) inside every preset.
    start_date: date = date(2026, 3, 1)
    tz: str = "America/Denver"
    # Mean usage events per tenant per day; L is sized for ~1e8 events per month.
    events_per_tenant_day: float = 330.0
    # Requests per minute per tenant across the API tier (drives the counters).
    requests_per_tenant_minute: float = 600.0
    duplicate_rate: float = 0.005
    late_rate: float = 0.01
    malformed_rate: float = 0.0005
    billing_malformed_rate: float = 0.002
    # Benign error blips a day (1-2 minutes at 20-40% errors on every build of one service: a
    # deploy hiccup, a pause): noise that the burn alerts and the ramp controller must not
    # act on, listed in the truth folder so that an action they cause scores as having no cause.
    blips_per_day: int = 4

    def to_json(self) -> dict:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict) -> WorldConfig:
        d = dict(d)
        d["start_date"] = date.fromisoformat(d["start_date"])
        return cls(**d)


PRESETS: dict[str, WorldConfig] = {
    "S": WorldConfig(tenants=50, days=14),
    "M": WorldConfig(tenants=1_000, days=30),
    "L": WorldConfig(tenants=10_000, days=30),
}


def preset(name: str, **overrides) -> WorldConfig:
    """A preset with explicit overrides (``None`` values are ignored)."""
    try:
        base = PRESETS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    cfg = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if not 0 <= cfg.seed < 2**63:  # numpy's generators take a non-negative integer
        raise ValueError(f"seed {cfg.seed}: a seed is a whole number from 0 to 2**63 - 1")
    return cfg
