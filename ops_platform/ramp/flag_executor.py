"""The guard's executor for release-flag actions: pause, rollback, freeze and resume.

Exactly-once per action id without a second store: the action id is written into the flag
file in the same atomic replace as the change it stands for, so after a crash either both
are on disk or neither is, and a retry finds the id and changes nothing. Processes (sensor
ticks, the retry job, the CLI) are serialised by an exclusive ``flock`` on a sidecar lock
file; the flag file itself cannot carry the lock because every save replaces its inode.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..files import exclusive_lock, file_sha256, write_bytes
from ..guard.actions import ActionRequest, ExecutionResult
from ..timezones import utcnow
from .flags import FlagFile

ACTIONS = frozenset({"pause", "rollback", "freeze", "resume"})
BUILD_ACTIONS = frozenset({"pause", "rollback"})  # act on one candidate build, named in params
TARGET_KIND = "flag"


def lock_path_for(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def last_change_path(path: str | os.PathLike[str]) -> Path:
    """Where the digest of the flag file as the last guarded change left it is kept."""
    path = Path(path)
    return path.with_name(path.name + ".last")


@contextmanager
def flag_file_lock(path: str | os.PathLike[str], *, timeout_seconds: float = 30.0) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of one flag file, across processes.

    Every writer (this executor, the ramp controller) must load, transition and save inside
    it; a FlagFile loaded before taking the lock may be stale and would undo a pause. The
    lock is a sidecar file: every save replaces the flag file's inode.
    """
    with exclusive_lock(lock_path_for(path), timeout_seconds=timeout_seconds):
        yield


