"""The ramp controller: from failed burn checks to guarded actions on release flags.

A failed burn check names the groups (service/cohort/build) that burned. A group whose
build was a candidate being ramped when the burn began gets the tier's ramp action on its
service's release flag (rollback or pause; a `ticket` tier only records a `ticket` event in the
flag's timeline, or the SLO's when no build was ramping); a
burning stable build (or a promoted one), and an SLO without builds (a pipeline's lag),
gets the tier's platform action (freeze all ramps); a freeze, whatever asks for it, holds
every release flag. Active overrides on a flag win until they expire, except that a hold
does not stop a rollback. Idempotency keys are derived from the build and the action, so repeated sensor
ticks over the same evidence produce one action and one receipt.

No flapping: on a build's ramp the controller only ever escalates (a rollback after a
pause, never a pause after a rollback or the same action twice); a freeze holds every flag,
so one freeze per ``COOLDOWN`` is enough. The controller never resumes or ramps up, so
nothing it does can undo itself: only a human override (with a rationale) moves a held
ramp forward, and the controller honours it until it expires.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from ..guard.actions import ActionRequest
from ..guard.roster import CONTROLLER_ACTOR, CONTROLLER_ROLES
from .flags import ReleaseState, release_flag

COOLDOWN = timedelta(minutes=30)
# A freeze answers what burns now: a burn from a day more than this before the newest burn
# partition (a backfill, an old day recomputed) freezes nothing, it is noted. A ramp action
# needs no such rule: the flag executor skips a build that is no longer the flag's candidate.
FREEZE_EVIDENCE_DAYS = 1
_STRENGTH = {"pause": 1, "rollback": 2, "freeze": 3}
FREEZE_TARGET = "all-release-flags"

LastAction = Callable[[str], tuple[str, datetime] | None]  # history_key -> (action, when)


@dataclass(frozen=True)
class BurnSignal:
    slo: str
    tier: str
    partition: str
    ramp_action: str
    platform_action: str
    groups: tuple[str, ...]  # "service/cohort/build_id", or a name alone (an SLO without builds)
    first_firing: str | None
    evidence: str = ""  # the numbers that decided it (e.g. the ramp analysis' reason)
    group_first: Mapping[str, str] = field(default_factory=dict)  # each group's own first firing minute


@dataclass(frozen=True)
class Ramp:
    build_id: str
    service: str
    start: datetime
    end: datetime

    @property
    def flag(self) -> str:
        return release_flag(self.service)

    def ramping_at(self, first_firing: str | None) -> bool:
        """Whether the build was still a candidate when the burn began (its promotion minute
        included). Without a time, the benefit of the doubt goes to holding the ramp."""
        if not first_firing:
            return True
        at = datetime.fromisoformat(first_firing)
        return self.start <= (at if at.tzinfo else at.replace(tzinfo=UTC)) <= self.end


@dataclass(frozen=True)
class Decision:
    request: ActionRequest | None
    note: str
    overridden: str | None = None  # the flag whose active override won over the action
    # A ticket tier's burn: (target kind, target id) whose timeline records it (the ramping
    # build's flag, else the SLO), for a person to follow up; no action on any flag.
    ticket: tuple[str, str] | None = None


def history_key(action: str, flag: str, build: str) -> str:
    """What the no-flapping rules compare: a build's ramp on its flag, or the global freeze."""
    return FREEZE_TARGET if action == "freeze" else f"{flag}:{build}"


