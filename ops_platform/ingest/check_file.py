"""Check one file a user brings (e.g. a provider's FOCUS export) against a source's contract.

The file goes through ingestion itself (``ingest_partition``: normalisation, the Great
Expectations suite, re-delivery checks), without partitions or a warehouse: the report says
whether the file loads, how many rows ingestion would accept and quarantine and why, and
which required columns are missing, so a bad file is refused with a clear message before
anything reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from ..contracts.model import Contract
from .landing import RawBatch, read_any
from .normalize import normalize_batch
from .pipeline import ingest_partition


@dataclass
class FileCheck:
    file: str
    rows: int = 0  # rows == accepted + quarantined_rows + duplicates_removed
    accepted: int = 0
    quarantined_rows: int = 0
    duplicates_removed: int = 0  # a row repeating an earlier one's key and content
    quarantined: dict[str, int] = field(default_factory=dict)  # quarantined rows per reason, as ingestion words it
    # Per reason, the first rows to look at: {"row_number": 1, "record_id": "L2"} (see ``_examples``).
    examples: dict[str, list[dict[str, int | str | None]]] = field(default_factory=dict)
    schema_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the file loads, but a later step will object

    @property
    def loads(self) -> bool:
        return not self.schema_errors


class _OneFile:
    """A source reader holding one batch: the user's file."""

    def __init__(self, batch: RawBatch):
        self.batch: RawBatch | None = batch

    def read(self, table: str, dates: tuple[date | None, date | None] | None) -> Iterator[RawBatch]:
        batch, self.batch = self.batch, None  # held by ingestion alone, which lets it go once normalised
        if batch is not None:
            yield batch


# What checking a file adds to the memory the process holds when it starts the check: Great
# Expectations' context and its modules (0.25 GiB for a file of a few rows) and, per row, its
# text, its cast columns and their copies through the steps (measured on FOCUS exports of
# 100 k to 500 k rows and 22 to 37 columns: 1.5-1.8 KB a row from Parquet or CSV, whatever
# the width), with a margin.
BASE_BYTES = 384 * 2**20
ROW_BYTES = 2 * 2**10
_SAMPLE = 2**20  # text read to measure a text file's rows


def estimated_rows(path: Path) -> int | None:
    """About how many rows ``path`` holds, without reading it whole: a Parquet file's own
    count; a text file's size over the mean length of its first lines (a gzipped one's size
    from its trailer). None for what cannot be told (an unreadable file: the read says why)."""
    import pyarrow.parquet as pq

    try:
        if path.name.lower().endswith(".parquet"):
            return pq.ParquetFile(path).metadata.num_rows
        size = path.stat().st_size
        with path.open("rb") as raw:
            if path.name.lower().endswith(".gz"):
                head, used = _gunzip_head(raw)
                ratio_size = size * len(head) // max(used, 1)  # the text's size by the ratio so far
                raw.seek(-4, 2)
                # A whole single-stream gzip's trailer holds the text's size modulo 4 GiB: exact
                # below it, the ratio saying how many times 4 GiB to add above it. A stream of
                # several members, or cut short, has no such trailer (the last member's size,
                # or any 4 bytes): taken only where it agrees with the ratio, within a quarter.
                trailer = int.from_bytes(raw.read(4), "little")
                sized = trailer + 2**32 * max(round((ratio_size - trailer) / 2**32), 0)
                size = len(head) if len(head) < _SAMPLE else (
                    sized if ratio_size * 3 / 4 <= sized <= ratio_size * 4 / 3 else ratio_size)
            else:
                head = raw.read(_SAMPLE)
                if head.startswith((b"PAR1", b"\x1f\x8b")):  # misnamed: the read says so, not a guess
                    return None
    except Exception:  # noqa: BLE001 - the read itself reports the file
        return None
    lines = head.count(b"\n")
    return size * lines // len(head) if lines else (1 if head else 0)


def _gunzip_head(raw) -> tuple[bytes, int]:
    """The first ``_SAMPLE`` bytes of a gzipped text (member after member), and how many
    compressed bytes gave them: counted exactly, where a reader's buffer would count a whole
    small file."""
    import zlib

    out, used, stream, pending = bytearray(), 0, zlib.decompressobj(wbits=31), b""
    while len(out) < _SAMPLE:
        data = stream.unconsumed_tail or pending or raw.read(1 << 14)
        pending = b""
        if not data:
            break
        before = len(data)
        out += stream.decompress(data, _SAMPLE - len(out))
        used += before - len(stream.unconsumed_tail) - len(stream.unused_data)
        if stream.eof:  # the next member, if any, starts in what this one left
            pending, stream = stream.unused_data, zlib.decompressobj(wbits=31)
    return bytes(out), used


