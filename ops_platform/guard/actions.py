"""Privileged action requests and how each kind behaves when the signer is down."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .roster import CONTROLLER_ACTOR

# Protective actions take effect even without a signer, and wait "pending receipt".
PROTECTIVE = frozenset({"pause", "rollback", "freeze"})
# Everything else (expanding: resume, ramp_up, export_release; and override, backup,
# restore, dr_drill, dlq_discard, key_rotate) fails closed: it is executed only when its receipt can be signed.
KNOWN_ACTIONS = frozenset({"pause", "rollback", "freeze", "resume", "ramp_up", "override", "backup", "restore",
                           "dr_drill", "export_release", "dlq_discard", "key_rotate"})
TERMINAL = frozenset({"completed", "denied", "dlq"})
# Params that record why an action was asked for, not what it does: the ramp controller
# recomputes them on every tick (which SLO or tier burned, on which cohort, which flags an
# override exempts), and a later tick's request under the same key is still the same action.
EVIDENCE_PARAMS = frozenset({"slo", "tier", "cohort", "exempt"})
# A freeze holds every release flag whatever build burned: its build is evidence too (the
# controller names the first burning group's, which can differ from one tick to the next).
EVIDENCE_PARAMS_OF = {"freeze": EVIDENCE_PARAMS | {"build_id"}}
# Actions whose rationale a person writes (what the receipt vouches for): the same key with
# other words is another request, not a silent repeat.
WORDED_BY_PEOPLE = frozenset({"override", "dlq_discard", "key_rotate"})
# Idempotency key prefixes of the platform's own requests, with the one kind of request that
# may use each (field, value): a person's key in one of them would take the key first, and the
# platform's request (a freeze, say) would then meet a conflict and never run.
RESERVED_KEYS = (("ramp:", "actor", CONTROLLER_ACTOR), ("platform:", "actor", CONTROLLER_ACTOR),
                 ("export_release:", "action", "export_release"), ("dlq_discard:", "action", "dlq_discard"),
                 ("key_rotate:", "action", "key_rotate"))


def reserved_key_problem(key: str, **request: str) -> str | None:
    """Why ``key`` cannot be this request's (``actor``, ``action``): it begins like the
    platform's own keys (``RESERVED_KEYS``); None when it can."""
    for prefix, name, owner in RESERVED_KEYS:
        if key.startswith(prefix) and request[name] != owner:
            return f"idempotency key {key!r}: keys beginning {prefix!r} are the platform's own ({name} {owner})"
    return None


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
        # Typed here, where every request is made (the CLI, the controller, a spool line read
        # back): a field of the wrong type is a TypeError naming it, not a crash deep inside.
        for name in ("actor", "action", "target_kind", "target_id", "rationale", "idempotency_key"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"an action request's {name} is text, not {type(getattr(self, name)).__name__}")
        if not isinstance(self.roles, tuple) or not all(isinstance(r, str) for r in self.roles):
            raise TypeError("an action request's roles are a tuple of role names")
        if self.ttl_seconds is not None and (isinstance(self.ttl_seconds, bool) or not isinstance(self.ttl_seconds, int)):
            raise TypeError(f"an action request's ttl_seconds is whole seconds, not {self.ttl_seconds!r}")
        if not isinstance(self.params, Mapping):
            raise TypeError("an action request's params are a mapping")
        if self.action not in KNOWN_ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; known: {', '.join(sorted(KNOWN_ACTIONS))}")
        if not self.idempotency_key or not self.actor:
            raise ValueError("an action request needs an actor and an idempotency key")

    @property
    def action_id(self) -> str:
        """Derived from the idempotency key, so every process names the same action alike."""
        return hashlib.sha256(self.idempotency_key.encode()).hexdigest()[:32]

    @property
    def acting_params(self) -> dict[str, Any]:
        """The params that say what the action does: without its evidence (``EVIDENCE_PARAMS_OF``)."""
        evidence = EVIDENCE_PARAMS_OF.get(self.action, EVIDENCE_PARAMS)
        return {k: v for k, v in self.params.items() if k not in evidence}

    @property
    def fingerprint(self) -> str:
        """What the request does, by whom: actor, action, target, TTL and params (without
        the evidence params of its action, ``EVIDENCE_PARAMS_OF``). Roles (read from the roster
        each time) are left out, and so is the rationale, which the controller words from each
        tick's evidence, except for an action a person words (``WORDED_BY_PEOPLE``). A reused
        idempotency key is the same request only if this matches the first request's."""
        return hashlib.sha256(json.dumps(self._what(), sort_keys=True, default=str).encode()).hexdigest()

    def _what(self) -> dict[str, Any]:
        """The fields the fingerprint covers."""
        what = {"actor": self.actor, "action": self.action, "target_kind": self.target_kind,
                "target_id": self.target_id, "ttl_seconds": self.ttl_seconds, "params": self.acting_params}
        if self.action in WORDED_BY_PEOPLE:
            what["rationale"] = self.rationale
        return what

    def differences(self, other: ActionRequest) -> list[str]:
        """What ``other`` asks otherwise, as the fingerprint counts it: field names, and
        ``params.<name>`` for each param."""
        mine, theirs = self._what(), other._what()
        named = {"target_id": "target", "ttl_seconds": "ttl", "target_kind": "target kind"}
        out = [named.get(k, k) for k in mine if k != "params" and mine[k] != theirs.get(k)]
        params = sorted(set(mine["params"]) | set(theirs["params"]))
        return out + [f"params.{k}" for k in params if mine["params"].get(k) != theirs["params"].get(k)]

    def describe(self) -> str:
        """One line naming what the request does, for messages."""
        params = {k: v for k, v in self.acting_params.items() if v is not None}
        extra = "".join(f" {k}={v}" for k, v in sorted(params.items()))
        ttl = f" ttl={self.ttl_seconds}s" if self.ttl_seconds is not None else ""
        return f"{self.action} on {self.target_kind} {self.target_id} by {self.actor}{extra}{ttl}"

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
        if not isinstance(d, dict) or not isinstance(d.get("roles"), list):
            raise TypeError("an action request is a JSON object with a list of roles")
        d["roles"] = tuple(d["roles"])
        return cls(**d)


def stored_request(text: str) -> ActionRequest | None:
    """A request as a queue stored it, or None when it does not read (a row written by hand,
    dead-lettered as it was): shown and discarded as text, never a crash."""
    try:
        return ActionRequest.from_json(text)
    except (ValueError, TypeError, KeyError):
        return None


@dataclass(frozen=True)
class ExecutionResult:
    """What an executor changed; files become receipt subjects with their digests."""

    detail: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    # A file's sha256 as the executor wrote it, before anyone else could see it: the receipt
    # pins that, so a file changed between the write and the receipt fails verification
    # rather than being receipted as changed. A file without one is hashed as it is on disk.
    digests: Mapping[Path, str] = field(default_factory=dict)


class Executor(Protocol):
    """Carries out one kind of action. Must be idempotent per action id: applying the same
    action id twice (a retry after a crash) must not apply its effect twice."""

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult: ...


@dataclass(frozen=True)
class Outcome:
    action_id: str
    # completed | denied | pending_receipt | requested | executing | dlq | spooled, or
    # conflict: the idempotency key names another request (nothing was done)
    status: str
    reason: str = ""
    receipt_id: str | None = None
    created: bool = True
    # What a completed action's executor said beyond "done" (``skipped``: nothing to change,
    # and why; ``drift``), as its receipt and the flag's timeline say it.
    said: Mapping[str, Any] = field(default_factory=dict)
