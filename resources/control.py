"""Resources of the guarded action path: control store, signer, policy guard."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import dagster as dg

from ops_platform.control.store import ControlStore
from ops_platform.guard.actions import Executor
from ops_platform.guard.policy import PolicyEngine, make_policy
from ops_platform.guard.protocol import ActionProtocol
from ops_platform.guard.roster import actor_roles
from ops_platform.guard.runtime import ledger_signer, open_store, witness_in
from ops_platform.guard.spool import Spool
from ops_platform.paths import StatePaths
from ops_platform.receipts.keys import KeyRing, Signer, Verifier


class ControlStoreResource(dg.ConfigurableResource):
    """The control store (SQLite file URL by default, PostgreSQL in production)."""

    url: str
    spool_path: str
    home: str  # the state folder: receipts name the files inside it relative to it

    def store(self) -> ControlStore:
        """The store, migrated (``open_store``: a sensor tick does not start a new ledger
        either when the state folder's own store went missing)."""
        return open_store(StatePaths(home=Path(self.home), keys_dir=Path(self.home)), self.url)  # (reads no key)

    def spool(self) -> Spool:
        return Spool(Path(self.spool_path))


class SignerResource(dg.ConfigurableResource):
    """The Ed25519 key ring; keys live outside the repo and never appear in metadata."""

    keys_dir: str

    def signer_for(self, store: ControlStore) -> Callable[[], Signer]:
        """``ledger_signer``: a first key where there never was one; otherwise a missing key
        is the signer being down, never a new key."""
        return ledger_signer(Path(self.keys_dir), store)

    def verifiers(self) -> dict[str, Verifier]:
        """Every public key ever active; reading them makes no key."""
        return KeyRing(Path(self.keys_dir)).verifiers()


class GuardResource(dg.ConfigurableResource):
    """Policy decisions: in-process Rego over `policy_dir`, or an OPA server when `opa_url` is
    set (pinned to `opa_version` when given); the same choice as the CLI's ``policy_from_env``."""

    policy_dir: str | None = None
    opa_url: str | None = None
    opa_version: str | None = None

    def policy(self) -> PolicyEngine:
        return make_policy(self.policy_dir, self.opa_url, self.opa_version)


def build_protocol(control: ControlStoreResource, signer: SignerResource, guard: GuardResource,
                   executors: Mapping[str, Executor] | None = None, store: ControlStore | None = None) -> ActionProtocol:
    """``store``: one the caller opened already (for its executors), else the resource's."""
    store = store or control.store()
    return ActionProtocol(store, signer.signer_for(store), guard.policy(), executors or {},
                          control.spool(), home=Path(control.home), roles_of=actor_roles(guard.policy_dir),
                          witness=witness_in(Path(signer.keys_dir)))
