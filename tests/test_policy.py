"""The guard's policy decisions: least privilege, caching, reloads, threads, and OPA parity."""

from __future__ import annotations

import json
import random
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import regorus

from ops_platform.guard import (
    Decision,
    DecisionInput,
    OpaHttpPolicy,
    PolicyEngine,
    PolicyError,
    Principal,
    RegoPolicy,
    policy_from_env,
)
from ops_platform.guard.policy import DEFAULT_POLICY_DIR

GOOD_RATIONALE = "checkout p99 burning 14x; pausing ramp until rollback lands"
ACTIONS = ("pause", "rollback", "freeze", "resume", "ramp_up", "override", "backup", "restore",
           "dr_drill", "export_release", "drop_tables")
# What each role may do without further conditions (override is conditional, tested apart).
EXPECTED = {
    "ramp_controller": {"pause", "rollback", "freeze"},
    "oncall": {"pause", "rollback", "freeze", "resume"},
    "finops": {"export_release"},
    "sre": {"backup", "restore", "dr_drill"},
    "intern": set(),
}


def ask(roles: tuple[str, ...] | list[str], action: str, rationale: str = "",
        ttl: int | None = None, pid: str = "p1", kind: str = "ramp", rid: str = "r1") -> DecisionInput:
    return DecisionInput(Principal(pid, tuple(roles)), action, kind, rid, rationale, ttl)


def matrix() -> list[DecisionInput]:
    """Every role x action, plus the override edge cases and role-less principals."""
    inputs = [ask((role,), action, pid=f"{role}-1") for role in EXPECTED for action in ACTIONS]
    inputs += [
        ask(("oncall",), "override", GOOD_RATIONALE, 3600),
        ask(("oncall",), "override", "x" * 20, 1),
        ask(("oncall",), "override", "x" * 20, 86400),
        ask(("oncall",), "override", "x" * 19, 3600),
        ask(("oncall",), "override", "   too short     padded      ", 3600),
        ask(("oncall",), "override", GOOD_RATIONALE, None),
        ask(("oncall",), "override", GOOD_RATIONALE, 0),
        ask(("oncall",), "override", GOOD_RATIONALE, 86401),
        ask(("oncall",), "override", "", None),
        ask(("ramp_controller",), "override", GOOD_RATIONALE, 3600),
        ask(("ramp_controller", "oncall"), "resume", pid="both"),
        ask((), "pause", pid="stranger"),
        ask(("finops",), "export_release", kind="export", rid="2026-03"),
    ]
    return inputs


@pytest.fixture(scope="module")
def rego() -> RegoPolicy:
    return RegoPolicy()


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, dst)
    return dst


def edit_grants(policy_dir: Path, edit: Callable[[dict], None]) -> None:
    path = policy_dir / "data.json"
    doc = json.loads(path.read_text())
    edit(doc["summit"]["grants"])
    path.write_text(json.dumps(doc, indent=2))


# --- least privilege -----------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(EXPECTED))
@pytest.mark.parametrize("action", [a for a in ACTIONS if a != "override"])
def test_grant_matrix(rego: RegoPolicy, role: str, action: str):
    d = rego.decide(ask((role,), action, pid=f"{role}-grid"))
    assert d.allow is (action in EXPECTED[role]), d
    assert d.cacheable is True  # only roles and action were read
    assert role in d.reason and action in d.reason
    assert d.reason.startswith("allowed:" if d.allow else "denied:")
    assert d.policy_version == rego.version


@pytest.mark.parametrize("action", ["resume", "ramp_up", "export_release", "override", "restore"])
def test_ramp_controller_cannot_expand_or_override(rego: RegoPolicy, action: str):
    d = rego.decide(ask(("ramp_controller",), action, GOOD_RATIONALE, 3600))
    assert not d.allow
    assert "ramp_controller" in d.reason and action in d.reason


