"""Check one file a user brings (e.g. a provider's FOCUS export) against a source's contract.

The same normalisation and Great Expectations suite as ingestion, without partitions or a
warehouse: it says whether the file loads, which rows would be quarantined and why, and
which required columns are missing, so a bad file is refused with a clear message before
anything reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ..contracts.ge_suite import validate_rows
from ..contracts.model import Contract
from .landing import RawBatch, read_any
from .normalize import normalize_batch


@dataclass
class FileCheck:
    file: str
    rows: int = 0
    accepted: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    schema_errors: list[str] = field(default_factory=list)

    @property
    def loads(self) -> bool:
        return not self.schema_errors


def check_file(path: Path, contract: Contract) -> FileCheck:
    path = Path(path)
    result = FileCheck(str(path))
    try:
        frame = read_any(path)
    except ValueError as exc:
        result.schema_errors.append(str(exc))
        return result
    except Exception as exc:  # a corrupt file is a finding, not a traceback
        result.schema_errors.append(f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return result
    norm, errors = normalize_batch(RawBatch(str(path), None, frame), contract)
    result.rows = norm.height
    result.schema_errors = errors
    if errors or norm.height == 0:
        return result
    data = norm.with_row_index("_row_key").with_columns(pl.col("_row_key").cast(pl.Int64))
    failing, _ = validate_rows(data, contract)
    cast_reasons = data.select("_row_key", pl.col("_reasons").alias("reason")).explode("reason").drop_nulls()
    reasons = pl.concat([cast_reasons, failing])
    counts = reasons.group_by("reason").len().sort("reason")
    result.quarantined = dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))
    result.accepted = norm.height - reasons["_row_key"].n_unique()
    return result
