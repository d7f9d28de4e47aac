"""The one guarded path for privileged actions.

request -> policy decision -> execute (idempotent) -> signed receipt -> completed, with the
receipt append and the status change in one transaction. Every request ends exactly once
as completed-with-receipt, denied-with-receipt or in the DLQ; requests the store cannot
take wait in a local spool; protective actions survive a signer outage as
"pending receipt", everything else fails closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ..control.ledger_writer import append_receipts, refusal
from ..control.store import ControlStore, StoreUnavailable
from ..receipts.keys import Signer, SignerUnavailable
from ..receipts.statement import file_subject, make_statement, target_subject
from ..timezones import iso_utc, utcnow
from .actions import (
    TERMINAL,
    ActionRequest,
    ExecutionResult,
    Executor,
    Outcome,
    reserved_key_problem,
    stored_request,
)
from .policy import Decision, DecisionInput, PolicyEngine, PolicyError, Principal
from .roster import RosterError
from .spool import Spool


@dataclass
class RetryReport:
    receipted: int = 0
    retried: int = 0
    to_dlq: int = 0
    spool_drained: int = 0
    spool_left: int = 0
    # Retried actions that failed again (each "action kind:target: why"): left for the next
    # retry until their attempts run out.
    failing: list[str] = field(default_factory=list)


def _waiting(store: ControlStore, now: datetime) -> tuple[list[dict], list[dict]]:
    """(actions waiting for a receipt, actions to run again: requested, or executing under a
    lease that expired) as of ``now``."""
    stamp = iso_utc(now)
    with store.read() as conn:
        pending = store.actions_with_status(conn, "pending_receipt")
        retryable = [a for a in store.actions_with_status(conn, "requested", "executing")
                     if a["status"] == "requested" or (a["lease_expires_at"] or "") < stamp]
    return pending, retryable


def retry_due(store: ControlStore, spool: Spool | None, now: datetime) -> dict[str, int]:
    """What ``ActionProtocol.retry`` would handle at ``now``, by kind (pending_receipt,
    retryable, spooled): the retry sensor starts a run only when some of it is there, so the
    run list is not filled with empty retries. Raises StoreUnavailable as the store does."""
    pending, retryable = _waiting(store, now)
    return {"pending_receipt": len(pending), "retryable": len(retryable),
            "spooled": spool.waiting() if spool is not None else 0}


class ActionProtocol:
    def __init__(self, store: ControlStore, signer: Callable[[], Signer], policy: PolicyEngine,
                 executors: Mapping[str, Executor], spool: Spool | None = None, *, max_attempts: int = 5,
                 lease_seconds: float = 60.0, clock: Callable[[], datetime] = utcnow, owner: str | None = None,
                 home: Path | None = None, roles_of: Callable[[str], tuple[str, ...]] | None = None,
                 witness: Callable[[str, int, str], None] | None = None):
        """``home``: the state folder; files inside it are named relative to it in receipts, so a
        state folder restored or moved elsewhere still verifies against its own files.
        ``roles_of``: an actor's roles now (the roster); when given, every decision uses it, not
        the roles a request carries, so a spooled, retried or dead-lettered request (text in a
        file or a table) can claim no role its actor does not hold when it is decided.
        ``witness``: records each new signed tree head (the ledger's first entry hash, size,
        root) outside the store, once it is committed (``receipts.witness``)."""
        self.store, self.signer, self.policy = store, signer, policy
        self.witness = witness
        self.roles_of = roles_of
        self.home = Path(os.path.abspath(home)) if home is not None else None
        self.executors, self.spool = dict(executors), spool
        self.max_attempts, self.lease = max_attempts, timedelta(seconds=lease_seconds)
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"

    # -- entry points -----------------------------------------------------------------

    def submit(self, req: ActionRequest) -> Outcome:
        """Run a request through the guarded path; spool it if the store cannot take it. A new
        request may not take a key the platform's own requests use (``reserved_key_problem``;
        a request read back from the store or the spool is as it was)."""
        if problem := reserved_key_problem(req.idempotency_key, actor=req.actor, action=req.action):
            raise ValueError(problem)
        try:
            return self._process(req)
        except StoreUnavailable as exc:
            if self.spool is None:
                raise
            self.spool.append(req, str(exc))
            return Outcome(req.action_id, "spooled", f"control store unavailable: {exc}", created=False)

    def retry(self) -> RetryReport:
        """Receipt what waits for a signer, retry failed and abandoned actions, drain the spool."""
        report = RetryReport()
        pending, retryable = _waiting(self.store, self.clock())
        for row in pending:
            try:
                signer = self.signer()
            except SignerUnavailable:
                break
            report.receipted += self._receipt_pending(row, signer, report)
        for row in retryable:
            try:
                req = ActionRequest.from_json(row["params"])
            except (TypeError, ValueError, KeyError) as exc:  # not a row the path wrote
                self._dead_letter_row(row, f"malformed action ({type(exc).__name__}: {exc})")
                report.to_dlq += 1
                continue
            out = self._process(req)
            report.retried += 1
            report.to_dlq += out.status == "dlq"
            if out.status not in TERMINAL and out.status != "pending_receipt":
                report.failing.append(f"{req.action} {req.target_kind}:{req.target_id}: {out.reason}")
        if self.spool is not None:
            def handle(req: ActionRequest) -> bool:
                try:
                    out = self._process(req)
                except StoreUnavailable:
                    return False
                if out.status == "conflict":  # its key names another request: dead-lettered, not lost
                    with self.store.write() as tx:
                        self.store.add_dlq(tx, action_id=req.action_id, request=req.to_json(), last_error=out.reason,
                                           attempts=1, created_at=iso_utc(self.clock()))
                    report.to_dlq += 1
                return True
            report.spool_drained, report.spool_left = self.spool.drain(handle)
        return report

    def replay_dlq(self, dlq_id: int | None = None) -> list[Outcome]:
        """Send dead-lettered requests through the path again, with a fresh retry budget."""
        now = iso_utc(self.clock())
        outcomes = []
        for item in self.store.dlq_items():
            if dlq_id is not None and item["dlq_id"] != dlq_id:
                continue
            req = stored_request(item["request"])
            if req is None:  # nothing to run: it stays queued, to be discarded
                outcomes.append(Outcome(item["action_id"] or f"dlq-{item['dlq_id']}", "unreadable",
                                        f"dead-lettered item {item['dlq_id']} is no request that reads "
                                        f"({item['last_error']}): discard it with `ops-platform dlq discard "
                                        f"{item['dlq_id']}`", created=False))
                continue
            with self.store.write() as tx:
                row = self.store.get_action(tx, req.action_id)
                other = stored_request(row["params"]) if row is not None else None
                if other is not None and other.fingerprint != req.fingerprint:
                    # A request whose key names another action (a conflict from the spool): replaying
                    # it would re-run that action. It stays queued until resubmitted under a new key
                    # and discarded (`ops-platform dlq discard`).
                    outcomes.append(Outcome(req.action_id, "conflict", item["last_error"], created=False))
                    continue
                if row is not None and row["status"] != "dlq":
                    # Its action was decided since (another request under the key): nothing to re-run.
                    self.store.mark_replayed(tx, item["dlq_id"], now)
                    outcomes.append(Outcome(req.action_id, row["status"], "already decided",
                                            self._receipt_of(tx, row), created=False))
                    continue
                self.store.mark_replayed(tx, item["dlq_id"], now)
                self.store.update_action(tx, req.action_id, status="requested", attempts=0, updated_at=now,
                                         lease_owner=None, lease_expires_at=None)
                self.store.add_event(tx, ts=now, kind="dlq_replayed", target_kind=req.target_kind,
                                     target_id=req.target_id, actor=req.actor, action_id=req.action_id,
                                     payload={"dlq_id": item["dlq_id"], "action": req.action,
                                              "reason": f"replayed from the dead-letter queue: {req.describe()}"})
            outcomes.append(self._process(req))
        return outcomes

    # -- the path -----------------------------------------------------------------------

    def _receipt_pending(self, row: dict, signer: Signer, report: RetryReport) -> bool:
        """Sign the receipt an action waited for while the signer was down; whether it was.

        Only what the path itself leaves pending is signed: a denial with nothing executed,
        or a protective action the guard allowed, whose executor (idempotent: it changes
        nothing the second time) reports what is on disk now. A row written into the store by
        hand gets no receipt for a decision the guard would not make, nor for a result
        nothing produced: it is dead-lettered, saying why. Policy or roster outages leave it
        pending."""
        try:
            allow = json.loads(row["decision"])["allow"]
            req = ActionRequest.from_json(row["params"])
        except (TypeError, ValueError, KeyError) as exc:  # not a row the path wrote
            return self._refuse_pending(row, f"malformed pending action ({type(exc).__name__}: {exc})", report)
        why = _not_left_pending(row, req, allow)
        if why:
            return self._refuse_pending(row, why, report, req)
        try:
            req, again = self._decide(req)
        except (PolicyError, RosterError):  # the policy or the roster cannot answer now: wait
            return False
        if again.allow != allow:
            return self._refuse_pending(row, f"the stored decision (allow={allow}) is not the guard's now "
                                             f"({again.reason})", report, req)
        result = None
        if allow:
            executor = self.executors.get(req.action)
            if executor is None:
                return False  # receipted by a retry that has the executor
            try:
                result = executor.apply(req.action_id, req)
            except Exception:  # noqa: BLE001 - it stays pending; the next retry tries again
                return False
        # The guard's decision now is what is signed (its reason and policy version), never the
        # stored one: a row written by hand cannot put words in a receipt.
        self._finish(req, again, "completed" if allow else "denied", signer, result)
        return True

    def _refuse_pending(self, row: dict, why: str, report: RetryReport, req: ActionRequest | None = None) -> bool:
        """Dead-letter a pending row that gets no receipt, saying why (False: nothing receipted)."""
        self._dead_letter_row(row, f"{why}: not receipted", req)
        report.to_dlq += 1
        return False

    def _decide(self, req: ActionRequest) -> tuple[ActionRequest, Decision]:
        """The request with its actor's roles now (``roles_of``, when given), and the guard's
        decision on it. PolicyError or RosterError when either cannot answer."""
        if self.roles_of is not None:
            req = dataclasses.replace(req, roles=tuple(self.roles_of(req.actor)))
        return req, self.policy.decide(DecisionInput(
            Principal(req.actor, req.roles), req.action, req.target_kind, req.target_id, req.rationale,
            req.ttl_seconds, dict(req.params)))

    def _process(self, req: ActionRequest) -> Outcome:
        now = self.clock()
        with self.store.write() as tx:
            row, created = self.store.create_action(tx, {
                "action_id": req.action_id, "idempotency_key": req.idempotency_key, "actor": req.actor,
                "action": req.action, "target_kind": req.target_kind, "target_id": req.target_id,
                "rationale": req.rationale, "params": req.to_json(), "status": "requested", "attempts": 0,
                "created_at": iso_utc(now), "updated_at": iso_utc(now)})
            if created:
                self._event(tx, req, "action_requested", now, {"rationale": req.rationale})
            else:
                first = ActionRequest.from_json(row["params"])
                if first.fingerprint != req.fingerprint:  # the key names another request: refuse
                    before, now_ = first.describe(), req.describe()
                    if before == now_:  # they differ in what describe() leaves out
                        if first.rationale != req.rationale:
                            before, now_ = (f"{before}, rationale {first.rationale!r}",
                                            f"{now_}, rationale {req.rationale!r}")
                        else:
                            before, now_ = f"{before}, params {first.acting_params!r}", f"{now_}, params {req.acting_params!r}"
                    return Outcome(req.action_id, "conflict",
                                   f"idempotency key {req.idempotency_key!r} was already used for another request "
                                   f"(it differs in {', '.join(first.differences(req))}: {before}; status "
                                   f"{row['status']}); nothing "
                                   f"was done for {now_}: use a new key", created=False)
            if row["status"] in TERMINAL or row["status"] == "pending_receipt":
                return Outcome(req.action_id, row["status"], "already decided", self._receipt_of(tx, row), created)
            if not self.store.claim(tx, req.action_id, self.owner, iso_utc(now), iso_utc(now + self.lease)):
                return Outcome(req.action_id, row["status"], "in progress elsewhere", created=created)
        try:
            req, decision = self._decide(req)
        except PolicyError as exc:
            return self._fail(req, f"policy error: {exc}")
        except RosterError as exc:  # a configuration error: retried, then dead-lettered
            return self._fail(req, f"actor roster: {exc}")
        signer: Signer | None
        try:
            signer = self.signer()
        except SignerUnavailable as exc:
            signer = None
            if not decision.allow:
                return self._pending(req, decision, None, f"signer unavailable: {exc}")
            if not req.protective:  # fail closed: never expand without a receipt in hand
                return self._fail(req, f"signer unavailable: {exc}", decision)
        if not decision.allow:
            return self._finish(req, decision, "denied", signer, None)
        if not req.protective and (refused := self._ledger_refusal()):  # fail closed, as without a signer
            return self._fail(req, f"the receipts ledger refuses new receipts: {refused}", decision)
        executor = self.executors.get(req.action)
        if executor is None:
            return self._fail(req, f"no executor for action {req.action!r}", decision)
        try:
            result = executor.apply(req.action_id, req)
        except Exception as exc:  # the executor's failure is recorded, retried, then dead-lettered
            return self._fail(req, f"execution failed: {type(exc).__name__}: {exc}", decision)
        if signer is None:
            return self._pending(req, decision, result, "signer unavailable; protective action applied")
        return self._finish(req, decision, "completed", signer, result)

    def _subject_name(self, path: Path) -> str:
        """A file's name in a receipt: relative to the state folder when inside it (what
        ``runtime.file_digest_in`` resolves), else its absolute path."""
        # Compared as written first (a folder inside the state folder may be a link to another
        # volume: the receipt still names it inside), then with links followed.
        for mine, home in ((Path(os.path.abspath(path)), self.home),
                           (Path(path).resolve(), self.home.resolve() if self.home is not None else None)):
            if home is not None and mine.is_relative_to(home):
                return mine.relative_to(home).as_posix()
        return str(Path(path).resolve())

    def _statement(self, req: ActionRequest, decision: Decision, result: ExecutionResult | None, now: datetime):
        subjects = [target_subject(req.target_kind, req.target_id)]
        if result is not None:
            subjects += [file_subject(p, name=self._subject_name(p), sha256=result.digests.get(p))
                         for p in result.files]
        predicate = {
            "actor": req.actor, "roles": list(req.roles), "action": req.action,
            "target": {"kind": req.target_kind, "id": req.target_id},
            "decision": {"allow": decision.allow, "reason": decision.reason,
                         "policy_version": decision.policy_version},
            "rationale": req.rationale, "ttl_seconds": req.ttl_seconds, "idempotency_key": req.idempotency_key,
            "action_id": req.action_id, "params": dict(req.params),
            "executed": result is not None, "result": dict(result.detail) if result else None,
            "receipted_at": iso_utc(now),
        }
        return make_statement(subjects, req.action, predicate)

    def _finish(self, req: ActionRequest, decision: Decision, status: str, signer: Signer,
                result: ExecutionResult | None) -> Outcome:
        now = self.clock()
        statement = self._statement(req, decision, result, now)
        with self.store.write() as tx:
            self.store.lock_head(tx)  # serialise finishers before reading the status
            row = self.store.get_action(tx, req.action_id)
            if row is None:  # no action to receipt (nothing is signed for a row that is not there)
                raise ValueError(f"no action {req.action_id} in the store to receipt")
            if row["status"] in TERMINAL:  # another process finished it first
                return Outcome(req.action_id, row["status"], "already decided", self._receipt_of(tx, row), False)
            # The key active now, read under the ledger's lock: a key rotated since ``signer``
            # was read never signs after its successor did (verify refuses that).
            with contextlib.suppress(SignerUnavailable, ValueError):  # unreadable now: the one in hand signs
                signer = self.signer()
            (entry,) = append_receipts(self.store, tx, [statement], signer, iso_utc(now))
            # The tree head just signed, and what the witness knows this ledger by (its first entry).
            head = self.store.last_checkpoint(tx) if self.witness is not None else None
            first = self.store.entry_hash_at(tx, 0) if head is not None else None
            self.store.update_action(tx, req.action_id, status=status, receipt_seq=entry.seq,
                                     decision=_decision_json(decision), result=_result_json(result),
                                     lease_owner=None, lease_expires_at=None, updated_at=iso_utc(now))
            detail = result.detail if result is not None else {}
            # skipped: done, nothing to change; drift: the target changed outside the guard
            said = {k: detail[k] for k in ("skipped", "drift", "unreadable_flags") if detail.get(k)}
            self._event(tx, req, f"action_{status}", now, {"reason": decision.reason, **said}, entry.receipt_id)
            # In the drifted target's own timeline too (a freeze's event is in every flag's already).
            drifted = {} if req.action == "freeze" else (detail.get("drift") or {})
            for target, what in drifted.items():
                if target not in (req.target_id, "*"):
                    self.store.add_event(tx, ts=iso_utc(now), kind="drift_seen", target_kind=req.target_kind,
                                         target_id=target, actor=req.actor, action_id=req.action_id,
                                         receipt_id=entry.receipt_id,
                                         payload={"drift": {target: what}, "seen_by": f"{req.action} {req.target_id}"})
        if head is not None and first is not None:  # committed: the tree head is the ledger's now
            self.witness(first, head.tree_size, head.root_hash)
        return Outcome(req.action_id, status, decision.reason, entry.receipt_id, said=said)

    def _pending(self, req, decision: Decision, result: ExecutionResult | None, why: str) -> Outcome:
        now = self.clock()
        with self.store.write() as tx:
            self.store.update_action(tx, req.action_id, status="pending_receipt", decision=_decision_json(decision),
                                     result=_result_json(result), last_error=why, lease_owner=None,
                                     lease_expires_at=None, updated_at=iso_utc(now))
            self._event(tx, req, "action_pending_receipt", now, {"reason": why, "applied": result is not None})
        return Outcome(req.action_id, "pending_receipt", why)

    def _ledger_refusal(self) -> str | None:
        """Why the ledger would refuse this action's receipt (a head edited outside the
        platform): an action that widens anything must not run without one."""
        try:
            with self.store.read() as conn:
                return refusal(self.store, conn)
        except (ValueError, TypeError, KeyError) as exc:  # a head that does not read
            return f"the ledger head does not read ({exc})"

    def _fail(self, req: ActionRequest, error: str, decision: Decision | None = None) -> Outcome:
        now = self.clock()
        with self.store.write() as tx:
            row = self.store.get_action(tx, req.action_id)
            attempts = (row["attempts"] if row else 0) + 1
            dead = attempts >= self.max_attempts
            self.store.update_action(tx, req.action_id, status="dlq" if dead else "requested", attempts=attempts,
                                     last_error=error, decision=_decision_json(decision) if decision else None,
                                     lease_owner=None, lease_expires_at=None, updated_at=iso_utc(now))
            if dead:
                self.store.add_dlq(tx, action_id=req.action_id, request=req.to_json(), last_error=error,
                                   attempts=attempts, created_at=iso_utc(now))
            self._event(tx, req, "action_dead_lettered" if dead else "action_failed", now,
                        {"error": error, "attempts": attempts})
        return Outcome(req.action_id, "dlq" if dead else "requested", error)

    def _dead_letter_row(self, row: dict, error: str, req: ActionRequest | None = None) -> None:
        """Dead-letter an action row as it is stored (its own id and params, whatever they say)."""
        now = iso_utc(self.clock())
        with self.store.write() as tx:
            self.store.update_action(tx, row["action_id"], status="dlq", last_error=error, lease_owner=None,
                                     lease_expires_at=None, updated_at=now)
            self.store.add_dlq(tx, action_id=row["action_id"], request=str(row["params"]), last_error=error,
                               attempts=row["attempts"] or 0, created_at=now)
            self.store.add_event(tx, ts=now, kind="action_dead_lettered", target_kind=row.get("target_kind"),
                                 target_id=row.get("target_id"), actor=row.get("actor"), action_id=row["action_id"],
                                 payload={"action": req.action if req else row.get("action"), "error": error})

    def _event(self, tx, req: ActionRequest, kind: str, now: datetime, payload: dict,
               receipt_id: str | None = None) -> None:
        self.store.add_event(tx, ts=iso_utc(now), kind=kind, target_kind=req.target_kind, target_id=req.target_id,
                             actor=req.actor, action_id=req.action_id, receipt_id=receipt_id,
                             payload={"action": req.action, "params": dict(req.params), **payload})

    def _receipt_of(self, tx, row: dict) -> str | None:
        if row.get("receipt_seq") is None:
            return None
        return self.store.receipt_id_at(tx, row["receipt_seq"])


def _not_left_pending(row: dict, req: ActionRequest, allow: bool) -> str | None:
    """Why a pending row is not one the guarded path leaves pending (None: it is one)."""
    if row["action_id"] != req.action_id:
        return f"its action id is not its request's ({req.action_id})"
    if row["receipt_seq"] is not None:
        return f"it already has a receipt (seq {row['receipt_seq']})"
    if allow and not req.protective:
        return f"an allowed {req.action} is never left pending (it fails closed without a signer)"
    if not allow and row["result"]:
        return f"a denied {req.action} executed nothing, yet the row holds a result"
    return None


def _decision_json(d: Decision) -> str:
    return json.dumps({"allow": d.allow, "reason": d.reason, "policy_version": d.policy_version,
                       "cacheable": d.cacheable}, sort_keys=True)


def _result_json(r: ExecutionResult | None) -> str | None:
    if r is None:
        return None
    return json.dumps({"detail": dict(r.detail), "files": [str(p) for p in r.files]}, sort_keys=True)
