"""Switchboard overrides through the guard, and the timeline of a flag."""

from __future__ import annotations

from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.ramp.flags import FlagFile

REASON = "canary error spike is a known upstream DNS blip, INC-4412"


def _run(*args):
    return CliRunner().invoke(main, ["switchboard", *args])


class _FlagVolumeDown:
    """A flag executor that fails every time: the action stays queued for a retry."""

    def apply(self, action_id, request):
        raise OSError("the flag volume is not mounted")


def test_hold_override_pauses_the_flag_and_is_receipted(state):
    res = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "4h",
               "--actor", "dana")
    assert res.exit_code == 0, res.output
    assert "completed" in res.output and "receipt" in res.output
    live = state.home / "flags" / "flags.flagd.json"
    assert FlagFile.load(live).release("release-api").paused
    log = _run("log", "release-api")
    assert log.exit_code == 0
    assert "action_completed" in log.output and "active override: hold by dana" in log.output
    assert REASON in log.output
    import json

    data = json.loads(_run("log", "release-api", "--json").output)  # the same timeline, for scripts
    done = [e for e in data["events"] if e["kind"] == "action_completed" and e["action"] == "override"]
    assert done and done[-1]["receipt_id"] and res.output.count(done[-1]["receipt_id"][:12]) == 1
    (active,) = data["active_overrides"]
    assert active == {"directive": "hold", "actor": "dana", "rationale": REASON, "expires_at": active["expires_at"],
                      "created_at": active["created_at"], "action_id": done[-1]["action_id"], "not_obeyed": None}
    # The override's terms as fields of its events, not only in the words of `what`.
    assert done[-1]["override"] == {"directive": "hold", "ttl_seconds": 4 * 3600, "expires_at": active["expires_at"]}
    assert active["created_at"] < active["expires_at"]
    assert json.loads(CliRunner().invoke(main, ["dlq", "list", "--json"]).output) == []
    verify = CliRunner().invoke(main, ["receipts", "verify"])
    assert verify.exit_code == 0, verify.output


def test_override_needs_a_real_rationale_and_a_ttl(state):
    short = _run("override", "release-api", "--action", "resume", "--rationale", "because", "--actor", "dana")
    assert short.exit_code == 1 and "denied" in short.output and "rationale" in short.output
    bad_ttl = _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--ttl", "soon",
                   "--actor", "dana")
    assert bad_ttl.exit_code == 2 and "--ttl" in bad_ttl.output
    for huge in ("1000000000d", "99999999999999999999d"):  # past what a duration can hold: no traceback
        res = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", huge, "--actor", "dana")
        assert res.exit_code == 2 and "is too long a duration" in res.output, res.output  # an uncaught error exits 1
    month = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "1M", "--actor", "dana")
    assert month.exit_code == 2 and "M is months" in month.output, month.output
    twice = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "12h12h",
                 "--actor", "dana")  # a unit twice reads as a slip: refused, not a 24 h hold
    assert twice.exit_code == 2 and "is not a duration" in twice.output, twice.output
    # Past the policy's longest override: denied in the policy's seconds, and said in the user's unit too.
    long = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "25h", "--actor", "dana")
    assert long.exit_code == 1 and "(got 90000)" in long.output and "--ttl 25h is 90000 seconds" in long.output, long.output
    # Go's durations take a fraction (Flagger's and Argo's 1.5h), as long as it is whole seconds.
    from ops_platform.cli import _ttl_seconds

    assert _ttl_seconds("1.5h") == 5400 and _ttl_seconds("1h30m") == 5400 and _ttl_seconds("1.25m") == 75
    frac = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "0.5s", "--actor", "dana")
    assert frac.exit_code == 2 and "whole seconds" in frac.output, frac.output
    zero = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "0m", "--actor", "dana")
    assert zero.exit_code == 2 and "'0m' is no time at all" in zero.output, zero.output
    # A blank rationale is a slip of the shell: refused before anything is submitted or receipted.
    for blank in ("", "   "):
        res = _run("override", "release-api", "--action", "hold", "--rationale", blank, "--actor", "dana")
        assert res.exit_code == 2 and "--rationale" in res.output and "blank" in res.output, res.output
    import json

    receipted = [e for e in json.loads(_run("log", "release-api", "--json").output)["events"] if e["receipt_id"]]
    assert len(receipted) == 2  # the short rationale's and the long TTL's denials only
    # A compound duration, as Flagger and Argo Rollouts write them.
    mixed = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "1h30m",
                 "--actor", "dana")
    assert mixed.exit_code == 0, mixed.output
    (active,) = json.loads(_run("log", "release-api", "--json").output)["active_overrides"]
    from datetime import datetime

    assert (datetime.fromisoformat(active["expires_at"]) - datetime.fromisoformat(active["created_at"])).seconds == 5400


def test_same_idempotency_key_applies_once(state):
    args = ["override", "release-graph", "--action", "rollback", "--rationale", REASON, "--actor", "dana",
            "--idempotency-key", "inc-4412-rollback"]
    first, second = _run(*args), _run(*args)
    assert first.exit_code == 0 and second.exit_code == 0
    # Spaces around the words are no other words (as spaces around the actor are no other actor).
    padded = _run(*[f" {REASON}  " if a == REASON else a for a in args])
    assert padded.exit_code == 0 and "conflict" not in padded.output, padded.output
    log = _run("log", "release-graph").output
    assert log.count("action_completed") == 1
    # The same key with other words is another request: the receipt vouches for the first words.
    reworded = _run(*[REASON + " (and the pager agrees)" if a == REASON else a for a in args])
    assert reworded.exit_code == 1 and "conflict" in reworded.output, reworded.output
    assert "and the pager agrees" in reworded.output  # what differs is shown, not two equal lines
    # One key spelt two ways would run twice: a blank key or one with spaces around is refused.
    # A key like the controller's would take it first, and its freeze would never run.
    res = _run(*["platform:api-availability:fast:2026-03-14:freeze#a56e3df4" if a == "inc-4412-rollback" else a
                 for a in args])
    assert res.exit_code == 2 and "platform's own" in res.output, res.output
    for key in ("", " inc-4412-rollback"):
        res = _run(*[key if a == "inc-4412-rollback" else a for a in args])
        assert res.exit_code == 2 and "--idempotency-key" in res.output, res.output
    assert _run("log", "release-graph").output.count("action_completed") == 1