def test_deny_reason_names_who_could(rego: RegoPolicy):
    d = rego.decide(ask(("ramp_controller",), "resume"))
    assert d.reason == "denied: role(s) ramp_controller may not resume (granted to: oncall)"
    assert "no role is granted ramp_up" in rego.decide(ask(("oncall",), "ramp_up")).reason


@pytest.mark.parametrize("rationale,ttl", [
    ("x" * 20, 1), ("x" * 20, 86400), (GOOD_RATIONALE, 3600), ("a b c d e f g h i j k l m n o p q r s t", 60),
])
def test_oncall_override_allowed_with_rationale_and_ttl(rego: RegoPolicy, rationale: str, ttl: int):
    d = rego.decide(ask(("oncall",), "override", rationale, ttl))
    assert d.allow, d
    assert d.reason == "allowed: role(s) oncall may override"
    assert d.cacheable is False


@pytest.mark.parametrize("rationale,ttl,needle", [
    ("x" * 19, 3600, "rationale of at least 20 non-blank characters (got 19)"),
    ("", 3600, "rationale of at least 20 non-blank characters (got 0)"),
    ("  padded    to    look    long    ", 3600, "rationale of at least 20 non-blank characters (got 16)"),
    ("\t\n " * 10, 3600, "rationale of at least 20 non-blank characters (got 0)"),
    # Invisible characters: zero-width space, word joiner, no-break space, Hangul filler, braille blank.
    ("\u200b" * 20, 3600, "rationale of at least 20 non-blank characters (got 0)"),
    ("fix" + "\u2060\u00a0\u3164\u2800" * 10, 3600, "rationale of at least 20 non-blank characters (got 3)"),
    # Marks alone are seen as nothing: variation selectors, the combining grapheme joiner; and
    # the blank Khmer inherent vowels and musical null notehead.
    ("\ufe0f" * 25, 3600, "rationale of at least 20 non-blank characters (got 0)"),
    ("ok" + "\u034f\u17b4\u17b5\U0001d159" * 10, 3600, "rationale of at least 20 non-blank characters (got 2)"),
    # A letter with its marks counts once, as read: the Devanagari virama and vowel sign and a
    # combining acute are part of the letter before them.
    ("cafe\u0301 \u0928\u092e\u0938\u094d\u0924\u0947 \u4e0a\u6e38DNS\u6545\u969c", 3600,
     "rationale of at least 20 non-blank characters (got 15)"),
    (GOOD_RATIONALE, None, "ttl_seconds in (0, 86400] (got null)"),
    (GOOD_RATIONALE, 0, "ttl_seconds in (0, 86400] (got 0)"),
    (GOOD_RATIONALE, -60, "ttl_seconds in (0, 86400] (got -60)"),
    (GOOD_RATIONALE, 86401, "ttl_seconds in (0, 86400] (got 86401)"),
])
def test_oncall_override_requirements(rego: RegoPolicy, rationale: str, ttl: int | None, needle: str):
    d = rego.decide(ask(("oncall",), "override", rationale, ttl))
    assert not d.allow
    assert needle in d.reason, d.reason
    assert d.cacheable is False
    # Only the failed requirement is named.
    other = "ttl_seconds" if "rationale" in needle else "rationale"
    assert other not in d.reason


def test_override_names_every_failed_requirement(rego: RegoPolicy):
    d = rego.decide(ask(("oncall",), "override", "because", None))
    assert not d.allow
    assert "rationale of at least 20" in d.reason and "ttl_seconds in (0, 86400]" in d.reason


def test_ttl_must_be_whole_seconds_and_a_number(rego: RegoPolicy):
    for ttl in (1.5, True, "3600"):
        d = rego.decide(ask(("oncall",), "override", GOOD_RATIONALE, ttl))  # type: ignore[arg-type]
        assert not d.allow and "ttl_seconds" in d.reason, (ttl, d)


