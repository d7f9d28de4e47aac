"""The receipts ledger model and its verifier, independent of where entries are stored.

An entry is a DSSE-signed in-toto statement chained to its predecessor; checkpoints are
signed Merkle tree heads over the entries' chain hashes. ``verify_ledger`` recomputes all
of it from the stored text, so any changed, inserted, removed or reordered byte shows up
as a named problem rather than a silent pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from . import merkle
from .canonical import canonical_json, strict_loads
from .chain import GENESIS, entry_hash
from .dsse import (
    PAYLOAD_TYPE,
    VerificationError,
    envelope_text,
    pae,
    sign_envelope,
    verify_envelope_by,
)
from .keys import RetiredKey, Signer, Verifier
from .statement import (
    Statement,
    Subject,
    is_sha256_hex,
    parse_statement,
    statement_subjects,
    validate_statement,
)

CHECKPOINT_PAYLOAD_TYPE = "application/vnd.summit.checkpoint+json"
_TREE_HEAD_KEYS = {"tree_size", "root_hash", "timestamp", "prev_head"}
_MAX_ERRORS = 100

FileDigest = Callable[[Subject], str | None]


@dataclass(frozen=True)
class LedgerEntry:
    """One stored receipt; all hashes are lowercase hex, ``envelope`` is canonical JSON text."""

    seq: int
    receipt_id: str  # hex sha256 of the DSSE payload bytes, never chosen independently
    envelope: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head over the first ``tree_size`` entries."""

    tree_size: int
    root_hash: str
    envelope: str


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of ``verify_ledger``: ``first_bad`` is the first problem, in ledger order."""

    ok: bool
    first_bad: str | None
    entries: int
    checkpoints: int
    errors: list[str]


def _chain_hash(prev_hash: str, seq: int, receipt_id: str, envelope: str) -> str:
    return entry_hash(bytes.fromhex(prev_hash), seq, receipt_id, envelope.encode("utf-8")).hex()


SignMany = Callable[[list[bytes]], list[bytes]]


def build_entry(prev: LedgerEntry | None, statement: dict, signer: Signer) -> LedgerEntry:
    """Sign ``statement`` and chain it after ``prev`` (``None`` starts a new ledger)."""
    return build_entries(prev, [statement], signer)[0]


def build_entries(prev: LedgerEntry | None, statements: Sequence[dict], signer: Signer,
                  sign_many: SignMany | None = None) -> list[LedgerEntry]:
    """Sign ``statements`` and chain them in order after ``prev``.

    Signing is the only step that may run out of order, so it is handed to ``sign_many``
    (one signature per message, same order) when given: Ed25519 signing releases the GIL,
    so a caller can spread a batch's signatures over several cores.
    """
    payloads = []
    for statement in statements:
        if not isinstance(statement, Statement):
            validate_statement(statement)  # refuse to sign something the verifier would reject
        payloads.append(canonical_json(statement))
    messages = [pae(PAYLOAD_TYPE, p) for p in payloads]
    sigs = sign_many(messages) if sign_many is not None else [signer.sign(m) for m in messages]
    if len(sigs) != len(messages):
        raise ValueError("sign_many returned the wrong number of signatures")
    seq = 0 if prev is None else prev.seq + 1
    prev_hash = GENESIS.hex() if prev is None else prev.entry_hash
    if not is_sha256_hex(prev_hash):
        raise ValueError("previous entry has a malformed entry_hash")
    keyid = signer.keyid
    out = []
    for payload, sig in zip(payloads, sigs, strict=True):
        envelope = envelope_text(payload, sig, keyid)
        receipt_id = hashlib.sha256(payload).hexdigest()
        entry = LedgerEntry(seq=seq, receipt_id=receipt_id, envelope=envelope, prev_hash=prev_hash,
                            entry_hash=_chain_hash(prev_hash, seq, receipt_id, envelope))
        out.append(entry)
        seq, prev_hash = seq + 1, entry.entry_hash
    return out


def _require_linked(entries: Sequence[LedgerEntry]) -> None:
    """Cheap structural check (no re-hashing) so a checkpoint never blesses a broken chain."""
    expected = GENESIS.hex()
    for i, entry in enumerate(entries):
        if entry.seq != i or entry.prev_hash != expected:
            raise ValueError(f"entry at position {i} (seq={entry.seq}) is not linked in order")
        expected = entry.entry_hash


def _leaf(entry: LedgerEntry) -> bytes:
    """Merkle leaf data: the entry's chain hash (a malformed one still hashes, just wrongly)."""
    value = entry.entry_hash
    return bytes.fromhex(value) if is_sha256_hex(value) else repr(value).encode("utf-8")


