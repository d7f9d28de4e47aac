"""Release flag files: the model, its transitions, the guarded executor, and the real flagd
provider evaluating what we write (in-process, file resolver)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ProviderNotReadyError

from ops_platform.guard.actions import ActionRequest
from ops_platform.ramp import flags as flags_mod
from ops_platform.ramp.flag_executor import FlagFileExecutor, flag_file_lock
from ops_platform.ramp.flags import (
    COHORTS,
    MAX_APPLIED_ACTIONS,
    META_PAUSED,
    FlagFile,
    FlagFileError,
    RampBlocked,
)
from ops_platform.world import WorldConfig, generate_world

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
N_KEYS = 2000
TOLERANCE = 0.03
MISSING = "<flag-error>"


@pytest.fixture(scope="module")
def world_flags(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flags_world") / "w"
    generate_world(WorldConfig(seed=3, tenants=8, days=3, start_date=date(2026, 4, 1)), out)
    return out / "landing" / "flags" / "flags.flagd.json"


@pytest.fixture
def flag_path(world_flags, tmp_path) -> Path:
    """A private copy of the world's initial flag file."""
    path = tmp_path / "flags" / "flags.flagd.json"
    path.parent.mkdir()
    shutil.copyfile(world_flags, path)
    return path


# -- the real provider --------------------------------------------------------------------------


@contextmanager
def flagd_client(path: Path, **provider_kw) -> Iterator[OpenFeatureClient]:
    """The OpenFeature flagd provider in file mode, under its own domain so tests stay apart."""
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path),
                             **provider_kw)
    domain = f"test-flags-{uuid.uuid4().hex}"
    try:
        api.set_provider_and_wait(provider, domain=domain)
        yield api.get_client(domain=domain)
    finally:
        provider.shutdown()  # stops the file watcher thread, even when loading failed


def ctx(tenant: str, cohort: str | None) -> EvaluationContext:
    return EvaluationContext(targeting_key=tenant, attributes={} if cohort is None else {"cohort": cohort})


def resolve(client: OpenFeatureClient, flag: str, cohort: str, n: int = N_KEYS) -> list[str]:
    return [client.get_string_value(flag, MISSING, ctx(f"tenant-{i:05d}", cohort)) for i in range(n)]


def candidate_shares(client: OpenFeatureClient, flag: str, stable: str, candidate: str) -> dict[str, float]:
    shares = {}
    for cohort in COHORTS:
        values = resolve(client, flag, cohort)
        assert set(values) <= {stable, candidate}, set(values) - {stable, candidate}  # no error defaults
        shares[cohort] = values.count(candidate) / len(values)
    return shares


def assert_split(client: OpenFeatureClient, ff: FlagFile, flag: str) -> None:
    state = ff.release(flag)
    shares = candidate_shares(client, flag, state.stable, state.candidate or "<none>")
    for cohort in COHORTS:
        want = state.cohort_percent[cohort] / 100
        assert abs(shares[cohort] - want) <= TOLERANCE, (cohort, shares[cohort], want)


# -- model ---------------------------------------------------------------------------------------


def test_cohorts_match_the_world():
    from ops_platform.world.catalog import COHORTS as WORLD_COHORTS

    assert COHORTS == WORLD_COHORTS


def test_world_file_loads_and_round_trips_byte_identical(flag_path, tmp_path):
    ff = FlagFile.load(flag_path)
    assert ff.release_flags == ("release-api", "release-graph", "release-metering", "release-policy",
                                "release-receipts", "release-switchboard")
    api_state = ff.release("release-api")
    assert (api_state.stable, api_state.candidate) == ("api-100", None)
    assert not api_state.paused and not api_state.frozen
    assert dict(api_state.cohort_percent) == dict.fromkeys(COHORTS, 0) and api_state.applied_actions == ()
    out = tmp_path / "again.json"
    sha = ff.save(out)
    assert out.read_bytes() == flag_path.read_bytes()
    assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
    # A file carrying every kind of state round-trips too.
    busy = (ff.start_ramp("release-api", "api-101", at=T0, action_id="a1")
            .set_percent("release-api", {"canary": 20}, at=T0).freeze_all(at=T0, action_id="f1"))
    busy.save(out)
    first = out.read_bytes()
    assert FlagFile.load(out) == busy
    FlagFile.load(out).save(out)
    assert out.read_bytes() == first
    assert not list(out.parent.glob(".*.tmp"))  # no temp files left behind


