"""Build the guarded action path from the platform's state folder and environment.

One place decides the control store URL (`OPS_PLATFORM_CONTROL_URL`, else SQLite in the
state folder), the key ring (outside the repo), the policy engine (in-process Rego, or an
OPA server when `OPS_PLATFORM_OPA_URL` is set) and the spool, so the CLI, Dagster and
tests all get the same wiring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import sqlalchemy as sa

from ..control.store import ControlStore, StoreUnavailable, shown_url
from ..files import file_sha256
from ..paths import StatePaths
from ..receipts import witness
from ..receipts.keys import KeyRing, Signer
from ..receipts.ledger import VerifyReport, verify_ledger
from ..receipts.statement import Subject, subject_path
from ..timezones import iso_utc, utcnow
from .actions import Executor
from .policy import policy_from_env
from .protocol import ActionProtocol
from .roster import actor_roles
from .spool import Spool

CONTROL_URL_ENV = "OPS_PLATFORM_CONTROL_URL"


def control_url(paths: StatePaths) -> str:
    return os.environ.get(CONTROL_URL_ENV) or f"sqlite:///{paths.control_store}"


def open_store(paths: StatePaths, url: str | None = None) -> ControlStore:
    """The control store at ``url``, by default the state folder's, created on first use; but
    NoStore when the state folder's own store went missing while the warehouse still holds
    its receipts (``lost_ledger``)."""
    url = url or control_url(paths)
    if url == control_url(paths) and (problem := lost_ledger(paths)):
        raise NoStore(problem)
    return migrated_store(url)


def lost_ledger(paths: StatePaths) -> str | None:
    """Why no new control store may be started in this state folder: its SQLite store is
    missing while the warehouse's copy of it (``control.receipts``) holds receipts. A new,
    empty ledger would verify, and the audit trail would be gone without a word."""
    if os.environ.get(CONTROL_URL_ENV) or paths.control_store.exists() or not paths.warehouse.exists():
        return None
    import duckdb

    try:
        receipts = _warehouse_receipts(str(paths.warehouse))
    except duckdb.CatalogException:  # no control copy yet: nothing was ever recorded
        return None
    except duckdb.Error as exc:  # busy (another process writes it) or unreadable: fail closed
        return (f"the control store {paths.control_store} is missing, and the warehouse {paths.warehouse}, whose "
                f"copy of it says whether it held receipts, cannot be read ({str(exc).splitlines()[0]}): retry once the "
                "warehouse is free; to start a new ledger on purpose, run `ops-platform demo --fresh`")
    if not receipts:
        return None
    return (f"the control store {paths.control_store} is missing, but the warehouse's copy of it holds "
            f"{receipts} receipt(s): restore the store from a backup (its ledger is the audit trail); to start a "
            "new ledger on purpose, run `ops-platform demo --fresh`")


def _warehouse_receipts(warehouse: str) -> int:
    """The receipts in the warehouse's copy of the control store, read without taking the
    warehouse's write lock; through this process's own connection when it holds one (DuckDB
    refuses a read-only one beside it)."""
    import duckdb

    query = "SELECT count(*) FROM control.receipts"
    try:
        with duckdb.connect(warehouse, read_only=True) as con:
            return con.execute(query).fetchone()[0]
    except duckdb.ConnectionException:
        with duckdb.connect(warehouse) as con:
            return con.execute(query).fetchone()[0]


def migrated_store(url: str) -> ControlStore:
    """A control store at `url`, migrated to the current schema (safe from many processes)."""
    store = ControlStore(url)
    store.migrate(iso_utc(utcnow()))
    return store


class NoStore(Exception):
    """No control store to read at a URL: a malformed URL, a missing database or one
    without the ledger's tables."""


