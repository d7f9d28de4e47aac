"""Policy decisions: may this principal do this action on this resource?

The rules live in Rego (``policies/guard.rego``, grants in ``policies/data.json``) so that
security review reads one small declarative file, not Python. Two engines answer from the same
policies behind one interface, :class:`PolicyEngine`:

- :class:`RegoPolicy` evaluates in-process with regorus: microseconds, no service to run,
  the default;
- :class:`OpaHttpPolicy` asks an OPA server's Data API, for deployments that run OPA centrally.

Both cache the decisions the policy marks ``cacheable`` (those that depend only on roles,
action and resource kind), keyed on the policy version, so a policy change is never answered
from a stale cache. Anything that goes wrong raises :class:`PolicyError`; callers must treat it
as a denial (fail closed).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import regorus

from ..paths import REPO_ROOT

DEFAULT_POLICY_DIR = REPO_ROOT / "policies"
DEFAULT_RULE = "data.summit.guard.decision"
DEFAULT_CACHE_SIZE = 10_000
DATA_FILE = "data.json"

OPA_URL_ENV = "OPS_PLATFORM_OPA_URL"
OPA_VERSION_ENV = "OPS_PLATFORM_OPA_POLICY_VERSION"
POLICY_DIR_ENV = "OPS_PLATFORM_POLICY_DIR"

# (principal id, principal roles, action, resource kind, policy version): everything a
# cacheable decision may depend on. Rationale, TTL, params and resource id are deliberately
# absent, which is why the policy must mark decisions that read them as not cacheable.
CacheKey = tuple[str, tuple[str, ...], str, str, str]
# (policy folder mtime, ((file name, mtime, size), ...)): cheap change detection.
Fingerprint = tuple[int, tuple[tuple[str, int, int], ...]]


class PolicyError(Exception):
    """The policy could not be loaded or evaluated, or answered something malformed.

    Never a denial in disguise: the guard treats it as "no decision" and fails closed.
    """


@dataclass(frozen=True)
class Principal:
    """Who asks: the id goes to the audit trail, the roles decide."""

    id: str
    roles: tuple[str, ...]

    def __post_init__(self) -> None:
        # A bare string would silently become a tuple of characters, i.e. nonsense roles.
        if isinstance(self.roles, str):
            raise TypeError(f"Principal.roles must be a sequence of role names, not {self.roles!r}")
        if not isinstance(self.roles, tuple):
            object.__setattr__(self, "roles", tuple(self.roles))


@dataclass(frozen=True)
class DecisionInput:
    """One question to the policy; ``to_input()`` is the JSON document the policy sees."""

    principal: Principal
    action: str
    resource_kind: str
    resource_id: str
    rationale: str = ""
    ttl_seconds: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_input(self) -> dict[str, Any]:
        return {
            "principal": {"id": self.principal.id, "roles": list(self.principal.roles)},
            "action": self.action,
            "resource": {"kind": self.resource_kind, "id": self.resource_id},
            "rationale": self.rationale,
            "ttl_seconds": self.ttl_seconds,
            "params": dict(self.params),
        }

    def cache_key(self, version: str) -> CacheKey:
        return (self.principal.id, self.principal.roles, self.action, self.resource_kind, version)


@dataclass(frozen=True)
class Decision:
    """The policy's answer, with the policy version that gave it (it goes into the receipt)."""

    allow: bool
    reason: str
    policy_version: str
    cacheable: bool
    cached: bool = False


@runtime_checkable
class PolicyEngine(Protocol):
    """What the guard needs from a policy engine, in-process or remote."""

    @property
    def version(self) -> str: ...

    def decide(self, inp: DecisionInput) -> Decision: ...

    def decide_batch(self, inputs: Sequence[DecisionInput]) -> list[Decision]: ...


def _decision(result: Any, version: str, where: str) -> Decision:
    """Validate the policy's raw answer: a malformed one must not read as allow or deny."""
    if result is None:
        raise PolicyError(f"{where}: the rule is undefined for this input")
    if not isinstance(result, dict):
        raise PolicyError(f"{where}: expected an object, got {type(result).__name__}: {result!r}")
    allow, reason, cacheable = result.get("allow"), result.get("reason"), result.get("cacheable")
    if not (isinstance(allow, bool) and isinstance(reason, str) and isinstance(cacheable, bool)):
        raise PolicyError(
            f"{where}: malformed decision {result!r} (needs allow: bool, reason: str, cacheable: bool)"
        )
    return Decision(allow=allow, reason=reason, policy_version=version, cacheable=cacheable)


