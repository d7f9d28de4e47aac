"""Deterministic JSON, so that a signed or hashed document has exactly one byte form.

Receipts are hashed and signed as bytes; if two serialisers could disagree on key order,
spacing or number formatting, a verifier could not tell a tampered document from a
re-encoded one. ``canonical_json`` fixes one form and ``strict_loads`` refuses the
ambiguous inputs (duplicate keys, NaN/Infinity) that would let two readers see different data.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS


def canonical_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace; NaN and infinities are refused.

    Encoded by orjson (strings unescaped beyond JSON's own rules, floats in shortest
    round-trip form): it is several times faster than the standard library on the
    receipt-signing hot path. Keys must be strings and integers fit in 64 bits.
    """
    try:
        out = orjson.dumps(obj, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"cannot canonicalise: {exc}") from exc
    # orjson writes non-finite floats as null; only then is the (slower) walk needed.
    if b"null" in out and _has_non_finite(obj):
        raise ValueError("cannot canonicalise: non-finite number (NaN or Infinity)")
    return out


def _has_non_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_has_non_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_has_non_finite(v) for v in obj)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def _finite_float(text: str) -> float:
    """A JSON number as a float, refused when too large for one (1e400 reads as infinity,
    which no JSON writer can write back)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is too large for a float")
    return value


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members (``json.loads``' ``object_pairs_hook``), refusing a key given
    twice: which value counts differs between readers."""
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
        return json.loads(text, object_pairs_hook=no_duplicate_keys, parse_constant=_reject_constant,
                          parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc
    except RecursionError:  # hostile nesting must not crash a verifier
        raise ValueError("invalid JSON: nested too deeply") from None
