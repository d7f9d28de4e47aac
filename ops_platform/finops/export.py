"""Releasing a period's invoices: a guarded ``export_release`` whose receipt pins every file.

The release runs only when the period's reconciliation holds (``StoredFinOps.blockers``); the
guard then lets an actor with the finops role (in the actor roster) release it, the executor
writes the files atomically, and the receipt carries each file's sha256, which `ops-platform
receipts verify` checks against the files on disk. Releasing a released period again is the
same action, answered once; the answer then says whether its files still match the receipt
(status ``files_changed`` when one is missing or altered, or a file the receipt does not
name is in its folder).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ..files import exclusive_lock, file_sha256
from ..guard.actions import ActionRequest, ExecutionResult, Executor, Outcome
from ..guard.protocol import ActionProtocol
from ..guard.roster import Roster, load_roster
from ..receipts.dsse import VerificationError
from ..receipts.ledger import entry_statement
from ..receipts.statement import statement_subjects, subject_path
from .invoices import Period, carried_corrections, parse_period, write_invoices
from .pipeline import StoredFinOps


class HeldRelease(Exception):
    """The period's reconciliation does not hold: its invoices may not be released."""


class InvoiceExportExecutor:
    """Writes a period's invoice files under ``out_root/<period>``; the same inputs give the
    same bytes, so applying an action id twice leaves the same files.

    The release check lives here, where the files are written, so every path to a release
    (CLI, job, a retry or a DLQ replay) passes it.
    """

    def __init__(self, out_root: Path, books: StoredFinOps,
                 released: Callable[[], list[Period]] = lambda: [],
                 altered: Callable[[Period], list[str]] = lambda period: []) -> None:
        """``released``: the periods out already; ``altered``: why the released files no longer
        vouch for what they billed (``altered_releases``), which holds every other release."""
        self.out_root = Path(out_root)
        self.books = books
        self.released = released
        self.altered = altered

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        period = parse_period(str(request.params["period"]))
        # One release at a time: each reads what the others billed (the carried corrections).
        with exclusive_lock(self.out_root.with_name(self.out_root.name + ".lock")):
            released = self.released()
            if any(p.same_days(period) for p in released):
                # another action released it (a retry after someone else's release, or two at once)
                raise HeldRelease(f"held: {period.name} was released by another action; nothing is rewritten")
            out = invoiced(self.out_root, released, period)
            billed, unread = billed_lines(self.out_root, out)
            held = self.books.blockers(period) + overlaps(period, out) + unread + self.altered(period)
            if held:
                raise HeldRelease(f"held: {period.name}: " + "; ".join(held))
            carried = carried_corrections(self.books.usage, self.books.corrections, period, out, billed)
            lines, summary = self.books.invoices(period, carried)
            files = write_invoices(lines, summary, self.out_root / period.name)
        # Totals per currency: minor units of two currencies (or cents and yen) add up to nothing.
        totals = summary.group_by("currency").agg(pl.col("total_minor").sum()).sort("currency")
        return ExecutionResult(detail={"period": period.name, "invoices": summary.height,
                                       "tenants": summary["tenant_id"].n_unique(), "lines": lines.height,
                                       "total_minor_by_currency": {c: int(t) for c, t in totals.iter_rows()}},
                               files=tuple(files), digests=files)


def invoiced(out_root: Path, released: list[Period], period: Period) -> list[Period]:
    """The periods whose invoices are out, as ``period``'s release sees them: the released
    periods (each once), and the folders written whose action is still being receipted (not
    one that overlaps a release: an attempt that never completed); never ``period``'s own
    folder (an attempt of this release cut short). ``period`` may not go out while it
    overlaps one of them, or while one's lines cannot be read (``billed_lines``)."""
    seen, done = set(), []
    for p in released:
        if (p.start, p.end) not in seen:
            seen.add((p.start, p.end))
            done.append(p)
    pending = [p for p in out_on_disk(out_root, done)
               if p.name != period.name and not overlaps(p, done)]
    return [p for p in done if p.name != period.name] + pending


