"""Who may act as what: the actor roster the operator keeps beside the policies.

The guard decides on roles; the roster says which roles an actor holds. It is a YAML file
(``roster.yaml`` in the policy folder, i.e. ``OPS_PLATFORM_POLICY_DIR`` or the project's
``policies/``; ``OPS_PLATFORM_ROSTER`` names another file)::

    actors:
      dana: [oncall]
      finops-analyst: [finops]

An actor the roster does not name holds no roles, so the guard denies it (with a receipt,
like any denial). Actor names are plain ASCII (letters, digits, ``.``, ``_``, ``@``, ``+``,
``-``), so no look-alike of another name (a Cyrillic ``а``, a non-breaking hyphen) can read
as it in receipts and logs. Machine identities built into the platform (the ramp controller,
the invoice release sensor) are reserved: a human may not act under their names, and the
controller's roles are built in, not granted by the roster.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..strict_yaml import UniqueKeyLoader
from .policy import DATA_FILE, DEFAULT_POLICY_DIR, POLICY_DIR_ENV

ROSTER_ENV = "OPS_PLATFORM_ROSTER"
ROSTER_FILE = "roster.yaml"
CONTROLLER_ACTOR = "ramp-controller"
CONTROLLER_ROLES = ("ramp_controller",)  # built into the controller; no roster entry may hold them
RELEASE_SENSOR_ACTOR = "invoice-release-sensor"  # its finops role comes from the roster
MACHINE_ACTORS = (CONTROLLER_ACTOR, RELEASE_SENSOR_ACTOR)
ACTOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


class RosterError(ValueError):
    """The roster file is missing or malformed (a configuration error, named with its file)."""


@dataclass(frozen=True)
class Roster:
    path: Path
    actors: Mapping[str, tuple[str, ...]]

    def roles(self, actor: str) -> tuple[str, ...]:
        """The actor's roles; none for an actor the roster does not name."""
        return self.actors.get(actor, ())


def _policy_folder(policy_dir: str | Path | None) -> Path:
    return Path(policy_dir or os.environ.get(POLICY_DIR_ENV, "").strip() or DEFAULT_POLICY_DIR)


def roster_path(policy_dir: str | Path | None = None) -> Path:
    """``OPS_PLATFORM_ROSTER``, else ``roster.yaml`` in ``policy_dir`` (default: the policy
    folder the environment names, as for the Rego policies)."""
    explicit = os.environ.get(ROSTER_ENV, "").strip()
    if explicit:
        return Path(explicit)
    return _policy_folder(policy_dir) / ROSTER_FILE


def _granted_roles(policy_dir: str | Path | None) -> set[str] | None:
    """The roles the policy folder's grants (``data.json``) give actions to; None when the
    folder has no readable grants (a remote OPA holds them), and the roles go unchecked."""
    try:
        grants = json.loads((_policy_folder(policy_dir) / DATA_FILE).read_text(encoding="utf-8"))["summit"]["grants"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return set(grants) if isinstance(grants, dict) else None


def load_roster(path: str | Path | None = None, *, policy_dir: str | Path | None = None) -> Roster:
    path = Path(path) if path is not None else roster_path(policy_dir)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise RosterError(f"no actor roster at {path} (set {ROSTER_ENV} or add {ROSTER_FILE} to the "
                          "policy folder)") from None
    except (OSError, UnicodeError, yaml.YAMLError) as exc:
        raise RosterError(f"{path}: cannot read the actor roster: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or set(doc) != {"actors"} or not isinstance(doc["actors"], dict):
        raise RosterError(f"{path}: the roster must be a mapping with one key, 'actors' (actor -> list of roles)")
    actors: dict[str, tuple[str, ...]] = {}
    plain: dict[str, str] = {}
    granted = _granted_roles(policy_dir)
    for actor, roles in doc["actors"].items():
        if not isinstance(actor, str):
            raise RosterError(f"{path}: actors.{actor!r}: an actor name is text; quote it ('{actor}')")
        if not ACTOR_NAME.fullmatch(actor):
            raise RosterError(f"{path}: actors.{actor!r}: an actor name is plain ASCII letters, digits, '.', '_', "
                              "'@', '+' or '-'")
        if _plain(actor) in (_plain(CONTROLLER_ACTOR), *plain):
            other = plain.get(_plain(actor), CONTROLLER_ACTOR)
            raise RosterError(f"{path}: actors.{actor}: reads as {other!r} (names are compared ignoring case and "
                              "'.', '-', '_'); the ramp controller's identity is built in, other names must differ")
        plain[_plain(actor)] = actor
        if not isinstance(roles, list) or not all(isinstance(r, str) and r.strip() for r in roles):
            raise RosterError(f"{path}: actors.{actor}: roles must be a list of role names")
        unknown = sorted(set(roles) - granted) if granted is not None else []
        if unknown:
            raise RosterError(f"{path}: actors.{actor}: role(s) {', '.join(unknown)} are granted nothing by the "
                              f"policies (known roles: {', '.join(sorted(granted - set(CONTROLLER_ROLES)))})")
        if set(roles) & set(CONTROLLER_ROLES):
            raise RosterError(f"{path}: actors.{actor}: {', '.join(CONTROLLER_ROLES)} is the ramp controller's "
                              "built-in role; the roster may not grant it")
        actors[actor] = tuple(roles)
    return Roster(path, actors)


def actor_roles(policy_dir: str | Path | None = None) -> Callable[[str], tuple[str, ...]]:
    """An actor's roles as of now, for the guard's decisions: the ramp controller's built-in
    ones, else the roster's, read at each call (an edit takes effect at once; RosterError when
    the roster cannot be read)."""
    def roles(actor: str) -> tuple[str, ...]:
        if actor == CONTROLLER_ACTOR:
            return CONTROLLER_ROLES
        return load_roster(policy_dir=policy_dir).roles(actor)

    return roles


def _plain(name: str) -> str:
    """A name as a reader takes it: case, separators ('.', '-', '_', spaces) ignored."""
    return "".join(c for c in name.strip().casefold() if c not in "._- ")


def human_actor(actor: str | None) -> str:
    """The actor name a human gave, stripped; ValueError if blank, not a plain ASCII name
    (``ACTOR_NAME``), or a reserved machine identity (compared ignoring case, '.', '-', '_' and
    spaces)."""
    name = (actor or "").strip()
    if not name:
        raise ValueError("the actor must be a non-blank name")
    if not ACTOR_NAME.fullmatch(name):
        raise ValueError(f"actor {name!r}: a name is plain ASCII letters, digits, '.', '_', '@', '+' or '-'")
    if any(_plain(name) == _plain(r) for r in MACHINE_ACTORS):
        raise ValueError(f"actor {name!r} is reserved for the platform's own automation; act under your own name")
    return name