def head_link(cp: Checkpoint | None) -> str:
    """What the next tree head points back to: the previous head's envelope digest.

    Chaining the heads makes deleting any one of them (not only the latest) detectable.
    """
    return GENESIS.hex() if cp is None else hashlib.sha256(cp.envelope.encode("utf-8", "surrogatepass")).hexdigest()


def sign_checkpoint(entries: Sequence[LedgerEntry], signer: Signer, timestamp: str,
                    prev: Checkpoint | None = None) -> Checkpoint:
    """Sign the tree head over all ``entries`` at ``timestamp`` (an ISO-8601 UTC string),
    chained to ``prev``, the checkpoint before it (None for the first)."""
    if not isinstance(timestamp, str) or not timestamp:
        raise ValueError("timestamp must be a non-empty string")
    _require_linked(entries)
    return sign_tree_head(len(entries), merkle.root([_leaf(e) for e in entries]).hex(), signer, timestamp,
                          prev)


def sign_tree_head(tree_size: int, root_hash: str, signer: Signer, timestamp: str,
                   prev: Checkpoint | None = None) -> Checkpoint:
    """Sign a tree head whose root the caller computed (e.g. incrementally, with CompactRange)."""
    if not isinstance(timestamp, str) or not timestamp:
        raise ValueError("timestamp must be a non-empty string")
    head = {"tree_size": tree_size, "root_hash": root_hash, "timestamp": timestamp, "prev_head": head_link(prev)}
    envelope = sign_envelope(canonical_json(head), signer, CHECKPOINT_PAYLOAD_TYPE)
    return Checkpoint(tree_size=tree_size, root_hash=root_hash, envelope=canonical_json(envelope).decode("utf-8"))


def leaf_data(entry: LedgerEntry) -> bytes:
    """The Merkle leaf data of an entry (its chain hash)."""
    return _leaf(entry)


def inclusion(entries: Sequence[LedgerEntry], seq: int) -> dict:
    """Inclusion proof of entry ``seq`` in the tree of all ``entries`` (hex strings)."""
    if not 0 <= seq < len(entries) or entries[seq].seq != seq:
        raise ValueError(f"no entry with seq={seq} at its position")
    leaves = [_leaf(e) for e in entries]
    return {
        "seq": seq,
        "entry_hash": entries[seq].entry_hash,
        "tree_size": len(leaves),
        "root": merkle.root(leaves).hex(),
        "proof": [p.hex() for p in merkle.inclusion_proof(seq, leaves)],
    }


# --- verification ---------------------------------------------------------------------