def test_transitions(flag_path):
    ff = FlagFile.load(flag_path)
    f = "release-api"
    started = ff.start_ramp(f, "api-101", at=T0)
    s = started.release(f)
    assert (s.stable, s.candidate, dict(s.cohort_percent), s.paused) == ("api-100", "api-101", {
        "canary": 0, "early": 0, "general": 0}, False)
    assert s.changed_at == T0 and not s.exposed
    assert ff.release(f).candidate is None  # pure: the original is untouched

    ramped = started.set_percent(f, {"canary": 20}, at=T0 + timedelta(minutes=30), action_id="step-1")
    s = ramped.release(f)
    assert dict(s.cohort_percent) == {"canary": 20, "early": 0, "general": 0} and s.exposed
    assert s.applied_actions == ("step-1",) and s.changed_at == T0 + timedelta(minutes=30)
    assert ramped.release("release-graph") == ff.release("release-graph")  # other flags untouched

    paused = ramped.pause(f, at=T0)
    assert paused.release(f).paused and dict(paused.release(f).cohort_percent) == dict(s.cohort_percent)
    with pytest.raises(RampBlocked, match="paused"):
        paused.set_percent(f, {"early": 5})
    with pytest.raises(RampBlocked):
        paused.promote(f)
    shrunk = paused.set_percent(f, {"canary": 10}, at=T0)  # shrinking a held ramp is allowed
    assert shrunk.release(f).cohort_percent["canary"] == 10

    resumed = paused.resume(f, at=T0).set_percent(f, {"canary": 100, "early": 100, "general": 33}, at=T0)
    s = resumed.release(f)
    assert not s.paused and dict(s.cohort_percent) == {"canary": 100, "early": 100, "general": 33}

    rolled = resumed.rollback(f, at=T0)
    s = rolled.release(f)
    assert s.paused and s.candidate == "api-101" and not s.exposed

    frozen = resumed.freeze_all(at=T0, action_id="freeze-1")
    assert all(st.frozen and st.applied_actions[-1] == "freeze-1" for st in frozen.releases().values())
    assert frozen.has_applied("freeze-1") and not frozen.has_applied("nope")
    with pytest.raises(RampBlocked, match="frozen"):
        frozen.set_percent(f, {"general": 50})
    thawed = frozen.resume(f, at=T0)
    assert not thawed.release(f).frozen and thawed.release("release-graph").frozen

    promoted = thawed.promote(f, at=T0)
    s = promoted.release(f)
    assert (s.stable, s.candidate, s.exposed) == ("api-101", None, False)
    assert "targeting" not in promoted.to_dict()["flags"][f]


def test_transitions_refuse_what_makes_no_sense(flag_path):
    ff = FlagFile.load(flag_path)
    f = "release-api"
    with pytest.raises(KeyError, match="release-nope"):
        ff.pause("release-nope")
    with pytest.raises(ValueError, match="start_ramp"):
        ff.set_percent(f, {"canary": 5})
    with pytest.raises(ValueError, match="already the stable"):
        ff.start_ramp(f, "api-100")
    with pytest.raises(ValueError, match="no candidate"):
        ff.promote(f)
    ramp = ff.start_ramp(f, "api-101", at=T0)
    for bad in ({"beta": 5}, {"canary": 101}, {"canary": -1}, {"canary": 5.5}, {"canary": True}):
        with pytest.raises(ValueError):
            ramp.set_percent(f, bad)
    live = ramp.set_percent(f, {"canary": 5}, at=T0)
    retried = live.start_ramp(f, "api-101", at=T0)  # a retried start keeps the split
    assert retried.release(f).cohort_percent["canary"] == 5
    with pytest.raises(ValueError, match="still serves traffic"):
        live.start_ramp(f, "api-102")
    assert live.rollback(f, at=T0).start_ramp(f, "api-102", at=T0).release(f).candidate == "api-102"
    with pytest.raises(ValueError, match="timezone-aware"):
        ff.pause(f, at=datetime(2026, 4, 1))
    with pytest.raises(ValueError, match="whitespace"):
        ff.pause(f, at=T0, action_id="two words")


def test_applied_actions_are_bounded(flag_path):
    ff = FlagFile.load(flag_path)
    for i in range(MAX_APPLIED_ACTIONS + 5):
        ff = ff.pause("release-api", at=T0, action_id=f"a{i}")
    ids = ff.release("release-api").applied_actions
    assert len(ids) == MAX_APPLIED_ACTIONS and ids[-1] == f"a{MAX_APPLIED_ACTIONS + 4}" and "a0" not in ids