def _engine_message(err: BaseException) -> str:
    """regorus errors carry a Rust backtrace when RUST_BACKTRACE is set; keep the message."""
    return str(err).split("Stack backtrace:", 1)[0].strip()


class _DecisionCache:
    """Bounded LRU of cacheable decisions, stored already marked ``cached=True``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(0, maxsize)
        self._data: OrderedDict[CacheKey, Decision] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> Decision | None:
        if not self.maxsize:
            return None
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
            return hit

    def put(self, key: CacheKey, decision: Decision) -> Decision:
        """Store if cacheable; return what a later hit for this key would return."""
        if not decision.cacheable:
            return decision
        hit = replace(decision, cached=True)
        if self.maxsize:
            with self._lock:
                self._data[key] = hit
                self._data.move_to_end(key)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
        return hit

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _CachingPolicy:
    """decide/decide_batch over a cache; subclasses say how to snapshot and evaluate."""

    def __init__(self, cache_size: int) -> None:
        self._cache = _DecisionCache(cache_size)

    # A snapshot pins one policy version for a whole decide/decide_batch call.
    def _snapshot(self) -> Any:
        raise NotImplementedError

    def _snapshot_version(self, snapshot: Any) -> str:
        raise NotImplementedError

    def _evaluator(self, snapshot: Any) -> Callable[[DecisionInput], Decision]:
        raise NotImplementedError

    @property
    def version(self) -> str:
        """The version decisions are made with now; it goes into every receipt."""
        return self._snapshot_version(self._snapshot())

    def clear_cache(self) -> None:
        """Forget cached decisions (a version change does this by itself)."""
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def decide(self, inp: DecisionInput) -> Decision:
        snap = self._snapshot()
        key = inp.cache_key(self._snapshot_version(snap))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        decision = self._evaluator(snap)(inp)
        self._cache.put(key, decision)
        return decision

    def decide_batch(self, inputs: Sequence[DecisionInput]) -> list[Decision]:
        """Same answers as calling ``decide`` on each input in order, one evaluation per key.

        Inputs sharing a cache key are evaluated once when the answer is cacheable; inputs
        whose answer is not cacheable (overrides) are each evaluated on their own.
        """
        snap = self._snapshot()
        version = self._snapshot_version(snap)
        out: list[Decision | None] = [None] * len(inputs)
        pending: dict[CacheKey, list[int]] = {}
        for i, inp in enumerate(inputs):
            key = inp.cache_key(version)
            hit = self._cache.get(key)
            if hit is not None:
                out[i] = hit
            else:
                pending.setdefault(key, []).append(i)
        if pending:
            evaluate = self._evaluator(snap)
            for key, idxs in pending.items():
                first = evaluate(inputs[idxs[0]])
                out[idxs[0]] = first
                reused = self._cache.put(key, first)
                for j in idxs[1:]:
                    out[j] = reused if first.cacheable else evaluate(inputs[j])
        return out  # type: ignore[return-value]  # every slot is filled above


# ---------------------------------------------------------------------------------------------
# In-process: regorus


@dataclass(frozen=True)
class _Loaded:
    """One consistent read of the policy folder (or the error it gave)."""

    fingerprint: Fingerprint | None
    version: str = ""
    sources: tuple[tuple[str, str], ...] = ()  # (path, Rego text)
    data: Any = None
    error: str | None = None


# regorus engines are bound to the thread that made them (using or even dropping one from
# another thread panics), so they live in a module-level thread-local and never on a policy
# object, which could be garbage-collected from any thread. Per thread: policy key ->
# (weakref to policy, loaded snapshot, engine).
_THREAD = threading.local()
_KEYS = itertools.count()


def _is_policy_file(name: str) -> bool:
    return name.endswith(".rego") or name == DATA_FILE


def _version_of(files: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, content in sorted(files):
        raw = name.encode()
        h.update(len(raw).to_bytes(8, "big") + raw + len(content).to_bytes(8, "big"))
        h.update(content)
    return "sha256:" + h.hexdigest()[:16]


class RegoPolicy(_CachingPolicy):
    """Evaluates the Rego policies of one folder in-process, one regorus engine per thread.

    Every decide stats the folder (a few microseconds) and reloads when any ``*.rego`` or
    ``data.json`` was added, removed or changed, so an edited policy takes effect on the next
    decision without a restart; the version changes with it and the cache is dropped. A
    policy that fails to load raises PolicyError on every decide until it is fixed: serving
    the previous version would keep a revoked grant alive.
    """

    def __init__(
        self,
        policy_dir: Path = DEFAULT_POLICY_DIR,
        rule: str = DEFAULT_RULE,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(cache_size)
        self.policy_dir = Path(policy_dir)
        self.rule = rule
        self._key = next(_KEYS)
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._dir = os.fspath(self.policy_dir)
        # (folder mtime, ((file name, path), ...)): relisted only when the folder mtime moves.
        self._listing: tuple[int, tuple[tuple[str, str], ...]] | None = None
        self._snapshot()  # load now: a broken policy should fail at start-up, not first use

    def __repr__(self) -> str:
        return f"RegoPolicy({str(self.policy_dir)!r}, rule={self.rule!r})"

    def _list(self, dir_mtime_ns: int) -> tuple[tuple[str, str], ...]:
        with os.scandir(self._dir) as it:
            names = sorted(e.name for e in it if _is_policy_file(e.name) and e.is_file())
        files = tuple((name, os.path.join(self._dir, name)) for name in names)
        self._listing = (dir_mtime_ns, files)
        return files

    def _fingerprint(self) -> Fingerprint:
        """(folder mtime, (name, mtime, size) per policy file): a few stat calls.

        The folder is listed again only when its own mtime moves (a file added, removed or
        renamed, which is also how most editors save); in-place edits show in the file stats.
        """
        try:
            # Plain strings, not Path: this runs on every decision and Path joins cost µs.
            dir_mtime = os.stat(self._dir).st_mtime_ns
            listing = self._listing
            files = listing[1] if listing is not None and listing[0] == dir_mtime else None
            for _ in range(3):
                if files is None:
                    files = self._list(dir_mtime)
                try:
                    stats = [(name, os.stat(path)) for name, path in files]
                except FileNotFoundError:  # removed since listed
                    files = None
                    dir_mtime = os.stat(self._dir).st_mtime_ns
                    continue
                return dir_mtime, tuple((n, st.st_mtime_ns, st.st_size) for n, st in stats)
        except OSError as err:
            raise PolicyError(f"cannot read policy folder {self.policy_dir}: {err}") from None
        raise PolicyError(f"policy folder {self.policy_dir} keeps changing while being read")

    def _snapshot(self) -> _Loaded:
        fingerprint = self._fingerprint()
        loaded = self._loaded
        if loaded is None or loaded.fingerprint != fingerprint:
            with self._lock:
                loaded = self._loaded
                if loaded is None or loaded.fingerprint != fingerprint:
                    loaded = self._load()
                    self._loaded = loaded
                    self._cache.clear()
        if loaded.error is not None:
            raise PolicyError(loaded.error)
        return loaded

    def _snapshot_version(self, snapshot: _Loaded) -> str:
        return snapshot.version

    def _read(self) -> tuple[Fingerprint, list[tuple[str, bytes]]]:
        """Read all policy files; retry if one changed mid-read (an editor saving)."""
        for _ in range(5):
            before = self._fingerprint()
            try:
                files = [(name, (self.policy_dir / name).read_bytes()) for name, _, _ in before[1]]
            except OSError:
                continue  # removed between listing and reading
            if self._fingerprint() == before:
                return before, files
        raise PolicyError(f"policy folder {self.policy_dir} keeps changing while being read")

    def _load(self) -> _Loaded:
        try:
            fingerprint, files = self._read()
        except PolicyError as err:
            return _Loaded(fingerprint=None, error=str(err))
        try:
            sources: list[tuple[str, str]] = []
            data: Any = None
            for name, content in files:
                path = self.policy_dir / name
                try:
                    text = content.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise PolicyError(f"cannot load policy file {path}: not UTF-8 ({err})") from None
                if name == DATA_FILE:
                    try:
                        data = json.loads(text)
                    except json.JSONDecodeError as err:
                        raise PolicyError(f"cannot load policy data {path}: {err}") from None
                    if not isinstance(data, dict):
                        raise PolicyError(f"cannot load policy data {path}: top level must be an object")
                else:
                    sources.append((str(path), text))
            if not sources:
                raise PolicyError(f"no .rego files in policy folder {self.policy_dir}")
            loaded = _Loaded(fingerprint, _version_of(files), tuple(sources), data)
            self._install_engine(loaded)  # compiles the policy: parse errors surface here
            return loaded
        except PolicyError as err:
            return _Loaded(fingerprint=fingerprint, error=str(err))

    def _build_engine(self, loaded: _Loaded) -> regorus.Engine:
        engine = regorus.Engine()
        for path, text in loaded.sources:
            try:
                engine.add_policy(path, text)
            except RuntimeError as err:
                raise PolicyError(f"cannot load policy file {path}: {_engine_message(err)}") from None
        if loaded.data is not None:
            try:
                engine.add_data(loaded.data)
            except RuntimeError as err:
                raise PolicyError(
                    f"cannot load policy data {self.policy_dir / DATA_FILE}: {_engine_message(err)}"
                ) from None
        return engine

    def _install_engine(self, loaded: _Loaded) -> regorus.Engine:
        engines: dict[int, tuple[weakref.ref[RegoPolicy], _Loaded, regorus.Engine]] | None
        engines = getattr(_THREAD, "engines", None)
        if engines is None:
            engines = _THREAD.engines = {}
        # Drop (in their own thread, hence here) engines of policies that no longer exist.
        for key in [k for k, (ref, _, _) in engines.items() if ref() is None]:
            del engines[key]
        engine = self._build_engine(loaded)
        engines[self._key] = (weakref.ref(self), loaded, engine)
        return engine

    def _thread_engine(self, loaded: _Loaded) -> regorus.Engine:
        engines = getattr(_THREAD, "engines", None)
        entry = engines.get(self._key) if engines is not None else None
        if entry is not None and entry[1] is loaded:
            return entry[2]
        return self._install_engine(loaded)

    def _evaluator(self, snapshot: _Loaded) -> Callable[[DecisionInput], Decision]:
        engine = self._thread_engine(snapshot)
        rule, version = self.rule, snapshot.version
        where = f"{rule} in {self.policy_dir}"

        def evaluate(inp: DecisionInput) -> Decision:
            try:
                engine.set_input(inp.to_input())
                result = engine.eval_rule(rule)
            except (RuntimeError, TypeError, ValueError) as err:
                raise PolicyError(f"cannot evaluate {where}: {_engine_message(err)}") from None
            return _decision(result, version, where)

        return evaluate


# ---------------------------------------------------------------------------------------------
# Remote: OPA Data API


class OpaHttpPolicy(_CachingPolicy):
    """Asks an OPA server: ``POST {base_url}/v1/data/<rule path>`` with ``{"input": ...}``.

    OPA's responses do not carry a reliable policy version, so the version is either given
    (pin it to what you deployed, e.g. a bundle revision) or derived from a hash of
    ``GET /v1/policies`` (ids and raw Rego), refreshed at most every
    ``version_refresh_seconds``. The derived version does not cover OPA data documents:
    when grants change only in data, pass ``version`` explicitly.
    """

    def __init__(
        self,
        base_url: str,
        *,
        version: str | None = None,
        rule: str = DEFAULT_RULE,
        timeout: float = 2.0,
        cache_size: int = DEFAULT_CACHE_SIZE,
        version_refresh_seconds: float = 30.0,
    ) -> None:
        super().__init__(cache_size)
        if not rule.startswith("data."):
            raise ValueError(f"rule must be a data path like {DEFAULT_RULE!r}, got {rule!r}")
        self.base_url = base_url.rstrip("/")
        self.rule = rule
        self.decision_url = f"{self.base_url}/v1/data/{rule.removeprefix('data.').replace('.', '/')}"
        self.policies_url = f"{self.base_url}/v1/policies"
        self.timeout = timeout
        self.version_refresh_seconds = version_refresh_seconds
        self._pinned_version = version
        self._lock = threading.Lock()
        self._derived: tuple[float, str] | None = None  # (monotonic time fetched, version)

    def __repr__(self) -> str:
        return f"OpaHttpPolicy({self.base_url!r}, rule={self.rule!r})"

    def _request(self, url: str, body: Any | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read(2000).decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):  # OPA errors are JSON
                detail = json.loads(detail).get("message", detail)
            raise PolicyError(f"OPA at {url} answered HTTP {err.code}: {detail}") from None
        except urllib.error.URLError as err:
            raise PolicyError(f"OPA at {url} is unreachable: {err.reason}") from None
        except TimeoutError:
            raise PolicyError(f"OPA at {url} did not answer within {self.timeout}s") from None
        except OSError as err:
            raise PolicyError(f"OPA at {url} failed: {err}") from None
        try:
            return json.loads(raw)
        except ValueError as err:
            raise PolicyError(f"OPA at {url} returned invalid JSON: {err}") from None

    def _fetch_version(self) -> str:
        body = self._request(self.policies_url)
        policies = body.get("result") if isinstance(body, dict) else None
        if not isinstance(policies, list):
            raise PolicyError(f"OPA at {self.policies_url}: expected {{'result': [...]}}, got {body!r}")
        files = sorted(
            (str(p.get("id", "")), str(p.get("raw", "")).encode()) for p in policies if isinstance(p, dict)
        )
        return _version_of(files)

    def _snapshot(self) -> str:
        if self._pinned_version is not None:
            return self._pinned_version
        now = time.monotonic()
        derived = self._derived
        if derived is None or now - derived[0] >= self.version_refresh_seconds:
            with self._lock:
                derived = self._derived
                if derived is None or now - derived[0] >= self.version_refresh_seconds:
                    version = self._fetch_version()
                    if derived is not None and derived[1] != version:
                        self._cache.clear()
                    derived = self._derived = (time.monotonic(), version)
        return derived[1]

    def _snapshot_version(self, snapshot: str) -> str:
        return snapshot

    def _evaluator(self, snapshot: str) -> Callable[[DecisionInput], Decision]:
        where = f"{self.rule} from {self.decision_url}"

        def evaluate(inp: DecisionInput) -> Decision:
            body = self._request(self.decision_url, {"input": inp.to_input()})
            if not isinstance(body, dict) or "result" not in body:
                raise PolicyError(f"{where}: the rule is undefined (no 'result' in the response)")
            return _decision(body["result"], snapshot, where)

        return evaluate


def make_policy(policy_dir: str | Path | None = None, opa_url: str | None = None,
                opa_version: str | None = None) -> PolicyEngine:
    """OPA at `opa_url` (pinned to `opa_version` when given), else the in-process Rego
    policies in `policy_dir` (default: the project's ``policies/``)."""
    if opa_url and opa_url.strip():
        return OpaHttpPolicy(opa_url.strip(), version=opa_version or None)
    return RegoPolicy(Path(policy_dir) if policy_dir else DEFAULT_POLICY_DIR)


def policy_settings_from_env() -> dict[str, str | None]:
    """``make_policy``'s arguments from ``OPS_PLATFORM_OPA_URL``,
    ``OPS_PLATFORM_OPA_POLICY_VERSION`` and ``OPS_PLATFORM_POLICY_DIR``."""
    from ..settings import SettingError

    opa_url = os.environ.get(OPA_URL_ENV, "").strip() or None
    if opa_url is not None and not opa_url.startswith(("http://", "https://")):
        # Refused before any action is recorded: a URL urllib cannot open would fail every
        # action after it was stored, to be retried later against the same bad URL.
        raise SettingError(f"{OPA_URL_ENV}={opa_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8181)")
    return {"policy_dir": os.environ.get(POLICY_DIR_ENV, "").strip() or None,
            "opa_url": opa_url,
            "opa_version": os.environ.get(OPA_VERSION_ENV, "").strip() or None}


def policy_from_env() -> PolicyEngine:
    """The policy engine the environment asks for (see ``policy_settings_from_env``)."""
    return make_policy(**policy_settings_from_env())
