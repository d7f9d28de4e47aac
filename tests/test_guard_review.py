"""The guarded path's edges: reused idempotency keys, the actor roster, superseding overrides,
a read-only `receipts verify`, the override timeline and the demo's receipt count."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.guard.actions import ActionRequest
from ops_platform.guard.roster import RosterError, load_roster
from ops_platform.guard.runtime import migrated_store, open_store
from ops_platform.ramp.flags import FlagFile

from .test_guard_protocol import Env

REASON = "canary error spike is a known upstream DNS blip, INC-4412"


def _sw(*args):
    return CliRunner().invoke(main, ["switchboard", *args])


def _override(flag, action, actor="dana", *extra):
    return _sw("override", flag, "--action", action, "--rationale", REASON, "--actor", actor, *extra)


@pytest.fixture
def roster(tmp_path, monkeypatch):
    path = tmp_path / "roster.yaml"
    path.write_text("actors:\n  alice: [oncall]\n  bob: [oncall]\n  fran: [finops]\n")
    monkeypatch.setenv("OPS_PLATFORM_ROSTER", str(path))
    return path


# 1. an idempotency key names one request


def test_a_key_reused_for_another_request_is_refused_and_nothing_is_done(state):
    live = state.home / "flags" / "flags.flagd.json"
    first = _override("release-api", "hold", "dana", "--idempotency-key", "inc-1")
    assert first.exit_code == 0, first.output
    graph_before = FlagFile.load(live).release("release-graph")
    again = _override("release-api", "hold", "dana", "--idempotency-key", "inc-1")
    assert again.exit_code == 0 and "already decided" in again.output  # the same request: its outcome
    for args, differ in ((("release-graph", "rollback"), "target, params.directive"),
                         (("release-api", "resume"), "params.directive")):
        other = _override(*args, "dana", "--idempotency-key", "inc-1")
        assert other.exit_code == 1, other.output
        text = " ".join(other.output.split())
        assert "conflict" in text and "'inc-1' was already used for another request" in text
        assert f"(it differs in {differ}: " in text, text  # what differs, named
        assert "completed" not in text.split("conflict", 1)[0]
    assert FlagFile.load(live).release("release-graph") == graph_before
    assert FlagFile.load(live).release("release-api").paused  # the hold stands, not resumed
    store = open_store(state)
    assert len(store.ledger_entries()) == 1 and store.events("release-graph") == []


def test_the_same_key_with_fresh_evidence_is_the_same_action(tmp_path):
    env = Env(f"sqlite:///{tmp_path / 'control.sqlite'}", tmp_path)

    def pause(build, slo, rationale):
        return env.proto.submit(ActionRequest(
            actor="ramp-controller", roles=("ramp_controller",), action="pause", target_kind="flag",
            target_id="release-api", rationale=rationale, idempotency_key="ramp:b1:pause",
            params={"slo": slo, "tier": "fast", "build_id": build, "cohort": "canary"}))

    first = pause("b1", "api-availability", "burn 20x")
    later_tick = pause("b1", "api-latency", "burn 9x on another SLO")
    assert first.status == later_tick.status == "completed"
    assert later_tick.reason == "already decided" and later_tick.receipt_id == first.receipt_id
    other_build = pause("b2", "api-availability", "burn 20x")
    assert other_build.status == "conflict" and other_build.receipt_id is None
    assert len(env.effects.effects()) == 1 and len(env.store.ledger_entries()) == 1

    # A freeze's key has no build: the controller names the first burning group's build, which
    # another tick over the same partition may see differently. Still the same freeze.
    def freeze(build):
        return env.proto.submit(ActionRequest(
            actor="ramp-controller", roles=("ramp_controller",), action="freeze", target_kind="flag",
            target_id="all-release-flags", rationale=f"burn on {build}",
            idempotency_key="platform:api-availability:fast:2026-03-08:freeze",
            params={"slo": "api-availability", "tier": "fast", "build_id": build, "cohort": "general"}))

    first_freeze = freeze("b1")
    assert first_freeze.status == "completed"
    again = freeze("b2")
    assert again.status == "completed" and again.receipt_id == first_freeze.receipt_id


# 4. roles come from the roster


def test_roles_come_from_the_roster_and_an_unknown_actor_is_denied_with_a_receipt(state, roster):
    assert _override("release-api", "hold", "alice").exit_code == 0
    finops = _override("release-api", "resume", "fran")
    assert finops.exit_code == 1 and "denied" in finops.output and "may not override" in finops.output
    stranger = _override("release-api", "resume", "dana")  # on call in the project roster, not in this one
    said = " ".join(stranger.output.split())
    assert stranger.exit_code == 1 and 'principal "dana" has no roles' in said
    assert "receipt" in stranger.output
    # The note says where the roster is and what to add (fran is in it: no such note).
    assert "'dana' is not in the actor roster" in said and "`dana: [oncall]`" in said, said
    assert "not in the actor roster" not in finops.output
    assert FlagFile.load(state.home / "flags" / "flags.flagd.json").release("release-api").paused
    verify = CliRunner().invoke(main, ["receipts", "verify"])
    assert verify.exit_code == 0 and "3 receipts" in verify.output


@pytest.mark.parametrize("actor", ["", "   ", "ramp-controller", "ramp_controller", "Ramp-Controller",
                                   "invoice-release-sensor", "ramp\u2011controller", "r\u0430mp-controller",
                                   "ramp-controller\u200b", "ramp\u00a0controller", "\uff52amp-controller",
                                   "ramp.controller", "rampcontroller"])
def test_a_blank_or_reserved_actor_is_a_usage_error(state, actor):
    res = _override("release-api", "hold", actor)
    assert res.exit_code == 2 and "--actor" in res.output and res.exception.__class__ is SystemExit
    assert open_store(state).events() == []


def test_the_override_job_refuses_the_controllers_name_and_uses_the_roster(state, roster):
    import dagster as dg

    from resources import build_resources
    from sensors.ramp import switchboard_override_job

    def run(actor):
        cfg = {"flag": "release-api", "action": "hold", "rationale": REASON, "actor": actor}
        return switchboard_override_job.execute_in_process(
            run_config={"ops": {"switchboard_override_op": {"config": cfg}}}, resources=build_resources(state),
            raise_on_error=False)

    with pytest.raises(dg.Failure, match="reserved"):
        switchboard_override_job.execute_in_process(run_config={"ops": {"switchboard_override_op": {"config": {
            "flag": "release-api", "action": "hold", "rationale": REASON, "actor": "ramp-controller"}}}},
            resources=build_resources(state))
    assert not run("fran").success  # finops, not on call: denied
    assert run("bob").success
    kinds = [(e["kind"], e["actor"]) for e in open_store(state).events("release-api")]
    assert ("action_denied", "fran") in kinds and ("action_completed", "bob") in kinds
    # As the CLI does, the job says which override in force a new one replaces.
    with dg.DagsterInstance.ephemeral() as instance:
        cfg = {"flag": "release-api", "action": "resume", "rationale": REASON, "actor": "bob"}
        result = switchboard_override_job.execute_in_process(
            run_config={"ops": {"switchboard_override_op": {"config": cfg}}}, resources=build_resources(state),
            instance=instance)
        said = [log.user_message for log in instance.all_logs(result.run_id)]
    assert any(m.startswith("note: it replaces the hold by bob that was in force until ") for m in said), said


def test_a_missing_or_malformed_roster_is_a_clear_error(state, tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_ROSTER", str(tmp_path / "nowhere.yaml"))
    res = _override("release-api", "hold", "dana")
    assert res.exit_code == 1 and "no actor roster at" in res.output
    bad = tmp_path / "bad.yaml"
    for text in ("dana: [oncall]\n", "actors:\n  dana: oncall\n", "actors: [dana]\n", "actors:\n  ' dana': [x]\n",
                 "actors:\n  dana: [oncall]\n  dana: [finops]\n",  # a second entry would win silently
                 "actors:\n  ramp-controller: [ramp_controller]\n",  # its roles are built in
                 "actors:\n  d\u0430na: [oncall]\n",  # a look-alike of another name
                 "actors:\n  dana: [oncall]\n  Dana: [finops]\n",  # the same name to a reader
                 "actors:\n  mallory: [oncall, ramp_controller]\n",  # the controller's built-in role
                 "actors:\n  1234: [oncall]\n",  # YAML reads it as a number
                 "actors:\n  dana: [oncal]\n"):  # a role the policies grant nothing
        bad.write_text(text)
        with pytest.raises(RosterError, match="bad.yaml"):
            load_roster(bad)


def test_the_project_roster_names_the_platforms_human_and_sensor_actors():
    from ops_platform.finops.export import release_request
    from ops_platform.finops.invoices import parse_period

    roster = load_roster()
    assert roster.roles("finops-analyst") == ("finops",) and roster.roles("invoice-release-sensor") == ("finops",)
    assert "oncall" in roster.roles("dana") and roster.roles("ramp-controller") == ()
    period = parse_period("2026-03")
    assert release_request(period, "finops-analyst", "r").roles == ("finops",)
    assert release_request(period, "someone", "r").roles == ()


# 2. the newest override supersedes


def test_the_newest_override_supersedes_every_older_one(store_url):
    store = migrated_store(store_url)
    with store.write() as tx:
        for oid, directive, actor, created, expires in (
                ("a1", "hold", "alice", "2026-03-06T10:00:00.000000Z", "2026-03-06T14:00:00.000000Z"),
                ("b1", "resume", "bob", "2026-03-06T10:05:00.000000Z", "2026-03-06T10:06:00.000000Z")):
            store.add_override(tx, override_id=oid, target_kind="flag", target_id="release-api", directive=directive,
                               actor=actor, rationale=REASON, created_at=created, expires_at=expires, action_id=oid)
    assert [o["actor"] for o in store.active_overrides("release-api", "2026-03-06T10:03:00.000000Z")] == ["alice"]
    assert [o["actor"] for o in store.active_overrides("release-api", "2026-03-06T10:05:30.000000Z")] == ["bob"]
    assert store.active_overrides("release-api", "2026-03-06T10:07:00.000000Z") == []  # alice's hold does not return
    assert store.active_overrides("release-graph", "2026-03-06T10:03:00.000000Z") == []


def test_the_log_names_only_the_newest_override_as_active(state, roster):
    assert _override("release-api", "hold", "alice", "--ttl", "4h").exit_code == 0
    assert _override("release-api", "resume", "bob", "--ttl", "1h").exit_code == 0
    log = _sw("log", "release-api").output
    assert "active override: resume by bob" in log and "active override: hold" not in log


# 3. verify only reads


def test_verify_creates_nothing_and_refuses_what_is_not_a_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "typo-home"))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "typo-keys"))
    monkeypatch.delenv("OPS_PLATFORM_CONTROL_URL", raising=False)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).execute("CREATE TABLE other (a)").connection.close()
    for args, message in (([], "no control store at"),
                          (["--store", f"sqlite:///{tmp_path / 'nowhere' / 'x.sqlite'}"], "no control store at"),
                          (["--store", "foo"], "not a database URL"),
                          (["--store", f"sqlite:///{empty}"], "holds no receipts ledger")):
        res = CliRunner().invoke(main, ["receipts", "verify", *args])
        assert res.exit_code == 1 and message in res.output, (args, res.output)
        assert isinstance(res.exception, SystemExit)  # a message, not a traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]  # no home, key or store made


def test_verify_names_a_key_it_does_not_have_and_creates_none(state, tmp_path, monkeypatch):
    from ops_platform.receipts.keys import KeyRing

    assert _override("release-api", "hold", "dana").exit_code == 0
    assert CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "wrong-keys"))
    res = CliRunner().invoke(main, ["receipts", "verify"])
    assert res.exit_code == 1 and "unknown key id" in res.output and "signature does not verify" not in res.output
    assert not (tmp_path / "wrong-keys").exists()
    KeyRing.load_or_create(tmp_path / "wrong-keys")  # another ring, with a key of its own
    res = CliRunner().invoke(main, ["receipts", "verify"])
    assert res.exit_code == 1 and "unknown key id" in res.output


# 5. the timeline of an override


def test_the_log_shows_each_overrides_directive_ttl_expiry_and_rationale(state):
    assert _override("release-api", "hold", "dana", "--ttl", "90m").exit_code == 0
    store = open_store(state)
    (o,) = store.overrides("release-api")
    lines = [line for line in _sw("log", "release-api").output.splitlines() if "action_completed" in line]
    assert len(lines) == 1
    assert f"hold ttl 90m until {o['expires_at']}: {REASON}" in lines[0] and "dana" in lines[0]


# 7. the demo counts the controller's receipts


def test_the_demo_story_counts_the_controllers_receipts_only(state, capsys):
    from ops_platform.cli import _any_action_protocol, _ramp_story

    assert _override("release-api", "hold", "dana").exit_code == 0  # a human's receipt
    proto = _any_action_protocol(None)
    store = proto.store
    out = proto.submit(ActionRequest(
        actor="ramp-controller", roles=("ramp_controller",), action="freeze", target_kind="flag",
        target_id="all-release-flags", rationale="incident", idempotency_key="freeze-1", params={}))
    assert out.status == "completed" and len(store.ledger_entries()) == 2
    capsys.readouterr()
    _ramp_story(state, SimpleNamespace(release_pipeline=None, controller_signals=1, controller_since=None))
    text = capsys.readouterr().out
    assert "-> 1 guarded action(s), 1 receipt(s)\n" in text, text
    assert json.loads(store.events(kind="action_completed", actor="ramp-controller")[0]["payload"])["action"] == \
        "freeze"
    # A demo run again counts its own controller run's actions, not every earlier run's too.
    from ops_platform.timezones import iso_utc, utcnow

    since = iso_utc(utcnow())
    _ramp_story(state, SimpleNamespace(release_pipeline=None, controller_signals=1, controller_since=since))
    assert "-> 0 guarded action(s), 0 receipt(s) this run (1 from earlier runs stand)" in capsys.readouterr().out


def test_dlq_discard_needs_an_item_a_human_and_a_reason(state):
    res = CliRunner().invoke(main, ["dlq", "discard", "999", "--actor", "dana", "--reason", "resubmitted"])
    assert res.exit_code == 1 and "no dead-lettered item with id 999" in res.output
    res = CliRunner().invoke(main, ["dlq", "discard", "1", "--actor", "ramp-controller", "--reason", "x"])
    assert res.exit_code == 2 and "reserved" in res.output
    res = CliRunner().invoke(main, ["dlq", "discard", "1", "--actor", "dana", "--reason", "  "])
    assert res.exit_code == 2 and "give a reason" in res.output


def test_a_discard_needs_a_real_reason_and_its_denial_names_its_receipt(state):
    from ops_platform.guard.runtime import open_store

    store = open_store(state)
    with store.write() as tx:
        store.add_dlq(tx, action_id="a" * 32, request="not json", last_error="written by hand", attempts=5,
                      created_at="2026-03-08T00:00:00Z")
    (item,) = store.dlq_items()
    res = CliRunner().invoke(main, ["dlq", "discard", str(item["dlq_id"]), "--actor", "dana", "--reason", "x"])
    assert res.exit_code == 1 and "dlq_discard requires a rationale of at least 20" in res.output, res.output
    assert "denied: denied" not in res.output and "(receipt " in res.output
    assert len(store.dlq_items()) == 1  # nothing discarded


def test_a_dead_lettered_row_that_does_not_read_is_listed_skipped_and_discarded(state):
    # A row written into the action queue by hand (params not JSON) is dead-lettered as it is:
    # `dlq list` shows it as unreadable, `dlq replay` skips it saying how to drop it (and goes
    # on with the others), and `dlq discard` drops it, receipted.
    import json

    from ops_platform.guard.runtime import open_store

    store = open_store(state)
    with store.write() as tx:
        store.create_action(tx, {"action_id": "x1", "idempotency_key": "k1", "actor": "dana", "action": "pause",
                                 "target_kind": "flag", "target_id": "release-api", "rationale": "",
                                 "params": "not json", "status": "requested", "attempts": 0,
                                 "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})
    assert CliRunner().invoke(main, ["receipts", "retry"]).exit_code == 0
    (item,) = store.dlq_items()
    listed = CliRunner().invoke(main, ["dlq", "list"])
    assert listed.exit_code == 0 and "unreadable request 'not json'" in listed.output, listed.output
    (shown,) = json.loads(CliRunner().invoke(main, ["dlq", "list", "--json"]).output)
    assert shown["request"] is None and shown["unreadable_request"] == "not json"
    replayed = CliRunner().invoke(main, ["dlq", "replay", "--all"])
    assert replayed.exit_code == 1 and f"dlq discard {item['dlq_id']}" in replayed.output, replayed.output
    assert isinstance(replayed.exception, SystemExit)
    dropped = CliRunner().invoke(main, ["dlq", "discard", str(item["dlq_id"]), "--actor", "dana",
                                        "--reason", "a row written by hand, not by the guarded path"])
    assert dropped.exit_code == 0 and "receipt" in dropped.output, dropped.output
    assert store.dlq_items() == []
    (event,) = store.events(kind="dlq_discarded")
    assert "unreadable request 'not json'" in json.loads(event["payload"])["request"]


def test_the_dlq_table_shows_bracketed_text_as_written(state, monkeypatch):
    # In a terminal the list is a Rich table: a "[/bold]" quoted from a rationale in an error
    # was read as markup and crashed the listing.
    import io

    from rich.console import Console

    import ops_platform.cli as cli
    from ops_platform.guard.runtime import open_store

    store = open_store(state)
    with store.write() as tx:
        store.add_dlq(tx, action_id="b" * 32, request="not json", attempts=5, created_at="2026-03-08T00:00:00Z",
                      last_error="conflict: the key belongs to '[/bold] spike [ops-123]'")
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=300, color_system=None))
    res = CliRunner().invoke(main, ["dlq", "list"])
    assert res.exit_code == 0, res.output
    assert "'[/bold] spike [ops-123]'" in screen.getvalue(), screen.getvalue()