def test_an_override_of_an_unknown_flag_is_refused_before_it_is_submitted(state):
    import dagster as dg
    import pytest

    from ops_platform.guard.runtime import open_store
    from resources import build_resources
    from sensors.ramp import switchboard_override_job

    res = _run("override", "release-nope", "--action", "hold", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 2 and "no release flag 'release-nope'" in res.output and "release-api" in res.output
    job = {"ops": {"switchboard_override_op": {"config": {
        "flag": "release-api", "action": "promote", "rationale": REASON, "actor": "dana"}}}}
    # Refused at launch, by the job's config (the UI shows the choices), before any op runs.
    with pytest.raises(dg.DagsterInvalidConfigError, match="action not in enum"):
        switchboard_override_job.execute_in_process(run_config=job, resources=build_resources(state))
    for field, value, said in (("ttl_seconds", 172800, "ttl_seconds 172800: give a number of seconds above 0"),
                               ("ttl_seconds", 0, "ttl_seconds 0: give"), ("rationale", "  ", "rationale is blank")):
        bad = {"ops": {"switchboard_override_op": {"config": {
            "flag": "release-api", "action": "hold", "rationale": REASON, "actor": "dana", field: value}}}}
        # Checked as the op starts, before anything is submitted, with a message (not a traceback)
        with pytest.raises(dg.Failure, match=said):
            switchboard_override_job.execute_in_process(run_config=bad, resources=build_resources(state))
    unknown = {"ops": {"switchboard_override_op": {"config": {
        "flag": "release-nope", "action": "hold", "rationale": REASON, "actor": "dana"}}}}
    with pytest.raises(dg.Failure, match="release-nope"):
        switchboard_override_job.execute_in_process(run_config=unknown, resources=build_resources(state))
    assert open_store(state).events() == []  # nothing requested, nothing to retry or dead-letter
    # A person the roster does not know: denied (with its receipt), said once and with the fix.
    stranger = {"ops": {"switchboard_override_op": {"config": {
        "flag": "release-api", "action": "hold", "rationale": REASON, "actor": "bob"}}}}
    with pytest.raises(dg.Failure) as denied:
        switchboard_override_job.execute_in_process(run_config=stranger, resources=build_resources(state))
    said = denied.value.description
    assert said.startswith('override denied: principal "bob" has no roles; ') and "denied: denied" not in said
    assert "not in the actor roster" in said and "roster.yaml" in said, said
    # Left out (or null, as the launchpad allows), the TTL is the default 4h.
    assert switchboard_override_job.execute_in_process(run_config={"ops": {"switchboard_override_op": {"config": {
        "flag": "release-api", "action": "hold", "rationale": REASON, "actor": "dana", "ttl_seconds": None}}}},
        resources=build_resources(state)).success
    from datetime import datetime

    (held,) = open_store(state).overrides("release-api")
    ttl = datetime.fromisoformat(held["expires_at"]) - datetime.fromisoformat(held["created_at"])
    assert ttl.total_seconds() == 4 * 3600


def test_a_freeze_is_in_the_timeline_of_every_flag_it_held(state):
    from ops_platform.cli import _any_action_protocol
    from ops_platform.guard.actions import ActionRequest

    proto = _any_action_protocol(None)
    out = proto.submit(ActionRequest(
        actor="ramp-controller", roles=("ramp_controller",), action="freeze", target_kind="flag",
        target_id="all-release-flags", rationale="api-availability fast burn on api/general/api-100: incident",
        idempotency_key="freeze-1", params={"exempt": ["release-api"]}))
    assert out.status == "completed", out.reason
    graph = _run("log", "release-graph")
    assert graph.exit_code == 0 and "freeze" in graph.output and "incident" in graph.output
    assert "freeze" not in _run("log", "release-api").output  # under an override: exempt
    live = FlagFile.load(state.home / "flags" / "flags.flagd.json")
    assert live.release("release-graph").frozen and not live.release("release-api").frozen


def test_a_state_folder_moved_elsewhere_verifies_against_its_own_files(state, tmp_path, monkeypatch):
    import shutil

    res = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "4h",
               "--actor", "dana")
    assert res.exit_code == 0, res.output
    moved = tmp_path / "restored"
    shutil.copytree(state.home, moved, symlinks=True)
    state.home.rename(tmp_path / "gone")  # the original files are no longer where they were
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(moved))
    verify = CliRunner().invoke(main, ["receipts", "verify"])
    assert verify.exit_code == 0, verify.output
    # The receipt names the flag's history file relative to the state folder, so it is the
    # moved folder's own file that is checked: changing it fails the verification.
    snapshots = sorted((moved / "flags").rglob("*.json"))
    history = [p for p in snapshots if p.parent.name.endswith(".history")]
    assert history
    history[0].write_text(history[0].read_text() + " ")
    verify = CliRunner().invoke(main, ["receipts", "verify"])
    assert verify.exit_code != 0 and history[0].relative_to(moved).as_posix() in verify.output.replace("\n", "")


def test_a_folder_of_the_state_linked_to_another_volume_is_still_named_inside_it(state, tmp_path):
    import json

    from ops_platform.guard.runtime import open_store
    from ops_platform.receipts.dsse import envelope_statement

    volume = tmp_path / "volume"
    volume.mkdir()
    (state.home / "flags").symlink_to(volume, target_is_directory=True)
    res = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "4h",
               "--actor", "dana")
    assert res.exit_code == 0, res.output
    names = [s["name"] for e in open_store(state).ledger_entries()
             for s in envelope_statement(json.loads(e.envelope))["subject"]]
    files = [n for n in names if not n.startswith("flag:")]
    assert files and all(n.startswith("flags/") for n in files), names



def test_only_a_target_spelling_is_skipped_by_the_file_checks(tmp_path):
    from ops_platform.receipts.statement import Subject, subject_path

    digest = "0" * 64
    assert subject_path(Subject("flag:release-api", digest), tmp_path) is None
    assert subject_path(Subject("invoice_period:2026-03-01..2026-03-14", digest), tmp_path) is None
    # A file whose name holds a colon is still a file: verify and the release check hash it.
    assert subject_path(Subject("flags/a:b.json", digest), tmp_path) == tmp_path / "flags" / "a:b.json"
    assert subject_path(Subject("C:\\invoices\\lines.csv", digest), tmp_path) is not None


def test_retry_carries_a_spooled_override_through_with_the_rosters_roles_only(state):
    # A spooled request (the store was down) is finished by `receipts retry`, which has every
    # executor; the roles it is decided on are the roster's now, not those the spool line claims.
    import json

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.runtime import open_store, spool
    from ops_platform.paths import StatePaths

    paths = StatePaths.from_env()
    queue = spool(paths)
    legit = ActionRequest(actor="dana", roles=(), action="override", target_kind="flag", target_id="release-api",
                          rationale=REASON, idempotency_key="spooled-dana", ttl_seconds=3600,
                          params={"directive": "hold"})
    forged = ActionRequest(actor="mallory", roles=("oncall",), action="override", target_kind="flag",
                           target_id="release-graph", rationale=REASON, idempotency_key="spooled-mallory",
                           ttl_seconds=3600, params={"directive": "resume"})
    for r in (legit, forged):
        queue.append(r, "control store unavailable")
    res = CliRunner().invoke(main, ["receipts", "retry"])
    assert res.exit_code == 0, res.output
    store = open_store(paths)
    with store.read() as conn:
        status = {r.actor: store.get_action(conn, r.action_id)["status"] for r in (legit, forged)}
    assert status == {"dana": "completed", "mallory": "denied"}
    assert FlagFile.load(state.home / "flags" / "flags.flagd.json").release("release-api").paused

    # Pending receipts written into the store by hand: an allowed release (the guard never
    # leaves one pending), a pause by an actor the guard would deny, and an allowed pause
    # with a made-up result. The first two are dead-lettered, saying why; the pause by the
    # controller is receipted with what its executor reports, never the stored result.
    def pending(r: ActionRequest, result: str | None = None) -> None:
        with store.write() as tx:
            store.create_action(tx, {
                "action_id": r.action_id, "idempotency_key": r.idempotency_key, "actor": r.actor,
                "action": r.action, "target_kind": r.target_kind, "target_id": r.target_id, "rationale": "x",
                "params": r.to_json(), "status": "pending_receipt", "attempts": 0, "created_at": "t",
                "updated_at": "t", "result": result,
                "decision": json.dumps({"allow": True, "reason": "forged", "policy_version": "v", "cacheable": False})})

    release = ActionRequest(actor="finops-analyst", roles=("finops",), action="export_release",
                            target_kind="invoice_period", target_id="2026-03", rationale="x",
                            idempotency_key="forged-1", params={"period": "2026-03"})
    pause_by_mallory = ActionRequest(actor="mallory", roles=("ramp_controller",), action="pause", target_kind="flag",
                                     target_id="release-graph", rationale="x", idempotency_key="forged-2")
    pause = ActionRequest(actor="ramp-controller", roles=("ramp_controller",), action="pause", target_kind="flag",
                          target_id="release-graph", rationale="x", idempotency_key="forged-3")
    pending(release)
    pending(pause_by_mallory)
    pending(pause, json.dumps({"detail": {"made_up": True}, "files": []}))
    res = CliRunner().invoke(main, ["receipts", "retry"])
    assert res.exit_code == 0 and "receipted 1" in res.output and "dead-lettered 2" in res.output, res.output
    with store.read() as conn:
        status = {r.idempotency_key: store.get_action(conn, r.action_id)["status"]
                  for r in (release, pause_by_mallory, pause)}
    assert status == {"forged-1": "dlq", "forged-2": "dlq", "forged-3": "completed"}
    errors = [i["last_error"] for i in store.dlq_items()[-2:]]
    assert "never left pending" in errors[0] and "not the guard's now" in errors[1]
    receipt = json.loads(CliRunner().invoke(main, ["receipts", "show", store.ledger_entries()[-1].receipt_id]).output)
    assert receipt["statement"]["predicate"]["action_id"] == pause.action_id
    assert "made_up" not in receipt["statement"]["predicate"]["result"]
    assert FlagFile.load(state.home / "flags" / "flags.flagd.json").release("release-graph").paused
    assert CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0


