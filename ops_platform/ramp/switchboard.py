"""Switchboard overrides: a human on call holds, rolls back or resumes a ramp, with a reason.

An override is a privileged action like any other (the guard requires the on-call role, a
rationale of at least 20 characters and a TTL). Its executor records the override, which
the ramp controller honours until it expires, and applies its effect to the flag file
through the flag executor, under the same action id (so a retry applies it once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..control.store import ControlStore
from ..files import write_bytes
from ..guard.actions import ActionRequest, ExecutionResult
from ..guard.roster import CONTROLLER_ACTOR
from ..paths import LIVE_FLAGS
from ..timezones import iso_utc, utcnow
from .controller import escalates_past
from .flag_executor import BUILD_ACTIONS, FlagFileExecutor, last_change_path
from .flags import FlagFile

DIRECTIVES = {"hold": "pause", "rollback": "rollback", "resume": "resume"}


def replaced_overrides(store: ControlStore, flag: str) -> list[str]:
    """The override in force on ``flag`` now, which a new one replaces (even one that would
    outlast it), as a note to say with the new one's outcome; none when the store is down
    (the request is spooled then, and says so itself)."""
    from ..control.store import StoreUnavailable

    try:
        active = store.active_overrides(flag, iso_utc(utcnow()))
    except StoreUnavailable:
        return []
    return [f"it replaces the {o['directive']} by {o['actor']} that was in force until {o['expires_at']}"
            for o in active]


def check_override(flag_file: Path, flag: str, directive: str) -> list[str]:
    """Refuse, before anything is submitted, an override that could never apply: an unknown
    directive or a flag the file does not have (the executor would fail it on every retry,
    then dead-letter it). Returns what the override will do beyond its name, to say with
    its outcome: a resume lifts the platform freeze on the flag too; a hold or rollback of a
    flag with no ramp in flight holds its next ramp at 0%."""
    if directive not in DIRECTIVES:
        raise ValueError(f"override directive {directive!r} is not one of {', '.join(DIRECTIVES)}")
    file = FlagFile.load(flag_file, lenient=True)  # another flag broken by hand does not stop this one
    if flag in file.broken:
        raise file.broken[flag]
    flags = file.release_flags
    if flag not in flags:
        raise ValueError(f"no release flag {flag!r} in {flag_file} (flags: {', '.join(flags)})")
    state, notes = file.release(flag), []
    if state.disabled:
        notes.append(f"{flag} is DISABLED in the flag file (flagd's kill switch): callers get their code default "
                     "whatever this override does, until someone enables it")
    if directive == "resume" and state.frozen:
        notes.append(f"{flag} was frozen by a platform freeze: the resume lifts the freeze on it too")
    if directive == "resume" and state.paused:
        split = ", ".join(f"{c} {p}%" for c, p in state.cohort_percent.items())
        notes.append(f"{flag} is paused ({state.candidate or 'no candidate'}; {split}): the resume lifts that "
                     "pause too, whoever set it (`switchboard log` says who and why)")
    if directive in ("hold", "rollback") and state.candidate is None:
        notes.append(f"{flag} has no ramp in flight: its next ramp stays at 0% until someone resumes it")
    return notes


class OverrideExecutor:
    def __init__(self, store: ControlStore, flags: FlagFileExecutor,
                 clock: Callable[[], datetime] = utcnow):
        self.store, self.flags, self.clock = store, flags, clock

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        directive = str(request.params.get("directive", ""))
        if directive not in DIRECTIVES:
            raise ValueError(f"override directive {directive!r} is not one of {', '.join(DIRECTIVES)}")
        if not request.ttl_seconds or request.ttl_seconds <= 0:
            raise ValueError("an override needs a positive TTL")
        recorded: dict[str, str] = {}

        def record() -> None:
            # Inside the flag file's lock: two overrides racing are recorded in the order they
            # changed the file, so the one in force is the one the file shows.
            now = self.clock()
            with self.store.write() as tx:
                self.store.add_override(tx, override_id=action_id, target_kind=request.target_kind,
                                        target_id=request.target_id, directive=directive, actor=request.actor,
                                        rationale=request.rationale, created_at=iso_utc(now),
                                        expires_at=iso_utc(now + timedelta(seconds=request.ttl_seconds)),
                                        action_id=action_id)
                # A retry (the receipt was never written) keeps the first attempt's record, and
                # the receipt vouches for that one, not for an expiry computed again now.
                recorded["expires_at"] = self.store.get_override(tx, action_id)["expires_at"]

        effect = self.flags.apply(action_id, dataclasses.replace(request, action=DIRECTIVES[directive]), then=record)
        detail = {**dict(effect.detail), "directive": directive, "expires_at": recorded["expires_at"]}
        return ExecutionResult(detail=detail, files=effect.files, digests=effect.digests)


class LaterOverrideWins:
    """The flag executor of retries and dead-letter replays: a controller's pause or rollback
    carried out after a human overrode its flag (a resume: the build is fine) is skipped, not
    applied over the override. The controller honours overrides when it plans; a retry runs
    later, and evidence from before an override is not replayed."""

    def __init__(self, flags: FlagFileExecutor, store: ControlStore,
                 verifiers: Callable[[], Mapping[str, Any]] = dict) -> None:
        """``verifiers``: the public keys; an override counts only as its signed receipt says
        (``ControlStore.override_problem``), as the controller obeys them."""
        self.flags, self.store, self.verifiers = flags, store, verifiers

    def _obeyed(self, overrides: list[dict]) -> list[dict]:
        keys = self.verifiers()
        return [o for o in overrides if self.store.override_problem(o, keys) is None]

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        if request.actor == CONTROLLER_ACTOR and request.action == "freeze":
            # The flags it leaves alone are those under an override now, not when it was planned:
            # a human who resumed a flag since keeps it (the controller plans the same way).
            now = iso_utc(utcnow())
            planned = list((request.params or {}).get("exempt") or ())
            flags = FlagFile.load(self.flags.path, lenient=True).release_flags
            exempt = sorted({*planned, *(f for f in flags if self._obeyed(self.store.active_overrides(f, now)))})
            if exempt != sorted(planned):
                request = dataclasses.replace(request, params={**(request.params or {}), "exempt": exempt})
        if request.actor == CONTROLLER_ACTOR and request.action in BUILD_ACTIONS:
            with self.store.read() as conn:
                row = self.store.get_action(conn, action_id)
            asked = row["created_at"] if row else None
            later = self._obeyed([o for o in self.store.overrides(request.target_id) if asked
                                  and o["created_at"] > asked and not escalates_past(o["directive"], request.action)])
            if later:
                o = later[-1]
                return ExecutionResult(detail={
                    "flag_file": str(self.flags.path), "action": request.action, "action_id": action_id,
                    "applied": False, "skipped": f"the {o['directive']} by {o['actor']} at {o['created_at']} came after "
                                                 f"the controller asked ({asked}): the human's word stands"})
        return self.flags.apply(action_id, request)


def world_flag_file(world: Path) -> Path:
    """A world's initial flag definitions (what the live flag file is seeded from); an error
    saying how to make a world when there is none."""
    seed = world / "landing" / "flags" / "flags.flagd.json"
    if not seed.exists():
        raise FileNotFoundError(f"no flags yet: no world at {world} (its initial flags seed the live flag file); "
                                "run `make demo`, or `ops-platform world generate`")
    return seed


SEEDED = ".flags-seeded"  # in the state folder: the live flag file was seeded once


def _lost(live: Path, marker: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"the live flag file {live} is missing, though it was seeded ({marker.read_text().strip()}): it "
        "holds every pause, freeze and split the guard applied, so it is not seeded again; restore it from "
        f"a backup, or delete {marker} to start again from the world's initial flags")


def flag_file_to_read(home: Path, world: Path) -> Path:
    """The flag file that holds the flags' state now, seeding nothing: the live file, or the
    world's initial flags before the first guarded change. A live file gone after it was
    seeded is an error (the world's flags would show every pause and freeze undone)."""
    live = home / LIVE_FLAGS
    if live.exists():
        return live
    if (home / SEEDED).exists():
        raise _lost(live, home / SEEDED)
    return world_flag_file(world)


def live_flag_file(home: Path, world: Path) -> Path:
    """The platform's live flag file, seeded from the world's initial flags on first use.

    Only on first use: once seeded, a missing live file is an error, not a new seed. The
    file holds every pause, freeze and split the guard applied (and the ids of the actions
    applied); seeding it again would silently undo them all.
    """
    live = home / LIVE_FLAGS
    marker = home / SEEDED
    if live.exists():
        if not marker.exists():  # a state folder seeded before the marker existed
            write_bytes(f"before {iso_utc(utcnow())}\n".encode(), marker)
    else:
        if marker.exists():
            raise _lost(live, marker)
        seed = world_flag_file(world)
        if not seed.exists():
            raise FileNotFoundError(f"no flag file at {live} and no world flags at {seed}")
        write_bytes(seed.read_bytes(), live)
        # The digest of the last guarded change belongs to the file that is gone: a fresh seed
        # has none (else its first change would report every old hold as drift).
        last_change_path(live).unlink(missing_ok=True)
        write_bytes(f"from {seed} at {iso_utc(utcnow())}\n".encode(), marker)
    return live