F = '$.flags["release-api"]'  # JSON path of the flag in BASE
BASE = {"flags": {"release-api": {"state": "ENABLED", "defaultVariant": "stable",
                                  "variants": {"stable": "api-100", "candidate": "api-101"}}}}


def _with(path: str, value) -> dict:
    doc = json.loads(json.dumps(BASE))
    node = doc["flags"]["release-api"]
    *parents, last = path.split("/")
    for p in parents:
        node = node[p]
    node[last] = value
    return doc


def _rule(canary_branch, attribute: str = "cohort") -> dict:
    return {"if": [{"==": [{"var": attribute}, "canary"]}, canary_branch,
                   {"==": [{"var": "cohort"}, "early"]}, "stable",
                   {"==": [{"var": "cohort"}, "general"]}, "stable", "stable"]}


@pytest.mark.parametrize(("doc", "json_path", "problem"), [
    ("{not json", "$", "line 1 column 2"),
    ('{"flags": {}, "flags": {}}', "$", "duplicate key 'flags'"),
    ({"flags": []}, "$.flags", "expected an object of flags"),
    (_with("state", "OFF"), f"{F}.state", "'ENABLED' or 'DISABLED'"),
    (_with("variants", {"candidate": "x"}), f"{F}.variants.stable", "build id"),
    (_with("variants/blue", "x"), f"{F}.variants.blue", "unknown variant"),
    (_with("defaultVariant", "candidate"), f"{F}.defaultVariant", "expected 'stable'"),
    (_with("rollout", 5), f"{F}.rollout", "unknown field"),
    (_with("targeting", {"fractional": [["candidate", 5], ["stable", 95]]}), f"{F}.targeting",
     "unknown targeting"),
    (_with("targeting", _rule({"fractional": [["candidate", 5], ["stable", 90]]})),
     f"{F}.targeting.if[1].fractional", "100 - p"),
    (_with("targeting", _rule("stable", attribute="tier")), f"{F}.targeting.if[0]", '"cohort"'),
    (_with("metadata", {META_PAUSED: "yes"}), f'{F}.metadata["summit.paused"]', "true or false"),
    (_with("metadata", {"owners": ["sre"]}), f"{F}.metadata.owners", "string, number or boolean"),
    (_with("metadata", {"summit.changedAt": "yesterday"}), f'{F}.metadata["summit.changedAt"]', "ISO 8601"),
])
def test_malformed_file_names_file_and_field(tmp_path, doc, json_path, problem):
    path = tmp_path / "bad.flagd.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ValueError) as info:
        FlagFile.load(path)
    err = info.value
    assert isinstance(err, FlagFileError) and err.json_path == json_path
    assert str(err).startswith(f"{path}: {json_path}: ") and problem in str(err), str(err)


# -- evaluated by the real OpenFeature flagd provider --------------------------------------------


def test_provider_resolves_the_configured_split(flag_path):
    f = "release-api"
    ff = FlagFile.load(flag_path).start_ramp(f, "api-101", at=T0, action_id="start-1")
    first = ff.set_percent(f, {"canary": 20}, at=T0)
    first.save(flag_path)
    with flagd_client(flag_path) as client:
        assert_split(client, first, f)
        # Other flags, a missing targeting key and an unknown cohort all get stable.
        assert set(resolve(client, "release-graph", "canary", 200)) == {"graph-100"}
        assert client.get_string_value(f, MISSING, ctx("", "canary")) == "api-100"
        assert set(resolve(client, f, "beta", 200)) == {"api-100"}
        details = client.get_string_details(f, MISSING, ctx("tenant-1", "canary"))
        # flagd serves flag metadata with every evaluation: the controller's state is visible.
        assert details.flag_metadata["summit.paused"] is False
        assert details.flag_metadata["summit.appliedActions"] == "start-1"
    second = first.set_percent(f, {"canary": 100, "early": 100, "general": 33}, at=T0)
    second.save(flag_path)
    with flagd_client(flag_path) as client:
        assert_split(client, second, f)