def out_on_disk(out_root: Path, released: list[Period]) -> list[Period]:
    """Periods whose invoice files are written but that ``released`` lacks: a release whose
    action is still being receipted (its files are out)."""
    names = {p.name for p in released}
    found = []
    for folder in sorted(out_root.glob("*/invoice_lines.parquet")):
        try:
            period = parse_period(folder.parent.name)
        except ValueError:
            continue
        if period.name not in names:
            found.append(period)
    return found


def billed_lines(out_root: Path, out: list[Period]) -> tuple[pl.DataFrame, list[str]]:
    """(lines, problems): the lines of the invoices of ``out`` under ``out_root`` (period,
    line_kind, tenant_id, meter, usage_date, quantity), and why one's lines cannot be read
    (then which late usage it billed is not known, and nothing may go out)."""
    frames, problems = [], []
    for p in out:
        path = out_root / p.name / "invoice_lines.parquet"
        try:
            lines = pl.read_parquet(path, columns=["line_kind", "tenant_id", "meter", "usage_date", "quantity"])
        except (OSError, pl.exceptions.PolarsError) as exc:
            problems.append(f"the invoice lines of {p.name}, already released, cannot be read ({path}: "
                            f"{type(exc).__name__}), so what late usage they billed is not known: restore them "
                            "(`ops-platform receipts verify` names the released files)")
            continue
        frames.append(lines.with_columns(pl.lit(p.name).alias("period")))
    schema = {"line_kind": pl.String, "tenant_id": pl.String, "meter": pl.String, "usage_date": pl.Date,
              "quantity": pl.String, "period": pl.String}
    return (pl.concat(frames) if frames else pl.DataFrame(schema=schema)), problems


def altered_releases(store, home: Path | None, verifiers: Mapping[str, Any], but: Period | None = None) -> list[str]:
    """Why no other period may go out: a released period whose files no longer match its
    receipt (edited, deleted, or a receipt that does not verify). A later invoice nets its
    late usage against what the released ones billed, read from those files: an edited file
    would have it bill usage twice, or not at all. ``but``: the period being released (its
    own release answers for its files)."""
    found = []
    for period, event in _releases(store):
        if but is not None and period.same_days(but):
            continue
        if problems := released_file_problems(store, event["receipt_id"], home, verifiers, period):
            found.append(f"{period.name}, already released, no longer matches its receipt "
                         f"{event['receipt_id'][:12]} ({'; '.join(problems)}), so what it billed is not known: "
                         "restore its files (`ops-platform receipts verify` names them)")
    return found


def release_request(period: Period, actor: str, rationale: str, roster: Roster | None = None) -> ActionRequest:
    """The release of ``period`` by ``actor``, with the roles the actor roster gives it (none
    for an actor it does not name: the guard then denies, with a receipt).

    One request per period, actor and roles: a denial (someone without the role tried first,
    or the roster lacked it) does not hold the period against an actor allowed to release it,
    nor against the same actor once granted the role. A period already out is never
    submitted again (``release_invoices`` answers with its release)."""
    roster = roster or load_roster()
    roles = roster.roles(actor)
    return ActionRequest(actor=actor, roles=roles, action="export_release", target_kind="invoice_period",
                         target_id=period.name, rationale=rationale,
                         idempotency_key=f"export_release:{period.name}:{actor}:{','.join(sorted(roles))}",
                         params={"period": period.name})


def released_periods(store) -> list[Period]:
    """The periods whose invoices went out (completed ``export_release`` actions)."""
    return [period for period, _ in _releases(store)]


def _releases(store) -> list[tuple[Period, dict]]:
    """(period, completion event) of each completed ``export_release``."""
    out = []
    for e in store.events(kind="action_completed"):
        payload = json.loads(e["payload"])
        if payload["action"] == "export_release":
            out.append((parse_period(payload["params"]["period"]), e))
    return out


