"""A copy, outside the control store, of the largest signed tree head the platform has seen.

The ledger chains and signs every entry, so no entry can be changed or removed from the
middle; but someone who can write the store could cut its newest entries, with their tree
heads and bookkeeping, and what is left would still verify on its own. The witness keeps
the tree head each receipt produced beside the signing key (a folder a store writer need
not reach): `receipts verify` then fails when the ledger holds fewer entries than were
witnessed, or when its first entries are not the ones the witnessed root covers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..files import exclusive_lock, write_bytes
from .ledger import LedgerEntry, prefix_root

WITNESS = "ledger-witness.json"


def remember(keys_dir: Path, ledger: str, tree_size: int, root_hash: str) -> None:
    """Record a signed tree head of ``ledger`` (its first entry's hash: one key may sign for
    several stores) if it is larger than the one witnessed for it (the largest one counts,
    whichever process got there first)."""
    path = Path(keys_dir) / WITNESS
    with exclusive_lock(path.with_name(WITNESS + ".lock")):
        try:
            heads = read(keys_dir)
        except ValueError:
            heads = {}  # an unreadable witness is replaced by what is known now
        if heads.get(ledger, (-1, ""))[0] >= tree_size:
            return
        heads[ledger] = (tree_size, root_hash)
        data = {"ledgers": {k: {"tree_size": n, "root_hash": r} for k, (n, r) in sorted(heads.items())}}
        write_bytes(json.dumps(data, indent=1).encode(), path)


def read(keys_dir: Path) -> dict[str, tuple[int, str]]:
    """Per ledger (its first entry's hash), the (tree size, root hash) witnessed. ValueError
    for a witness that does not read."""
    path = Path(keys_dir) / WITNESS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"the ledger witness {path} does not read ({exc})") from None
    ledgers = data.get("ledgers") if isinstance(data, dict) else None
    if not isinstance(ledgers, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("tree_size"), int) and isinstance(v.get("root_hash"), str)
            for v in ledgers.values()):
        raise ValueError(f"the ledger witness {path} is not a set of tree heads (tree_size, root_hash)")
    return {k: (v["tree_size"], v["root_hash"]) for k, v in ledgers.items()}


def problem(keys_dir: Path, entries: Sequence[LedgerEntry]) -> str | None:
    """Why the ledger is not the one witnessed (None: it holds the witnessed entries, maybe
    more, or nothing of it was witnessed). A ledger is known by its first entry."""
    if not entries:
        return None
    try:
        seen = read(keys_dir).get(entries[0].entry_hash)
    except ValueError as exc:
        return str(exc)
    if seen is None:
        return None
    size, root = seen
    if len(entries) < size:
        return (f"the ledger holds {len(entries)} receipt(s), but a tree head of {size} was witnessed "
                f"({Path(keys_dir) / WITNESS}): its newest receipts were cut")
    if prefix_root(entries, size) != root:
        return f"the ledger's first {size} receipt(s) are not those the witnessed tree head covers"
    return None
