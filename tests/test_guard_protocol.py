"""The guarded action path on SQLite and PostgreSQL: receipts, faults, races, crashes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops_platform.control.store import ControlStore
from ops_platform.files import file_sha256
from ops_platform.guard.actions import ActionRequest
from ops_platform.guard.dlq import DlqDiscardExecutor, discard_request
from ops_platform.guard.policy import RegoPolicy
from ops_platform.guard.protocol import ActionProtocol
from ops_platform.guard.spool import Spool
from ops_platform.receipts.keys import KeyRing
from ops_platform.receipts.ledger import verify_ledger

from .guard_support import FileExecutor

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = ("pause", "rollback", "freeze", "resume", "export_release", "override")


class Env:
    def __init__(self, url: str, tmp: Path, **kw):
        self.url, self.tmp = url, tmp
        self.store = ControlStore(url)
        self.store.migrate("2026-01-01T00:00:00Z")
        self.keys = tmp / "keys"
        self.ring = KeyRing.load_or_create(self.keys)
        self.effects = FileExecutor(tmp / "effects")
        self.spool = Spool(tmp / "spool" / "requests.jsonl")
        self.proto = self.protocol(**kw)

    def protocol(self, store: ControlStore | None = None, executor=None, **kw) -> ActionProtocol:
        ex = executor or self.effects
        return ActionProtocol(store or self.store, self.ring.signer, RegoPolicy(), {a: ex for a in ACTIONS},
                              self.spool, **{"lease_seconds": 1.0, "max_attempts": 3, **kw})

    def signer_down(self) -> None:
        (self.keys / "active.key").rename(self.tmp / "hsm-unreachable.key")

    def signer_up(self) -> None:
        (self.tmp / "hsm-unreachable.key").rename(self.keys / "active.key")

    def verify(self):
        return verify_ledger(self.store.ledger_entries(), self.store.checkpoints(), self.ring.verifiers(),
                             file_digest=lambda s: file_sha256(Path(s.name)) if Path(s.name).is_file() else None)


def req(action="pause", actor="ramp-controller", roles=("ramp_controller",), key=None, **kw) -> ActionRequest:
    return ActionRequest(actor=actor, roles=tuple(roles), action=action, target_kind="flag",
                         target_id=kw.pop("target", "release-api"), rationale=kw.pop("rationale", "burn rate 14x"),
                         idempotency_key=key or f"{action}-{random.random()}", **kw)


ONCALL = {"actor": "dana", "roles": ("oncall",)}


@pytest.fixture
def env(store_url, tmp_path) -> Env:
    return Env(store_url, tmp_path)


def test_migrations_are_versioned_and_idempotent(env):
    assert env.store.schema_version() == 1
    assert env.store.migrate("2026-01-02T00:00:00Z") == 1
    assert env.store.schema_version() == 1


def test_allowed_action_completes_with_a_verifiable_receipt(env):
    out = env.proto.submit(req("pause", key="k1"))
    assert out.status == "completed" and out.receipt_id
    assert env.effects.effects() == [out.action_id]
    report = env.verify()
    assert report.ok, report.errors
    entry = env.store.entry(out.receipt_id)
    payload = json.loads(__import__("base64").b64decode(json.loads(entry.envelope)["payload"]))
    pred = payload["predicate"]
    assert payload["predicateType"].endswith("/pause/v1")
    assert pred["actor"] == "ramp-controller" and pred["decision"]["allow"] is True
    assert pred["decision"]["policy_version"].startswith("sha256:")
    assert pred["idempotency_key"] == "k1" and pred["executed"] is True
    kinds = [e["kind"] for e in env.store.events("release-api")]
    assert kinds == ["action_requested", "action_completed"]
    done = env.store.events(kind="action_completed", actor="ramp-controller")
    assert [(e["kind"], e["target_id"]) for e in done] == [("action_completed", "release-api")]
    assert env.store.events(kind="action_completed", actor="someone-else") == []


def test_denied_action_is_receipted_with_reason_and_not_executed(env):
    out = env.proto.submit(req("resume", key="k2"))  # the controller may never resume
    assert out.status == "denied" and out.receipt_id
    assert env.effects.effects() == []
    entry = env.store.entry(out.receipt_id)
    pred = json.loads(__import__("base64").b64decode(json.loads(entry.envelope)["payload"]))["predicate"]
    assert pred["decision"]["allow"] is False and pred["decision"]["reason"]
    assert pred["executed"] is False
    assert env.verify().ok


def test_same_idempotency_key_gives_one_action_and_one_receipt(env):
    a = env.proto.submit(req("pause", key="same"))
    b = env.proto.submit(req("pause", key="same"))
    assert a.action_id == b.action_id and a.receipt_id == b.receipt_id
    assert len(env.store.ledger_entries()) == 1 and env.effects.effects() == [a.action_id]


def test_a_key_conflict_says_what_differs_even_where_the_one_line_description_is_the_same(env):
    # A None-valued param is left out of the description but is part of what the request does.
    env.proto.submit(req("pause", key="k", params={}))
    out = env.proto.submit(req("pause", key="k", params={"build_id": None}))
    assert out.status == "conflict" and "params {'build_id': None}" in out.reason, out.reason


def test_signer_down_protective_applies_expanding_fails_closed(env):
    env.signer_down()
    pause = env.proto.submit(req("pause", key="p"))
    resume = env.proto.submit(req("resume", key="r", **ONCALL))
    assert pause.status == "pending_receipt"
    assert resume.status == "requested"  # not executed, will be retried
    assert env.effects.effects() == [pause.action_id]
    assert env.store.ledger_entries() == []
    env.signer_up()
    report = env.proto.retry()
    assert report.receipted == 1
    counts = env.store.count_actions()
    assert counts == {"completed": 2}
    assert sorted(env.effects.effects()) == sorted([pause.action_id, resume.action_id])
    assert env.verify().ok


def test_bounded_retries_then_dlq_and_replay(env):
    env.signer_down()
    r = req("export_release", actor="fin", roles=("finops",), key="exp")
    assert env.proto.submit(r).status == "requested"
    env.proto.retry()
    env.proto.retry()
    items = env.store.dlq_items()
    assert len(items) == 1 and "signer unavailable" in items[0]["last_error"] and items[0]["attempts"] == 3
    assert env.store.count_actions() == {"dlq": 1}
    assert env.effects.effects() == []
    env.signer_up()
    (out,) = env.proto.replay_dlq()
    assert out.status == "completed"
    assert env.store.dlq_items() == [] and env.effects.effects() == [r.action_id]


def test_store_read_only_spools_then_replays(env, tmp_path):
    if env.store.is_sqlite:
        ro = ControlStore(f"sqlite:///file:{env.url.split('///', 1)[1]}?mode=ro&uri=true")
    else:
        import sqlalchemy as sa

        ro = ControlStore(env.url)
        sa.event.listen(ro.engine, "connect", lambda dbapi, _r: _readonly(dbapi))
    out = env.protocol(store=ro).submit(req("freeze", key="f"))
    assert out.status == "spooled"
    assert len(env.spool.items()) == 1 and env.effects.effects() == []
    # A second request spooled under the same key, for another action: when the spool
    # drains, the key names the first request, so it is dead-lettered with the reason, not lost.
    assert env.protocol(store=ro).submit(req("pause", key="f")).status == "spooled"
    report = env.proto.retry()
    assert report.spool_drained == 2 and report.spool_left == 0 and report.to_dlq == 1
    assert env.store.count_actions() == {"completed": 1}
    (dead,) = env.store.dlq_items()
    assert "already used for another request" in dead["last_error"] and '"pause"' in dead["request"]
    # Replaying it would re-run the action its key names: it is refused and stays queued.
    (replayed,) = env.proto.replay_dlq()
    assert replayed.status == "conflict" and len(env.store.dlq_items()) == 1
    env.proto.retry()
    assert env.store.count_actions() == {"completed": 1} and len(env.store.ledger_entries()) == 1
    # Resubmitted under a new key, the item is discarded, with who and why on record.
    guarded = ActionProtocol(env.store, env.ring.signer, RegoPolicy(), {"dlq_discard": DlqDiscardExecutor(env.store)})
    # Only a role granted it may discard: anyone else is denied, with a receipt (and blocks no one).
    assert guarded.submit(discard_request(dead["dlq_id"], "eve", "clean up", roles=())).status == "denied"
    assert len(env.store.dlq_items()) == 1
    out = guarded.submit(discard_request(dead["dlq_id"], "dana", "resubmitted as pause key f2", roles=("oncall",)))
    assert out.status == "completed" and out.receipt_id
    assert env.store.dlq_items() == []
    assert [e["actor"] for e in env.store.events(kind="dlq_discarded")] == ["dana"]
    # An item whose action was decided since (the same request under its key) is not run again.
    with env.store.write() as tx:
        env.store.add_dlq(tx, action_id=req("freeze", key="f").action_id, request=req("freeze", key="f").to_json(),
                          last_error="old", attempts=5, created_at="2026-03-08T00:00:00.000000Z")
    (again,) = env.proto.replay_dlq()
    assert again.status == "completed" and again.reason == "already decided"
    assert len(env.store.ledger_entries()) == 3 and env.store.dlq_items() == []  # the pause and two discards
    assert env.verify().ok


def _readonly(dbapi_conn) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET default_transaction_read_only = on")
    cur.close()
    dbapi_conn.commit()


def _child(env: Env, mode: str, payload: str, start_at: float, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.guard_child", env.url, str(env.keys),
                             str(env.tmp / "effects"), mode, payload, str(start_at), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_racing_processes_produce_one_action_and_one_receipt(env):
    r = req("rollback", key="race-1")
    start = time.time() + 2.0
    procs = [_child(env, "submit", r.to_json(), start) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    statuses = [json.loads(o[0])["status"] for o in outs]
    assert "completed" in statuses
    assert len(env.store.ledger_entries()) == 1
    assert env.effects.effects() == [r.action_id]
    assert env.store.count_actions() == {"completed": 1}


def test_sigkill_mid_action_is_recovered_exactly_once(env):
    r = req("pause", key="crash-1")
    p = _child(env, "submit", r.to_json(), time.time(), "--kill")
    p.communicate(timeout=60)
    assert p.returncode == -9
    assert env.effects.effects() == [r.action_id]  # applied, but no receipt yet
    assert env.store.count_actions() == {"executing": 1}
    time.sleep(1.2)  # the dead process's lease expires
    report = env.proto.retry()
    assert report.retried == 1
    assert env.store.count_actions() == {"completed": 1}
    assert env.effects.effects() == [r.action_id]  # still exactly once
    assert env.verify().ok


def test_invariant_under_random_faults(env):
    rng = random.Random(5)
    failing = FileExecutor(env.tmp / "effects", fail=True)
    requests = []
    for i in range(40):
        kind = rng.choice(["pause", "resume", "export_release", "freeze", "override"])
        who = {"pause": {}, "freeze": {}, "resume": ONCALL, "export_release": {"actor": "fin", "roles": ("finops",)},
               "override": {**ONCALL, "ttl_seconds": 3600}}[kind]
        if rng.random() < 0.15:
            who = {}  # the controller asking for something it may not do: denied
        r = req(kind, key=f"fault-{i}", rationale="rollback stuck on the canary cohort, paging", **who)
        requests.append(r)
        if rng.random() < 0.3:
            env.signer_down()
        proto = env.protocol(executor=failing) if rng.random() < 0.15 else env.proto
        proto.submit(r)
        if (env.tmp / "hsm-unreachable.key").exists():
            env.signer_up()
        if rng.random() < 0.2:
            proto.submit(r)  # a duplicate tick
    for _ in range(4):
        env.proto.retry()
    final = {r.action_id: None for r in requests}
    import sqlalchemy as sa

    from ops_platform.control import schema

    with env.store.read() as conn:
        rows = conn.execute(sa.select(schema.actions.c.action_id, schema.actions.c.status,
                                      schema.actions.c.receipt_seq)).all()
    assert {a for a, _, _ in rows} == set(final)
    assert all(status in ("completed", "denied", "dlq") for _, status, _ in rows), rows
    receipted = [seq for _, status, seq in rows if status in ("completed", "denied")]
    assert len(set(receipted)) == len(receipted) == len(env.store.ledger_entries())
    effects = env.effects.effects()
    assert len(effects) == len(set(effects))  # nothing applied twice
    completed = {a for a, s, _ in rows if s == "completed"}
    assert set(effects) == completed
    assert env.verify().ok


def test_large_batch_append_signs_on_two_threads_and_matches_one_by_one(env):
    """A batch big enough to take the threaded path stores exactly the entries a plain
    one-at-a-time build gives (Ed25519 is deterministic), in order, and verifies."""
    from ops_platform.control.ledger_writer import CHUNK, append_receipts
    from ops_platform.receipts.ledger import build_entry
    from ops_platform.receipts.statement import make_statement, target_subject

    signer = env.ring.signer()
    stmts = [make_statement([target_subject("flag", f"f{i % 7}")], "pause",
                            {"actor": "bench", "n": i, "ratio": i / 3}) for i in range(2 * CHUNK + 37)]
    with env.store.write() as tx:
        append_receipts(env.store, tx, stmts[:5], signer, "2026-01-01T00:00:00Z")
    with env.store.write() as tx:
        append_receipts(env.store, tx, stmts[5:], signer, "2026-01-01T00:00:01Z")
    expected, prev = [], None
    for stmt in stmts:
        prev = build_entry(prev, stmt, signer)
        expected.append(prev)
    assert env.store.ledger_entries() == expected
    report = env.verify()
    assert report.ok, report.first_bad
    assert (report.entries, report.checkpoints) == (len(stmts), 2)


def test_a_receipt_pins_a_file_as_the_executor_wrote_it_not_as_changed_after(env, tmp_path):
    """A file changed between its write and its receipt (another process, in that window) is
    not receipted as changed: the receipt carries what the executor wrote, and verifying the
    ledger finds the file differs. A file given without a digest is hashed as it is."""
    from ops_platform.files import write_text
    from ops_platform.guard.actions import ExecutionResult

    class WritesThenIsOverwritten:
        def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
            written, plain = tmp_path / f"{action_id}.out", tmp_path / f"{action_id}.plain"
            write_text("as written\n", written)
            digest = file_sha256(written)
            write_text("plain\n", plain)
            written.write_text("changed before the receipt\n")  # someone else, before the receipt
            return ExecutionResult(files=(written, plain), digests={written: digest})

    out = env.protocol(executor=WritesThenIsOverwritten()).submit(req("pause", key="pinned"))
    assert out.status == "completed"
    payload = json.loads(__import__("base64").b64decode(json.loads(env.store.entry(out.receipt_id).envelope)["payload"]))
    pinned = {Path(s["name"]).name: s["digest"]["sha256"] for s in payload["subject"]}
    written = tmp_path / f"{out.action_id}.out"
    assert pinned[written.name] != file_sha256(written)  # not the changed file's
    assert pinned[f"{out.action_id}.plain"] == file_sha256(tmp_path / f"{out.action_id}.plain")
    report = env.verify()
    assert not report.ok and any(written.name in e for e in report.errors)
    written.write_text("as written\n")  # put back as written: the receipt holds again
    assert env.verify().ok
