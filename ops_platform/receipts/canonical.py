"""Deterministic JSON, so that a signed or hashed document has exactly one byte form.

Receipts are hashed and signed as bytes; if two serialisers could disagree on key order,
spacing or number formatting, a verifier could not tell a tampered document from a
re-encoded one. ``canonical_json`` fixes one form and ``strict_loads`` refuses the
ambiguous inputs (duplicate keys, NaN/Infinity) that would let two readers see different data.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace; NaN and infinities are refused."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, check_circular=False)
    except ValueError as exc:
        raise ValueError(f"cannot canonicalise: {exc}") from exc
    return text.encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def strict_loads(data: bytes | str) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys and NaN/Infinity (ValueError on any problem)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc
    except RecursionError:  # hostile nesting must not crash a verifier
        raise ValueError("invalid JSON: nested too deeply") from None