class _RetiredKeys:
    """What retired keys signed after they were retired, found while a ledger is verified in
    order. A retired key's record (``RetiredKey`` among the verifiers) names how many entries
    each ledger known then held: it signs none past that. In a ledger its record does not
    know (one made later, or never witnessed), an entry after the first entry of a key that
    took over from it (its successor, or theirs), or a tree head covering one or signed at or
    after its retirement, is refused. The ledger's own rotation receipts count too (a keys
    folder restored from a backup has lost the records): nothing the retired key signs after
    the receipt of its rotation, signed by another key, stands."""

    def __init__(self, verifiers: Mapping[str, Verifier], ledger: str | None) -> None:
        self.retired = {k: v.retirement for k, v in verifiers.items() if isinstance(v, RetiredKey)}
        self.ledger = ledger
        self.first_seq: dict[str, int] = {}  # each key's first entry in this ledger
        self.rotated_at: dict[str, int] = {}  # a key -> the seq of the receipt of its rotation

    def _taken_over(self, keyid: str, before: int) -> tuple[str, int] | None:
        """The first successor of ``keyid`` that signed an entry before position ``before``."""
        seen, key = {keyid}, keyid
        while key in self.retired and (key := self.retired[key].successor) not in seen:
            seen.add(key)
            if (seq := self.first_seq.get(key, before)) < before:
                return key, seq
        return None

    def _late(self, keyid: str, seq: int) -> str | None:
        """Why entry ``seq`` (or a head over entries before ``seq + 1``) signed by ``keyid``
        comes after its retirement (None: it does not)."""
        if (rotation := self.rotated_at.get(keyid)) is not None and seq > rotation:
            return f"signed by key {keyid[:16]} after the receipt of its rotation (entry seq={rotation})"
        record = self.retired.get(keyid)
        if record is None:
            return None
        before = record.signed_before(self.ledger, seq)
        if before is False:
            return (f"signed by key {keyid[:16]}, retired at {record.retired_at} when this ledger held "
                    f"{record.ledgers[self.ledger]} entries")
        if before is None and (hit := self._taken_over(keyid, seq)) is not None:
            return (f"signed by key {keyid[:16]}, retired at {record.retired_at}, after its successor "
                    f"{hit[0][:16]} signed entry seq={hit[1]}")
        return None

    def entry_problems(self, keyid: str | None, seq: int, payload: bytes | None) -> list[str]:
        if keyid is None:
            return []
        self.first_seq.setdefault(keyid, seq)
        late = self._late(keyid, seq)
        if payload is not None and b"/key_rotate/" in payload:
            self._note_rotation(keyid, seq, payload)
        return [late] if late else []

    def _note_rotation(self, keyid: str, seq: int, payload: bytes) -> None:
        try:
            predicate = strict_loads(payload).get("predicate") or {}
            retired = (predicate.get("result") or {}).get("retired")
        except (ValueError, AttributeError):
            return
        if predicate.get("action") == "key_rotate" and predicate.get("executed") and isinstance(retired, str) \
                and retired != keyid:
            self.rotated_at.setdefault(retired, seq)

    def head_problems(self, keyid: str, tree_size: int, timestamp: object) -> list[str]:
        """A tree head is late when it covers an entry its key could not have signed before
        its retirement: past its record's count for this ledger, its successor's first entry,
        or its rotation's receipt; or, in a ledger its record does not know, when it was
        signed at or after the retirement."""
        last = tree_size - 1
        if (rotation := self.rotated_at.get(keyid)) is not None and last >= rotation:
            return [f"signed by key {keyid[:16]} over the receipt of its rotation (entry seq={rotation})"]
        record = self.retired.get(keyid)
        if record is None or last < 0:
            return []
        before = record.signed_before(self.ledger, last)
        if before is not None:
            return [] if before else [f"signed by key {keyid[:16]}, retired at {record.retired_at} when this "
                                      f"ledger held {record.ledgers[self.ledger]} entries, over entry seq={last}"]
        problems = []
        if (hit := self._taken_over(keyid, tree_size)) is not None:
            problems.append(f"signed by key {keyid[:16]}, retired at {record.retired_at}, over entry seq={hit[1]} "
                            f"of its successor {hit[0][:16]}")
        try:
            after = datetime.fromisoformat(str(timestamp)) >= datetime.fromisoformat(record.retired_at)
        except (ValueError, TypeError):
            after = True  # a time that does not read cannot show it was signed before
        if after:
            problems.append(f"signed by key {keyid[:16]} at {timestamp}, not before it was retired at "
                            f"{record.retired_at}")
        return problems


def _entry_label(entry: LedgerEntry) -> str:
    """``entry seq=12 (receipt 3fa2b1c0…)``, safe to print even for tampered fields."""
    rid = entry.receipt_id
    short = rid[:8] if isinstance(rid, str) else repr(rid)[:8]
    if not (short.isascii() and short.isprintable()):
        short = ascii(short)
    return f"entry seq={entry.seq} (receipt {short}…)"


def _open_envelope(text: str, verifiers: Mapping[str, Verifier], payload_type: str,
                   problems: list[str]) -> tuple[bytes, str] | None:
    """Parse, canonicality-check and verify stored envelope text: its payload and the keyid
    whose signature verified; None if unusable."""
    try:
        envelope = strict_loads(text)
        canonical = canonical_json(envelope) == text.encode("utf-8")
    except (ValueError, UnicodeError):
        problems.append("envelope is not valid UTF-8 JSON")
        return None
    if not canonical:
        problems.append("envelope is not canonical JSON")
    try:
        return verify_envelope_by(envelope, verifiers, payload_type)
    except VerificationError as exc:
        problems.append(str(exc))
        return None