def overlaps(period: Period, released: list[Period]) -> list[str]:
    """Why ``period`` may not go out beside ``released``: a day invoiced twice is billed twice.
    (Releasing the same period again is the same action, which the guard answers once.)"""
    found = [f"overlaps {p.name}, already released ({max(p.start, period.start)} to "
             f"{min(p.end, period.end) - timedelta(days=1)} invoiced there)"
             for p in released if p.name != period.name and p.start < period.end and period.start < p.end]
    if found:  # the way on: the days of the period not out yet, as periods one can name
        rest = [p.name for p in unreleased_parts(period, released)]
        found.append(f"not out yet: {', '.join(rest)}" if rest else "every day of it is out already")
    return found


def unreleased_parts(period: Period, released: list[Period]) -> list[Period]:
    """What of ``period`` is not out yet, as periods: itself when nothing of it is, the days
    around the released ranges otherwise (March after the 1st to the 14th went out: the 14th to
    April), so a month released in part by hand still goes out in full, each day once."""
    parts = [(period.start, period.end)]
    for r in released:
        parts = [piece for start, end in parts
                 for piece in ((start, min(end, r.start)), (max(start, r.end), end)) if piece[0] < piece[1]]
    return [period if (start, end) == (period.start, period.end) else Period(f"{start}..{end}", start, end)
            for start, end in parts]


def release_invoices(books: StoredFinOps, period: Period, out_root: Path,
                     protocol: Callable[[Mapping[str, Executor]], ActionProtocol],
                     actor: str, rationale: str, verifiers: Callable[[], Mapping[str, Any]],
                     roster: Roster | None = None) -> tuple[list[str], Outcome | None]:
    """Release a period's invoices through the guard: ``(reasons, None)`` when the books hold
    it, or it overlaps a period already released (nothing is submitted, so no receipt), else
    ``([], outcome)``. ``protocol`` builds the caller's guarded path (CLI or Dagster
    resources) around the executors it is given; ``verifiers`` gives the public keys the
    release receipt is checked with before its files are."""
    executor = InvoiceExportExecutor(out_root, books)
    guarded = protocol({"export_release": executor})
    keys = functools.cache(verifiers)  # read once, and only if a receipt is checked
    executor.released = lambda: released_periods(guarded.store)  # the store is the protocol's own
    executor.altered = lambda p: altered_releases(guarded.store, guarded.home, keys(), but=p)
    releases = _releases(guarded.store)
    done = next((e for p, e in releases if p.same_days(period)), None)
    if done is not None:  # out already, whoever asks now: answered by its release, files re-checked
        out = Outcome(done["action_id"], "completed", "already released", done["receipt_id"], created=False)
    else:
        held = release_holds(books, period, out_root, [p for p, _ in releases], executor.altered)
        if held:
            return held, None
        out = guarded.submit(release_request(period, actor, rationale, roster))
    if out.status == "completed" and out.receipt_id:  # e.g. a re-run answered "already released"
        problems = released_file_problems(guarded.store, out.receipt_id, guarded.home, keys(), period)
        if problems:
            out = dataclasses.replace(out, status="files_changed", reason=(
                f"released under receipt {out.receipt_id[:12]}, but the files on disk no longer match it: "
                + "; ".join(problems) + " (not rewritten: restore them from a copy that matches the receipt)"))
    return [], out


def release_holds(books: StoredFinOps, period: Period, out_root: Path, released: list[Period],
                  altered: Callable[[Period], list[str]]) -> list[str]:
    """Why ``period`` may not go out now (empty: it may), as the release checks it: the books'
    blockers, a period out (or being receipted) that it overlaps, released lines that cannot
    be read, released files that no longer match their receipt (``altered``, e.g.
    ``altered_releases``). The release sensor asks the same, so it holds what the run would."""
    out_now = invoiced(out_root, released, period)
    return books.blockers(period) + overlaps(period, out_now) + billed_lines(out_root, out_now)[1] + altered(period)