def test_unknown_principal_and_unknown_role_denied(rego: RegoPolicy):
    d = rego.decide(ask((), "pause", pid="stranger"))
    assert not d.allow and d.reason == 'denied: principal "stranger" has no roles'
    d = rego.decide(ask(("intern", "visitor"), "pause"))
    assert not d.allow and "intern, visitor may not pause" in d.reason


def test_finops_may_export_release_only(rego: RegoPolicy):
    assert rego.decide(ask(("finops",), "export_release", kind="export")).allow
    for action in ("restore", "pause", "resume", "override"):
        assert not rego.decide(ask(("finops",), action, GOOD_RATIONALE, 60)).allow


def test_any_granting_role_is_enough(rego: RegoPolicy):
    d = rego.decide(ask(("ramp_controller", "oncall"), "resume"))
    assert d.allow and d.reason == "allowed: role(s) oncall may resume"


def test_malformed_roles_grant_nothing(rego: RegoPolicy):
    with pytest.raises(TypeError):
        Principal("p", "oncall")  # type: ignore[arg-type]
    assert Principal("p", ["oncall"]).roles == ("oncall",)  # type: ignore[arg-type]


def test_to_input_shape():
    inp = DecisionInput(Principal("ana", ("oncall",)), "override", "ramp", "checkout-v2",
                        GOOD_RATIONALE, 600, {"step": 3})
    assert inp.to_input() == {
        "principal": {"id": "ana", "roles": ["oncall"]},
        "action": "override",
        "resource": {"kind": "ramp", "id": "checkout-v2"},
        "rationale": GOOD_RATIONALE,
        "ttl_seconds": 600,
        "params": {"step": 3},
    }
    hash(inp)  # usable as a dict key despite the params mapping


# --- caching and versions ------------------------------------------------------------------


def test_cacheable_decisions_are_cached(policy_copy: Path):
    p = RegoPolicy(policy_copy)
    first = p.decide(ask(("sre",), "backup", rid="db-1"))
    again = p.decide(ask(("sre",), "backup", rid="db-2"))  # resource id is not part of the key
    assert (first.cached, again.cached) == (False, True)
    assert (again.allow, again.reason, again.policy_version) == (first.allow, first.reason, first.policy_version)
    assert not p.decide(ask(("sre",), "backup", kind="other")).cached  # resource kind is
    assert not p.decide(ask(("sre",), "backup", pid="someone-else")).cached
    denied = [p.decide(ask(("sre",), "resume")) for _ in range(2)]
    assert [d.cached for d in denied] == [False, True]


def test_override_decisions_are_never_cached(policy_copy: Path):
    p = RegoPolicy(policy_copy)
    before = p.cache_len
    allowed = [p.decide(ask(("oncall",), "override", GOOD_RATIONALE, 60)) for _ in range(3)]
    assert all(d.allow and not d.cached and not d.cacheable for d in allowed)
    # Same cache key, different rationale: must be decided afresh, not served the allow above.
    assert not p.decide(ask(("oncall",), "override", "short", 60)).allow
    assert not p.decide(ask(("ramp_controller",), "override", GOOD_RATIONALE, 60)).cached
    assert p.cache_len == before


def test_cache_is_bounded(policy_copy: Path):
    p = RegoPolicy(policy_copy, cache_size=5)
    for i in range(20):
        p.decide(ask(("sre",), "backup", pid=f"p{i}"))
    assert p.cache_len == 5
    assert p.decide(ask(("sre",), "backup", pid="p19")).cached
    assert not p.decide(ask(("sre",), "backup", pid="p0")).cached
    off = RegoPolicy(policy_copy, cache_size=0)
    assert [off.decide(ask(("sre",), "backup")).cached for _ in range(2)] == [False, False]


def test_version_is_a_content_hash(policy_copy: Path, rego: RegoPolicy):
    assert rego.version.startswith("sha256:") and len(rego.version) == len("sha256:") + 16
    # Same files elsewhere, same version: it names content, not a path or a load time.
    assert RegoPolicy(policy_copy).version == rego.version