def _held_back(key: str, action: str, prior: tuple[str, datetime] | None, now: datetime | None,
               still_held: bool = True) -> str | None:
    """Why ``action`` must not go ahead after ``prior`` (None: it may). ``still_held``: whether
    the flags still show what ``prior`` did; one undone by hand since holds nothing back."""
    if prior is None or not still_held:
        return None
    last, when = prior
    if action == "freeze":
        if now is None or now - when >= COOLDOWN:
            return None
        left = int((COOLDOWN - (now - when)).total_seconds() // 60)
        return f"{key}: frozen {int((now - when).total_seconds() // 60)} min ago, cool-down {left} min more"
    if _STRENGTH.get(action, 0) > _STRENGTH.get(last, 0):
        return None  # escalation (a rollback after a pause) is never held back
    return f"{key}: already {last} (at {when:%Y-%m-%d %H:%M}); {action} would not change it"


def escalates_past(directive: str, action: str) -> bool:
    """Whether the controller's ``action`` goes ahead despite an override's ``directive``: a
    hold keeps a ramp from advancing, not the controller from rolling back a build that burns
    (as a paused rollout still aborts on failed analysis). A resume, or a human rollback,
    wins over the controller until it expires."""
    return directive == "hold" and action == "rollback"


def since_overrides(history: dict[str, tuple[str, datetime]],
                    last_override: Callable[[str], datetime | None],
                    active_override: Callable[[str], str | None] = lambda flag: None) -> LastAction:
    """The controller's history as ``plan`` reads it: a human override on a flag (resume,
    hold or rollback) takes the ramp out of the controller's hands, so what the controller
    did there before it no longer holds it back once the override expires. While the
    override is in force (``active_override``) it still does: a rollback a hold lets through
    is not asked again for evidence the controller already acted on."""
    def last(key: str) -> tuple[str, datetime] | None:
        prior = history.get(key)
        if prior is None or key == FREEZE_TARGET:
            return prior
        flag = key.split(":", 1)[0]
        took_over = last_override(flag)
        over = took_over is not None and took_over >= prior[1] and active_override(flag) is None
        return None if over else prior
    return last


def plan(signals: Sequence[BurnSignal], ramps: Sequence[Ramp],
         active_override: Callable[[str], str | None], last_action: LastAction | None = None,
         now: datetime | None = None, release_flags: Sequence[str] = (),
         last_override: Callable[[str], datetime | None] = lambda flag: None,
         newest_partition: str | None = None,
         done: Callable[[str], datetime | None] = lambda action_id: None,
         flag_states: Mapping[str, ReleaseState] | None = None) -> list[Decision]:
    """Guarded requests (and notes on what was skipped) for a batch of burn signals.

    ``active_override(flag)``: the override in force there, as "<directive> by <actor>".
    ``last_action(history_key)`` gives the controller's last completed action there (see
    ``since_overrides``); with ``now`` it switches on the no-flapping rules (see the module
    docstring). A freeze leaves out the ``release_flags`` under an active override (the
    override wins there too). ``last_override(flag)`` dates the flag's latest override: an
    action after it is a new action, with a key of its own. ``newest_partition``: the newest
    day of burn evidence evaluated; a freeze on evidence ``FREEZE_EVIDENCE_DAYS`` older is
    noted, not requested. ``done(action_id)``: when that action was completed, if it was: the
    same request again is a note (it would only be answered with its old outcome), and the
    cool-down counts from that time, not from now. ``flag_states``: the release flags as the
    flag file holds them now; an earlier pause or rollback of the build that the flag no
    longer shows (cleared by hand), or a freeze no flag still holds (lifted), no longer holds
    the controller back: it acts again, as a new action.
    """
    by_build = {r.build_id: r for r in ramps}
    out: list[Decision] = []
    seen: set[str] = set()
    planned: dict[str, tuple[str, datetime]] = {}
    for sig in signals:
        for group in sig.groups:
            parts = group.split("/")
            service, cohort, build = parts if len(parts) == 3 else (group, "", "")
            ramp = by_build.get(build)
            # Whether the build was ramping when *its* group began to burn, not when the SLO did.
            if ramp is not None and ramp.ramping_at(sig.group_first.get(group) or sig.first_firing):
                action, target = sig.ramp_action, ramp.flag
                took_over = last_override(target)
                key = f"ramp:{build}:{action}" + (f":after-override-{took_over.isoformat()}" if took_over else "")
            else:
                action, target = sig.platform_action, "*"
                key = f"platform:{sig.slo}:{sig.tier}:{sig.partition}:{action}"
            if action == "freeze":  # every release flag, whatever asked for it (a ramp's verdict too)
                target = "*"
            if key in seen:
                continue
            seen.add(key)
            if action == "ticket":
                where = ("flag", target) if target != "*" else ("slo", sig.slo)
                out.append(Decision(None, f"{sig.slo} {sig.tier} burn on {group} (partition {sig.partition}): ticket"
                                          + (f"; {sig.evidence}" if sig.evidence else ""), ticket=where))
                continue
            if action == "freeze" and (late := _days_behind(sig.partition, newest_partition)) > FREEZE_EVIDENCE_DAYS:
                out.append(Decision(None, f"{sig.slo} {sig.tier} burn on {group} (partition {sig.partition}) is "
                                          f"{late} days older than the newest burn partition ({newest_partition}): "
                                          "a freeze answers what burns now, so it freezes nothing"))
                continue
            override = active_override(target) if target != "*" else None
            if override and not escalates_past(override.split(" ", 1)[0], action):
                out.append(Decision(None, f"{target}: active override ({override}) wins over {action} "
                                          f"({sig.slo} {sig.tier} burn on {group}, partition {sig.partition})",
                                    overridden=target))
                continue
            hkey = history_key(action, target, build)
            prior = planned.get(hkey) or (last_action(hkey) if last_action is not None else None)
            # An action planned in this batch holds whatever the file shows (it is not applied yet).
            held = hkey in planned or _still_held(action, target, build, flag_states)
            wait = _held_back(hkey, action, prior, now, held)
            if wait:
                out.append(Decision(None, wait))
                continue
            undone = ""
            if prior is not None and not held:  # a new action: the earlier one's key is answered already
                key += f":again-after-{prior[1].isoformat()}"
                undone = (f"; the {prior[0]} at {prior[1]:%Y-%m-%d %H:%M} no longer holds "
                          f"({'no release flag is frozen' if action == 'freeze' else target + ' was changed since'})")
            exempt = sorted(f for f in release_flags if active_override(f)) if action == "freeze" else []
            rationale = (f"{sig.slo} {sig.tier} burn on {group} "
                         f"(first {sig.first_firing or '?'}, partition {sig.partition})"
                         + (f": {sig.evidence}" if sig.evidence else "")
                         + (f"; not frozen, an override wins: {', '.join(exempt)}" if exempt else "") + undone)
            request = ActionRequest(
                actor=CONTROLLER_ACTOR, roles=CONTROLLER_ROLES, action=action,
                target_kind="flag", target_id=target if target != "*" else FREEZE_TARGET,
                rationale=rationale, idempotency_key=_key(key),
                params={"slo": sig.slo, "tier": sig.tier, "build_id": build or None, "cohort": cohort or None,
                        **({"exempt": exempt} if exempt else {})})
            if (when := done(request.action_id)) is not None:
                planned[hkey] = (action, when)
                out.append(Decision(None, f"{action} {request.target_id}: done already at {when:%Y-%m-%d %H:%M} "
                                          f"on this evidence ({rationale})"))
                continue
            if now is not None:
                planned[hkey] = (action, now)
            out.append(Decision(request, rationale))
    return out


def _still_held(action: str, target: str, build: str, flags: Mapping[str, ReleaseState] | None) -> bool:
    """Whether the flags still show the controller's earlier action of this kind: some flag
    frozen, for a freeze; the build's flag held (paused or frozen), or no longer carrying
    the build, for a pause or rollback. Without the flags' state, assumed so."""
    if flags is None:
        return True
    if action == "freeze":
        return any(s.frozen for s in flags.values())
    state = flags.get(target)
    return state is None or state.held or state.candidate != build


def _days_behind(partition: str, newest: str | None) -> int:
    """Whole days from a signal's partition to the newest one (0 when either is not a day)."""
    try:
        return (date.fromisoformat(newest or "") - date.fromisoformat(partition)).days
    except ValueError:
        return 0


def _key(text: str) -> str:
    return f"{text}#{hashlib.sha256(text.encode()).hexdigest()[:8]}"