def test_a_ledger_cut_at_its_end_fails_verification(state):
    # Removing the newest receipts with their tree heads leaves a ledger that chains on its
    # own; the store's head and receipted actions still name what was removed.
    import shutil
    import sqlite3

    from ops_platform.paths import StatePaths

    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    db = StatePaths.from_env().control_store
    shutil.copy(db, db.with_suffix(".copy"))
    for cut in ("DELETE FROM ledger WHERE seq = (SELECT max(seq) FROM ledger); "
                "DELETE FROM checkpoints WHERE tree_size = (SELECT max(tree_size) FROM checkpoints)",
                "DELETE FROM ledger; DELETE FROM checkpoints"):
        shutil.copy(db.with_suffix(".copy"), db)
        con = sqlite3.connect(db)
        con.executescript(cut)
        con.close()
        res = CliRunner().invoke(main, ["receipts", "verify"])
        said = " ".join(res.output.split())
        assert res.exit_code == 1, res.output
        assert "ledger head records its last entry" in said and "not in the ledger" in said
    # A receipt id prefix is a prefix, not a LIKE pattern.
    shutil.copy(db.with_suffix(".copy"), db)
    assert CliRunner().invoke(main, ["receipts", "show", "_"]).exit_code != 0


def test_the_log_is_one_line_per_event_and_names_only_real_flags(state):
    forged = "line one of the rationale\n2026-01-01T00:00:00Z  action_completed  resume  dana  forged line"
    assert _run("override", "release-api", "--action", "hold", "--rationale", forged, "--actor", "dana").exit_code == 0
    log = _run("log", "release-api")
    assert log.exit_code == 0
    assert "forged line" in log.output and not any(line.startswith("2026-01-01") for line in log.output.splitlines())
    assert "\\n2026-01-01" in log.output  # shown escaped, on the override's own line
    typo = _run("log", "release-nope")
    assert typo.exit_code == 1 and "no release flag 'release-nope'" in typo.output and "release-api" in typo.output
    assert _run("log", "").exit_code == 2


def test_a_broken_flag_file_is_an_error_not_a_usage_mistake(state):
    live = state.home / "flags" / "flags.flagd.json"
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    live.write_text(live.read_text()[:100])
    res = _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 1 and "Traceback" not in res.output and "flags.flagd.json" in res.output, res.output
    live.unlink()
    live.mkdir()
    res = _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output


def test_show_says_when_the_receipt_it_prints_does_not_verify(state):
    import base64
    import json
    import sqlite3

    from ops_platform.paths import StatePaths

    out = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana")
    import re

    receipt = re.search(r"\(receipt ([0-9a-f]{12})\)", out.output)[1]
    shown = CliRunner().invoke(main, ["receipts", "show", receipt])
    assert shown.exit_code == 0 and json.loads(shown.output)["ledger_verified"] is True
    con = sqlite3.connect(StatePaths.from_env().control_store)
    seq, envelope = con.execute("SELECT seq, envelope FROM ledger WHERE receipt_id LIKE ?",
                                [receipt + "%"]).fetchone()
    env = json.loads(envelope)
    env["payload"] = base64.b64encode(base64.b64decode(env["payload"]).replace(b'"dana"', b'"mallory"')).decode()
    con.execute("UPDATE ledger SET envelope = ? WHERE seq = ?", [json.dumps(env), seq])
    con.commit()
    con.close()
    shown = CliRunner().invoke(main, ["receipts", "show", receipt])
    assert shown.exit_code == 1 and "may have been altered" in shown.output


def test_an_override_is_recorded_while_the_flag_file_is_still_locked(state):
    # Two overrides racing are recorded in the order they changed the file: the record is
    # written before the lock is let go (another writer cannot slip in between).
    import pytest

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.runtime import open_store
    from ops_platform.paths import StatePaths
    from ops_platform.ramp.flag_executor import FlagFileExecutor, flag_file_lock
    from ops_platform.ramp.switchboard import OverrideExecutor, live_flag_file

    paths = StatePaths.from_env()
    store = open_store(paths)
    live = live_flag_file(paths.home, paths.world)
    seen = []
    add = store.add_override

    def add_while_checking_the_lock(tx, **values):
        with pytest.raises(TimeoutError), flag_file_lock(live, timeout_seconds=0.05):
            pass
        seen.append(values["directive"])
        return add(tx, **values)

    store.add_override = add_while_checking_the_lock
    request = ActionRequest(actor="dana", roles=("oncall",), action="override", target_kind="flag",
                            target_id="release-api", rationale=REASON, idempotency_key="locked", ttl_seconds=600,
                            params={"directive": "hold"})
    result = OverrideExecutor(store, FlagFileExecutor(live)).apply(request.action_id, request)
    assert seen == ["hold"] and result.detail["expires_at"]
    # the receipt pins the flag file's snapshot as written (named after its sha256), not as found later
    assert result.files and result.digests == {p: p.stem for p in result.files}
    assert [o["directive"] for o in store.overrides("release-api")] == ["hold"]
    assert FlagFile.load(live).release("release-api").paused


def test_a_lost_control_store_is_not_silently_started_again(state):
    # The warehouse's copy holds receipts the missing store had: a new empty ledger would
    # verify, and the audit trail would be gone without a word.
    import duckdb

    with duckdb.connect(str(state.warehouse)) as con:
        con.execute("CREATE SCHEMA control")
        con.execute("CREATE TABLE control.receipts AS SELECT 0 AS seq, 'abc' AS receipt_id")
    for args in (["switchboard", "log", "release-api"], ["demo"]):
        res = CliRunner().invoke(main, args)
        said = " ".join(res.output.split())
        assert res.exit_code == 1 and "control store" in said and "is missing" in said and "1 receipt(s)" in said, said
        assert not state.control_store.exists()
    # Nor does a Dagster run or sensor tick (the resource) start a new one.
    import pytest

    from ops_platform.guard.runtime import NoStore, control_url
    from resources.control import ControlStoreResource

    resource = ControlStoreResource(url=control_url(state), spool_path=str(state.spool_file), home=str(state.home))
    with pytest.raises(NoStore, match="is missing"):
        resource.store()
    assert not state.control_store.exists()


def test_hand_written_rows_get_no_words_into_receipts_and_do_not_stop_the_retry(state):
    import json

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.runtime import open_store, spool
    from ops_platform.paths import StatePaths

    paths = StatePaths.from_env()
    store = open_store(paths)

    def pending(r: ActionRequest, action_id: str | None = None, decision: str | None = None,
                receipt_seq: int | None = None) -> str:
        with store.write() as tx:
            store.create_action(tx, {
                "action_id": action_id or r.action_id, "idempotency_key": r.idempotency_key, "actor": r.actor,
                "action": r.action, "target_kind": r.target_kind, "target_id": r.target_id, "rationale": "x",
                "params": r.to_json(), "status": "pending_receipt", "attempts": 0, "created_at": "t",
                "updated_at": "t", "receipt_seq": receipt_seq,
                "decision": decision if decision is not None else json.dumps(
                    {"allow": True, "reason": "allowed: approved by the CEO", "policy_version": "sha256:FORGED",
                     "cacheable": True})})
        return action_id or r.action_id

    def pause(key: str) -> ActionRequest:
        return ActionRequest(actor="ramp-controller", roles=(), action="pause", target_kind="flag",
                             target_id="release-graph", rationale="x", idempotency_key=key)

    signed = pending(pause("p-1"))
    other_id = pending(pause("p-2"), action_id="deadbeef" * 4)
    malformed = pending(pause("p-4"), decision="{}")
    spool(paths).path.parent.mkdir(parents=True, exist_ok=True)
    with open(spool(paths).path, "a") as f:
        f.write("this is no request\n")
        # JSON of a request's fields, one of the wrong type: set aside too, not a crash each retry
        f.write(json.dumps({"request": {**json.loads(pause("p-5").to_json()), "idempotency_key": 12345},
                            "error": "x", "attempts": 1}) + "\n")
    res = CliRunner().invoke(main, ["receipts", "retry"])
    assert res.exit_code == 0, res.output
    with store.read() as conn:
        status = {a: store.get_action(conn, a)["status"] for a in (signed, other_id, malformed)}
    assert status == {signed: "completed", other_id: "dlq", malformed: "dlq"}
    # The guard's own decision is what the receipt says, not the stored words.
    shown = CliRunner().invoke(main, ["receipts", "show", store.ledger_entries()[-1].receipt_id])
    assert shown.exit_code == 0, shown.output
    decision = json.loads(shown.output)["statement"]["predicate"]["decision"]
    assert "CEO" not in decision["reason"] and decision["policy_version"] != "sha256:FORGED"
    assert len(store.ledger_entries()) == 1  # one receipt, and a second retry adds none
    assert CliRunner().invoke(main, ["receipts", "retry"]).exit_code == 0 and len(store.ledger_entries()) == 1
    # A receipted action set back to pending gets no second receipt.
    with store.write() as tx:
        store.update_action(tx, signed, status="pending_receipt")
    res = CliRunner().invoke(main, ["receipts", "retry"])
    assert "dead-lettered 1" in res.output and len(store.ledger_entries()) == 1
    assert "already has a receipt" in store.dlq_items()[-1]["last_error"]
    rejected = spool(paths).rejected_path.read_text()
    assert "this is no request" in rejected and spool(paths).items() == []
    assert "idempotency_key is text, not int" in rejected


