"""Release flags in a flagd flag-definition file: a typed model with pure transitions.

A release flag ``release-<service>`` has a ``stable`` variant (the build everyone gets by
default) and, while a ramp is in flight, a ``candidate`` variant. Its targeting gives the
candidate an integer percentage of each deployment cohort (canary, early, general) through
flagd's ``fractional`` operator, bucketed by the tenant id (the evaluation context's
``targetingKey``), so the same file evaluates the same way in flagd and in the OpenFeature
flagd provider (in-process/file mode), which the tests run. The context also
carries ``cohort``; an unknown or missing cohort, a missing targeting key, a 0% cohort or a
flag without a candidate all resolve to ``stable``.

Controller state (paused, frozen, applied action ids, last change time) lives in the flag's
``metadata``. flagd allows flag metadata (string, number or boolean values only) and hands it
back with every evaluation, so operators see why a ramp is held without a second store, and
the file stays a valid flag definition. Flags that do not start with ``release-`` and any
other top-level keys (``$schema``, flag-set ``metadata``, ``$evaluators``) are kept as they are.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..files import write_bytes
from ..receipts.canonical import strict_loads
from ..timezones import iso_utc, utcnow

COHORTS: tuple[str, ...] = ("canary", "early", "general")
"""Deployment cohorts, in the order a ramp fills them (same as the world's catalog)."""
COHORT_ATTRIBUTE = "cohort"
RELEASE_PREFIX = "release-"
STABLE, CANDIDATE = "stable", "candidate"

META_PAUSED = "summit.paused"
META_FROZEN = "summit.frozen"
META_ACTIONS = "summit.appliedActions"
META_CHANGED_AT = "summit.changedAt"
_SUMMIT_KEYS = frozenset({META_PAUSED, META_FROZEN, META_ACTIONS, META_CHANGED_AT})

MAX_APPLIED_ACTIONS = 256
"""Action ids remembered per flag (most recent kept). Guard retries come within hours, and
flagd ships the metadata with every evaluation, so the list is bounded rather than eternal."""

_FLAG_FIELDS = frozenset({"state", "variants", "defaultVariant", "targeting", "metadata"})
_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def release_flag(service: str) -> str:
    """The release flag that ramps ``service``'s builds."""
    return f"{RELEASE_PREFIX}{service}"


class FlagFileError(ValueError):
    """A flag file that is not JSON, or not the structure this model reads and writes."""

    def __init__(self, source: str, json_path: str, problem: str) -> None:
        super().__init__(f"{source}: {json_path}: {problem}")
        self.source, self.json_path, self.problem = source, json_path, problem


class RampBlocked(ValueError):
    """A transition that would widen a paused or frozen ramp; only ``resume`` lifts the hold."""


@dataclass(frozen=True)
class ReleaseState:
    """One release flag as the ramp controller sees it; ``cohort_percent`` covers every cohort."""

    flag: str
    stable: str
    candidate: str | None
    cohort_percent: Mapping[str, int]
    paused: bool
    frozen: bool
    applied_actions: tuple[str, ...]
    changed_at: datetime | None = None
    # flagd's kill switch (state DISABLED): every caller gets its code default, whatever the
    # split; kept as set, and shown, never changed by a ramp action.
    disabled: bool = False

    @property
    def exposed(self) -> bool:
        """True while any tenant can resolve to the candidate build."""
        return self.candidate is not None and any(self.cohort_percent.values())

    @property
    def held(self) -> bool:
        """Paused or frozen: the ramp may shrink but not widen."""
        return self.paused or self.frozen

    def summary(self) -> dict[str, Any]:
        """JSON-ready state for receipts and logs; action ids are left out (they only pile up)."""
        return {
            "stable": self.stable,
            "candidate": self.candidate,
            "cohort_percent": {c: self.cohort_percent[c] for c in COHORTS},
            "paused": self.paused,
            "frozen": self.frozen,
            "changed_at": iso_utc(self.changed_at) if self.changed_at else None,
        }


class FlagFile:
    """An immutable flagd flag file. Transitions return a new FlagFile; nothing touches disk
    until :meth:`save`, so a controller can compute, check and then write in one step."""

    __slots__ = ("_doc", "_releases", "_broken", "source")

    def __init__(self, doc: Mapping[str, Any], *, source: str = "<memory>", lenient: bool = False) -> None:
        """``lenient``: a release flag that does not parse is set aside (``broken``), not an
        error for the whole file: one flag edited wrong must not stop a pause of another.
        Acting on it is still an error, naming what is wrong."""
        raw = copy.deepcopy(dict(doc) if isinstance(doc, Mapping) else doc)
        self._releases, self._broken = _parse_doc(raw, source, lenient)  # raises unless a flag-file dict
        self._doc: dict[str, Any] = raw
        self.source = source

    # -- reading and writing ---------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes | str, *, source: str = "<memory>", lenient: bool = False) -> FlagFile:
        """Parse flag-file text; every problem is a :class:`FlagFileError` naming source and path
        (``lenient``: a release flag's own problem only when that flag is used)."""
        try:
            doc = strict_loads(data)  # duplicate keys and NaN are refused: readers would disagree
        except ValueError as exc:
            raise FlagFileError(source, "$", str(exc)) from None
        return cls(doc, source=source, lenient=lenient)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, lenient: bool = False) -> FlagFile:
        path = Path(path)
        return cls.parse(path.read_bytes(), source=str(path), lenient=lenient)

    def to_json(self) -> str:
        """Deterministic text (sorted keys, 2-space indent), the same form the world writes,
        so an unchanged file saves byte for byte and diffs show only real changes."""
        return json.dumps(self._doc, indent=2, sort_keys=True, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write atomically (temp file, fsync, rename, fsync the folder) and return the sha256
        of the bytes written. flagd's file watcher re-reads the path by polling; the rename
        means it sees the old file or the new one, never half of one."""
        data = self.to_json().encode("utf-8")
        write_bytes(data, Path(path))
        return hashlib.sha256(data).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._doc)

    # -- queries -----------------------------------------------------------------------------

    @property
    def release_flags(self) -> tuple[str, ...]:
        """The release flags that parse (a lenient file's broken ones are in ``broken``)."""
        return tuple(sorted(self._releases))

    @property
    def broken(self) -> dict[str, FlagFileError]:
        """Release flags set aside by a lenient parse, with what is wrong with each."""
        return dict(self._broken)

    def release(self, flag: str) -> ReleaseState:
        if flag in self._broken:
            raise self._broken[flag]
        try:
            return self._releases[flag]
        except KeyError:
            raise KeyError(f"{self.source}: no release flag {flag!r} "
                           f"(release flags: {', '.join(self.release_flags) or 'none'})") from None

    def releases(self) -> dict[str, ReleaseState]:
        return {k: self._releases[k] for k in self.release_flags}

    def has_applied(self, action_id: str) -> bool:
        """Whether an action id is recorded on any release flag (freeze records it on all)."""
        return any(action_id in s.applied_actions for s in self._releases.values())

    # -- transitions (pure) ------------------------------------------------------------------

    def start_ramp(self, flag: str, candidate_build: str, *, at: datetime | None = None,
                   action_id: str | None = None) -> FlagFile:
        """Add (or replace) the candidate at 0% everywhere; the same candidate again keeps its
        split, so a retried start never resets a ramp. Replacing a candidate that still serves
        traffic is refused: roll it back or promote it first. Allowed while held, since 0%
        exposes no one; widening still needs ``resume``."""
        s = self.release(flag)
        if not isinstance(candidate_build, str) or not candidate_build.strip():
            raise ValueError(f"{flag}: the candidate build id must be a non-empty string")
        if candidate_build == s.stable:
            raise ValueError(f"{flag}: {candidate_build!r} is already the stable build")
        if candidate_build == s.candidate:
            return self._evolve({flag: s}, at, action_id)
        if s.exposed:
            raise ValueError(f"{flag}: candidate {s.candidate!r} still serves traffic "
                             f"{_percent_text(s.cohort_percent)}; roll back or promote it first")
        return self._evolve({flag: replace(s, candidate=candidate_build, cohort_percent=_zero())},
                            at, action_id)

    def set_percent(self, flag: str, cohort_percent: Mapping[str, int], *, at: datetime | None = None,
                    action_id: str | None = None) -> FlagFile:
        """Set the candidate's share of the given cohorts (others keep theirs). A held flag may
        only shrink: widening any cohort raises :class:`RampBlocked`."""
        s = self.release(flag)
        if s.candidate is None:
            raise ValueError(f"{flag}: no candidate build; call start_ramp first")
        new = dict(s.cohort_percent)
        for cohort, pct in cohort_percent.items():
            if cohort not in COHORTS:
                raise ValueError(f"{flag}: unknown cohort {cohort!r} (cohorts: {', '.join(COHORTS)})")
            if not _is_int(pct) or not 0 <= pct <= 100:
                raise ValueError(f"{flag}: {cohort} percentage must be an integer 0..100, got {pct!r}")
            new[cohort] = pct
        widened = [c for c in COHORTS if new[c] > s.cohort_percent[c]]
        if widened and s.held:
            why = " and ".join(w for w, on in (("paused", s.paused), ("frozen", s.frozen)) if on)
            raise RampBlocked(f"{flag} is {why}: cannot widen {', '.join(widened)}; resume it first")
        return self._evolve({flag: replace(s, cohort_percent=new)}, at, action_id)

    def pause(self, flag: str, *, at: datetime | None = None, action_id: str | None = None) -> FlagFile:
        """Hold the ramp where it is: the split stays, widening is refused until resume."""
        s = self.release(flag)
        return self._evolve({flag: replace(s, paused=True)}, at, action_id)

    def rollback(self, flag: str, *, at: datetime | None = None, action_id: str | None = None) -> FlagFile:
        """Everyone back on stable and the ramp paused; the candidate variant is kept so the
        file still says which build was rolled back."""
        s = self.release(flag)
        return self._evolve({flag: replace(s, cohort_percent=_zero(), paused=True)}, at, action_id)

    def freeze_all(self, *, at: datetime | None = None, action_id: str | None = None,
                   exempt: Sequence[str] = ()) -> FlagFile:
        """Mark every release flag frozen, but ``exempt`` ones (under a human override):
        current splits stay, no ramp may widen or promote."""
        return self._evolve({k: replace(s, frozen=True) for k, s in self._releases.items() if k not in exempt},
                            at, action_id)

    def resume(self, flag: str, *, at: datetime | None = None, action_id: str | None = None) -> FlagFile:
        """Lift pause and freeze on one flag (an expanding action: the guard fails it closed)."""
        s = self.release(flag)
        return self._evolve({flag: replace(s, paused=False, frozen=False)}, at, action_id)

    def promote(self, flag: str, *, at: datetime | None = None, action_id: str | None = None) -> FlagFile:
        """The candidate becomes the stable build for everyone; refused while held."""
        s = self.release(flag)
        if s.candidate is None:
            raise ValueError(f"{flag}: no candidate build to promote")
        if s.held:
            raise RampBlocked(f"{flag} is paused or frozen: cannot promote {s.candidate!r}; resume it first")
        return self._evolve({flag: replace(s, stable=s.candidate, candidate=None, cohort_percent=_zero())},
                            at, action_id)

    # -- internals ---------------------------------------------------------------------------

    def _evolve(self, changes: Mapping[str, ReleaseState], at: datetime | None,
                action_id: str | None) -> FlagFile:
        if action_id is not None and (not action_id or any(ch.isspace() for ch in action_id)):
            raise ValueError(f"action id must be non-empty without whitespace, got {action_id!r}")
        when = _utc(at)
        doc = copy.deepcopy(self._doc)
        for key, state in changes.items():
            actions = state.applied_actions
            if action_id is not None and action_id not in actions:
                actions = (*actions, action_id)[-MAX_APPLIED_ACTIONS:]
            new_state = replace(state, applied_actions=actions, changed_at=when)
            doc["flags"][key] = _render(new_state, doc["flags"][key])
        return FlagFile(doc, source=self.source, lenient=bool(self._broken))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlagFile) and self._doc == other._doc

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FlagFile(source={self.source!r}, release_flags={list(self.release_flags)!r})"


# -- rendering -------------------------------------------------------------------------------


def targeting_rule(cohort_percent: Mapping[str, int]) -> dict[str, Any]:
    """The JsonLogic targeting for a split. ``fractional`` without a bucketing expression
    hashes flag key + targetingKey, so buckets are sticky per tenant (a tenant on the
    candidate at 20% stays on it at 50%) and independent between flags; without a
    targetingKey it returns null and flagd serves the default variant, stable."""
    args: list[Any] = []
    for cohort in COHORTS:
        args += [_cohort_condition(cohort), _branch(cohort_percent[cohort])]
    args.append(STABLE)
    return {"if": args}


def _cohort_condition(cohort: str) -> dict[str, Any]:
    return {"==": [{"var": COHORT_ATTRIBUTE}, cohort]}


def _branch(percent: int) -> Any:
    if percent == 0:
        return STABLE
    if percent == 100:
        return CANDIDATE
    return {"fractional": [[CANDIDATE, percent], [STABLE, 100 - percent]]}


def _render(state: ReleaseState, previous: Mapping[str, Any]) -> dict[str, Any]:
    variants = {STABLE: state.stable}
    # A flag someone disabled (flagd's kill switch) stays disabled whatever the controller does.
    out: dict[str, Any] = {"state": previous.get("state", "ENABLED"), "defaultVariant": STABLE, "variants": variants}
    if state.candidate is not None:
        variants[CANDIDATE] = state.candidate
        out["targeting"] = targeting_rule(state.cohort_percent)
    # Metadata other tools put on the flag survives; ours is rewritten whole.
    metadata = {k: v for k, v in (previous.get("metadata") or {}).items() if k not in _SUMMIT_KEYS}
    metadata[META_PAUSED] = state.paused
    metadata[META_FROZEN] = state.frozen
    if state.applied_actions:
        metadata[META_ACTIONS] = " ".join(state.applied_actions)
    if state.changed_at is not None:
        metadata[META_CHANGED_AT] = iso_utc(state.changed_at)
    out["metadata"] = metadata
    return out


# -- parsing ---------------------------------------------------------------------------------


def _jp(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if _IDENT.match(key) else f"{base}[{json.dumps(key)}]"


def _parse_doc(doc: Any, source: str, lenient: bool = False,
               ) -> tuple[dict[str, ReleaseState], dict[str, FlagFileError]]:
    if not isinstance(doc, dict):
        raise FlagFileError(source, "$", f"expected a JSON object, got {_kind(doc)}")
    flags = doc.get("flags")
    if not isinstance(flags, dict):
        raise FlagFileError(source, "$.flags", f"expected an object of flags, got {_kind(flags)}")
    if "metadata" in doc:
        _check_scalar_metadata(doc["metadata"], "$.metadata", source)
    releases: dict[str, ReleaseState] = {}
    broken: dict[str, FlagFileError] = {}
    for key, raw in flags.items():
        if key.startswith(RELEASE_PREFIX):
            try:
                releases[key] = _parse_release(key, raw, source)
            except FlagFileError as exc:
                if not lenient:
                    raise
                broken[key] = exc
        elif not isinstance(raw, dict):
            raise FlagFileError(source, _jp("$.flags", key), f"expected a flag object, got {_kind(raw)}")
    return releases, broken


def _parse_release(key: str, raw: Any, source: str) -> ReleaseState:
    base = _jp("$.flags", key)

    def fail(path: str, problem: str) -> FlagFileError:
        return FlagFileError(source, path, problem)

    if not isinstance(raw, dict):
        raise fail(base, f"expected a flag object, got {_kind(raw)}")
    unknown = sorted(set(raw) - _FLAG_FIELDS)
    if unknown:
        known = ", ".join(sorted(_FLAG_FIELDS))
        raise fail(_jp(base, unknown[0]), f"unknown field in a release flag (known: {known})")
    if raw.get("state") not in ("ENABLED", "DISABLED"):  # DISABLED: flagd's kill switch, kept as set
        raise fail(_jp(base, "state"), f"a release flag is 'ENABLED' or 'DISABLED', got {raw.get('state')!r}")
    variants = raw.get("variants")
    vpath = _jp(base, "variants")
    if not isinstance(variants, dict):
        raise fail(vpath, f"expected an object of variants, got {_kind(variants)}")
    extra = sorted(set(variants) - {STABLE, CANDIDATE})
    if extra:
        raise fail(_jp(vpath, extra[0]),
                   "unknown variant (a release flag has 'stable' and optionally 'candidate')")
    stable, candidate = variants.get(STABLE), variants.get(CANDIDATE)
    if not isinstance(stable, str) or not stable:
        raise fail(_jp(vpath, STABLE), f"expected a build id string, got {stable!r}")
    if CANDIDATE in variants and (not isinstance(candidate, str) or not candidate):
        raise fail(_jp(vpath, CANDIDATE), f"expected a build id string, got {candidate!r}")
    if raw.get("defaultVariant") != STABLE:
        raise fail(_jp(base, "defaultVariant"), f"expected 'stable', got {raw.get('defaultVariant')!r}")
    percents = _zero()
    if "targeting" in raw:
        if candidate is None:
            raise fail(_jp(base, "targeting"), "targeting without a 'candidate' variant")
        percents = _parse_targeting(raw["targeting"], _jp(base, "targeting"), source)
    paused, frozen, actions, changed_at = _parse_metadata(raw.get("metadata"), _jp(base, "metadata"), source,
                                                          present="metadata" in raw)
    return ReleaseState(flag=key, stable=stable, candidate=candidate, cohort_percent=percents, paused=paused,
                        frozen=frozen, applied_actions=actions, changed_at=changed_at,
                        disabled=raw["state"] == "DISABLED")


def _parse_targeting(rule: Any, path: str, source: str) -> dict[str, int]:
    shape = ('{"if": [<cohort == "canary">, <split>, <cohort == "early">, <split>, '
             '<cohort == "general">, <split>, "stable"]}')
    if not isinstance(rule, dict) or list(rule) != ["if"] or not isinstance(rule["if"], list):
        raise FlagFileError(source, path, f"unknown targeting; expected {shape}")
    args = rule["if"]
    ipath = _jp(path, "if")
    if len(args) != 2 * len(COHORTS) + 1:
        raise FlagFileError(source, ipath, f"expected {2 * len(COHORTS) + 1} items, got {len(args)}")
    if args[-1] != STABLE:
        raise FlagFileError(source, _jp(ipath, len(args) - 1),
                            f"the fallback must be 'stable', got {args[-1]!r}")
    percents: dict[str, int] = {}
    for i, cohort in enumerate(COHORTS):
        if args[2 * i] != _cohort_condition(cohort):
            want, got = json.dumps(_cohort_condition(cohort)), json.dumps(args[2 * i])
            raise FlagFileError(source, _jp(ipath, 2 * i), f"expected {want}, got {got}")
        percents[cohort] = _parse_branch(args[2 * i + 1], _jp(ipath, 2 * i + 1), source)
    return percents


def _parse_branch(branch: Any, path: str, source: str) -> int:
    if branch == STABLE:
        return 0
    if branch == CANDIDATE:
        return 100
    if isinstance(branch, dict) and list(branch) == ["fractional"]:
        a = branch["fractional"]
        ok = (isinstance(a, list) and len(a) == 2
              and all(isinstance(x, list) and len(x) == 2 and _is_int(x[1]) for x in a)
              and a[0][0] == CANDIDATE and a[1][0] == STABLE
              and 0 <= a[0][1] <= 100 and a[0][1] + a[1][1] == 100)
        if ok:
            return int(a[0][1])
        raise FlagFileError(source, _jp(path, "fractional"),
                            'expected [["candidate", p], ["stable", 100 - p]] with an integer p in 0..100, '
                            f"got {json.dumps(a)}")
    raise FlagFileError(source, path,
                        f"expected 'stable', 'candidate' or a fractional split, got {json.dumps(branch)}")


def _parse_metadata(raw: Any, path: str, source: str, *, present: bool
                    ) -> tuple[bool, bool, tuple[str, ...], datetime | None]:
    if not present:
        return False, False, (), None
    _check_scalar_metadata(raw, path, source)
    paused, frozen = raw.get(META_PAUSED, False), raw.get(META_FROZEN, False)
    for key, value in ((META_PAUSED, paused), (META_FROZEN, frozen)):
        if not isinstance(value, bool):
            raise FlagFileError(source, _jp(path, key), f"expected true or false, got {value!r}")
    actions = raw.get(META_ACTIONS, "")
    if not isinstance(actions, str):
        raise FlagFileError(source, _jp(path, META_ACTIONS),
                            f"expected space-separated action ids, got {actions!r}")
    changed_at = raw.get(META_CHANGED_AT)
    when: datetime | None = None
    if changed_at is not None:
        try:
            when = datetime.fromisoformat(changed_at) if isinstance(changed_at, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise FlagFileError(source, _jp(path, META_CHANGED_AT),
                                f"expected an ISO 8601 UTC timestamp, got {changed_at!r}")
        try:
            when = when.astimezone(UTC)
        except OverflowError:  # e.g. year 1 at +01:00: before the first UTC instant
            raise FlagFileError(source, _jp(path, META_CHANGED_AT),
                                f"{changed_at!r} is out of range as a UTC timestamp") from None
    return paused, frozen, tuple(actions.split()), when


def _check_scalar_metadata(raw: Any, path: str, source: str) -> None:
    """flagd accepts only string, number and boolean metadata values; anything else makes the
    provider refuse the whole file, so it is caught here with the field's path."""
    if not isinstance(raw, dict):
        raise FlagFileError(source, path, f"expected an object, got {_kind(raw)}")
    for key, value in raw.items():
        if not isinstance(value, str | int | float | bool):
            raise FlagFileError(source, _jp(path, key), "flagd metadata values must be string, "
                                f"number or boolean, got {_kind(value)}")


# -- small helpers ---------------------------------------------------------------------------


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _zero() -> dict[str, int]:
    return dict.fromkeys(COHORTS, 0)


def _percent_text(percents: Mapping[str, int]) -> str:
    return "(" + ", ".join(f"{c} {percents[c]}%" for c in COHORTS) + ")"


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return utcnow()
    if at.tzinfo is None:
        raise ValueError(f"transition times must be timezone-aware, got {at!r}")
    return at.astimezone(UTC)