def entry_statement(entry: LedgerEntry, verifiers: Mapping[str, Verifier], ledger: str | None = None) -> dict:
    """The statement a ledger entry vouches for, for whatever acts on it: its envelope signed
    by one of ``verifiers`` and its payload the one its receipt id names (so another receipt's
    envelope, however well signed, copied into this row vouches for nothing). A retired key
    vouches for nothing past the entries its record counted in ``ledger`` (the ledger's first
    entry hash); in a ledger it did not count, verify's successor and time rules judge it.
    VerificationError otherwise."""
    problems: list[str] = []
    opened = _open_envelope(entry.envelope, dict(verifiers), PAYLOAD_TYPE, problems)
    if opened is None:
        raise VerificationError("; ".join(problems))
    payload, keyid = opened
    key = verifiers[keyid]
    if isinstance(key, RetiredKey) and key.retirement.signed_before(ledger, entry.seq) is False:
        raise VerificationError(f"signed by key {keyid[:16]}, retired at {key.retirement.retired_at} when this "
                                f"ledger held {key.retirement.ledgers[ledger]} entries")
    if entry.receipt_id != hashlib.sha256(payload).hexdigest():
        raise VerificationError(f"its payload is not receipt {entry.receipt_id[:12]}'s (another receipt's envelope)")
    statement = strict_loads(payload)
    if not isinstance(statement, dict):
        raise VerificationError("payload is not a JSON object")
    return statement


def _subject_problems(stmt: dict, file_digest: FileDigest) -> list[str]:
    problems = []
    for subject in statement_subjects(stmt):
        try:
            current = file_digest(subject)
        except OSError as exc:
            problems.append(f"subject {subject.name!r}: cannot read file ({exc.strerror})")
            continue
        if current is not None and current != subject.sha256:
            problems.append(f"subject {subject.name!r}: file on disk differs from the receipt")
    return problems


def _payload_problems(entry: LedgerEntry, payload: bytes,
                      file_digest: FileDigest | None) -> list[str]:
    problems = []
    if entry.receipt_id != hashlib.sha256(payload).hexdigest():
        problems.append("receipt_id does not match the payload digest")
    try:
        stmt = parse_statement(payload)
    except ValueError as exc:
        return [*problems, f"payload is not a valid statement: {exc}"]
    if file_digest is not None:
        problems.extend(_subject_problems(stmt, file_digest))
    return problems


def _well_typed(entry: LedgerEntry) -> bool:
    return (type(entry.seq) is int
            and all(isinstance(v, str) for v in
                    (entry.receipt_id, entry.envelope, entry.prev_hash, entry.entry_hash)))


def _entry_problems(position: int, entry: LedgerEntry, expected_prev: str,
                    verifiers: Mapping[str, Verifier],
                    file_digest: FileDigest | None) -> tuple[list[str], str | None, bytes | None]:
    """Everything wrong with one entry, checked only against itself and its predecessor,
    the key that signed it and its payload (None: no signature verified)."""
    if not _well_typed(entry):
        return ["malformed entry (wrong field types)"], None, None
    problems = []
    if entry.seq != position:
        problems.append(f"out of order: expected seq={position}")
    if entry.prev_hash != expected_prev:
        problems.append("prev_hash does not match the previous entry's entry_hash")
    opened = _open_envelope(entry.envelope, verifiers, PAYLOAD_TYPE, problems)
    if opened is not None:
        problems.extend(_payload_problems(entry, opened[0], file_digest))
    if not is_sha256_hex(entry.prev_hash) or not 0 <= entry.seq < 2**64:
        problems.append("entry_hash cannot be recomputed (malformed prev_hash or seq)")
    else:
        try:
            expected_hash = _chain_hash(entry.prev_hash, entry.seq, entry.receipt_id,
                                        entry.envelope)
        except UnicodeError:
            expected_hash = None
        if entry.entry_hash != expected_hash:
            problems.append("entry_hash does not match the recomputed chain hash")
    payload, keyid = opened if opened is not None else (None, None)
    return problems, keyid, payload


def _tree_head_problems(cp: Checkpoint, payload: bytes, expected_link: str) -> list[str]:
    try:
        head = strict_loads(payload)
    except ValueError:
        return ["signed tree head is not valid JSON"]
    if not isinstance(head, dict) or set(head) != _TREE_HEAD_KEYS:
        return ["signed tree head does not have exactly tree_size, root_hash, timestamp, prev_head"]
    if not isinstance(head["timestamp"], str):
        return ["signed tree head has no timestamp"]
    if type(head["tree_size"]) is not int or head["tree_size"] != cp.tree_size:
        return ["tree_size differs from the signed tree head"]
    if head["root_hash"] != cp.root_hash:
        return ["root_hash differs from the signed tree head"]
    if head["prev_head"] != expected_link:
        return ["does not link to the checkpoint before it (one was removed or reordered)"]
    return []