def test_verify_holds_each_action_to_its_own_receipt(state):
    import sqlite3

    from ops_platform.paths import StatePaths

    for flag in ("release-api", "release-graph"):
        assert _run("override", flag, "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    db = StatePaths.from_env().control_store
    for tamper, said in (("UPDATE actions SET receipt_seq = 0 WHERE receipt_seq = 1", "the receipt of another action"),
                         ("UPDATE actions SET receipt_seq = NULL WHERE receipt_seq = 1", "names no receipt")):
        con = sqlite3.connect(db)
        seq = con.execute("SELECT receipt_seq FROM actions WHERE receipt_seq = 1").fetchone()
        con.execute(tamper)
        con.commit()
        res = CliRunner().invoke(main, ["receipts", "verify"])
        assert res.exit_code == 1 and said in " ".join(res.output.split()), res.output
        con.execute("UPDATE actions SET receipt_seq = 1 WHERE action_id = (SELECT action_id FROM actions "
                    "WHERE target_id = 'release-graph' AND action = 'override')")
        con.commit()
        con.close()
        assert seq == (1,) and CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0


def test_a_spooled_request_met_by_an_unreadable_roster_is_kept_and_retried(state, monkeypatch, tmp_path):
    # The roles are read at decision time, after the action is recorded: a roster that cannot
    # be read fails the attempt (retried, then dead-lettered), it does not lose the request.
    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.runtime import open_store, spool
    from ops_platform.paths import StatePaths

    paths = StatePaths.from_env()
    request = ActionRequest(actor="dana", roles=(), action="override", target_kind="flag", target_id="release-api",
                            rationale=REASON, idempotency_key="spooled-no-roster", ttl_seconds=3600,
                            params={"directive": "hold"})
    spool(paths).append(request, "control store unavailable")
    monkeypatch.setenv("OPS_PLATFORM_ROSTER", str(tmp_path / "no-roster.yaml"))
    assert CliRunner().invoke(main, ["receipts", "retry"]).exit_code == 0
    store = open_store(paths)
    with store.read() as conn:
        row = store.get_action(conn, request.action_id)
    assert row["status"] == "requested" and "actor roster" in row["last_error"]
    monkeypatch.delenv("OPS_PLATFORM_ROSTER")
    assert CliRunner().invoke(main, ["receipts", "retry"]).exit_code == 0
    with store.read() as conn:
        assert store.get_action(conn, request.action_id)["status"] == "completed"


def test_a_missing_control_store_is_not_started_while_the_warehouse_cannot_be_read(state):
    # Another process writing the warehouse holds its lock: whether it held receipts cannot
    # be checked, so no new ledger is started (fail closed); this process's own connection
    # to the warehouse, though, is used to look.
    import subprocess
    import sys

    import duckdb

    from ops_platform.guard.runtime import lost_ledger

    with duckdb.connect(str(state.warehouse)) as con:
        con.execute("CREATE SCHEMA control")
        con.execute("CREATE TABLE control.receipts AS SELECT 0 AS seq, 'abc' AS receipt_id")
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                               f"con = duckdb.connect({str(state.warehouse)!r}); print('held', flush=True)\n"
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        problem = lost_ledger(state)
        assert problem and "cannot be read" in problem and "lock" in problem, problem
        res = CliRunner().invoke(main, ["switchboard", "log", "release-api"])
        assert res.exit_code == 1 and "cannot be read" in res.output and not state.control_store.exists()
    finally:
        holder.communicate("")
    with duckdb.connect(str(state.warehouse)) as own:  # held by this process, read-write
        own.execute("SELECT 1")
        assert "1 receipt(s)" in (lost_ledger(state) or "")
        own.execute("DELETE FROM control.receipts")
        assert lost_ledger(state) is None


def test_switchboard_lines_are_not_wrapped_for_a_pipe(state):
    # CliRunner is no terminal (80 columns, as a pipe): the receipt id must stay on its line.
    res = CliRunner().invoke(main, ["switchboard", "override", "release-api", "--action", "hold", "--ttl", "4h",
                                    "--actor", "dana", "--rationale", "holding the api ramp while the on-call "
                                    "engineer looks at the error budget and the canary's dashboards"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("completed"))
    assert "(receipt " in line and len(line) > 80, res.output


def test_the_log_says_when_the_last_override_expired_and_what_it_left(state):
    import sqlite3

    assert _run("override", "release-api", "--action", "hold", "--ttl", "4h", "--actor", "dana",
                "--rationale", REASON).exit_code == 0
    assert "active override: hold by dana" in _run("log", "release-api").output
    with sqlite3.connect(state.control_store) as con:  # four hours later
        con.execute("UPDATE overrides SET expires_at = '2000-01-01T00:00:00Z'")
    out = _run("log", "release-api").output
    assert "active override" not in out
    assert "override expired: hold by dana at 2000-01-01T00:00:00Z; the hold stays until someone resumes" in out, out


def test_a_lost_live_flag_file_is_not_seeded_again(state):
    # Seeding it again from the world's initial flags would undo every pause, freeze and split
    # the guard applied, without a word (and the next receipt would pin the undone file).
    live = state.home / "flags" / "flags.flagd.json"
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    live.unlink()
    res = _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 1 and "is missing, though it was seeded" in res.output, res.output
    assert not live.exists() and "Traceback" not in res.output
    (state.home / ".flags-seeded").unlink()  # starting again on purpose
    res = _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 0 and not FlagFile.load(live).release("release-api").paused, res.output
    assert "drift" not in _run("log", "release-graph").output  # the old file's holds are not the new one's
    # A state folder seeded before the marker existed gets it, so it is protected too.
    (state.home / ".flags-seeded").unlink()
    assert _run("log", "release-graph").exit_code == 0
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    assert (state.home / ".flags-seeded").exists()


def test_a_disabled_release_flag_blocks_nothing_and_stays_disabled(state):
    # flagd's own kill switch on one flag: actions on the other flags go on, and an action on
    # the disabled flag keeps it disabled.
    import json

    live = state.home / "flags" / "flags.flagd.json"
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    doc = json.loads(live.read_text())
    doc["flags"]["release-api"]["state"] = "DISABLED"
    live.write_text(json.dumps(doc))
    res = _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 0 and FlagFile.load(live).release("release-graph").paused, res.output
    res = _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 0 and not FlagFile.load(live).release("release-api").paused, res.output
    assert json.loads(live.read_text())["flags"]["release-api"]["state"] == "DISABLED"
    # A flag broken by hand ("OFF" is no flagd state) is refused when acted on, naming what is
    # wrong, but stops nothing on the other flags; a freeze leaves it as it is and says so.
    doc = json.loads(live.read_text())
    doc["flags"]["release-api"]["state"] = "OFF"
    live.write_text(json.dumps(doc))
    res = _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 1 and "'ENABLED' or 'DISABLED'" in res.output, res.output
    res = _run("override", "release-graph", "--action", "resume", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 0 and not FlagFile.load(live, lenient=True).release("release-graph").paused, res.output
    # An action on one flag leaves the others alone, so it names none of them as left alone.
    assert "unreadable" not in res.output and "release-api" not in _run("log", "release-graph").output
    from ops_platform.guard.actions import ActionRequest
    from ops_platform.ramp.flag_executor import FlagFileExecutor

    froze = FlagFileExecutor(live).apply("freeze-1", ActionRequest(
        actor="ramp-controller", roles=("ramp_controller",), action="freeze", target_kind="flag", target_id="*",
        rationale="incident", idempotency_key="freeze-1"))
    assert "release-api" in froze.detail["unreadable_flags"] and "release-api" not in froze.detail["after"]
    assert FlagFile.load(live, lenient=True).release("release-graph").frozen
    assert json.loads(live.read_text())["flags"]["release-api"]["state"] == "OFF"  # left as it was


def test_an_override_says_what_it_does_beyond_its_name(state):
    # A resume lifts a platform freeze on its flag; a hold of a flag with no ramp in flight
    # holds the next ramp at 0%: both said with the outcome.
    live = state.home / "flags" / "flags.flagd.json"
    res = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 0 and "no ramp in flight" in res.output, res.output
    assert FlagFile.load(live).release("release-api").candidate is None
    FlagFile.load(live).freeze_all().save(live)
    res = _run("override", "release-graph", "--action", "resume", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 0 and "lifts the freeze on it too" in res.output, res.output
    assert not FlagFile.load(live).release("release-graph").frozen and FlagFile.load(live).release("release-api").frozen
    # A new override replaces the one in force, even a longer one: said, not left to find out.
    res = _run("override", "release-api", "--action", "rollback", "--rationale", REASON, "--ttl", "30m",
               "--actor", "dana")
    assert res.exit_code == 0 and "it replaces the hold by dana that was in force until" in res.output, res.output
    assert "replaces" not in _run("override", "release-switchboard", "--action", "hold", "--rationale", REASON,
                                  "--actor", "dana").output


def test_a_hold_cleared_by_hand_is_named_as_drift_at_the_next_guarded_change(state):
    # Someone clears a pause in the file itself, around the guard: the next guarded change says
    # so in its receipt's event and in the flag's timeline.
    import json

    from ops_platform.ramp.flags import targeting_rule

    live = state.home / "flags" / "flags.flagd.json"
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    doc = json.loads(live.read_text())
    doc["flags"]["release-api"]["metadata"]["summit.paused"] = False
    live.write_text(json.dumps(doc))
    assert _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    log = _run("log", "release-graph").output
    assert "drift: release-api was paused by the guard" in log and "changed outside the guard" in log, log
    api_log = _run("log", "release-api").output
    assert "drift_seen" in api_log and "seen by override release-graph" in api_log  # its own timeline too
    # The same edit is reported once, not at every later change.
    assert _run("override", "release-receipts", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    assert _run("log", "release-api").output.count("drift_seen") == 1
    # With no edit in between there is nothing to say.
    assert _run("override", "release-policy", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    assert "drift" not in _run("log", "release-policy").output
    # A new candidate does not excuse a cleared hold, and a held ramp widened by hand is drift.
    doc = json.loads(live.read_text())
    policy = doc["flags"]["release-policy"]
    policy["variants"]["candidate"] = "policy-999"
    policy["targeting"] = targeting_rule({"canary": 10, "early": 0, "general": 0})
    live.write_text(json.dumps(doc))
    assert FlagFile.load(live).release("release-policy").cohort_percent["canary"] == 10
    assert _run("override", "release-switchboard", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    log = _run("log", "release-switchboard").output
    assert "release-policy was widened while held" in log, log


def test_flag_values_no_writer_can_write_back_are_refused_not_saved(state):
    # 1e400 reads as infinity, which would be saved as Infinity and then read by nothing; a
    # changedAt before the first UTC instant overflows. Neither crashes or spreads to other flags.
    import json

    import pytest

    from ops_platform.ramp.flags import FlagFileError

    live = state.home / "flags" / "flags.flagd.json"
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    text = live.read_text()
    live.write_text(text.replace('"flags": {', '"x_limit": 1e400, "flags": {', 1))
    with pytest.raises(FlagFileError, match="too large"):
        FlagFile.load(live)
    live.write_text(text)
    doc = json.loads(text)
    doc["flags"]["release-api"]["metadata"]["summit.changedAt"] = "0001-01-01T00:00:00+01:00"
    live.write_text(json.dumps(doc))
    res = _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    res = _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--actor", "dana")
    assert res.exit_code == 1 and "out of range" in res.output, res.output
    assert "drift" not in _run("log", "release-api").output  # unreadable, not a lost hold


def test_override_and_log_use_the_store_named_by_store(state, tmp_path):
    from ops_platform.guard.runtime import migrated_store

    other = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    migrated_store(other)  # a store set up beforehand (as OPS_PLATFORM_CONTROL_URL's is on first use)
    res = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana",
               "--store", other)
    assert res.exit_code == 0 and "completed" in res.output, res.output
    there = _run("log", "release-api", "--store", other)
    assert "active override: hold by dana" in there.output, there.output
    here = _run("log", "release-api")  # the state folder's own store saw nothing of it
    assert "active override" not in here.output and REASON not in here.output, here.output
    verify = CliRunner().invoke(main, ["receipts", "verify", "--store", other])
    assert verify.exit_code == 0 and "1 receipts" in verify.output, verify.output


def test_an_override_through_a_mistyped_store_is_refused_and_changes_no_flag(state, tmp_path):
    typo = tmp_path / "control.sqllite"
    res = _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana",
               "--store", f"sqlite:///{typo}")
    assert res.exit_code == 1 and f"no control store at {typo}" in res.output, res.output
    assert not typo.exists()
    assert not state.live_flags.exists() or not FlagFile.load(state.live_flags).release("release-api").paused


def test_user_text_with_brackets_prints_as_written(state):
    # Rich would read "[/bold]" as markup (an error) and drop "[ops-123]" as an unknown tag.
    why = "[/bold] metering spike [ops-123], hold while we look"
    args = ["override", "release-graph", "--action", "hold", "--rationale", why, "--actor", "dana",
            "--idempotency-key", "mk1"]
    assert _run(*args).exit_code == 0
    again = _run(*[why + " more" if a == why else a for a in args])
    assert again.exit_code == 1 and "conflict" in again.output and "[ops-123]" in again.output, again.output
    assert "[/bold] metering spike [ops-123], hold while we look more" in again.output


def test_the_log_of_a_store_that_is_not_there_creates_nothing(state, tmp_path):
    missing = tmp_path / "typo.sqlite"
    res = _run("log", "release-api", "--store", f"sqlite:///{missing}")
    assert res.exit_code != 0 and "no control store at" in res.output, res.output
    assert not missing.exists()


def test_an_override_record_edited_in_the_store_fails_verification(state):
    # The controller obeys the overrides table: a row that says more than its receipt (a later
    # expiry, another directive) or that no action wrote is named by `receipts verify`.
    import json
    import sqlite3

    assert _run("override", "release-graph", "--action", "rollback", "--rationale", REASON, "--ttl", "1h",
                "--actor", "dana").exit_code == 0
    assert CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0
    con = sqlite3.connect(state.control_store)
    (signed,) = con.execute("SELECT expires_at FROM overrides").fetchone()
    con.execute("UPDATE overrides SET expires_at = '2099-01-01T00:00:00Z', directive = 'resume'")
    con.commit()
    res = CliRunner().invoke(main, ["receipts", "verify"])
    assert res.exit_code == 1, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "override resume on flag release-graph by dana differs from its receipt" in said, res.output
    assert f"expires_at '2099-01-01T00:00:00Z' (receipt: '{signed}')" in said and "directive 'resume'" in said
    log = " ".join(_run("log", "release-graph").output.split())
    assert "active override: resume by dana until 2099-01-01T00:00:00Z" in log
    assert "(not obeyed by the controller: override resume on flag release-graph by dana differs from its receipt" in log
    (active,) = json.loads(_run("log", "release-graph", "--json").output)["active_overrides"]  # scripts see it too
    assert "differs from its receipt" in active["not_obeyed"]
    con.execute("UPDATE overrides SET expires_at = ?, directive = 'rollback'", [signed])
    con.execute("INSERT INTO overrides SELECT 'forged', target_kind, 'release-api', 'hold', actor, rationale, "
                "created_at, '2099-01-01T00:00:00Z', 'forged' FROM overrides")
    con.commit()
    con.close()
    res = CliRunner().invoke(main, ["receipts", "verify"])
    assert res.exit_code == 1 and "override hold on flag release-api by dana was recorded by no action" \
        in " ".join(res.output.split()), res.output
    # The status shows the forged override for what it is: in the table, but not obeyed.
    flags = {f["flag"]: f for f in json.loads(_run("status", "--json").output)["flags"]}
    assert "recorded by no action" in flags["release-api"]["override"]["not_obeyed"]
    assert "not obeyed" in _run("status").output


def test_an_override_whose_receipt_was_rewritten_without_the_key_is_not_obeyed(state):
    # The record and its receipt's payload both say a later expiry, re-encoded without the
    # signing key: they agree with each other, but no key signed that receipt, so the
    # controller does not obey it; a receipt whose target is no mapping is named, not a crash.
    import base64
    import json
    import sqlite3

    from ops_platform.guard.runtime import open_store
    from ops_platform.receipts.keys import KeyRing

    assert _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--ttl", "1h",
                "--actor", "dana").exit_code == 0
    store = open_store(state)
    (override,) = store.overrides("release-graph")
    keys = KeyRing(state.keys_dir).verifiers()
    assert store.override_problem(override, keys) is None
    con = sqlite3.connect(state.control_store)
    (seq,) = con.execute("SELECT receipt_seq FROM actions WHERE action_id = ?", [override["action_id"]]).fetchone()
    (text,) = con.execute("SELECT envelope FROM ledger WHERE seq = ?", [seq]).fetchone()

    def rewrite(change) -> None:
        env = json.loads(text)
        statement = json.loads(base64.b64decode(env["payload"]))
        change(statement["predicate"])
        env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        con.execute("UPDATE ledger SET envelope = ? WHERE seq = ?", [json.dumps(env), seq])
        con.commit()

    rewrite(lambda p: p["result"].update(expires_at="2099-01-01T00:00:00.000000Z"))
    con.execute("UPDATE overrides SET expires_at = '2099-01-01T00:00:00.000000Z'")
    con.commit()
    (override,) = store.overrides("release-graph")
    assert "does not verify" in store.override_problem(override, keys)
    log = " ".join(_run("log", "release-graph").output.split())
    assert "(not obeyed by the controller: override hold on flag release-graph by dana: its receipt" in log
    rewrite(lambda p: p.update(target="flag release-graph"))
    assert "does not verify" in store.override_problem(override, keys)
    assert "release-graph" in store.override_problem(override, {})  # no key: nothing vouches for it
    res = CliRunner().invoke(main, ["receipts", "verify"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    status = _run("status")
    assert status.exit_code == 0 and "not obeyed" in status.output, status.output
    con.close()


def test_the_ledger_check_fails_when_a_receipted_flag_snapshot_changes(state):
    import dagster as dg

    from assets.receipts import ledger_verifies, receipts_ledger
    from resources import build_resources

    assert _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--ttl", "1h",
                "--actor", "dana").exit_code == 0

    def check():
        res = dg.materialize([receipts_ledger, ledger_verifies], resources=build_resources(state), raise_on_error=False)
        return res.get_asset_check_evaluations()[0]

    assert check().passed
    (snapshot,) = (state.home / "flags").glob("*.history/*.json")
    snapshot.write_text('{"tampered": true}')
    bad = check()
    assert not bad.passed and "differs from the receipt" in bad.description, bad.description


def test_status_shows_every_release_flag_with_its_ramp_and_the_override_in_force(state):
    import json

    live = state.home / "flags" / "flags.flagd.json"
    before = json.loads(_run("status", "--json").output)  # before any change: the world's seed, read only
    assert not live.exists() and before["flag_file"].endswith("flags.flagd.json")
    assert all(f["override"] is None and not f["frozen"] for f in before["flags"])
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "2h",
                "--actor", "dana").exit_code == 0
    FlagFile.load(live).freeze_all().save(live)
    res = _run("status")
    assert res.exit_code == 0, res.output
    api = next(line for line in res.output.splitlines() if line.strip().startswith("release-api "))
    assert "frozen, paused" in api and "hold by dana until" in api, res.output
    flags = {f["flag"]: f for f in json.loads(_run("status", "--json").output)["flags"]}
    assert set(flags) == set(FlagFile.load(live).release_flags)
    assert flags["release-api"]["override"]["directive"] == "hold" and flags["release-api"]["paused"]
    assert all(f["frozen"] and (f["override"] is None) == (name != "release-api") for name, f in flags.items())
    assert set(flags["release-graph"]["cohort_percent"]) == {"canary", "early", "general"}
    # flagd's kill switch: shown as such, and an override on it says callers get their default.
    doc = json.loads(live.read_text())
    doc["flags"]["release-graph"]["state"] = "DISABLED"
    live.write_text(json.dumps(doc))
    flags = {f["flag"]: f for f in json.loads(_run("status", "--json").output)["flags"]}
    assert flags["release-graph"]["disabled"] and flags["release-graph"]["state"].startswith("disabled")
    assert not flags["release-api"]["disabled"]
    held = _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--ttl", "1h", "--actor", "dana")
    assert held.exit_code == 0 and "DISABLED in the flag file" in " ".join(held.output.split()), held.output
    assert json.loads(live.read_text())["flags"]["release-graph"]["state"] == "DISABLED"  # kept as set
    # The live file gone after it was seeded: an error, not the world's flags with every hold undone.
    live.unlink()
    res = _run("status")
    assert res.exit_code == 1 and "missing, though it was seeded" in res.output, res.output


def test_reading_a_flag_on_a_fresh_state_folder_creates_no_store(state, tmp_path, monkeypatch):
    home = tmp_path / "fresh"
    home.mkdir()
    (home / "world").symlink_to(state.world, target_is_directory=True)
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(home))
    res = _run("log", "release-api")
    assert res.exit_code == 1 and "nothing was recorded yet" in res.output, res.output
    assert "no release flag 'release-apx'" in _run("log", "release-apx").output  # a typo is still named
    status = _run("status")
    assert status.exit_code == 0 and "release-api" in status.output, status.output
    assert sorted(p.name for p in home.iterdir()) == ["world"]  # no control store, no dagster_home
    # So verification still says there is no ledger here, rather than an empty one that verifies.
    verify = CliRunner().invoke(main, ["receipts", "verify"])
    assert verify.exit_code == 1 and "no control store" in verify.output, verify.output


def test_a_corrupt_merkle_edge_is_refused_before_a_wrong_root_is_signed(state):
    import sqlite3

    args = ["--rationale", REASON, "--ttl", "1h", "--actor", "dana"]
    assert _run("override", "release-graph", "--action", "hold", *args).exit_code == 0
    con = sqlite3.connect(state.control_store)
    con.execute("UPDATE ledger_head SET frontier = ?", ['{"size": 1, "stack": ["' + "ab" * 32 + '"]}'])
    con.commit()
    con.close()
    res = _run("override", "release-api", "--action", "hold", *args)
    assert res.exit_code != 0 and "Merkle edge" in res.output, res.output
    # Nothing was signed over the wrong root; verify names the edge.
    verify = CliRunner().invoke(main, ["receipts", "verify"])
    assert verify.exit_code == 1 and "Merkle edge (size 1) is not the tree" in " ".join(verify.output.split())


def test_a_retried_controller_rollback_does_not_undo_a_later_resume(state):
    # The controller's rollback of api-200 fails (the executor is down), so it stays queued;
    # dana then resumes the ramp (a client bug, the build is fine). The retry that runs the
    # rollback later completes it as skipped, receipted, and leaves the ramp as she set it.
    import json

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.roster import CONTROLLER_ACTOR, CONTROLLER_ROLES
    from ops_platform.guard.runtime import build_protocol
    from ops_platform.ramp.switchboard import live_flag_file

    live = live_flag_file(state.home, state.world)
    FlagFile.load(live).start_ramp("release-api", "api-200").set_percent(
        "release-api", {"canary": 20, "early": 10, "general": 0}).save(live)

    rollback = ActionRequest(actor=CONTROLLER_ACTOR, roles=CONTROLLER_ROLES, action="rollback", target_kind="flag",
                             target_id="release-api", rationale="api-availability fast burn on api/canary/api-200",
                             idempotency_key="ramp:api-200:rollback", params={"build_id": "api-200"})
    assert build_protocol(state, executors={"rollback": _FlagVolumeDown()}).submit(rollback).status == "requested"
    assert _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--ttl", "4h",
                "--actor", "dana").exit_code == 0
    assert CliRunner().invoke(main, ["receipts", "retry"]).exit_code == 0
    api = FlagFile.load(live).release("release-api")
    assert api.candidate == "api-200" and api.cohort_percent["canary"] == 20 and not api.paused
    receipt = json.loads(CliRunner().invoke(main, ["receipts", "show", _receipt_of(state, rollback)]).output)
    result = receipt["statement"]["predicate"]["result"]
    assert not result["applied"] and "resume by dana" in result["skipped"] and "came after" in result["skipped"]


def _receipt_of(state, request) -> str:
    from ops_platform.guard.runtime import open_store

    store = open_store(state)
    with store.read() as conn:
        seq = store.get_action(conn, request.action_id)["receipt_seq"]
    return next(e.receipt_id for e in store.ledger_entries() if e.seq == seq)


def test_a_retried_override_vouches_for_the_expiry_it_recorded_first(state):
    # An override whose receipt was never written (the process died after it was applied) is
    # run again by `receipts retry`: the record keeps its first expiry, and so does the result
    # the receipt signs (an expiry computed again would not match what is obeyed).
    from datetime import UTC, datetime, timedelta

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.runtime import open_store
    from ops_platform.ramp.flag_executor import FlagFileExecutor
    from ops_platform.ramp.switchboard import OverrideExecutor, live_flag_file

    store, live = open_store(state), live_flag_file(state.home, state.world)
    hold = ActionRequest(actor="dana", roles=("oncall",), action="override", target_kind="flag",
                         target_id="release-api", rationale=REASON, idempotency_key="hold-1", ttl_seconds=600,
                         params={"directive": "hold"})
    t0 = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    first = OverrideExecutor(store, FlagFileExecutor(live), clock=lambda: t0).apply(hold.action_id, hold)
    again = OverrideExecutor(store, FlagFileExecutor(live), clock=lambda: t0 + timedelta(seconds=65)).apply(
        hold.action_id, hold)
    (recorded,) = store.overrides("release-api")
    assert first.detail["expires_at"] == again.detail["expires_at"] == recorded["expires_at"] == \
        "2026-11-28T21:10:00.000000Z"
    assert first.detail["applied"] and not first.detail.get("applied_earlier")
    assert again.detail["applied_earlier"] is True and again.detail["after"]["release-api"]["paused"]


def test_a_pause_receipted_after_a_signer_outage_says_it_was_applied(state):
    # The signing key goes away as the controller pauses release-api: the pause is applied
    # (protective) and its receipt waits. Meanwhile the ramp moves to another build. The
    # receipt `receipts retry` signs says the pause was applied, by that first attempt: not
    # "skipped" for the build now on the flag, nor a change of nothing.
    import json

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.roster import CONTROLLER_ACTOR, CONTROLLER_ROLES
    from ops_platform.guard.runtime import build_protocol, open_store
    from ops_platform.ramp.flag_executor import FlagFileExecutor
    from ops_platform.ramp.switchboard import live_flag_file

    assert _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--ttl", "30m",
                "--actor", "dana").exit_code == 0  # a first receipt: the key is the ledger's from now on
    live = live_flag_file(state.home, state.world)
    FlagFile.load(live).start_ramp("release-api", "api-200").set_percent(
        "release-api", {"canary": 20, "early": 0, "general": 0}).save(live)
    pause = ActionRequest(actor=CONTROLLER_ACTOR, roles=CONTROLLER_ROLES, action="pause", target_kind="flag",
                          target_id="release-api", rationale="api-availability fast burn on api/canary/api-200",
                          idempotency_key="ramp:api-200:pause", params={"build_id": "api-200"})
    protocol = build_protocol(state, executors={"pause": FlagFileExecutor(live)})
    key = state.keys_dir / "active.key"
    key.rename(key.with_name("away.key"))
    assert protocol.submit(pause).status == "pending_receipt"
    key.with_name("away.key").rename(key)
    assert FlagFile.load(live).release("release-api").paused
    # The pipeline moves on: api-200 promoted after a human resume, api-201 ramping.
    FlagFile.load(live).resume("release-api").promote("release-api").start_ramp("release-api", "api-201").save(live)
    assert CliRunner().invoke(main, ["receipts", "retry"]).exit_code == 0
    store = open_store(state)
    with store.read() as conn:
        seq = store.get_action(conn, pause.action_id)["receipt_seq"]
    receipt_id = next(e.receipt_id for e in store.ledger_entries() if e.seq == seq)
    result = json.loads(CliRunner().invoke(main, ["receipts", "show", receipt_id]).output)["statement"]["predicate"][
        "result"]
    assert result["applied_earlier"] is True and "skipped" not in result
    assert CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0


def test_a_retried_freeze_leaves_alone_a_flag_a_human_overrode_since(state):
    # The controller's freeze fails (the flag volume is down) and waits; dana then resumes
    # release-graph. The retry freezes every release flag but that one: an override in force
    # when the freeze is carried out wins, as it would have when the freeze was planned.
    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.roster import CONTROLLER_ACTOR, CONTROLLER_ROLES
    from ops_platform.guard.runtime import build_protocol
    from ops_platform.ramp.controller import FREEZE_TARGET
    from ops_platform.ramp.switchboard import live_flag_file

    live = live_flag_file(state.home, state.world)

    freeze = ActionRequest(actor=CONTROLLER_ACTOR, roles=CONTROLLER_ROLES, action="freeze", target_kind="flag",
                           target_id=FREEZE_TARGET, rationale="approval-lag fast burn on approval",
                           idempotency_key="platform:approval-lag:fast:2026-03-08:freeze",
                           params={"slo": "approval-lag", "tier": "fast"})
    assert build_protocol(state, executors={"freeze": _FlagVolumeDown()}).submit(freeze).status == "requested"
    assert _run("override", "release-graph", "--action", "resume", "--rationale", REASON, "--ttl", "4h",
                "--actor", "dana").exit_code == 0
    assert CliRunner().invoke(main, ["receipts", "retry"]).exit_code == 0
    flags = FlagFile.load(live).releases()
    assert not flags["release-graph"].frozen
    assert all(s.frozen for f, s in flags.items() if f != "release-graph")
    # A resume says what it lifts: the freeze, and a pause whoever set it.
    FlagFile.load(live).resume("release-api").start_ramp("release-api", "api-200").set_percent(
        "release-api", {"canary": 20, "early": 0, "general": 0}).pause("release-api").freeze_all().save(live)
    res = _run("override", "release-api", "--action", "resume", "--rationale", REASON, "--ttl", "1h", "--actor", "dana")
    assert res.exit_code == 0, res.output
    assert "frozen by a platform freeze" in res.output
    assert "release-api is paused (api-200; canary 20%, early 0%, general 0%): the resume lifts that pause" in res.output


def test_an_override_without_a_signed_receipt_is_not_obeyed(state):
    # An override is obeyed only once its receipt is signed. One whose action still runs is
    # not obeyed yet (and the ledger lets it be); one whose action was dead-lettered without
    # a receipt is neither obeyed nor passed by `receipts verify`; a row that names an action
    # not its own is a hand-written one. A retried freeze goes over all three.
    import sqlite3

    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.roster import CONTROLLER_ACTOR, CONTROLLER_ROLES
    from ops_platform.guard.runtime import open_store
    from ops_platform.ramp.controller import FREEZE_TARGET
    from ops_platform.ramp.switchboard import live_flag_file
    from ops_platform.receipts.keys import KeyRing

    assert _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--ttl", "1h",
                "--actor", "dana").exit_code == 0
    live = live_flag_file(state.home, state.world)
    con = sqlite3.connect(state.control_store)
    for flag, status in (("release-api", "executing"), ("release-metering", "dlq")):
        con.execute("INSERT INTO actions (action_id, idempotency_key, actor, action, target_kind, target_id, "
                    "rationale, params, status, attempts, created_at, updated_at) SELECT ?, ?, actor, action, "
                    "target_kind, ?, rationale, params, ?, 1, created_at, updated_at FROM actions LIMIT 1",
                    [f"a-{flag}", f"k-{flag}", flag, status])
        con.execute("INSERT INTO overrides SELECT ?, target_kind, ?, 'resume', actor, rationale, created_at, "
                    "expires_at, ? FROM overrides WHERE target_id = 'release-graph'", [f"a-{flag}", flag, f"a-{flag}"])
    con.execute("INSERT INTO overrides SELECT 'forged', target_kind, 'release-policy', 'resume', actor, rationale, "
                "created_at, expires_at, action_id FROM overrides WHERE target_id = 'release-graph'")
    con.commit()
    con.close()
    store, keys = open_store(state), KeyRing(state.keys_dir).verifiers()
    problem = {f: store.override_problem(store.overrides(f)[-1], keys)
               for f in ("release-graph", "release-api", "release-metering", "release-policy")}
    assert problem["release-graph"] is None
    assert "not obeyed until its receipt is signed (its action is executing)" in problem["release-api"]
    assert "has no receipt of its own (its action is dlq)" in problem["release-metering"]
    assert "names action" in problem["release-policy"] and "not its own" in problem["release-policy"]
    said = " ".join(CliRunner().invoke(main, ["receipts", "verify"]).output.split())
    assert "release-metering by dana has no receipt of its own" in said and "release-api" not in said, said
    freeze = ActionRequest(actor=CONTROLLER_ACTOR, roles=CONTROLLER_ROLES, action="freeze", target_kind="flag",
                           target_id=FREEZE_TARGET, rationale="approval-lag fast burn on approval",
                           idempotency_key="platform:approval-lag:fast:2026-03-09:freeze", params={})
    from ops_platform.executors import guarded_executors

    executors = guarded_executors(store, lambda: live, verifiers=lambda: keys)
    executors["freeze"].apply(freeze.action_id, freeze)
    frozen = {f: s.frozen for f, s in FlagFile.load(live).releases().items()}
    assert not frozen["release-graph"] and frozen["release-api"] and frozen["release-metering"]
    assert frozen["release-policy"]