def test_provider_ramp_is_sticky_as_it_widens(flag_path):
    f = "release-api"
    base = FlagFile.load(flag_path).start_ramp(f, "api-101", at=T0)
    picks = []
    for pct in (5, 25, 50):
        base.set_percent(f, {"general": pct}, at=T0).save(flag_path)
        with flagd_client(flag_path) as client:
            picks.append({i for i, v in enumerate(resolve(client, f, "general")) if v == "api-101"})
    assert picks[0] <= picks[1] <= picks[2]


def test_provider_pause_holds_split_and_rollback_serves_stable(flag_path):
    f = "release-api"
    live = FlagFile.load(flag_path).start_ramp(f, "api-101", at=T0).set_percent(
        f, {"canary": 100, "early": 50, "general": 10}, at=T0)
    live.save(flag_path)
    with flagd_client(flag_path) as client:
        before = {c: resolve(client, f, c) for c in COHORTS}
    paused = live.pause(f, at=T0)
    paused.save(flag_path)
    with flagd_client(flag_path) as client:
        assert {c: resolve(client, f, c) for c in COHORTS} == before  # same tenants, same builds
        assert client.get_string_details(f, MISSING, ctx("t", "early")).flag_metadata["summit.paused"] is True
        assert_split(client, paused, f)
    paused.rollback(f, at=T0).save(flag_path)
    with flagd_client(flag_path) as client:
        for cohort in COHORTS:
            assert set(resolve(client, f, cohort)) == {"api-100"}


def test_running_provider_picks_up_an_atomic_save(flag_path):
    f = "release-api"
    ff = FlagFile.load(flag_path).start_ramp(f, "api-101", at=T0).set_percent(f, {"canary": 100}, at=T0)
    ff.save(flag_path)
    # The file watcher polls every deadline_ms (not the documented 5 s) and reloads on a newer mtime.
    with flagd_client(flag_path, deadline_ms=100) as client:
        assert client.get_string_value(f, MISSING, ctx("t1", "canary")) == "api-101"
        ff.rollback(f, at=T0).save(flag_path)
        deadline = time.monotonic() + 5
        while client.get_string_value(f, MISSING, ctx("t1", "canary")) != "api-100":
            assert time.monotonic() < deadline, "provider never reloaded the file"
            time.sleep(0.05)


def test_provider_refuses_what_the_model_refuses(tmp_path):
    """Non-scalar metadata makes flagd reject the whole file, which is why the model stores
    action ids as one space-separated string and checks metadata on load."""
    path = tmp_path / "bad.flagd.json"
    path.write_text(json.dumps(_with("metadata", {"summit.appliedActions": ["a", "b"]})))
    with pytest.raises(FlagFileError):
        FlagFile.load(path)
    with pytest.raises(ProviderNotReadyError), flagd_client(path):
        pass


# -- the guarded executor ------------------------------------------------------------------------


def request(action: str, target: str = "release-api", key: str | None = None, **kw) -> ActionRequest:
    return ActionRequest(actor=kw.pop("actor", "ramp-controller"),
                         roles=kw.pop("roles", ("ramp_controller",)), action=action,
                         target_kind=kw.pop("target_kind", "flag"), target_id=target,
                         rationale="burn rate 14x over 1h and 5m",
                         idempotency_key=key or f"{action}-{uuid.uuid4()}", **kw)


def _live(flag_path: Path) -> FlagFile:
    ff = (FlagFile.load(flag_path).start_ramp("release-api", "api-101", at=T0)
          .set_percent("release-api", {"canary": 100, "early": 20}, at=T0))
    ff.save(flag_path)
    return ff


def test_executor_applies_an_action_id_once(flag_path):
    _live(flag_path)
    ex = FlagFileExecutor(flag_path, clock=lambda: T0)
    req = request("rollback", key="rb-1")
    first = ex.apply(req.action_id, req)
    after_first = flag_path.read_bytes()
    (snapshot,) = first.files  # an immutable copy: later writes to the live file keep receipts verifiable
    assert snapshot.parent == flag_path.parent / "flags.flagd.json.history"
    assert snapshot.read_bytes() == flag_path.read_bytes()
    d = first.detail
    assert d["applied"] is True and d["action_id"] == req.action_id
    assert d["before"]["release-api"]["cohort_percent"] == {"canary": 100, "early": 20, "general": 0}
    assert d["after"]["release-api"] == {"stable": "api-100", "candidate": "api-101", "paused": True,
                                         "frozen": False, "changed_at": "2026-04-02T12:00:00.000000Z",
                                         "cohort_percent": {"canary": 0, "early": 0, "general": 0}}
    assert d["sha256"] == hashlib.sha256(after_first).hexdigest()
    assert first.digests == {snapshot: d["sha256"]}  # the receipt pins the copy as written
    json.dumps(d)  # receipt-ready
    # A retry (another tick, or after a crash) changes nothing, even at a later time; a copy
    # altered since is written again, so that the digest the receipt pins holds on disk.
    snapshot.write_text("altered")
    again = FlagFileExecutor(flag_path, clock=lambda: T0 + timedelta(hours=1)).apply(req.action_id, req)
    assert again.detail["applied"] is False and again.detail["after"] == d["after"]
    assert flag_path.read_bytes() == after_first
    assert again.files == (snapshot,) and snapshot.read_bytes() == after_first
    assert FlagFile.load(flag_path).release("release-api").applied_actions == (req.action_id,)


