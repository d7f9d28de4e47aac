"""ControlStore: transactional, multi-process safe, on SQLite (WAL) or PostgreSQL.

Writers are serialised where it matters: on SQLite every write transaction starts with
`BEGIN IMMEDIATE` (one writer at a time, readers never blocked under WAL); on PostgreSQL a
ledger append locks the single `ledger_head` row (`SELECT ... FOR UPDATE`). Uniqueness of
idempotency keys is enforced by the database, so racing processes create one action.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..receipts.dsse import VerificationError, envelope_statement
from ..receipts.ledger import Checkpoint, LedgerEntry, entry_statement
from ..receipts.merkle import CompactRange
from . import schema as s


class StoreUnavailable(Exception):
    """The control store cannot take writes (unreachable, read-only, locked out)."""


# Errors that mean "the store cannot serve us right now", as opposed to a bug in a query.
_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.InternalError)


_LEDGER_COLS = "seq, receipt_id, envelope, prev_hash, entry_hash"
_MIGRATION_LOCK = 0x5375_6D6D_6974  # an arbitrary, fixed advisory-lock id


def _why(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig or exc).strip().splitlines()[0]


def _action_id_of(entry: LedgerEntry) -> str | None:
    """The action id a ledger entry's receipt names (None when it names none or is unreadable:
    verify reports an unreadable entry itself)."""
    try:
        return _mapping(envelope_statement(entry.envelope).get("predicate")).get("action_id")
    except (ValueError, TypeError, KeyError, AttributeError, VerificationError):
        return None


def edge_problem(frontier: Any, seq: int, last: Checkpoint | None) -> str | None:
    """What is wrong with the ledger head's stored Merkle edge (None: nothing): it must hold
    the ``seq + 1`` entries, with the root the last signed head names at that size. Appending
    on a wrong one would sign every later head over a wrong root, never to verify again."""
    try:
        tree = CompactRange.from_state(frontier)
        size, root = tree.size, tree.root().hex()
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"the ledger head's Merkle edge does not read ({exc})"
    if size != seq + 1 or (last is not None and last.tree_size == size and last.root_hash != root):
        return (f"the ledger head's Merkle edge (size {size}) is not the tree of the last signed head (size "
                f"{last.tree_size if last else 0}) over {seq + 1} entries: edited outside the platform")
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    """A receipt's part as a mapping; anything else (a tampered receipt) as an empty one."""
    return value if isinstance(value, Mapping) else {}


IN_FLIGHT = ("requested", "executing", "pending_receipt")  # an action whose receipt may still come


def _override_problem(row: Mapping[str, Any], entry: LedgerEntry | None,
                      verifiers: Mapping[str, Any] | None = None, obeying: bool = False,
                      ledger: str | None = None) -> str | None:
    """What an override record (which the controller obeys) says that its receipt does not.
    An override still in flight (its action not finished) has no receipt yet: the ledger
    check lets it be, but it is obeyed (``obeying``) only once its receipt is signed, and
    one whose action ended without a receipt (dead-lettered, failed) is a problem either way.
    With ``verifiers`` (the public keys), a receipt whose signature does not verify under
    any of them vouches for nothing: an override is obeyed only as a signed receipt says."""
    named = f"override {row['directive']} on {row['target_kind']} {row['target_id']} by {row['actor']}"
    if row.get("override_id", row["action_id"]) != row["action_id"]:
        return f"{named} names action {row['action_id']!r}, not its own: a row written into the store by hand"
    if entry is None:
        if row["status"] is None:
            return f"{named} was recorded by no action: a row written into the store by hand"
        if row["status"] in IN_FLIGHT:
            return f"{named} is not obeyed until its receipt is signed (its action is {row['status']})" \
                if obeying else None
        return f"{named} has no receipt of its own (its action is {row['status']})"
    try:
        statement = (entry_statement(entry, dict(verifiers), ledger) if verifiers is not None
                     else envelope_statement(entry.envelope))  # the ledger check verifies signatures itself
    except (ValueError, TypeError, VerificationError) as exc:
        return f"{named}: its receipt {entry.receipt_id[:12]} does not verify ({exc})"
    p = _mapping(_mapping(statement).get("predicate"))
    target, result = _mapping(p.get("target")), _mapping(p.get("result"))
    signed = {"target_kind": target.get("kind"), "target_id": target.get("id"),
              "actor": p.get("actor"), "rationale": p.get("rationale"),
              "directive": result.get("directive"), "expires_at": result.get("expires_at")}
    off = [f"{k} {row[k]!r} (receipt: {v!r})" for k, v in signed.items() if row[k] != v]
    if not (p.get("executed") and _mapping(p.get("decision")).get("allow")):
        off.append("its receipt records no override applied")
    return f"{named} differs from its receipt {entry.receipt_id[:12]}: {'; '.join(off)}" if off else None