def test_an_expanding_action_is_not_run_while_the_ledger_refuses_receipts(state):
    # The ledger head edited outside the platform: no receipt can be appended, so a resume
    # (it widens what may ramp) fails closed before it touches the flag, saying why.
    import sqlite3

    assert _run("override", "release-graph", "--action", "hold", "--rationale", REASON, "--ttl", "1h",
                "--actor", "dana").exit_code == 0
    live = state.home / "flags" / "flags.flagd.json"
    before = live.read_bytes()
    con = sqlite3.connect(state.control_store)
    con.execute("UPDATE ledger_head SET entry_hash = 'edited'")
    con.commit()
    con.close()
    res = _run("override", "release-graph", "--action", "resume", "--rationale", REASON, "--ttl", "1h",
               "--actor", "dana")
    assert res.exit_code != 0 and "the receipts ledger refuses new receipts" in " ".join(res.output.split()), res.output
    assert live.read_bytes() == before and FlagFile.load(live).release("release-graph").paused


def test_a_ledger_cut_with_all_its_bookkeeping_fails_against_the_witness(state):
    # Someone who can write the store cuts the newest receipt and everything that names it
    # (its tree head, its action, its events) and rebuilds the ledger head: what is left
    # chains and verifies on its own, but not against the tree head witnessed beside the key.
    import json
    import sqlite3

    from ops_platform.receipts.ledger import LedgerEntry, leaf_data
    from ops_platform.receipts.merkle import CompactRange
    from ops_platform.receipts.witness import WITNESS

    for flag in ("release-api", "release-graph"):
        assert _run("override", flag, "--action", "hold", "--rationale", REASON, "--ttl", "1h",
                    "--actor", "dana").exit_code == 0
    (witnessed,) = json.loads((state.keys_dir / WITNESS).read_text())["ledgers"].values()
    assert witnessed["tree_size"] == 2 and CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0
    con = sqlite3.connect(state.control_store)
    con.row_factory = sqlite3.Row
    kept = [LedgerEntry(**dict(r)) for r in con.execute(
        "SELECT seq, receipt_id, envelope, prev_hash, entry_hash FROM ledger WHERE seq < 1 ORDER BY seq")]
    tree = CompactRange()
    for e in kept:
        tree.append(leaf_data(e))
    cut = con.execute("SELECT action_id FROM actions WHERE receipt_seq = 1").fetchone()["action_id"]
    con.executescript(f"""
        DELETE FROM ledger WHERE seq = 1; DELETE FROM checkpoints WHERE tree_size = 2;
        DELETE FROM overrides WHERE action_id = '{cut}'; DELETE FROM switchboard_events WHERE action_id = '{cut}';
        DELETE FROM actions WHERE action_id = '{cut}';""")
    con.execute("UPDATE ledger_head SET seq = 0, entry_hash = ?, frontier = ?",
                [kept[-1].entry_hash, json.dumps(tree.state())])
    con.commit()
    con.close()
    res = CliRunner().invoke(main, ["receipts", "verify"])
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and "a tree head of 2 was witnessed" in said and "newest receipts were cut" in said, said


