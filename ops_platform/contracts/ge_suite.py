"""Run a contract with Great Expectations 1.x and map failures back to rows and reasons."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import polars as pl

from .model import Contract

logging.getLogger("great_expectations").setLevel(logging.ERROR)


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int
    reason: str


def _batches(source: str, table: str):
    """A batch definition over whole pandas frames, in an ephemeral context of its own."""
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    asset = ctx.data_sources.add_pandas(source).add_dataframe_asset(table)
    return ctx, asset.add_batch_definition_whole_dataframe("frame")


def _outcome(r) -> ExpectationOutcome:
    """One expectation's result in a validation, with the reason its suite gave it."""
    cfg = r.expectation_config
    return ExpectationOutcome(cfg.type, cfg.kwargs.get("column"), bool(r.success),
                              int((r.result or {}).get("unexpected_count") or 0),
                              (cfg.meta or {}).get("reason", cfg.type))


def _suite(contract: Contract, columns: set[str]):
    import great_expectations.expectations as gxe

    exps = []
    for col in contract.columns:
        if col.name not in columns:
            continue
        label = col.source or col.name
        if not col.nullable:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name, meta={"reason": f"{label}: missing value"}))
        if col.min is not None or col.max is not None:
            bound = " and ".join(x for x in (f">= {col.min}" if col.min is not None else "",
                                              f"<= {col.max}" if col.max is not None else "") if x)
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=col.name, min_value=col.min, max_value=col.max,
                                                          meta={"reason": f"{label}: out of range (must be {bound})"}))
        if col.allowed is not None:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.allowed),
                                                        meta={"reason": f"{label}: not one of the allowed values"}))
        if col.regex is not None:
            exps.append(gxe.ExpectColumnValuesToMatchRegex(column=col.name, regex=col.regex,
                                                           meta={"reason": f"{label}: does not match {col.regex}"}))
    for rule in contract.rules:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=f"_rule_{rule.name}", value_set=[True],
                                                    meta={"reason": rule.reason}))
    return exps


# Rows per Great Expectations batch. Its pandas copy of a batch costs about 1 KB a row
# (Python strings), so a whole provider export validated at once would cost gigabytes; in
# batches the copy stays bounded, and a row's verdict does not depend on the other rows. A
# batch costs about 0.1 s of its own: at 200,000 rows a daily partition of 330 k usage events
# takes the time it took whole (100,000 rows were 5-10% slower).
BATCH_ROWS = 200_000


def validate_rows(frame: pl.DataFrame, contract: Contract,
                  batch_rows: int = BATCH_ROWS) -> tuple[pl.DataFrame, list[ExpectationOutcome]]:
    """Return (`_row_key`, reason) for every failing row, and per-expectation results (summed
    over the batches of ``batch_rows`` rows that Great Expectations validates in turn).

    `frame` must have a unique integer `_row_key` column and the contract's columns.
    """
    import great_expectations as gx

    empty = pl.DataFrame(schema={"_row_key": pl.Int64, "reason": pl.String})
    if frame.height == 0:
        return empty, []
    derived = frame.with_columns(rule.expr.fill_null(False).alias(f"_rule_{rule.name}") for rule in contract.rules)
    keep = [c for c in derived.columns if c == "_row_key" or c in contract.names or c.startswith("_rule_")]
    ctx, batch_def = _batches(f"landing_{contract.table}", contract.table)
    # The expectations go in with the suite: adding them one by one re-serialises the suite
    # into the context's store each time (quadratic, most of a small partition's time).
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{contract.table}_contract",
                                               expectations=_suite(contract, set(keep))))
    keys: list[int] = []
    reasons: list[str] = []
    # Per expectation (its type, column and reason tell it apart in the suite), over every batch.
    outcomes: dict[tuple[str, str | None, str], ExpectationOutcome] = {}
    for offset in range(0, derived.height, batch_rows):
        pdf = derived.slice(offset, batch_rows).select(keep).with_columns(
            pl.col(pl.Decimal).cast(pl.Float64)).to_pandas()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = batch_def.get_batch(batch_parameters={"dataframe": pdf})
            result = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                          "unexpected_index_column_names": ["_row_key"],
                                                          "return_unexpected_index_query": False})
        for r in result.results:
            got = _outcome(r)
            seen = outcomes.setdefault((got.expectation, got.column, got.reason), got)
            if seen is not got:  # a batch that fails it fails the whole
                seen.success = seen.success and got.success
                seen.unexpected_count += got.unexpected_count
            for item in r.result.get("unexpected_index_list") or []:
                keys.append(int(item["_row_key"]) if isinstance(item, dict) else int(item))
                reasons.append(got.reason)
    return pl.DataFrame({"_row_key": keys, "reason": reasons}, schema=empty.schema), list(outcomes.values())


def validate_table(frame: pl.DataFrame, contract: Contract, partitioned: bool = False) -> list[ExpectationOutcome]:
    """Table-level expectations on the accepted rows: columns present, key unique and, for a
    partition of a continuous source, at least one row.

    Each goes to Great Expectations with the columns it reads only: the column set on no
    rows, the key and the row count on the key's columns (a pandas copy of every column of a
    large file would cost gigabytes, for expectations that look at one or two)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    ctx, batch_def = _batches(f"accepted_{contract.table}", contract.table)
    columns = [gxe.ExpectTableColumnsToMatchSet(column_set=contract.names, exact_match=False,
                                                meta={"reason": "columns: the contract's columns are missing"})]
    rows = []
    if contract.unique_key and frame.height:
        key = ", ".join(contract.unique_key)
        meta = {"reason": f"{key}: not unique after deduplication"}
        rows.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(contract.unique_key), meta=meta)
                    if len(contract.unique_key) > 1 else
                    gxe.ExpectColumnValuesToBeUnique(column=contract.unique_key[0], meta=meta))
    if contract.continuous and partitioned:
        rows.append(gxe.ExpectTableRowCountToBeBetween(
            min_value=1, meta={"reason": f"no rows accepted: {contract.table} reports every day, and this "
                                         "day has none (no file landed, or every row was quarantined)"}))
    accepted = frame.select(contract.names)
    outcomes = []
    for name, expectations, part in (("columns", columns, accepted.head(0)),
                                     ("rows", rows, accepted.select(list(contract.unique_key) or contract.names[:1]))):
        if not expectations:
            continue
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{contract.table}_accepted_{name}", expectations=expectations))
        pdf = part.with_columns(pl.col(pl.Decimal).cast(pl.Float64)).to_pandas()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = batch_def.get_batch(batch_parameters={"dataframe": pdf}).validate(suite)
        outcomes += [_outcome(r) for r in result.results]
    return outcomes