def free_memory() -> int:
    """Bytes this process may still take: the machine's available memory, or less under a
    container's (cgroup) limit, which the kernel enforces by killing the process. The
    container's use counts its page cache, which the kernel gives back before it kills: the
    inactive part is counted free."""
    import psutil

    free = psutil.virtual_memory().available
    for folder, limit, used, cache in (("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
                                       ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                                        "total_inactive_file")):
        try:
            cap, now = (Path(folder, f).read_text().strip() for f in (limit, used))
        except OSError:
            continue
        if cap.isdigit() and now.isdigit():
            free = min(free, int(cap) - int(now) + _stat(Path(folder, "memory.stat"), cache))
        break
    return max(free, 0)


def _stat(path: Path, key: str) -> int:
    """One value of a cgroup's ``memory.stat`` (0 when it is not there)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def too_large(path: Path, available: int | None = None) -> str | None:
    """Why ``path`` cannot be checked here (it would not fit in memory), or None: said before
    reading it, rather than the process being killed halfway through."""
    rows = estimated_rows(path)
    if rows is None:
        return None
    need = BASE_BYTES + rows * ROW_BYTES
    free = free_memory() if available is None else available
    if need <= free:
        return None
    fits = max(free - BASE_BYTES, 0) // ROW_BYTES
    part = f"parts of at most {fits // 1000 * 1000:,} rows" if fits >= 1000 else "parts, on a larger machine"
    return (f"{path}: too large to check here: about {rows:,} rows need about {need / 2**30:.1f} GiB of memory, "
            f"and {free / 2**30:.1f} GiB is available; split the export into {part} (by billing day, say) and "
            "check each part (a line id repeated across parts is then not compared)")


def check_file(path: Path, contract: Contract, available_memory: int | None = None) -> FileCheck:
    """The report on ``path`` (see the module). ``available_memory``: bytes the check may take
    (default: what the machine or container has free); a file that would need more is
    refused before it is read, saying so."""
    path = Path(path)
    result = FileCheck(str(path))
    if (why := too_large(path, available_memory)) is not None:
        result.schema_errors.append(why)
        return result
    try:
        frame, rejected = read_any(path)
    except ValueError as exc:
        result.schema_errors.append(str(exc))
        return result
    except Exception as exc:  # a corrupt file is a finding, not a traceback
        result.schema_errors.append(f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return result
    columns = frame.columns
    batch = RawBatch(str(path), None, frame, rejected=rejected)
    # Ingestion reports a file's schema errors with its rows; a file without rows is asked here.
    without_rows = None if frame.height else normalize_batch(batch, contract)[1]
    reader = _OneFile(batch)
    del frame, batch  # the reader's alone, so that ingestion can let the raw rows go
    res = ingest_partition(contract, reader)
    result.rows = res.rows_read
    result.schema_errors = res.schema_errors if without_rows is None else without_rows
    if result.schema_errors:  # every row is refused, for the reasons above
        result.quarantined_rows = result.rows
        return result
    result.accepted = res.accepted.height
    result.quarantined_rows = res.quarantine.height
    result.duplicates_removed = res.duplicates_removed
    result.quarantined = res.quarantine_by_reason()
    result.examples = _examples(res.quarantine)
    result.warnings = _warnings(columns, res.accepted)
    if not result.accepted and res.quarantine.height:
        _nothing_accepted(result, res.quarantine, res.accepted)
    if not result.rows:
        result.warnings.append("the file holds no row")
    return result


def _examples(quarantine: pl.DataFrame, per_reason: int = 3) -> dict[str, list[dict[str, int | str | None]]]:
    """The first rows of each reason, by data row (from 0, as ``raw.quarantine.row_number``
    counts them: a CSV's header is no row) and record id (e.g. ``x_LineItemId``), so a user
    can find them in the file and in the quarantine alike."""
    first = quarantine.sort("row_number").group_by("reason", maintain_order=True).head(per_reason)
    out: dict[str, list[dict[str, int | str | None]]] = {}
    for row in first.iter_rows(named=True):
        example: dict[str, int | str | None] = {"row_number": row["row_number"], "record_id": row["record_id"]}
        if detail := _detail(row["reason"] or "", row["record"]):
            example["detail"] = detail
        out.setdefault(row["reason"], []).append(example)
    return out


def _detail(reason: str, record: str | None) -> str | None:
    """What exactly is wrong with a key-value column (``Tags``) the reason names: which key
    is nested or given twice, which the reason, shared by every such row, does not say."""
    import json

    from ..contracts.definitions import KEY_VALUE_REASONS, key_values_problem

    named = [c for c, why in KEY_VALUE_REASONS.items() if why in reason.split("; ")]
    if not named or not record:
        return None
    try:  # the record of a line set aside is the line as written, which may not be JSON
        values = json.loads(record)
    except ValueError:
        return None
    if not isinstance(values, dict):
        return None
    found = [f"{c}: {problem}" for c in named if (problem := key_values_problem(values.get(c)))]
    return "; ".join(found) or None


def example_text(example: dict[str, int | str | None]) -> str:
    """One example row as the report prints it: ``data row 1 (L2)``, and what is wrong with
    it when the reason does not say (``[Tags: key 'service' holds an array, not a scalar]``)."""
    return (f"data row {example['row_number']}" + (f" ({example['record_id']})" if example["record_id"] else "")
            + (f" [{example['detail']}]" if example.get("detail") else ""))


def _nothing_accepted(result: FileCheck, quarantine: pl.DataFrame, accepted: pl.DataFrame) -> None:
    """A file none of whose rows the contract accepts: FinOps repairs some refused rows (a
    sign error, a period end, tags from the same resource), so the file is refused only when
    it would repair none of them, for then nothing of it would ever be billed."""
    from ..finops.repair import repair_billing, repairable_from_other_rows

    repaired, left = repair_billing(quarantine, accepted)
    # A currency or tags repair reads other rows, which other files of the bill may hold.
    elsewhere = sum(map(repairable_from_other_rows, left["reason"].fill_null("").to_list(), left["record"].to_list()))
    if repaired.height or elsewhere:
        result.warnings.append(
            f"no row would be accepted as it is; FinOps would repair {repaired.height:,} of the "
            f"{quarantine.height:,} quarantined row(s) (docs/finops.md, Repairs)"
            + (f", and may repair {elsewhere:,} more from other files' rows (the billing account's currency, "
               "the same resource's tags)" if elsewhere else ""))
    else:
        result.schema_errors.append("no row would be accepted, and FinOps repairs none of the quarantined rows "
                                    "(reasons below): nothing of this file would be billed; fix the export")


def _warnings(columns: list[str], accepted: pl.DataFrame) -> list[str]:
    """What FinOps will refuse or misread in rows the contract accepts: a bill in several
    currencies (attribution works in one); no ``Tags`` column (some exports spell it
    ``tags``), or tags that name a tenant, service or pool under another spelling
    (``Tenant``, ``user:tenant``), which attribution does not read, so their cost would be
    spread by rule or go to the unallocated line."""
    from ..finops.attribution import TAG_KEYS
    from ..finops.pipeline import bill_currencies  # the rule attribution applies

    out = []
    if "Tags" not in columns:
        near = [c for c in columns if c.lower() in ("tags", "tag") or c.lower().endswith(("_tags", " tags"))]
        out.append("Tags: the file has no Tags column"
                   + (f" ({', '.join(repr(c) for c in near)} is not spelt 'Tags', the only spelling read)" if near else "")
                   + ": attribution reads each row's tenant, service and pool from Tags, so every row's cost would "
                     "be left unallocated")
    currencies = bill_currencies(accepted)
    if len(currencies) > 1:
        out.append(f"BillingCurrency: the file mixes currencies ({', '.join(currencies)}); it loads, but FinOps "
                   "attribution works in one currency and refuses a bill that mixes them: convert the rows first "
                   "or attribute each currency's bill apart")
    if "Tags" in accepted.columns and accepted.schema["Tags"] == pl.String and accepted.height:
        keys = set(accepted.select(pl.col("Tags").str.extract_all(r'"([^"\\]+)"\s*:').explode()
                                   .str.strip_chars('": ').unique().drop_nulls())["Tags"].to_list())
        near = sorted(k for k in keys - set(TAG_KEYS)
                      if k.lower().rsplit(":", 1)[-1].rsplit("/", 1)[-1] in TAG_KEYS)
        if near:  # even beside rows with the exact keys: the look-alike rows' cost would be lost
            out.append(f"Tags: keys {', '.join(repr(k) for k in near)} look like {', '.join(TAG_KEYS)} but "
                       f"attribution reads only those exact keys (lowercase, no prefix): the rows tagged so are not read "
                       "as their tenant's (direct) cost, but spread over every tenant by their service tag or left "
                       "unallocated; rename the keys in the export")
    return out