def test_a_corrupt_signing_key_is_a_one_line_error_naming_it(state):
    # A key file that is not a key is a configuration error: said in one line (as a missing
    # key is), not a traceback from every guarded command.
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--ttl", "1h",
                "--actor", "dana").exit_code == 0  # the first key is made
    key = state.keys_dir / "active.key"
    key.write_text("garbage\n")
    for args in (["switchboard", "override", "release-api", "--action", "resume", "--rationale", REASON,
                  "--ttl", "1h", "--actor", "dana"], ["receipts", "retry"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and not isinstance(res.exception, ValueError), res.output
        assert f"private key {key} is not an unencrypted PEM PKCS8 key" in res.output, res.output


def test_status_without_a_world_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "keys"))
    res = _run("status")
    assert res.exit_code == 1 and "no flags yet: no world at" in res.output and "make demo" in res.output, res.output
    assert "Errno" not in res.output
    log = _run("log", "release-api")  # no world, no store: said, not a traceback
    assert log.exit_code == 1 and not isinstance(log.exception, FileNotFoundError), log.output


def test_an_empty_key_folder_is_named_not_taken_for_tampering(state, tmp_path, monkeypatch):
    assert _run("override", "release-api", "--action", "hold", "--rationale", REASON, "--actor", "dana").exit_code == 0
    assert "no public keys" not in _run("status").output
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "keys_typo"))
    for args in (("status",), ("status", "--json"), ("log", "release-api")):
        res = _run(*args)
        assert res.exit_code == 0 and f"no public keys in {tmp_path / 'keys_typo' / 'public'}" in res.output, res.output