def existing_store(url: str) -> ControlStore:
    """Open the control store at ``url`` to read it, creating nothing (not even a missing
    folder or database file); NoStore names what is wrong."""
    shown = shown_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise NoStore(f"{shown!r} is not a database URL (e.g. sqlite:////path/to/control.sqlite or "
                      "postgresql+psycopg2://user@host/db)") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if not db or db == ":memory:":
            raise NoStore(f"{shown} names no database file")
        if not db.startswith("file:") and not Path(db).is_file():
            raise NoStore(f"no control store at {db} (no such file)")
    try:
        store = ControlStore(url, readonly=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise NoStore(f"cannot open {shown}: {str(exc).splitlines()[0]}") from None
    try:
        has_ledger = store.has_ledger()
    except StoreUnavailable as exc:
        raise NoStore(f"cannot read the control store at {shown}: {exc}") from None
    if not has_ledger:
        raise NoStore(f"{shown} holds no receipts ledger (no control store schema): check the URL, "
                      f"{CONTROL_URL_ENV} and OPS_PLATFORM_HOME")
    return store


def store_to_read(paths: StatePaths, url: str | None = None) -> ControlStore | None:
    """The control store at ``url`` (else the state folder's) to read, creating nothing; None
    when the state folder has none yet (nothing was ever recorded), NoStore when it lost one."""
    if url is None and not os.environ.get(CONTROL_URL_ENV) and not paths.control_store.exists():
        if problem := lost_ledger(paths):
            raise NoStore(problem)
        return None
    return existing_store(url or control_url(paths))


def spool(paths: StatePaths) -> Spool:
    return Spool(paths.spool_file)


def build_protocol(paths: StatePaths, executors: Mapping[str, Executor] | None = None,
                   url: str | None = None, store: ControlStore | None = None) -> ActionProtocol:
    """The guarded path of a state folder; ``store``: one the caller opened already (for its
    executors), else the one at ``url`` or the state folder's."""
    store = store or open_store(paths, url)
    if not KeyRing(paths.keys_dir).has_active_key() and (held := store.receipt_count()):
        # A mistyped OPS_PLATFORM_KEYS_DIR (or another $HOME) would start a new key, and the
        # ledger would fail verification from its next receipt on.
        raise MissingKey(f"no signing key in {paths.keys_dir} (OPS_PLATFORM_KEYS_DIR), yet the ledger at "
                         f"{shown_url(store.url)} holds {held} receipt(s): point OPS_PLATFORM_KEYS_DIR at the "
                         "folder whose key signed them; if that key is lost for good, start a new one on "
                         "purpose with `ops-platform receipts new-key`")
    signer = ledger_signer(paths.keys_dir, store)
    # The state folder's spool is drained into the state folder's store only: a request for
    # another store (--store) that cannot take it fails, it is not spooled for the wrong one.
    own = spool(paths) if store.url == control_url(paths) else None
    return ActionProtocol(store, signer, policy_from_env(), executors or {},
                          own, home=paths.home, roles_of=actor_roles(), witness=witness_in(paths.keys_dir))


def witness_in(keys_dir: Path) -> Callable[[str, int, str], None]:
    """Record signed tree heads in ``keys_dir`` (``receipts.witness``). Best effort: the
    action is receipted already, and the next receipt's head covers this one."""
    def remember(ledger: str, tree_size: int, root_hash: str) -> None:
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            witness.remember(keys_dir, ledger, tree_size, root_hash)
    return remember


def ledger_signer(keys_dir: Path, store: ControlStore) -> Callable[[], Signer]:
    """The signer of ``store``'s ledger. A first key is made only where there never was one:
    no key published in ``keys_dir`` and no receipt in the ledger. Otherwise a missing key is
    the signer being down (``SignerUnavailable`` on each use: protective actions wait for
    their receipt, expanding ones fail closed), never a new key made on the quiet while the
    old one is away."""
    ring = KeyRing(keys_dir)
    if ring.has_active_key() or not (ring.verifiers() or store.receipt_count()):
        ring = KeyRing.load_or_create(keys_dir)  # checks the active key, or makes the first one
    return ring.signer


class MissingKey(Exception):
    """No signing key where the state's receipts were signed: refused, not silently replaced."""


def file_digest_in(home: Path):
    """Digest checker for `verify_ledger`: a file subject's sha256 on disk (None for targets)."""

    def digest(subject: Subject) -> str | None:
        path = subject_path(subject, home)
        return None if path is None else file_sha256(path)

    return digest


def verify_store(store: ControlStore, verifiers, file_digest=None, snapshot=None,
                 keys_dir: Path | None = None) -> VerifyReport:
    """``verify_ledger`` over the store's ledger, failing too when the store's own records
    (its ledger head, its receipted actions) name entries the ledger no longer has, or (with
    ``keys_dir``) when it is not the ledger witnessed there (its newest entries cut).
    ``snapshot``: the store's ``ledger_snapshot()`` when the caller read it already."""
    entries, checkpoints, missing = snapshot or store.ledger_snapshot()
    if keys_dir is not None and (cut := witness.problem(keys_dir, entries)):
        missing = [*missing, cut]
    report = verify_ledger(entries, checkpoints, verifiers, file_digest=file_digest)
    if not missing:
        return report
    return dataclasses.replace(report, ok=False, first_bad=report.first_bad or missing[0],
                               errors=[*report.errors, *missing])