def shown_url(url: str) -> str:
    """``url`` fit to print: its password hidden, in the user part or the query string
    (``password``, ``sslpassword``, any ``*secret*`` or ``*token*``); a URL with more than one
    '@' (a password not percent-encoded) is masked up to its last one."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return _without_password(url)
    if url.split("?", 1)[0].count("@") > 1:
        return _without_password(url.split("?", 1)[0])
    secret = {k: "***" for k in parsed.query if any(w in k.lower() for w in ("pass", "secret", "token"))}
    return (parsed.update_query_dict(secret) if secret else parsed).render_as_string(hide_password=True)


def _without_password(url: str) -> str:
    """``url`` with everything between its user name and its last '@' masked: a URL too
    malformed to parse still never echoes a password."""
    if "@" not in url:
        return url
    credentials, host = url.rsplit("@", 1)
    scheme, sep, userinfo = credentials.partition("://") if "://" in credentials else ("", "", credentials)
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


class ControlStore:
    def __init__(self, url: str, *, busy_timeout_s: float = 30.0, readonly: bool = False):
        """``readonly`` opens an existing store to read it (``receipts verify``): nothing is
        created, no folder, no database file, no schema."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            if "///" not in url and url.rstrip("/") not in ("sqlite:", "sqlite"):
                raise StoreUnavailable("a SQLite store URL names its file as sqlite:///path/to/file (this one has a "
                                       "host part)")
            db_path = url.split("///", 1)[1] if "///" in url else ""
            # A plain path gets its folder created; a SQLite URI (file:...?mode=ro) names an
            # existing database and must not be mistaken for a relative folder.
            plain = bool(db_path) and db_path != ":memory:" and not db_path.startswith("file:")
            if readonly and plain:
                # A WAL database opened read-only still writes its -shm index beside it; in a
                # folder nobody may write (a backup, an auditor's copy) it is opened immutable.
                folder = Path(db_path).parent
                locked = not os.access(folder, os.W_OK) and not Path(f"{db_path}-wal").exists()
                url = f"sqlite:///file:{db_path}?{'immutable=1' if locked else 'mode=ro'}&uri=true"
            elif plain:
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            # A pooled connection keeps the WAL open between transactions (closing the last
            # connection checkpoints and deletes it, which costs a millisecond per commit).
            self.engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", self._sqlite_connect_ro if readonly else self._sqlite_connect)
            sa.event.listen(self.engine, "begin", self._sqlite_begin)
        else:
            # A plain postgresql:// names SQLAlchemy's default driver (psycopg 3); psycopg2 is
            # the one installed.
            if url.startswith(("postgresql://", "postgres://")):
                url = "postgresql+psycopg2://" + url.split("://", 1)[1]
            try:
                self.engine = sa.create_engine(url, pool_size=2, max_overflow=4)
            except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
                raise StoreUnavailable(f"{shown_url(url)!r} is no control store URL this platform "
                                       f"reads ({type(exc).__name__}): use sqlite:///path or "
                                       "postgresql://user:pass@host/db") from None

    @staticmethod
    def _sqlite_begin(conn: sa.Connection) -> None:
        # Writers take the write lock up front (no deadlock on lock upgrade); readers do not,
        # so under WAL they never block a writer.
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    @staticmethod
    def _sqlite_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see the "begin" hook)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # a committed receipt survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @staticmethod
    def _sqlite_connect_ro(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # as above, minus the pragmas that write

    def has_ledger(self) -> bool:
        """Whether the database holds the control store's ledger tables (StoreUnavailable if
        it cannot be read at all, e.g. a file that is not a database)."""
        try:
            with self.read() as conn:
                names = set(sa.inspect(conn).get_table_names())
        except sa.exc.DBAPIError as exc:  # beyond read()'s: a file that is not a database
            raise StoreUnavailable(_why(exc)) from exc
        return {s.ledger.name, s.ledger_head.name, s.checkpoints.name} <= names

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction; any database error surfaces as StoreUnavailable."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(_why(exc)) from exc

    @contextmanager
    def read(self, snapshot: bool = False) -> Iterator[sa.Connection]:
        """A read transaction. ``snapshot``: every statement in it sees the same state (SQLite's
        read transaction does; PostgreSQL needs REPEATABLE READ for it)."""
        options: dict[str, Any] = {"readonly": True}
        if snapshot and not self.is_sqlite:
            options["isolation_level"] = "REPEATABLE READ"
        try:
            with self.engine.connect().execution_options(**options) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(_why(exc)) from exc

    def migrate(self, now: str) -> int:
        """Apply pending migrations; safe to call from several processes at once."""
        with self.write() as conn:
            if not self.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serialises this
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            s.schema_migrations.create(conn, checkfirst=True)
            done = {r[0] for r in conn.execute(sa.select(s.schema_migrations.c.version))}
            for version, name, apply in s.MIGRATIONS:
                if version not in done:
                    apply(conn)
                    conn.execute(s.schema_migrations.insert().values(version=version, name=name, applied_at=now))
        return max(v for v, _, _ in s.MIGRATIONS)

    def schema_version(self) -> int:
        with self.read() as conn:
            return conn.execute(sa.select(sa.func.max(s.schema_migrations.c.version))).scalar() or 0

    def _insert_ignore(self, table: sa.Table, values: dict, key: list[str] | None = None):
        """INSERT ... ON CONFLICT DO NOTHING; with ``key=None`` any unique index counts.

        Racing inserts of rows unique on several indexes (an action's id and its
        idempotency key) can trip any of them first on PostgreSQL, so those must not name one.
        """
        ins = (sqlite.insert(table) if self.is_sqlite else postgresql.insert(table)).values(**values)
        return ins.on_conflict_do_nothing(index_elements=key) if key else ins.on_conflict_do_nothing()

    # -- actions ------------------------------------------------------------------------

    def create_action(self, conn: sa.Connection, row: dict) -> tuple[dict, bool]:
        """Insert an action unless its idempotency key exists; return (row, created)."""
        res = conn.execute(self._insert_ignore(s.actions, row))  # id and key are both unique
        created = res.rowcount == 1
        existing = conn.execute(sa.select(s.actions).where(
            s.actions.c.idempotency_key == row["idempotency_key"])).mappings().one()
        return dict(existing), created

    def get_action(self, conn: sa.Connection, action_id: str) -> dict | None:
        r = conn.execute(sa.select(s.actions).where(s.actions.c.action_id == action_id)).mappings().first()
        return dict(r) if r else None

    def claim(self, conn: sa.Connection, action_id: str, owner: str, now: str, lease_until: str) -> bool:
        """Take the lease on a requested action, or on one whose previous lease expired."""
        a = s.actions.c
        res = conn.execute(s.actions.update().where(
            a.action_id == action_id,
            sa.or_(a.status == "requested", sa.and_(a.status == "executing", a.lease_expires_at < now)),
        ).values(status="executing", lease_owner=owner, lease_expires_at=lease_until, updated_at=now))
        return res.rowcount == 1

    def update_action(self, conn: sa.Connection, action_id: str, **values: Any) -> None:
        conn.execute(s.actions.update().where(s.actions.c.action_id == action_id).values(**values))

    def actions_with_status(self, conn: sa.Connection, *statuses: str) -> list[dict]:
        q = sa.select(s.actions).where(s.actions.c.status.in_(statuses)).order_by(s.actions.c.created_at)
        return [dict(r) for r in conn.execute(q).mappings()]

    def count_actions(self) -> dict[str, int]:
        with self.read() as conn:
            q = sa.select(s.actions.c.status, sa.func.count()).group_by(s.actions.c.status)
            return {k: v for k, v in conn.execute(q)}

    # -- ledger -------------------------------------------------------------------------

    def lock_head(self, conn: sa.Connection, lock: bool = True) -> tuple[int, str, dict]:
        """Lock the ledger head for this transaction (``lock``: else only read it); return
        (last seq, last hash, frontier)."""
        h = s.ledger_head.c
        q = sa.select(h.seq, h.entry_hash, h.frontier).where(h.id == 1)
        if lock and not self.is_sqlite:
            q = q.with_for_update()
        seq, entry_hash, frontier = conn.execute(q).one()
        return seq, entry_hash, json.loads(frontier)

    def receipt_count(self) -> int:
        """How many entries the ledger holds (its head's sequence number is the last one's, -1 when empty)."""
        with self.read() as conn:
            seq = conn.execute(sa.select(s.ledger_head.c.seq).where(s.ledger_head.c.id == 1)).scalar()
        return 0 if seq is None else int(seq) + 1

    def entry_hash_at(self, conn: sa.Connection, seq: int) -> str | None:
        return conn.execute(sa.select(s.ledger.c.entry_hash).where(s.ledger.c.seq == seq)).scalar()

    def insert_entries(self, conn: sa.Connection, entries: list[LedgerEntry]) -> None:
        """Insert ledger rows inside the caller's transaction (the head moves separately).

        Goes straight to the driver's bulk path: this is the receipt-issuing hot loop, and
        the driver releases the GIL while it works, so signing can go on meanwhile.
        """
        rows = [(e.seq, e.receipt_id, e.envelope, e.prev_hash, e.entry_hash) for e in entries]
        cur = conn.connection.driver_connection.cursor()
        try:
            if self.is_sqlite:
                cur.executemany(f"INSERT INTO ledger ({_LEDGER_COLS}) VALUES (?, ?, ?, ?, ?)", rows)
            else:
                from psycopg2.extras import execute_values

                execute_values(cur, f"INSERT INTO ledger ({_LEDGER_COLS}) VALUES %s", rows, page_size=len(rows))
        finally:
            cur.close()

    def move_head(self, conn: sa.Connection, last: LedgerEntry, frontier: dict) -> None:
        conn.execute(s.ledger_head.update().where(s.ledger_head.c.id == 1).values(
            seq=last.seq, entry_hash=last.entry_hash, frontier=json.dumps(frontier)))

    def receipt_id_at(self, conn: sa.Connection, seq: int) -> str | None:
        return conn.execute(sa.select(s.ledger.c.receipt_id).where(s.ledger.c.seq == seq)).scalar()

    def insert_checkpoint(self, conn: sa.Connection, cp: Checkpoint) -> None:
        conn.execute(s.checkpoints.insert().values(**cp.__dict__))

    def last_checkpoint(self, conn: sa.Connection) -> Checkpoint | None:
        q = sa.select(s.checkpoints).order_by(s.checkpoints.c.tree_size.desc()).limit(1)
        r = conn.execute(q).mappings().first()
        return Checkpoint(**r) if r else None

    def ledger_entries(self) -> list[LedgerEntry]:
        with self.read() as conn:
            return [LedgerEntry(**r) for r in conn.execute(sa.select(s.ledger).order_by(s.ledger.c.seq)).mappings()]

    def ledger_snapshot(self) -> tuple[list[LedgerEntry], list[Checkpoint], list[str]]:
        """(entries, tree heads, bookkeeping problems), all read in one snapshot, so an append
        meanwhile is wholly in it or not at all. The problems are what the store's own records
        say is missing from the entries: the ledger head names the last entry appended, and
        each receipted action its entry. A ledger cut at its end (its tree heads with it) still
        chains and verifies on its own; these records then disagree with it."""
        with self.read(snapshot=True) as conn:
            entries = [LedgerEntry(**r) for r in conn.execute(sa.select(s.ledger).order_by(s.ledger.c.seq)).mappings()]
            checkpoints = [Checkpoint(**r) for r in conn.execute(
                sa.select(s.checkpoints).order_by(s.checkpoints.c.tree_size)).mappings()]
            seq, entry_hash, frontier = conn.execute(
                sa.select(s.ledger_head.c.seq, s.ledger_head.c.entry_hash, s.ledger_head.c.frontier)).one()
            a = s.actions.c
            receipted = list(conn.execute(sa.select(a.action_id, a.action, a.target_kind, a.target_id, a.receipt_seq)
                                          .where(a.receipt_seq.is_not(None))))
            unreceipted = list(conn.execute(sa.select(a.action, a.target_kind, a.target_id, a.status)
                                            .where(a.status.in_(("completed", "denied")) & a.receipt_seq.is_(None))))
            overrides = list(conn.execute(sa.select(s.overrides, a.status).select_from(
                s.overrides.outerjoin(s.actions, a.action_id == s.overrides.c.action_id))).mappings())
        problems = []
        last = entries[-1] if entries else None
        if (last.seq if last else -1) != seq or (last is not None and last.entry_hash != entry_hash):
            problems.append(f"the ledger head records its last entry as seq={seq} ({entry_hash[:12]}), but the "
                            f"ledger ends at seq={last.seq if last else 'none'}: entries were removed or replaced")
        try:
            edge = edge_problem(json.loads(frontier), seq, checkpoints[-1] if checkpoints else None)
        except ValueError:
            edge = "the ledger head's Merkle edge is not JSON"
        problems += [edge] if edge else []
        action_of = {e.seq: _action_id_of(e) for e in entries}
        wrong = [f"action {r.action} on {r.target_kind} {r.target_id} was receipted at seq={r.receipt_seq}, "
                 + ("which is not in the ledger" if r.receipt_seq not in action_of else
                    f"the receipt of another action ({action_of[r.receipt_seq]})")
                 for r in receipted if action_of.get(r.receipt_seq, "") != r.action_id]
        wrong += [f"action {r.action} on {r.target_kind} {r.target_id} is {r.status} but names no receipt"
                  for r in unreceipted]
        receipt_of = {action_of[e.seq]: e for e in entries if action_of[e.seq]}
        wrong += [w for o in overrides if (w := _override_problem(o, receipt_of.get(o["action_id"])))]
        problems += wrong[:5] + ([f"... and {len(wrong) - 5} more actions whose receipt is not theirs or missing"]
                                 if len(wrong) > 5 else [])
        return entries, checkpoints, problems

    def checkpoints(self) -> list[Checkpoint]:
        with self.read() as conn:
            q = sa.select(s.checkpoints).order_by(s.checkpoints.c.tree_size)
            return [Checkpoint(**r) for r in conn.execute(q).mappings()]

    def entry(self, receipt_id_prefix: str) -> LedgerEntry | None:
        with self.read() as conn:
            q = sa.select(s.ledger).where(s.ledger.c.receipt_id.startswith(receipt_id_prefix, autoescape=True)).limit(2)
            rows = list(conn.execute(q).mappings())
        if len(rows) > 1:
            raise ValueError(f"receipt id prefix {receipt_id_prefix!r} is ambiguous")
        return LedgerEntry(**rows[0]) if rows else None

    # -- events, overrides, DLQ ---------------------------------------------------------

    def add_event(self, conn: sa.Connection, **values: Any) -> None:
        values["payload"] = json.dumps(values.get("payload") or {}, sort_keys=True)
        conn.execute(s.switchboard_events.insert().values(**values))

    def events(self, target_id: str | None = None, *, kind: str | None = None, actor: str | None = None) -> list[dict]:
        """Switchboard events, oldest first, optionally only one target's, kind's or actor's
        (filtered in the database, so a long history is not loaded to find a few rows)."""
        c = s.switchboard_events.c
        q = sa.select(s.switchboard_events).order_by(c.event_id)
        for column, value in ((c.target_id, target_id), (c.kind, kind), (c.actor, actor)):
            if value:
                q = q.where(column == value)
        with self.read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def add_override(self, conn: sa.Connection, **values: Any) -> None:
        conn.execute(self._insert_ignore(s.overrides, values, ["override_id"]))

    def get_override(self, conn: sa.Connection, override_id: str) -> dict | None:
        row = conn.execute(sa.select(s.overrides).where(s.overrides.c.override_id == override_id)).mappings().first()
        return dict(row) if row else None

    def active_overrides(self, target_id: str, now: str) -> list[dict]:
        """The override in force on a target at ``now``: its most recent one, if it has not
        expired (a list of at most one). A newer override supersedes every earlier one, even
        one that would outlast it: when the newest expires, none is active."""
        every = [o for o in self.overrides(target_id) if o["created_at"] <= now]
        return every[-1:] if every and every[-1]["expires_at"] > now else []

    def override_problem(self, override: Mapping[str, Any], verifiers: Mapping[str, Any]) -> str | None:
        """Why an override record is not obeyed (None: its signed receipt vouches for it): a
        record edited in the store, a receipt that no key of ``verifiers`` (the public keys)
        signed, or no receipt yet (its action still in flight, or ended without one)."""
        with self.read() as conn:
            action = self.get_action(conn, override["action_id"])
            seq = action["receipt_seq"] if action else None
            row = (conn.execute(sa.select(s.ledger).where(s.ledger.c.seq == seq)).mappings().first()
                   if seq is not None else None)
            ledger = self.entry_hash_at(conn, 0)
        entry = LedgerEntry(**row) if row else None
        if entry is not None and _action_id_of(entry) != override["action_id"]:
            entry = None  # the action names another action's receipt: verify reports that itself
        return _override_problem({**override, "status": action["status"] if action else None}, entry, verifiers,
                                 obeying=True, ledger=ledger)

    def ledger_id(self) -> str | None:
        """What the ledger is known by (its first entry's hash; None while it is empty): a
        retired key's record counts its entries per ledger."""
        with self.read() as conn:
            return self.entry_hash_at(conn, 0)

    def overrides(self, target_id: str) -> list[dict]:
        """A target's overrides, oldest first (``active_overrides`` says which one is in force)."""
        o = s.overrides.c
        q = sa.select(s.overrides).where(o.target_id == target_id).order_by(o.created_at, o.override_id)
        with self.read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def add_dlq(self, conn: sa.Connection, **values: Any) -> None:
        conn.execute(s.dlq.insert().values(**values))

    def dlq_items(self, include_replayed: bool = False) -> list[dict]:
        q = sa.select(s.dlq).order_by(s.dlq.c.dlq_id)
        if not include_replayed:
            q = q.where(s.dlq.c.replayed_at.is_(None))
        with self.read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def mark_replayed(self, conn: sa.Connection, dlq_id: int, now: str) -> None:
        conn.execute(s.dlq.update().where(s.dlq.c.dlq_id == dlq_id).values(replayed_at=now))