def test_a_retry_that_fails_again_says_so(state):
    from ops_platform.guard.actions import ActionRequest
    from ops_platform.guard.roster import CONTROLLER_ACTOR, CONTROLLER_ROLES
    from ops_platform.guard.runtime import build_protocol

    pause = ActionRequest(actor=CONTROLLER_ACTOR, roles=CONTROLLER_ROLES, action="pause", target_kind="flag",
                          target_id="release-api", rationale="api-availability medium burn",
                          idempotency_key="ramp:api-200:pause", params={"build_id": "api-200"})
    proto = build_protocol(state, executors={"pause": _FlagVolumeDown()})
    assert proto.submit(pause).status == "requested"
    report = proto.retry()  # the flag volume is still down
    assert report.retried == 1 and report.to_dlq == 0
    assert report.failing == ["pause flag:release-api: execution failed: OSError: the flag volume is not mounted"], \
        report.failing


def test_a_state_folder_with_brackets_in_its_path_prints_as_written(state, tmp_path, monkeypatch):
    home = tmp_path / "s[/b] [ops-1]"  # a "[" folder holding "b] [ops-1]": Rich read "[/b]" as a tag
    home.mkdir(parents=True)
    (home / "world").symlink_to(state.world, target_is_directory=True)
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(home))
    res = _run("status")
    assert res.exit_code == 0 and "s[/b] [ops-1]" in " ".join(res.output.split()), res.output
