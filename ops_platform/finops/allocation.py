"""Largest-remainder allocation: integer shares that sum exactly to the amount.

Money is allocated in integer units (micro-dollars for a FOCUS bill, whose days are rounded
to them once), so tenant shares add up to the bill to the last unit: each share is
floored, then the units left over go one by one to the largest fractional parts (ties by
key, so the result is deterministic).
"""

from __future__ import annotations

import polars as pl


def allocate(pools: pl.DataFrame, weights: pl.DataFrame, pool_keys: list[str], item: str,
             amount: str = "amount", weight: str = "weight", out: str = "allocated") -> pl.DataFrame:
    """Split each pool's integer ``amount`` over its items in proportion to ``weight``.

    ``pools``: one row per pool (``pool_keys`` + ``amount``, Int64). ``weights``: one row per
    item of a pool (``pool_keys``, ``item``, ``weight`` >= 0). Returns (``pool_keys``, ``item``, ``out``) for
    every pool with a positive total weight; per pool, ``out`` sums exactly to ``amount``.
    Pools with no weight are left out: the caller decides where their money goes.
    """
    if pools.select(pl.struct(pool_keys).is_duplicated().any()).item():
        raise ValueError(f"allocate: pools repeat a key of {pool_keys}; give one row per pool")
    # Pools are numbered: windows over one integer key cost far less than over the pool keys.
    numbered = pools.select(*pool_keys, amount).with_row_index("_pool")
    frame = (weights.filter(pl.col(weight) > 0)
             .join(numbered, on=pool_keys, how="inner")
             .with_columns((pl.col(weight) / pl.col(weight).sum().over("_pool")).alias("_share")))
    exact = pl.col(amount).cast(pl.Float64) * pl.col("_share")
    frame = frame.with_columns(exact.floor().cast(pl.Int64).alias("_floor"),
                               (exact - exact.floor()).alias("_frac"))
    # Units still to hand out (may be negative if float rounding floored one too high): to
    # the largest fractions first, taken back from the smallest. Items are unique in a pool,
    # so one ordinal rank orders both ways (the smallest is the last of the descending rank).
    rank = pl.struct(pl.col("_frac"), pl.col(item)).rank("ordinal", descending=True).over("_pool")
    frame = frame.with_columns((pl.col(amount) - pl.col("_floor").sum().over("_pool")).alias("_left"),
                               rank.alias("_rank"), pl.len().over("_pool").alias("_items"))
    from_smallest = pl.col("_items") - pl.col("_rank") + 1
    bump = (pl.when((pl.col("_left") > 0) & (pl.col("_rank") <= pl.col("_left"))).then(1)
            .when((pl.col("_left") < 0) & (from_smallest <= -pl.col("_left"))).then(-1).otherwise(0))
    return frame.select(*pool_keys, item, (pl.col("_floor") + bump).alias(out))
