"""Dagster assets and asset checks, one module per domain."""

import dagster as dg


def score_metadata(value: float | None) -> float | dg.MetadataValue:
    """A backtest figure as asset metadata: rounded, or null when there is none (no pause
    has no time to pause), never a 0 that reads as a measurement."""
    return round(float(value), 4) if value is not None else dg.MetadataValue.null()
