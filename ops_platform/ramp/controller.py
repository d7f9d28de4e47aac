"""The ramp controller: from failed burn checks to guarded actions on release flags.

A failed burn check names the groups (service/cohort/build) that burned. A group whose
build is a candidate being ramped gets the tier's ramp action on its service's release flag
(rollback or pause; a `ticket` tier only records an event); a burning stable build gets the
tier's platform action (freeze all ramps). Active overrides on a flag win until they
expire. Idempotency keys are derived from the build and the action, so repeated sensor
ticks over the same evidence produce one action and one receipt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..guard.actions import ActionRequest

CONTROLLER = "ramp-controller"
ROLES = ("ramp_controller",)


@dataclass(frozen=True)
class BurnSignal:
    slo: str
    tier: str
    partition: str
    ramp_action: str
    platform_action: str
    groups: tuple[str, ...]  # "service/cohort/build_id"
    first_firing: str | None


@dataclass(frozen=True)
class Ramp:
    build_id: str
    service: str
    start: datetime
    end: datetime

    @property
    def flag(self) -> str:
        return f"release-{self.service}"


@dataclass(frozen=True)
class Decision:
    request: ActionRequest | None
    note: str


def plan(signals: Sequence[BurnSignal], ramps: Sequence[Ramp],
         active_override: Callable[[str], str | None]) -> list[Decision]:
    """Guarded requests (and notes on what was skipped) for a batch of burn signals."""
    by_build = {r.build_id: r for r in ramps}
    out: list[Decision] = []
    seen: set[str] = set()
    for sig in signals:
        for group in sig.groups:
            parts = group.split("/")
            if len(parts) != 3:
                continue
            service, cohort, build = parts
            ramp = by_build.get(build)
            if ramp is not None:
                action, target = sig.ramp_action, ramp.flag
                key = f"ramp:{build}:{action}"
            else:
                action, target = sig.platform_action, "*"
                key = f"platform:{sig.slo}:{sig.tier}:{sig.partition}:{action}"
            if key in seen:
                continue
            seen.add(key)
            if action == "ticket":
                out.append(Decision(None, f"{sig.slo} {sig.tier} burn on {group}: ticket only"))
                continue
            override = active_override(target) if target != "*" else None
            if override:
                out.append(Decision(None, f"{target}: active override ({override}) wins over {action}"))
                continue
            rationale = (f"{sig.slo} {sig.tier} burn on {service}/{cohort}/{build} "
                         f"(first {sig.first_firing or '?'}, partition {sig.partition})")
            out.append(Decision(ActionRequest(
                actor=CONTROLLER, roles=ROLES, action=action,
                target_kind="flag", target_id=target if target != "*" else "all-release-flags",
                rationale=rationale, idempotency_key=_key(key),
                params={"slo": sig.slo, "tier": sig.tier, "build_id": build, "cohort": cohort}), rationale))
    return out


def _key(text: str) -> str:
    return f"{text}#{hashlib.sha256(text.encode()).hexdigest()[:8]}"