def test_executor_actions(flag_path):
    _live(flag_path)
    ex = FlagFileExecutor(flag_path, clock=lambda: T0)
    pause = request("pause")
    ex.apply(pause.action_id, pause)
    ff = FlagFile.load(flag_path)
    assert ff.release("release-api").paused and ff.release("release-api").cohort_percent["canary"] == 100
    freeze = request("freeze", target="*")
    res = ex.apply(freeze.action_id, freeze)
    assert set(res.detail["after"]) == set(ff.release_flags)
    assert all(s.frozen for s in FlagFile.load(flag_path).releases().values())
    resume = request("resume", actor="dana", roles=("oncall",))
    ex.apply(resume.action_id, resume)
    ff = FlagFile.load(flag_path)
    assert not ff.release("release-api").held and ff.release("release-graph").frozen
    assert ff.release("release-api").applied_actions == (pause.action_id, freeze.action_id, resume.action_id)
    with pytest.raises(ValueError, match="cannot 'ramp_up'"):
        ex.apply("x", request("ramp_up"))
    with pytest.raises(ValueError, match="targets kind 'flag'"):
        ex.apply("x", request("pause", target_kind="tenant"))
    with pytest.raises(KeyError, match="release-nope"):
        ex.apply("x", request("pause", target="release-nope"))
    with pytest.raises(FlagFileError):
        (flag_path.parent / "broken.json").write_text("{")
        FlagFileExecutor(flag_path.parent / "broken.json").apply("x", request("pause"))


def test_executor_holds_only_the_build_the_evidence_names(flag_path):
    _live(flag_path)  # api-101 ramping on release-api
    ex = FlagFileExecutor(flag_path, clock=lambda: T0)
    before = flag_path.read_bytes()
    stale = request("rollback", params={"build_id": "api-099"})  # promoted long ago, or never here
    res = ex.apply(stale.action_id, stale)
    assert res.detail["applied"] is False and "carries candidate 'api-101', not 'api-099'" in res.detail["skipped"]
    assert flag_path.read_bytes() == before and res.detail["after"] == res.detail["before"]
    named = request("pause", params={"build_id": "api-101"})
    assert ex.apply(named.action_id, named).detail["applied"] is True
    assert FlagFile.load(flag_path).release("release-api").paused
    # A freeze is the platform's, whichever build's burn set it off.
    freeze = request("freeze", target="all-release-flags", params={"build_id": "api-099"})
    res = ex.apply(freeze.action_id, freeze)
    assert res.detail["applied"] is True and "skipped" not in res.detail
    assert all(r.frozen for r in FlagFile.load(flag_path).releases().values())


def test_a_freeze_leaves_exempt_flags_alone(flag_path):
    _live(flag_path)
    freeze = request("freeze", target="*", params={"exempt": ["release-api"]})
    res = FlagFileExecutor(flag_path, clock=lambda: T0).apply(freeze.action_id, freeze)
    ff = FlagFile.load(flag_path)
    assert not ff.release("release-api").frozen and ff.release("release-graph").frozen
    assert "release-api" not in res.detail["after"]


def test_executor_crash_before_rename_leaves_the_file_whole(flag_path, monkeypatch):
    _live(flag_path)
    before = flag_path.read_bytes()
    ex = FlagFileExecutor(flag_path, clock=lambda: T0)
    req = request("rollback")

    def crash(src, dst):
        raise OSError("power cut")

    with monkeypatch.context() as m:
        m.setattr(flags_mod.os, "replace", crash)
        with pytest.raises(OSError, match="power cut"):
            ex.apply(req.action_id, req)
    assert flag_path.read_bytes() == before and not list(flag_path.parent.glob(".*.tmp"))
    assert ex.apply(req.action_id, req).detail["applied"] is True  # the retry applies it, once