def _names(target_id: object, period: Period) -> bool:
    """Whether a receipt's target names ``period``: the same days, however they are written."""
    try:
        named = parse_period(str(target_id))
    except ValueError:
        return False
    return named.same_days(period)


def released_file_problems(store, receipt_id: str, home: Path | None, verifiers: Mapping[str, Any],
                           period: Period | None = None) -> list[str]:
    """What no longer matches a release receipt: each file subject that is missing or whose
    sha256 differs from the receipted one, and each file of the released folder it does not
    name (nothing for a receipt whose files are intact).
    ``home``: the state folder the receipt's relative names are in. The receipt vouches for
    the files only when its signature verifies under ``verifiers`` (the public keys) and it
    is the release of ``period`` it is read for: a receipt rewritten in the store, or another
    receipt's envelope put in its place, is itself the problem."""
    statement, problem = _release_statement(store, receipt_id, verifiers, period)
    if problem is not None:
        return [problem]
    problems = []
    for subject in statement_subjects(statement):
        path = subject_path(subject, home or Path.cwd())
        if path is None:
            continue  # the target (invoice_period:...), not a file
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif file_sha256(path) != subject.sha256:
            problems.append(f"{path} differs from its receipted sha256 {subject.sha256[:12]}")
    return problems + _unnamed_files(statement, home)


def _release_statement(store, receipt_id: str, verifiers: Mapping[str, Any],
                       period: Period | None = None) -> tuple[dict | None, str | None]:
    """(statement, None) for a release receipt that vouches for a release (of ``period``, if
    given): in the ledger, signed under ``verifiers``, recording an executed ``export_release``;
    else (None, why it vouches for nothing)."""
    entry = store.entry(receipt_id)
    if entry is None or entry.receipt_id != receipt_id:
        return None, f"receipt {receipt_id[:12]} is not in the ledger"
    try:
        statement = entry_statement(entry, dict(verifiers), store.ledger_id())
    except (ValueError, TypeError, VerificationError) as exc:
        return None, f"receipt {receipt_id[:12]} does not verify ({exc}): its file digests vouch for nothing"
    predicate = statement.get("predicate") if isinstance(statement.get("predicate"), dict) else {}
    target = predicate.get("target") if isinstance(predicate.get("target"), dict) else {}
    if predicate.get("action") != "export_release" or not predicate.get("executed") or (
            period is not None and not _names(target.get("id"), period)):
        return None, (f"receipt {receipt_id[:12]} is not the release of {period.name if period else 'a period'} "
                      f"(it records {predicate.get('action')!r} on {target.get('id')!r}): its file digests vouch "
                      "for nothing")
    return statement, None


def _unnamed_files(statement: Mapping[str, Any], home: Path | None) -> list[str]:
    """Files in a released folder that its receipt does not name: one put beside the released
    files would pass for part of the release (a billing import takes every CSV of the folder)."""
    named = {p for s in statement_subjects(statement) if (p := subject_path(s, home or Path.cwd())) is not None}
    return [f"{extra} is in the released folder but not in its receipt"
            for folder in sorted({p.parent for p in named}) if folder.is_dir()
            for extra in sorted(folder.iterdir()) if extra not in named]


def unreceipted_files(store, home: Path | None, verifiers: Mapping[str, Any]) -> list[str]:
    """Files in the released invoice folders that no release receipt names, for ``receipts
    verify`` and the ledger check, which check the named files' digests themselves."""
    found = []
    for _, event in _releases(store):
        # A receipt that vouches for nothing is the ledger verification's to report.
        statement, _ = _release_statement(store, event["receipt_id"], verifiers)
        if statement is not None:
            found += [f"{p}: remove it (receipt {event['receipt_id'][:12]} released the folder without it)"
                      for p in _unnamed_files(statement, home)]
    return found