def test_policy_change_reloads_and_invalidates_cache(policy_copy: Path):
    p = RegoPolicy(policy_copy)
    v1 = p.version
    inp = ask(("finops",), "export_release", kind="export")
    assert p.decide(inp).allow
    assert p.decide(inp).cached
    edit_grants(policy_copy, lambda g: g.update(finops=[]))  # revoke
    d = p.decide(inp)
    assert not d.allow and not d.cached, d
    assert d.policy_version == p.version != v1
    assert "finops may not export_release" in d.reason
    # A new Rego file in the folder counts too.
    v2 = p.version
    (policy_copy / "extra.rego").write_text("package summit.extra\n\nnote := \"hello\"\n")
    assert p.version != v2
    (policy_copy / "extra.rego").unlink()
    assert p.version == v2


def test_rego_edit_changes_version(policy_copy: Path):
    p = RegoPolicy(policy_copy)
    v1 = p.version
    assert p.decide(ask(("oncall",), "override", "x" * 20, 60)).allow
    rego_file = policy_copy / "guard.rego"
    rego_file.write_text(rego_file.read_text().replace(
        "override_min_rationale_chars := 20", "override_min_rationale_chars := 40"))
    d = p.decide(ask(("oncall",), "override", "x" * 20, 60))
    assert not d.allow and "at least 40" in d.reason
    assert d.policy_version != v1


# --- batches and threads -------------------------------------------------------------------


class CountingRegoPolicy(RegoPolicy):
    """Counts policy evaluations, to prove batching evaluates each distinct input once."""

    evaluations = 0

    def _evaluator(self, snapshot):  # type: ignore[no-untyped-def]
        inner = super()._evaluator(snapshot)

        def counted(inp: DecisionInput) -> Decision:
            self.evaluations += 1
            return inner(inp)

        return counted


def test_decide_batch_matches_decide_in_order(policy_copy: Path):
    inputs = matrix() * 3
    random.Random(7).shuffle(inputs)
    one_by_one = RegoPolicy(policy_copy)
    expected = [one_by_one.decide(x) for x in inputs]
    batched = CountingRegoPolicy(policy_copy)
    assert batched.decide_batch(inputs) == expected
    n_override = sum(x.action == "override" for x in inputs)
    n_keys_other = len({x.cache_key("") for x in inputs if x.action != "override"})
    assert batched.evaluations == n_override + n_keys_other
    # Second batch: everything cacheable comes from the cache.
    again = batched.decide_batch(inputs)
    assert [d.cached for d in again] == [x.action != "override" for x in inputs]
    assert batched.evaluations == 2 * n_override + n_keys_other
    assert batched.decide_batch([]) == []


@pytest.mark.parametrize("cache_size", [0, 10_000])
def test_concurrent_threads(policy_copy: Path, cache_size: int):
    p = RegoPolicy(policy_copy, cache_size=cache_size)
    inputs = matrix()
    expected = [(d.allow, d.reason) for d in RegoPolicy(policy_copy, cache_size=0).decide_batch(inputs)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            rnd = random.Random(seed)
            start.wait()
            for _ in range(25):
                order = list(range(len(inputs)))
                rnd.shuffle(order)
                for i in order:
                    d = p.decide(inputs[i])
                    assert (d.allow, d.reason) == expected[i], (inputs[i], d)
                got = p.decide_batch(inputs)
                assert [(d.allow, d.reason) for d in got] == expected
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in threads)


# --- broken policies -----------------------------------------------------------------------


def test_broken_rego_names_the_file(policy_copy: Path):
    (policy_copy / "broken.rego").write_text("package summit.broken\n\nx := if {\n")
    with pytest.raises(PolicyError, match=r"broken\.rego"):
        RegoPolicy(policy_copy)