class FlagFileExecutor:
    """Applies ramp actions to one flagd flag file (implements ``guard.actions.Executor``).

    ``pause``, ``rollback`` and ``resume`` act on the flag named by ``target_id``;
    ``freeze`` always freezes every release flag in the file (its ``target_id`` is only
    recorded, e.g. the flag whose alert triggered it, or ``*``).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], datetime] = utcnow,
                 lock_timeout_seconds: float = 30.0) -> None:
        self.path = Path(path)
        self.clock = clock
        self.lock_timeout_seconds = lock_timeout_seconds

    def apply(self, action_id: str, request: ActionRequest,
              then: Callable[[], None] | None = None) -> ExecutionResult:
        """``then``: run while the file is still locked, after the change (an override records
        itself there, so overrides are recorded in the order they changed the file)."""
        if request.action not in ACTIONS:
            raise ValueError(f"{type(self).__name__} cannot {request.action!r}; "
                             f"it handles {', '.join(sorted(ACTIONS))}")
        if request.target_kind != TARGET_KIND:
            raise ValueError(f"{request.action} targets kind {TARGET_KIND!r}, got {request.target_kind!r}")
        with flag_file_lock(self.path, timeout_seconds=self.lock_timeout_seconds):
            result = self._apply_locked(action_id, request)
            if then is not None:
                then()
        return result

    def _drift(self, data: bytes, current: FlagFile) -> dict[str, str]:
        """Holds the guard put on a flag that the file no longer has: someone edited the file
        outside the guard (cleared a pause or a freeze, or widened a held ramp) since its last
        guarded change. A hold stays on a new candidate (the release pipeline keeps it), so a
        new candidate does not excuse a cleared hold."""
        try:
            last = last_change_path(self.path).read_text().strip()
        except FileNotFoundError:
            return {}
        if not last or hashlib.sha256(data).hexdigest() == last:
            return {}
        try:
            before = FlagFile.load(self._history(last), lenient=True)
        except (OSError, ValueError):
            return {"*": f"the file changed outside the guard since its last guarded change ({last[:12]}), "
                         "whose copy is gone"}
        out = {}
        for flag in before.release_flags:
            if flag in current.broken:  # its state does not read: unreadable, not a lost hold
                continue
            was = before.release(flag)
            now = current.release(flag) if flag in current.release_flags else None
            lost = [w for w, held, still in (("paused", was.paused, now and now.paused),
                                             ("frozen", was.frozen, now and now.frozen)) if held and not still]
            if lost:
                out[flag] = (f"{flag} was {' and '.join(lost)} by the guard (file {last[:12]}) and is not now: "
                             "changed outside the guard")
            elif was.held and now is not None and any(now.cohort_percent[c] > was.cohort_percent.get(c, 0)
                                                      for c in now.cohort_percent):
                out[flag] = f"{flag} was widened while held by the guard (file {last[:12]}): changed outside the guard"
        return out

    def _apply_locked(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        data = self.path.read_bytes()
        # Leniently: a flag someone broke is refused when acted on, and left out of a freeze
        # (which says so), but does not stop a pause or rollback of another flag.
        current = FlagFile.parse(data, source=str(self.path), lenient=True)
        # Only a freeze, which acts on every release flag, has flags it left alone for not reading.
        broken = {flag: str(err) for flag, err in current.broken.items()} if request.action == "freeze" else {}
        drift = self._drift(data, current)
        exempt = tuple((request.params or {}).get("exempt") or ())  # flags a freeze leaves alone
        if request.action == "freeze":
            flags = tuple(f for f in current.release_flags if f not in exempt)
        else:
            current.release(request.target_id)  # KeyError naming the file if unknown
            flags = (request.target_id,)
        before = {f: current.release(f).summary() for f in flags}
        if current.has_applied(action_id):
            # A retry of an action already on disk (its receipt was not written): it changes
            # nothing, and says that an earlier attempt applied it, whatever the flag shows now.
            snapshot = self._seen(data, drift)
            return self._result(request, action_id, applied=False, before=before, after=before,
                                snapshot=snapshot, drift=drift, broken=broken, applied_earlier=True)
        build = (request.params or {}).get("build_id") if request.action in BUILD_ACTIONS else None
        candidate = current.release(request.target_id).candidate if build else None
        if build and candidate != build:
            # The build the evidence names is not on the flag (promoted, replaced, or never
            # ramped here): holding the flag would hold someone else's ramp.
            return self._result(request, action_id, applied=False, before=before, after=before,
                                snapshot=self._seen(data, drift), drift=drift, broken=broken,
                                skipped=(f"{request.target_id} carries candidate {candidate!r}, not {build!r}"
                                         if candidate is not None else
                                         f"{request.target_id} has no candidate (the ramp of {build!r} is over)"))
        updated = self._transition(current, request, action_id, exempt)
        updated.save(self.path)
        snapshot = self._remember(self._snapshot(self.path.read_bytes()))  # still under the lock
        after = {f: updated.release(f).summary() for f in flags}
        return self._result(request, action_id, applied=True, before=before, after=after, snapshot=snapshot,
                            drift=drift, broken=broken)

    def _seen(self, data: bytes, drift: dict[str, str]) -> Path:
        """The snapshot of a file this action leaves as it is; with drift reported, that file
        becomes the last change's, so the same edit is reported once."""
        snapshot = self._snapshot(data)
        return self._remember(snapshot) if drift else snapshot

    def _remember(self, snapshot: Path) -> Path:
        """Record ``snapshot`` as the file the last guarded change left (``_drift`` compares with it)."""
        write_bytes(f"{snapshot.stem}\n".encode(), last_change_path(self.path))
        return snapshot

    def _history(self, digest: str) -> Path:
        """The content-addressed copy of the flag file whose sha256 is ``digest``."""
        return self.path.parent / f"{self.path.name}.history" / f"{digest}.json"

    def _snapshot(self, data: bytes) -> Path:
        """An immutable, content-addressed copy of the file as this action left it.

        The live flag file keeps changing, so receipts name this copy instead: its digest
        stays verifiable by `ops-platform receipts verify` for as long as the copy is kept.
        """
        digest = hashlib.sha256(data).hexdigest()
        target = self._history(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written again when missing or no longer what its name says (altered since): the
        # receipt pins ``digest``, which the copy on disk must match for it to verify.
        if not target.exists() or file_sha256(target) != digest:
            write_bytes(data, target)
        return target

    def _transition(self, ff: FlagFile, request: ActionRequest, action_id: str, exempt: tuple[str, ...]) -> FlagFile:
        at = self.clock()
        if request.action == "freeze":
            return ff.freeze_all(at=at, action_id=action_id, exempt=exempt)
        step = {"pause": ff.pause, "rollback": ff.rollback, "resume": ff.resume}[request.action]
        return step(request.target_id, at=at, action_id=action_id)

    def _result(self, request: ActionRequest, action_id: str, *, applied: bool, before: dict[str, Any],
                after: dict[str, Any], snapshot: Path, skipped: str | None = None,
                drift: dict[str, str] | None = None, broken: dict[str, str] | None = None,
                applied_earlier: bool = False) -> ExecutionResult:
        """``applied``: this call changed the file; ``applied_earlier``: the file carried the
        action already (an earlier attempt of it applied it; ``before`` and ``after`` are the
        file as this call found it)."""
        detail = {"flag_file": str(self.path), "action": request.action, "action_id": action_id,
                  "applied": applied, "before": before, "after": after, "sha256": snapshot.stem,
                  "snapshot": str(snapshot)}
        if applied_earlier:
            detail["applied_earlier"] = True
        if skipped:
            detail["skipped"] = skipped
        if drift:  # in the receipt and the flag's timeline: the guard did not make that change
            detail["drift"] = drift
        if broken:  # release flags the file holds but that do not read: a freeze left them as they are
            detail["unreadable_flags"] = broken
        # The snapshot is named after the sha256 of the bytes it was written from.
        return ExecutionResult(detail=detail, files=(snapshot,), digests={snapshot: snapshot.stem})