def test_executor_waits_for_the_lock_and_gives_up_cleanly(flag_path):
    _live(flag_path)
    before = flag_path.read_bytes()
    req = request("pause")
    with flag_file_lock(flag_path), pytest.raises(TimeoutError, match="held by another process"):
        FlagFileExecutor(flag_path, lock_timeout_seconds=0.2).apply(req.action_id, req)
    assert flag_path.read_bytes() == before
    assert FlagFileExecutor(flag_path).apply(req.action_id, req).detail["applied"] is True


RACER = """
import json, sys, time
from ops_platform.guard.actions import ActionRequest
from ops_platform.ramp.flag_executor import FlagFileExecutor, flag_file_lock
path, action, target, key, start_at = sys.argv[1:6]
req = ActionRequest(actor="ramp-controller", roles=("ramp_controller",), action=action, target_kind="flag",
                    target_id=target, rationale="race", idempotency_key=key)
ex = FlagFileExecutor(path)
while time.time() < float(start_at):
    time.sleep(0.001)
print(json.dumps({"key": key, "applied": ex.apply(req.action_id, req).detail["applied"]}))
"""


def test_executor_serialises_racing_processes(flag_path):
    _live(flag_path)
    start_at = time.time() + 1.5
    jobs = [("pause", "release-api", "pause-api")] * 3 + [
        ("freeze", "*", "freeze-all"), ("rollback", "release-graph", "rb-graph"),
        ("pause", "release-metering", "pause-metering"), ("rollback", "release-api", "rb-api")]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(flag_path), a, t, k, str(start_at)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a, t, k in jobs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    applied = [r["key"] for r in results if r["applied"]]
    assert sorted(applied) == ["freeze-all", "pause-api", "pause-metering", "rb-api", "rb-graph"]
    ff = FlagFile.load(flag_path)  # no update was lost
    ids = {k: request("pause", key=k).action_id for k in {j[2] for j in jobs}}
    api_state = ff.release("release-api")
    assert sorted(api_state.applied_actions) == sorted([ids["pause-api"], ids["freeze-all"], ids["rb-api"]])
    assert api_state.paused and api_state.frozen and not api_state.exposed
    assert ff.release("release-graph").paused and ff.release("release-metering").paused
    assert all(s.frozen for s in ff.releases().values())


def test_executor_through_the_guard_leaves_a_receipt_with_the_file_digest(flag_path, tmp_path):
    from ops_platform.control.store import ControlStore
    from ops_platform.files import file_sha256
    from ops_platform.guard.policy import RegoPolicy
    from ops_platform.guard.protocol import ActionProtocol
    from ops_platform.receipts.keys import KeyRing

    _live(flag_path)
    store = ControlStore(f"sqlite:///{tmp_path / 'control.sqlite'}")
    store.migrate("2026-01-01T00:00:00Z")
    ex = FlagFileExecutor(flag_path)
    proto = ActionProtocol(store, KeyRing.load_or_create(tmp_path / "keys").signer, RegoPolicy(),
                           {a: ex for a in ("pause", "rollback", "freeze", "resume")})
    out = proto.submit(request("rollback", key="rb"))
    assert out.status == "completed"
    statement = json.loads(base64.b64decode(json.loads(store.entry(out.receipt_id).envelope)["payload"]))
    digests = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    snapshot = statement["predicate"]["result"]["snapshot"]
    assert digests[snapshot] == file_sha256(flag_path) == statement["predicate"]["result"]["sha256"]
    assert statement["predicate"]["result"]["after"]["release-api"]["paused"] is True
    denied = proto.submit(request("resume", key="resume"))  # the controller may never resume
    assert denied.status == "denied" and FlagFile.load(flag_path).release("release-api").paused
    # Later writes to the live file leave earlier receipts verifiable (they name snapshots).
    proto.submit(request("freeze", key="fz"))
    from ops_platform.guard.runtime import file_digest_in
    from ops_platform.receipts.ledger import verify_ledger

    ring = KeyRing.load_or_create(tmp_path / "keys")
    report = verify_ledger(store.ledger_entries(), store.checkpoints(), ring.verifiers(),
                           file_digest=file_digest_in(tmp_path))
    assert report.ok, report.errors
    assert file_sha256(flag_path) != statement["predicate"]["result"]["sha256"]
