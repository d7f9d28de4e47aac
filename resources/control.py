"""Resources of the guarded action path: control store, signer, policy guard."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from ops_platform.control.store import ControlStore
from ops_platform.guard.actions import Executor
from ops_platform.guard.policy import PolicyEngine, make_policy
from ops_platform.guard.protocol import ActionProtocol
from ops_platform.guard.roster import actor_roles
from ops_platform.guard.runtime import NoStore, control_url, lost_ledger, migrated_store
from ops_platform.guard.spool import Spool
from ops_platform.paths import StatePaths
from ops_platform.receipts.keys import KeyRing


class ControlStoreResource(dg.ConfigurableResource):
    """The control store (SQLite file URL by default, PostgreSQL in production)."""

    url: str
    spool_path: str
    home: str  # the state folder: receipts name the files inside it relative to it

    def store(self) -> ControlStore:
        """The store, migrated; NoStore when the state folder's own store went missing while
        the warehouse still holds its receipts (a sensor tick must not start a new ledger)."""
        paths = StatePaths(home=Path(self.home), keys_dir=Path(self.home))  # (no key is read here)
        if self.url == control_url(paths) and (problem := lost_ledger(paths)):
            raise NoStore(problem)
        return migrated_store(self.url)

    def spool(self) -> Spool:
        return Spool(Path(self.spool_path))


class SignerResource(dg.ConfigurableResource):
    """The Ed25519 key ring; keys live outside the repo and never appear in metadata."""

    keys_dir: str

    def keyring(self) -> KeyRing:
        return KeyRing.load_or_create(Path(self.keys_dir))


class GuardResource(dg.ConfigurableResource):
    """Policy decisions: in-process Rego over `policy_dir`, or an OPA server when `opa_url` is
    set (pinned to `opa_version` when given); the same choice as the CLI's ``policy_from_env``."""

    policy_dir: str | None = None
    opa_url: str | None = None
    opa_version: str | None = None

    def policy(self) -> PolicyEngine:
        return make_policy(self.policy_dir, self.opa_url, self.opa_version)


def build_protocol(control: ControlStoreResource, signer: SignerResource, guard: GuardResource,
                   executors: Mapping[str, Executor] | None = None) -> ActionProtocol:
    return ActionProtocol(control.store(), signer.keyring().signer, guard.policy(), executors or {},
                          control.spool(), home=Path(control.home), roles_of=actor_roles(guard.policy_dir))
