"""Privileged action requests and how each kind behaves when the signer is down."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Protective actions take effect even without a signer, and wait "pending receipt".
PROTECTIVE = frozenset({"pause", "rollback", "freeze"})
# Everything else (expanding: resume, ramp_up, export_release; and override, backup,
# restore, dr_drill) fails closed: it is executed only when its receipt can be signed.
KNOWN_ACTIONS = frozenset({"pause", "rollback", "freeze", "resume", "ramp_up", "override", "backup", "restore",
                           "dr_drill", "export_release"})
TERMINAL = frozenset({"completed", "denied", "dlq"})


@dataclass(frozen=True)
class ActionRequest:
    actor: str
    roles: tuple[str, ...]
    action: str
    target_kind: str
    target_id: str
    rationale: str
    idempotency_key: str
    ttl_seconds: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in KNOWN_ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; known: {', '.join(sorted(KNOWN_ACTIONS))}")
        if not self.idempotency_key or not self.actor:
            raise ValueError("an action request needs an actor and an idempotency key")

    @property
    def action_id(self) -> str:
        """Derived from the idempotency key, so every process names the same action alike."""
        return hashlib.sha256(self.idempotency_key.encode()).hexdigest()[:32]

    @property
    def protective(self) -> bool:
        return self.action in PROTECTIVE

    def to_json(self) -> str:
        d = asdict(self)
        d["roles"] = list(self.roles)
        d["params"] = dict(self.params)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ActionRequest:
        d = json.loads(text)
        d["roles"] = tuple(d["roles"])
        return cls(**d)


@dataclass(frozen=True)
class ExecutionResult:
    """What an executor changed; files become receipt subjects with their digests."""

    detail: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()


class Executor(Protocol):
    """Carries out one kind of action. Must be idempotent per action id: applying the same
    action id twice (a retry after a crash) must not apply its effect twice."""

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult: ...


@dataclass(frozen=True)
class Outcome:
    action_id: str
    status: str  # completed | denied | pending_receipt | requested | executing | dlq | spooled
    reason: str = ""
    receipt_id: str | None = None
    created: bool = True
