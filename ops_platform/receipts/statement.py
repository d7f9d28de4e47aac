"""in-toto Statement v1: what a receipt is about (subjects) and what happened (predicate).

Subjects are identified by sha256 so a receipt pins exact bytes: an exported file by its
content digest, and a non-file target (a flag, a build) by the digest of its canonical id.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..files import file_sha256
from .canonical import canonical_json, strict_loads

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
ACTIONS = ("pause", "rollback", "freeze", "resume", "ramp_up", "override", "backup", "restore",
           "dr_drill", "export_release", "dlq_discard", "key_rotate", "policy_decision", "checkpoint")
_PREDICATE_PREFIX = "https://summit.example/receipts/"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(value: object) -> bool:
    """True for a lowercase 64-character hex string (the only spelling we accept)."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


@dataclass(frozen=True)
class Subject:
    """A named artifact or target and its sha256 (lowercase hex)."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("subject name must be a non-empty string")
        if not is_sha256_hex(self.sha256):
            raise ValueError(f"subject {self.name!r}: sha256 must be 64 lowercase hex digits")


def file_subject(path: Path, name: str | None = None, sha256: str | None = None) -> Subject:
    """Subject for a file: ``sha256`` of what was written, or else its current content's;
    ``name`` defaults to the file name."""
    path = Path(path)
    return Subject(name=name if name is not None else path.name, sha256=sha256 or file_sha256(path))


def target_subject(kind: str, target_id: str) -> Subject:
    """Subject for a non-file target, e.g. ``target_subject("flag", "checkout-v2")``."""
    digest = hashlib.sha256(canonical_json({"kind": kind, "id": target_id})).hexdigest()
    return Subject(name=f"{kind}:{target_id}", sha256=digest)


TARGET_NAME = re.compile(r"[a-z][a-z0-9_]*:[^/\\]+")


def subject_path(subject: Subject, home: Path) -> Path | None:
    """The file a receipt subject names: None for a target (``kind:id``, the kind a lowercase
    word, no ``/`` anywhere: ``target_subject``'s spelling), else its path, relative to the
    state folder ``home`` unless absolute. A file name with a colon (``flags/a:b.json``,
    ``C:\\x``) is a file, checked like any other."""
    if TARGET_NAME.fullmatch(subject.name):
        return None
    path = Path(subject.name)
    return path if path.is_absolute() else home / path


def predicate_type(action: str) -> str:
    """The predicateType URI of a receipt for ``action`` (one of ``ACTIONS``)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown receipt action {action!r}; expected one of {ACTIONS}")
    return f"{_PREDICATE_PREFIX}{action}/v1"


def action_of(predicate_type_uri: str) -> str:
    """Inverse of ``predicate_type`` (ValueError for a foreign predicate type)."""
    for action in ACTIONS:
        if predicate_type_uri == f"{_PREDICATE_PREFIX}{action}/v1":
            return action
    raise ValueError(f"unknown predicateType {predicate_type_uri!r}")


class Statement(dict):
    """A statement built by ``make_statement``: valid by construction (its subjects were
    checked when created, its predicate type when named), so signing skips re-validation."""


def make_statement(subjects: list[Subject], action: str, predicate: dict) -> dict:
    """An in-toto Statement v1 dict for ``action`` about ``subjects``."""
    if not subjects:
        raise ValueError("a statement needs at least one subject")
    if not isinstance(predicate, dict):
        raise ValueError("predicate must be a dict")
    return Statement({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": s.name, "digest": {"sha256": s.sha256}} for s in subjects],
        "predicateType": predicate_type(action),
        "predicate": dict(predicate),
    })


def _check_subject(i: int, item: object) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ValueError(f"subject {i} has no name")
    digest = item.get("digest")
    if not isinstance(digest, dict) or not is_sha256_hex(digest.get("sha256")):
        raise ValueError(f"subject {i} has no lowercase hex sha256 digest")


def parse_statement(payload: bytes) -> dict:
    """Parse and validate a statement payload; ValueError says what is wrong."""
    return validate_statement(strict_loads(payload))


def validate_statement(stmt: object) -> dict:
    """Validate an already-parsed statement (cheap enough for the signing hot path)."""
    if not isinstance(stmt, dict):
        raise ValueError("statement is not a JSON object")
    if stmt.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"statement _type is not {STATEMENT_TYPE}")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise ValueError("statement has no subjects")
    for i, item in enumerate(subjects):
        _check_subject(i, item)
    pt = stmt.get("predicateType")
    if not isinstance(pt, str):
        raise ValueError("statement has no predicateType")
    action_of(pt)
    if not isinstance(stmt.get("predicate", {}), dict):
        raise ValueError("statement predicate is not an object")
    return stmt


def statement_subjects(stmt: dict) -> list[Subject]:
    """The subjects of a parsed statement as ``Subject`` objects."""
    return [Subject(name=s["name"], sha256=s["digest"]["sha256"]) for s in stmt["subject"]]
