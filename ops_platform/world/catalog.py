"""The static catalog of the Summit world: services, meters, tiers, cohorts, tenants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from .config import WorldConfig


@dataclass(frozen=True)
class Service:
    name: str
    meter: str  # the usage meter whose volume drives this service's shared cost
    unit: str
    traffic_share: float  # share of per-minute request volume
    median_latency_s: float
    node_hourly_usd: float
    units_per_node_day: float  # capacity of one node, in meter units per day


SERVICES: tuple[Service, ...] = (
    Service("api", "api_calls", "call", 0.40, 0.120, 0.192, 4.0e6),
    Service("graph", "graph_queries", "query", 0.20, 0.250, 0.384, 8.0e5),
    Service("policy", "policy_decisions", "decision", 0.15, 0.015, 0.096, 6.0e6),
    Service("receipts", "receipts_issued", "receipt", 0.10, 0.040, 0.096, 2.0e6),
    Service("metering", "metered_events", "event", 0.10, 0.030, 0.048, 6.0e6),
    Service("switchboard", "switchboard_actions", "action", 0.05, 0.180, 0.048, 5.0e5),
)
SERVICE_NAMES = tuple(s.name for s in SERVICES)
METERS = tuple(s.meter for s in SERVICES) + ("storage_gb_hours",)
METER_UNITS = {s.meter: s.unit for s in SERVICES} | {"storage_gb_hours": "GB-hour"}

TIERS = ("free", "pro", "enterprise")
TIER_WEIGHTS = (0.6, 0.3, 0.1)
TIER_ACTIVITY = {"free": 0.25, "pro": 1.0, "enterprise": 4.0}

COHORTS = ("canary", "early", "general")
COHORT_WEIGHTS = (0.05, 0.20, 0.75)

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")

# Prometheus histogram buckets (seconds), cumulative `le` convention; +Inf is last.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, float("inf"))

# Invoicing rate card: USD per meter unit, per tier (decimal strings, never floats).
PRICE_LIST = {
    "free": {"api_calls": "0.000002", "graph_queries": "0.00001", "policy_decisions": "0.000001",
             "receipts_issued": "0.000005", "metered_events": "0.0000005",
             "switchboard_actions": "0.0001", "storage_gb_hours": "0.0002"},
    "pro": {"api_calls": "0.0000018", "graph_queries": "0.000009", "policy_decisions": "0.0000009",
            "receipts_issued": "0.0000045", "metered_events": "0.00000045",
            "switchboard_actions": "0.00009", "storage_gb_hours": "0.00018"},
    "enterprise": {"api_calls": "0.0000015", "graph_queries": "0.0000075",
                   "policy_decisions": "0.00000075", "receipts_issued": "0.000004",
                   "metered_events": "0.0000004", "switchboard_actions": "0.000075",
                   "storage_gb_hours": "0.00015"},
}
CURRENCY = "USD"

_ADJ = ("Acme", "Blue", "Cedar", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Iris", "Juniper",
        "Kestrel", "Lumen", "Maple", "Nimbus", "Orbit", "Pioneer", "Quartz", "Redwood", "Summit",
        "Tidal", "Umber", "Vector", "Willow", "Xenon", "Yarrow", "Zephyr")
_NOUN = ("Logistics", "Health", "Labs", "Capital", "Foods", "Energy", "Media", "Robotics",
         "Analytics", "Travel", "Retail", "Insurance", "Bio", "Studios", "Mobility", "Systems")


def tenants_frame(cfg: WorldConfig, rng: np.random.Generator) -> pl.DataFrame:
    """Tenants with tier, deployment cohort, region, signup date and activity weight."""
    n = cfg.tenants
    tier = rng.choice(len(TIERS), size=n, p=TIER_WEIGHTS)
    cohort = rng.choice(len(COHORTS), size=n, p=COHORT_WEIGHTS)
    # Guarantee every cohort has tenants, even in tiny worlds.
    cohort[: min(n, len(COHORTS))] = np.arange(min(n, len(COHORTS)))
    region = rng.choice(len(REGIONS), size=n)
    signup_offset = rng.integers(30, 900, size=n)
    # Heavy-tailed activity inside each tier: a few tenants dominate usage.
    activity = np.array([TIER_ACTIVITY[TIERS[t]] for t in tier]) * rng.lognormal(0.0, 0.6, n)
    ids = [f"t-{i:05d}" for i in range(1, n + 1)]
    names = [f"{_ADJ[(i * 7) % len(_ADJ)]} {_NOUN[(i * 5) % len(_NOUN)]} {i}" for i in range(1, n + 1)]
    return pl.DataFrame(
        {
            "tenant_id": ids,
            "name": names,
            "tier": [TIERS[t] for t in tier],
            "cohort": [COHORTS[c] for c in cohort],
            "region": [REGIONS[r] for r in region],
            "signup_date": [cfg.start_date - timedelta(days=int(d)) for d in signup_offset],
            "activity": activity.round(6),
        }
    )


def services_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "service": [s.name for s in SERVICES],
            "meter": [s.meter for s in SERVICES],
            "unit": [s.unit for s in SERVICES],
            "median_latency_s": [s.median_latency_s for s in SERVICES],
        }
    )


def price_list_frame() -> pl.DataFrame:
    rows = [
        {"tier": t, "meter": m, "unit": METER_UNITS[m], "unit_price": p, "currency": CURRENCY}
        for t, prices in PRICE_LIST.items()
        for m, p in prices.items()
    ]
    return pl.DataFrame(rows)
