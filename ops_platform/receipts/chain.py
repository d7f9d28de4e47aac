"""The hash chain: each ledger entry commits to its predecessor, its position and its bytes.

Changing, inserting, removing or reordering any entry changes every later chain hash, and
the Merkle checkpoints sign those hashes, so history cannot be rewritten quietly.
"""

from __future__ import annotations

import hashlib

GENESIS = bytes(32)
_MAX_SEQ = 2**64 - 1


def entry_hash(prev: bytes, seq: int, receipt_id: str, envelope_bytes: bytes) -> bytes:
    """sha256(prev || u64be(seq) || u32be(len(rid)) || rid || envelope_bytes).

    The receipt id is length-prefixed so its boundary with the envelope is unambiguous;
    the envelope comes last, so it needs no prefix.
    """
    if len(prev) != 32:
        raise ValueError("prev must be a 32-byte hash")
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq {seq} does not fit in 64 bits")
    rid = receipt_id.encode("utf-8")
    return hashlib.sha256(prev + seq.to_bytes(8, "big") + len(rid).to_bytes(4, "big") + rid
                          + envelope_bytes).digest()
