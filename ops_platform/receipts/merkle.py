"""RFC 6962 / RFC 9162 Merkle trees: roots and inclusion proofs over the ledger.

A signed tree head commits to every entry up to ``tree_size``; an inclusion proof shows
one entry is in it with O(log n) hashes. Leaves and interior nodes are hashed with
different prefixes (0x00 / 0x01) so a node can never pass for a leaf.

Everything here works level by level (bottom-up, the last odd node promoted unchanged),
which yields exactly the RFC's recursive MTH/PATH but in O(n) time and no list slicing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf *data*; the empty tree's root is sha256(b"")."""
    level = [leaf_hash(d) for d in leaves]
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 2.1.1, sibling nearest the leaf first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} outside a tree of size {len(leaves)}")
    level = [leaf_hash(d) for d in leaves]
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):  # else this node is promoted and contributes nothing
            proof.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return proof


def verify_inclusion(leaf_data: bytes, index: int, tree_size: int, proof: list[bytes],
                     root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show ``leaf_data`` at ``index`` under ``root``?"""
    if not 0 <= index < tree_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash(leaf_data)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


class CompactRange:
    """Roots of every prefix of a growing tree in O(log n) memory.

    Keeps the perfect subtrees that make up the tree so far (one per set bit of its size);
    the root is their right fold. Lets a verifier check many checkpoints in one pass.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []  # perfect-subtree roots, largest (leftmost) first

    def append(self, data: bytes) -> None:
        node = leaf_hash(data)
        size = self.size
        while size & 1:  # merge with equal-sized subtrees, like a binary carry
            node = node_hash(self._stack.pop(), node)
            size >>= 1
        self._stack.append(node)
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for data in leaves:
            self.append(data)

    def state(self) -> dict:
        """A JSON-able snapshot, so a store can resume the tree without re-reading it."""
        return {"size": self.size, "stack": [n.hex() for n in self._stack]}

    @classmethod
    def from_state(cls, state: dict) -> CompactRange:
        cr = cls()
        cr.size = int(state.get("size", 0))
        cr._stack = [bytes.fromhex(h) for h in state.get("stack", [])]
        if len(cr._stack) != bin(cr.size).count("1"):
            raise ValueError("compact range state does not match its size")
        return cr

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1]
        for node in reversed(self._stack[:-1]):
            acc = node_hash(node, acc)
        return acc