def test_policy_broken_while_running_fails_closed_then_recovers(policy_copy: Path):
    p = RegoPolicy(policy_copy)
    inp = ask(("sre",), "restore")
    assert p.decide(inp).allow
    rego_file = policy_copy / "guard.rego"
    good = rego_file.read_text()
    rego_file.write_text(good + "\nthis is not rego\n")
    with pytest.raises(PolicyError, match=r"guard\.rego:\d+"):
        p.decide(inp)  # the cached allow must not be served from a policy that no longer loads
    with pytest.raises(PolicyError):
        p.decide_batch([inp])
    rego_file.write_text(good)
    assert p.decide(inp).allow


def test_bad_data_json_names_the_file(policy_copy: Path):
    (policy_copy / "data.json").write_text('{"summit": {"grants": ')
    with pytest.raises(PolicyError, match=r"data\.json"):
        RegoPolicy(policy_copy)


def test_missing_policy_folder(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read policy folder"):
        RegoPolicy(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match=r"no \.rego files"):
        RegoPolicy(tmp_path / "empty")


def test_malformed_or_undefined_decision_names_the_rule(policy_copy: Path):
    (policy_copy / "odd.rego").write_text(
        'package summit.odd\n\nhalf := {"allow": "yes"}\n\nnever := 1 if { input.nothing }\n')
    with pytest.raises(PolicyError, match=r"data\.summit\.odd\.half.*malformed decision"):
        RegoPolicy(policy_copy, rule="data.summit.odd.half").decide(ask(("sre",), "backup"))
    with pytest.raises(PolicyError, match=r"data\.summit\.odd\.never.*undefined"):
        RegoPolicy(policy_copy, rule="data.summit.odd.never").decide(ask(("sre",), "backup"))
    with pytest.raises(PolicyError, match=r"data\.summit\.guard\.nope"):
        RegoPolicy(policy_copy, rule="data.summit.guard.nope").decide(ask(("sre",), "backup"))


def test_policy_from_env(monkeypatch: pytest.MonkeyPatch, policy_copy: Path):
    monkeypatch.delenv("OPS_PLATFORM_OPA_URL", raising=False)
    monkeypatch.setenv("OPS_PLATFORM_POLICY_DIR", str(policy_copy))
    local = policy_from_env()
    assert isinstance(local, RegoPolicy) and local.policy_dir == policy_copy
    assert isinstance(local, PolicyEngine)
    monkeypatch.setenv("OPS_PLATFORM_OPA_URL", "http://127.0.0.1:8181/")
    monkeypatch.setenv("OPS_PLATFORM_OPA_POLICY_VERSION", "bundle-42")
    remote = policy_from_env()  # no network until the first decision
    assert isinstance(remote, OpaHttpPolicy) and isinstance(remote, PolicyEngine)
    assert remote.decision_url == "http://127.0.0.1:8181/v1/data/summit/guard/decision"
    assert remote.version == "bundle-42"


def test_the_dagster_guard_resource_chooses_the_engine_the_cli_does(monkeypatch: pytest.MonkeyPatch,
                                                                    policy_copy: Path, tmp_path: Path):
    from ops_platform.paths import StatePaths
    from resources import build_resources

    monkeypatch.delenv("OPS_PLATFORM_OPA_URL", raising=False)
    monkeypatch.setenv("OPS_PLATFORM_POLICY_DIR", str(policy_copy))
    guard = build_resources(StatePaths(tmp_path, tmp_path / "keys"))["guard"]
    assert isinstance(guard.policy(), RegoPolicy) and guard.policy().policy_dir == policy_copy
    monkeypatch.setenv("OPS_PLATFORM_OPA_URL", "http://127.0.0.1:8181/")
    monkeypatch.setenv("OPS_PLATFORM_OPA_POLICY_VERSION", "bundle-42")
    remote = build_resources(StatePaths(tmp_path, tmp_path / "keys"))["guard"].policy()
    assert isinstance(remote, OpaHttpPolicy) and remote.version == "bundle-42"


# --- OPA over HTTP -------------------------------------------------------------------------


class FakeOpa:
    """Just enough of OPA's REST API, evaluating the policy folder with regorus per request."""

    def __init__(self, policy_dir: Path) -> None:
        self.policy_dir = policy_dir
        self.requests: list[str] = []
        opa = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, status: int, body: object) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                opa.requests.append(f"GET {self.path}")
                if self.path != "/v1/policies":
                    return self.reply(404, {"code": "resource_not_found", "message": "not found"})
                self.reply(200, {"result": [{"id": f.name, "raw": f.read_text()}
                                            for f in sorted(opa.policy_dir.glob("*.rego"))]})

            def do_POST(self) -> None:
                opa.requests.append(f"POST {self.path}")
                if not self.path.startswith("/v1/data/"):
                    return self.reply(404, {"code": "resource_not_found", "message": "not found"})
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                # Built in this (server) thread and dropped here: regorus engines are thread-bound.
                engine = regorus.Engine()
                for f in sorted(opa.policy_dir.glob("*.rego")):
                    engine.add_policy(f.name, f.read_text())
                engine.add_data(json.loads((opa.policy_dir / "data.json").read_text()))
                engine.set_input(doc["input"])
                rule = "data." + self.path.removeprefix("/v1/data/").replace("/", ".")
                try:
                    result = engine.eval_rule(rule)
                except RuntimeError:
                    result = None
                # OPA answers an undefined document with an empty object, no "result".
                self.reply(200, {} if result is None else {"result": result, "decision_id": "x"})

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    def __enter__(self) -> FakeOpa:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def opa(policy_copy: Path) -> Iterator[FakeOpa]:
    with FakeOpa(policy_copy) as server:
        yield server


