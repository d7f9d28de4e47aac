"""Throughput and latency of durable, signed receipt appends to the control-store ledger.

Every privileged action commits an in-toto statement as a DSSE-signed, hash-chained ledger
entry plus one signed Merkle tree head per transaction (``append_receipts``). This measures,
in one run:

  sign        raw Ed25519 signatures/s over ~600-byte messages with the same Signer
              (the baseline: nothing can append signed receipts faster than this)
  build       ``build_entries`` (two signing threads) + Merkle append in memory, no database
              (the CPU ceiling)
  single      one write transaction per receipt, per backend: receipts/s, p50/p99 per append
  batched     ``--batch`` receipts per transaction: receipts/s, p50/p99 per batch and per
              receipt (batch latency / batch size)

Commits are durable: SQLite runs in WAL mode with ``PRAGMA synchronous=FULL`` (set by the
store) and PostgreSQL with ``synchronous_commit=on``; both are read back and printed. After
each case the whole stored ledger is checked with ``verify_ledger`` (every signature, chain
link and checkpoint) and the run fails if it does not verify. Each transaction also signs a
tree head, so a batch of n receipts costs n + 1 signatures. Target: batched receipts/s is at
least half the raw signing rate.

PostgreSQL: a fresh database is created on the server at ``OPS_PLATFORM_TEST_PG_URL``
(default ``postgresql+psycopg2://ops:ops@127.0.0.1:5432/postgres``) and dropped at the end;
the backend is skipped with a message if the server is unreachable.

    python benchmarks/bench_receipts.py [--n 2000] [--batch 100]
        [--backends sqlite,postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ops_platform.control.ledger_writer import CHUNK, append_receipts, two_thread_signing
from ops_platform.control.store import ControlStore
from ops_platform.receipts import KeyRing, Signer, make_statement, target_subject, verify_ledger
from ops_platform.receipts.canonical import canonical_json
from ops_platform.receipts.dsse import PAYLOAD_TYPE, pae
from ops_platform.receipts.ledger import LedgerEntry, build_entries, leaf_data, sign_tree_head
from ops_platform.receipts.merkle import CompactRange

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg2://ops:ops@127.0.0.1:5432/postgres"
RATIO_TARGET = 0.5
SIGN_MESSAGE_BYTES = 600
SIGN_ROUNDS = 5
WARMUP = 10
_BASE_TIME = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
_RUN = uuid.uuid4().hex[:8]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC))


class StatementSource:
    """Realistic "pause" statements, unique across the run (the ledger refuses duplicates)."""

    def __init__(self) -> None:
        self.next_i = 0

    def take(self, n: int) -> list[dict]:
        out = [self._one(i) for i in range(self.next_i, self.next_i + n)]
        self.next_i += n
        return out

    @staticmethod
    def _one(i: int) -> dict:
        target = f"release-svc-{i % 6}"
        requested = _BASE_TIME + timedelta(milliseconds=250 * i)
        predicate = {
            "actor": f"ramp-controller@summit.example/{i % 4}",
            "roles": ["ramp_controller"],
            "action": "pause",
            "target": {"kind": "flag", "id": target},
            "decision": {"allow": True, "reason": "ramp_controller may pause flags",
                         "policy_version": "sha256:5d41402abc4b2a76b9719d911017c592"},
            "rationale": (f"error budget burn {2 + i % 13}x over 5m on {target}; "
                          "pausing the ramp until the SLO recovers"),
            "idempotency_key": f"bench-{_RUN}-pause-{target}-{i:08d}",
            "action_id": uuid.UUID(int=(int(_RUN, 16) << 64) | i).hex,
            "requested_at": iso(requested),
            "receipted_at": iso(requested + timedelta(milliseconds=40)),
        }
        return make_statement([target_subject("flag", target)], "pause", predicate)


# -- measurement helpers ----------------------------------------------------------------


def pct(samples: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method); the single value for a single sample."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def lat_ms(samples_s: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(samples_s, 50) * 1e3, 3), "p99_ms": round(pct(samples_s, 99) * 1e3, 3)}


@contextmanager
def stopwatch(out: dict[str, float]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    out["wall_s"] = time.perf_counter() - wall
    out["cpu_s"] = time.process_time() - cpu


def sign_baseline(signer: Signer, count: int) -> dict[str, Any]:
    """Raw signatures/s over distinct ~600-byte messages, best and median of a few rounds."""
    messages = [os.urandom(SIGN_MESSAGE_BYTES) for _ in range(count)]
    sign = signer.sign
    rates = []
    for _ in range(SIGN_ROUNDS):
        t0 = time.perf_counter()
        for m in messages:
            sign(m)
        rates.append(count / (time.perf_counter() - t0))
    return {"message_bytes": SIGN_MESSAGE_BYTES, "signatures": count * SIGN_ROUNDS,
            "median_per_s": round(statistics.median(rates)), "best_per_s": round(max(rates))}


def build_ceiling(statements: list[dict], signer: Signer, batch: int) -> dict[str, Any]:
    """What append_receipts does in Python (sign on two threads, chain, Merkle, tree head),
    minus the database."""
    prev: LedgerEntry | None = None
    tree = CompactRange()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        sign_many = two_thread_signing(signer, pool)
        for start in range(0, len(statements), batch):
            for chunk_start in range(start, min(start + batch, len(statements)), CHUNK):
                chunk = build_entries(prev, statements[chunk_start:min(chunk_start + CHUNK, start + batch)],
                                      signer, sign_many)
                for entry in chunk:
                    tree.append(leaf_data(entry))
                prev = chunk[-1]
            sign_tree_head(tree.size, tree.root().hex(), signer, "2025-06-01T09:00:00.000000Z")
    wall = time.perf_counter() - t0
    return {"receipts": len(statements), "batch": batch, "wall_s": round(wall, 4),
            "receipts_per_s": round(len(statements) / wall)}


def verify_store(store: ControlStore, ring: KeyRing) -> dict[str, Any]:
    """Load the whole ledger and verify it; raise if anything does not check out."""
    t0 = time.perf_counter()
    entries = store.ledger_entries()
    checkpoints = store.checkpoints()
    t1 = time.perf_counter()
    report = verify_ledger(entries, checkpoints, ring.verifiers())
    t2 = time.perf_counter()
    if not report.ok:
        raise AssertionError(f"ledger does not verify ({len(report.errors)} problems): "
                             f"{report.first_bad}")
    return {"ok": report.ok, "entries": report.entries, "checkpoints": report.checkpoints,
            "load_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3),
            "verify_sigs_per_s": round((report.entries + report.checkpoints) / (t2 - t1))}


def run_single(store: ControlStore, signer: Signer, statements: list[dict]) -> dict[str, Any]:
    samples: list[float] = []
    clock = time.perf_counter
    totals: dict[str, float] = {}
    with stopwatch(totals):
        for stmt in statements:
            t0 = clock()
            with store.write() as tx:
                append_receipts(store, tx, [stmt], signer, now_iso())
            samples.append(clock() - t0)
    n = len(statements)
    return {"receipts": n, "transactions": n, "signatures": 2 * n,
            "wall_s": round(totals["wall_s"], 3), "cpu_pct": round(100 * totals["cpu_s"] / totals["wall_s"]),
            "receipts_per_s": round(n / totals["wall_s"]), "per_append": lat_ms(samples)}


def run_batched(store: ControlStore, signer: Signer, statements: list[dict],
                batch: int) -> dict[str, Any]:
    samples: list[float] = []
    clock = time.perf_counter
    totals: dict[str, float] = {}
    chunks = [statements[i:i + batch] for i in range(0, len(statements), batch)]
    with stopwatch(totals):
        for chunk in chunks:
            t0 = clock()
            with store.write() as tx:
                append_receipts(store, tx, chunk, signer, now_iso())
            samples.append(clock() - t0)
    n = len(statements)
    per_receipt = [s / len(c) for s, c in zip(samples, chunks, strict=True)]
    return {"receipts": n, "batch": batch, "transactions": len(chunks),
            "signatures": n + len(chunks), "wall_s": round(totals["wall_s"], 3),
            "cpu_pct": round(100 * totals["cpu_s"] / totals["wall_s"]),
            "receipts_per_s": round(n / totals["wall_s"]),
            "per_batch": lat_ms(samples), "per_receipt": lat_ms(per_receipt)}


# -- backends ---------------------------------------------------------------------------


def sqlite_facts(store: ControlStore) -> dict[str, Any]:
    with store.read() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"journal_mode": mode, "synchronous": names.get(sync, str(sync))}


def pg_facts(store: ControlStore) -> dict[str, Any]:
    with store.read() as conn:
        return {name: conn.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("synchronous_commit", "fsync", "wal_sync_method")}


@contextmanager
def sqlite_url(tmp: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp / 'control.sqlite'}"


@contextmanager
def postgres_url(admin_url: str) -> Iterator[str]:
    """A fresh database on the admin URL's server, dropped afterwards (even on failure)."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"ops_bench_receipts_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield str(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def pg_server_version(admin_url: str) -> str:
    """``SELECT version()``; raises if the server is unreachable."""
    engine = sa.create_engine(admin_url, poolclass=sa.NullPool,
                              connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version()")).scalar())
    finally:
        engine.dispose()


def bench_backend(name: str, url: str, ring: KeyRing, source: StatementSource, n: int,
                  batch: int) -> dict[str, Any]:
    signer = ring.signer()
    store = ControlStore(url)
    try:
        store.migrate(now_iso())
        facts = sqlite_facts(store) if store.is_sqlite else pg_facts(store)
        for stmt in source.take(WARMUP):  # first connection, compiled-statement caches
            with store.write() as tx:
                append_receipts(store, tx, [stmt], signer, now_iso())
        single = run_single(store, signer, source.take(n))
        single["verify"] = verify_store(store, ring)
        batched = run_batched(store, signer, source.take(n), batch)
        batched["verify"] = verify_store(store, ring)
    finally:
        store.engine.dispose()
    return {"backend": name, "durability": facts, "warmup_receipts": WARMUP,
            "single": single, "batched": batched}


# -- report -----------------------------------------------------------------------------


def machine_facts(pg_version: str | None) -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "sqlite_version": sqlite3.sqlite_version, "postgresql": pg_version}