def _checkpoint_problems(cp: Checkpoint, prefix_roots: dict[int, str], n_entries: int,
                         min_size: int, verifiers: Mapping[str, Verifier],
                         expected_link: str, retired: _RetiredKeys) -> list[str]:
    if not (type(cp.tree_size) is int and isinstance(cp.root_hash, str)
            and isinstance(cp.envelope, str)):
        return ["malformed checkpoint (wrong field types)"]
    problems: list[str] = []
    opened = _open_envelope(cp.envelope, verifiers, CHECKPOINT_PAYLOAD_TYPE, problems)
    head = _tree_head_problems(cp, opened[0], expected_link) if opened is not None else []
    if opened is not None and not head:
        problems.extend(retired.head_problems(opened[1], cp.tree_size, strict_loads(opened[0])["timestamp"]))
    if cp.tree_size < min_size:
        problems.append(f"smaller than the checkpoint before it (tree_size={min_size})")
    if cp.tree_size > n_entries:
        problems.append(f"covers more entries than the ledger has ({n_entries})")
    elif cp.tree_size >= 0 and prefix_roots[cp.tree_size] != cp.root_hash:
        problems.append("root mismatch")
    return problems + head


def _prefix_roots(entries: Sequence[LedgerEntry], sizes: set[int]) -> dict[int, str]:
    """Merkle roots of the first ``size`` entries for every wanted size, in one pass."""
    tree = merkle.CompactRange()
    roots = {0: merkle.EMPTY_ROOT.hex()} if 0 in sizes else {}
    for entry in entries:
        tree.append(_leaf(entry))
        if tree.size in sizes:
            roots[tree.size] = tree.root().hex()
    return roots


def prefix_root(entries: Sequence[LedgerEntry], size: int) -> str | None:
    """The Merkle root of the first ``size`` entries (None when there are fewer)."""
    return _prefix_roots(entries, {size}).get(size)


def _coverage_problem(entries: Sequence[LedgerEntry],
                      checkpoints: Sequence[Checkpoint]) -> str | None:
    if not checkpoints:
        return f"ledger: no checkpoint covers its {len(entries)} entries" if entries else None
    latest = checkpoints[-1]
    if latest.tree_size != len(entries):
        return (f"checkpoint tree_size={latest.tree_size}: the latest checkpoint does not "
                f"cover all {len(entries)} entries")
    return None


def _cap(errors: list[str]) -> list[str]:
    if len(errors) <= _MAX_ERRORS:
        return errors
    return [*errors[:_MAX_ERRORS], f"... and {len(errors) - _MAX_ERRORS} more problems"]


def verify_ledger(entries: Sequence[LedgerEntry], checkpoints: Sequence[Checkpoint],
                  verifiers: Mapping[str, Verifier],
                  file_digest: FileDigest | None = None) -> VerifyReport:
    """Check every signature, digest, chain link and checkpoint; never raises on bad data.

    ``file_digest(subject)`` returns the current sha256 of a subject's file, or None when
    the subject is not a file; when given, changed files are reported too. What a retired
    key (a ``RetiredKey`` among ``verifiers``) signed after its retirement is reported too.
    """
    errors: list[str] = []
    expected_prev = GENESIS.hex()
    late = _RetiredKeys(verifiers, entries[0].entry_hash if entries and _well_typed(entries[0]) else None)
    for position, entry in enumerate(entries):
        label = _entry_label(entry)
        problems, keyid, payload = _entry_problems(position, entry, expected_prev, verifiers, file_digest)
        for problem in [*problems, *late.entry_problems(keyid, position, payload)]:
            errors.append(f"{label}: {problem}")
        expected_prev = entry.entry_hash
    sizes = {cp.tree_size for cp in checkpoints if type(cp.tree_size) is int}
    prefix_roots = _prefix_roots(entries, sizes)
    min_size = 0
    link = GENESIS.hex()
    for cp in checkpoints:
        label = f"checkpoint tree_size={cp.tree_size}"
        for problem in _checkpoint_problems(cp, prefix_roots, len(entries), min_size, verifiers, link, late):
            errors.append(f"{label}: {problem}")
        link = head_link(cp) if isinstance(cp.envelope, str) else ""
        if type(cp.tree_size) is int:
            min_size = max(min_size, cp.tree_size)
    coverage = _coverage_problem(entries, checkpoints)
    if coverage:
        errors.append(coverage)
    return VerifyReport(ok=not errors, first_bad=errors[0] if errors else None,
                        entries=len(entries), checkpoints=len(checkpoints), errors=_cap(errors))