def test_opa_matches_rego_for_the_whole_matrix(opa: FakeOpa, policy_copy: Path):
    local = RegoPolicy(policy_copy)
    remote = OpaHttpPolicy(opa.url, version=local.version)
    inputs = matrix() + matrix()[:10]
    assert [remote.decide(x) for x in inputs] == [local.decide(x) for x in inputs]
    assert OpaHttpPolicy(opa.url, version=local.version).decide_batch(inputs) == \
        RegoPolicy(policy_copy).decide_batch(inputs)


def test_opa_caches_and_derives_its_version(opa: FakeOpa, policy_copy: Path):
    remote = OpaHttpPolicy(opa.url, version_refresh_seconds=0)
    v1 = remote.version
    assert v1.startswith("sha256:")
    inp = ask(("finops",), "export_release", kind="export")
    assert remote.decide(inp).allow
    posts = sum(r.startswith("POST") for r in opa.requests)
    hit = remote.decide(inp)
    assert hit.cached and hit.allow and hit.policy_version == v1
    assert sum(r.startswith("POST") for r in opa.requests) == posts  # served from cache
    rego_file = policy_copy / "guard.rego"
    rego_file.write_text(rego_file.read_text() + "\n# reviewed again\n")
    d = remote.decide(inp)
    assert not d.cached and d.policy_version != v1
    override = [remote.decide(ask(("oncall",), "override", GOOD_RATIONALE, 60)) for _ in range(2)]
    assert all(o.allow and not o.cached for o in override)


def test_opa_undefined_rule_is_an_error(opa: FakeOpa):
    remote = OpaHttpPolicy(opa.url, version="v", rule="data.summit.guard.missing")
    with pytest.raises(PolicyError, match="undefined"):
        remote.decide(ask(("sre",), "backup"))
    with pytest.raises(PolicyError, match=r"HTTP 404.*not found"):
        OpaHttpPolicy(opa.url + "/nope", version="v").decide(ask(("sre",), "backup"))


def test_opa_down_is_a_clear_error():
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    remote = OpaHttpPolicy(url, version="pinned", timeout=1.0)
    with pytest.raises(PolicyError, match=rf"OPA at {url}/v1/data/summit/guard/decision is unreachable"):
        remote.decide(ask(("sre",), "backup"))
    with pytest.raises(PolicyError, match=rf"{url}/v1/policies"):
        _ = OpaHttpPolicy(url, timeout=1.0).version
