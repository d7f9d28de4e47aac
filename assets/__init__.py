"""Dagster assets and asset checks, one module per domain."""

import numbers
import warnings

import dagster as dg


def score_metadata(value: float | None) -> int | float | dg.MetadataValue:
    """A backtest figure as asset metadata: a count as an integer (events, alerts, bad
    requests), a rate rounded, or null when there is none (no pause has no time to pause),
    never a 0 that reads as a measurement."""
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, bool):
        return value
    return int(value) if isinstance(value, numbers.Integral) else round(float(value), 4)


def check_spec(name: str, asset: dg.AssetKey, description: str,
               partitions_def: dg.PartitionsDefinition | None) -> dg.AssetCheckSpec:
    """A check of a partitioned asset, recorded per partition as the asset is, so a failed
    day stays visible beside the days that pass (without it the latest evaluation of any
    day stands for all). Partitioned checks are a preview feature of Dagster 1.13, pinned
    in constraints.txt; its warning is silenced here, where it is chosen, not everywhere."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, description=description, partitions_def=partitions_def)


def require_tables(wh, names: list[str], run: str) -> None:
    """Fail the materialization, naming what to run first, when the warehouse lacks one of
    ``names`` ("schema.table"): a raw DuckDB catalog error says neither."""
    if missing := wh.missing_tables(names):
        raise dg.Failure(description=f"{', '.join(missing)} not in the warehouse {wh.path} yet: {run} first")