def durability_line(result: dict[str, Any]) -> str:
    d = result["durability"]
    if result["backend"] == "sqlite":
        return (f"  sqlite: journal_mode={d['journal_mode']}, synchronous={d['synchronous']}"
                " -> every COMMIT fsyncs the WAL (durable across power loss)")
    return (f"  postgres: synchronous_commit={d['synchronous_commit']}, fsync={d['fsync']}, "
            f"wal_sync_method={d['wal_sync_method']} -> COMMIT returns after the WAL is flushed")


def print_table(results: list[dict[str, Any]], sign_rate: float) -> None:
    head = (f"{'backend':<9}{'case':<18}{'rcpts':>6}{'tx':>6}{'wall s':>8}{'rcpt/s':>8}"
            f"{'cpu%':>5}{'p50 ms':>9}{'p99 ms':>9}  {'per rcpt p50/p99 ms':<20}"
            f"{'/sign':>6}{'verify s':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        for case in ("single", "batched"):
            c = r[case]
            lat = c["per_append"] if case == "single" else c["per_batch"]
            per = c["per_append"] if case == "single" else c["per_receipt"]
            label = "single (1/tx)" if case == "single" else f"batched ({c['batch']}/tx)"
            per_s = f"{per['p50_ms']:.3f} / {per['p99_ms']:.3f}"
            print(f"{r['backend']:<9}{label:<18}{c['receipts']:>6}{c['transactions']:>6}"
                  f"{c['wall_s']:>8.2f}{c['receipts_per_s']:>8}{c['cpu_pct']:>5}"
                  f"{lat['p50_ms']:>9.3f}{lat['p99_ms']:>9.3f}  {per_s:<20}"
                  f"{c['receipts_per_s'] / sign_rate:>6.2f}{c['verify']['verify_s']:>9.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="receipts per case (default 5000)")
    ap.add_argument("--batch", type=int, default=1000, help="receipts per batched transaction")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma list: sqlite,postgres")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown or not backends or args.n < 1 or args.batch < 1:
        ap.error(f"bad arguments: backends={args.backends!r} n={args.n} batch={args.batch}")

    admin_url = os.environ.get("OPS_PLATFORM_TEST_PG_URL", DEFAULT_PG_ADMIN_URL)
    shown_url = sa.make_url(admin_url).render_as_string(hide_password=True)
    pg_version: str | None = None
    skipped: dict[str, str] = {}
    if "postgres" in backends:
        try:
            pg_version = pg_server_version(admin_url)
        except Exception as exc:  # noqa: BLE001 - any failure means "no usable server"
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            skipped["postgres"] = f"unreachable at {shown_url}: {why}"

    facts = machine_facts(pg_version)
    print("receipts benchmark: durable signed ledger appends (append_receipts + verify_ledger)")
    for key, value in facts.items():
        print(f"  {key:<15}{value if value is not None else '-'}")
    print(f"  n={args.n} receipts per case, batch={args.batch}, warm-up={WARMUP} single appends "
          "per backend (not timed)")
    for name, why in skipped.items():
        print(f"SKIP {name}: {why}")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_receipts_") as tmp_name:
        tmp = Path(tmp_name)
        ring = KeyRing.load_or_create(tmp / "keys")
        signer = ring.signer()
        source = StatementSource()
        sample = canonical_json(source._one(0))
        sign = sign_baseline(signer, max(2000, args.n))
        sign["receipt_pae_bytes"] = len(pae(PAYLOAD_TYPE, sample))
        ceiling = build_ceiling(StatementSource().take(args.n), signer, args.batch)
        runners: dict[str, Callable[[], Any]] = {
            "sqlite": lambda: sqlite_url(tmp),
            "postgres": lambda: postgres_url(admin_url),
        }
        for name in backends:
            if name in skipped:
                continue
            with runners[name]() as url:
                results.append(bench_backend(name, url, ring, source, args.n, args.batch))

    rate = sign["median_per_s"]
    print(f"\nraw Ed25519 signing: {rate:,} sig/s median (best {sign['best_per_s']:,}) over "
          f"{SIGN_MESSAGE_BYTES}-byte messages; a receipt's DSSE PAE is "
          f"{sign['receipt_pae_bytes']} bytes")
    print(f"in-memory ceiling (build_entries + Merkle + tree head, no DB, batch={args.batch}): "
          f"{ceiling['receipts_per_s']:,} receipts/s = {ceiling['receipts_per_s'] / rate:.2f} x sign")
    print("durability (read back from each store):")
    for r in results:
        print(durability_line(r))
    print()
    if results:
        print_table(results, rate)
    print("\n'/sign' = receipts/s divided by the raw signing rate. Every transaction also signs one "
          "tree head:\nsingle = 2 signatures per receipt (ceiling 0.50), batched = n+1 per n "
          f"(ceiling {args.batch / (args.batch + 1):.2f}).")
    print("p99 of the batched case is over "
          f"{-(-args.n // args.batch)} batches (close to the max). 'verify s' = verify_ledger "
          "over the whole stored ledger so far\n(entries + checkpoints, cumulative across cases).")
    verdicts = []
    for r in results:
        b, s = r["batched"], r["single"]
        ratio = b["receipts_per_s"] / rate
        verdict = "PASS" if ratio >= RATIO_TARGET else "FAIL"
        verdicts.append(verdict == "PASS")
        r["batched_over_sign"] = round(ratio, 3)
        r["target_met"] = verdict == "PASS"
        print(f"{r['backend']}: batched/sign = {ratio:.2f} (target >= {RATIO_TARGET}) {verdict}; "
              f"verified {b['verify']['entries']} entries + {b['verify']['checkpoints']} checkpoints "
              f"ok (after single: {s['verify']['verify_s']:.2f}s, after batched: "
              f"{b['verify']['verify_s']:.2f}s, load {b['verify']['load_s']:.2f}s)")

    if args.json:
        payload = {"machine": facts, "n": args.n, "batch": args.batch, "sign": sign,
                   "build_ceiling": ceiling, "skipped": skipped, "results": results,
                   "ratio_target": RATIO_TARGET}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
