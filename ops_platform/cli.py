"""The `ops-platform` command."""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .paths import StatePaths
from .world import generate_world, preset, world_exists

# Lines are never wrapped (a pipe gets 80 columns): a receipt id or a reason cut in two
# cannot be found by grep or a script. Tables still fit the terminal.
console = Console(stderr=False, soft_wrap=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False, disable=not console.is_terminal and bool(os.environ.get("CI")))


class _Main(click.Group):
    """Every subcommand: an unreachable control store, an insecure or corrupt key file or a
    ledger that refuses new receipts is a one-line error, not a traceback."""

    def invoke(self, ctx: click.Context):
        from .control.ledger_writer import LedgerCorrupt
        from .control.store import StoreUnavailable
        from .guard.runtime import MissingKey, NoStore
        from .receipts.keys import KeyFileError
        from .settings import SettingError

        try:
            return super().invoke(ctx)
        except StoreUnavailable as exc:
            raise click.ClickException(f"the control store is unavailable: {exc}") from None
        except (KeyFileError, NoStore, MissingKey, SettingError) as exc:
            raise click.ClickException(str(exc)) from None
        except LedgerCorrupt as exc:
            raise click.ClickException(f"the receipts ledger refuses new receipts: {exc}") from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ops-platform", prog_name="ops-platform")
def main() -> None:
    """Summit ops platform: SLOs, ramps, receipts and per-tenant cost, on Dagster."""


@main.group()
def world() -> None:
    """Generate the Summit world (the embedded default data source)."""


def _generate(cfg, out: Path) -> dict:
    from .world.generate import progress_steps

    with _progress() as prog:
        task = prog.add_task(f"world {cfg.tenants} tenants x {cfg.days} days", total=progress_steps(cfg))

        def tick(stage: str, n: int) -> None:
            prog.advance(task)
            prog.update(task, description=f"world: {stage}")

        summary = generate_world(cfg, out, progress=tick)
    return summary.rows


@world.command("generate")
@click.option("--preset", "preset_name", default="S", show_default=True, help="Scale preset: S, M or L.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed; same seed, same bytes.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the state folder's world/).")
@click.option("--tenants", type=int, default=None, help="Override the preset's tenant count.")
@click.option("--days", type=int, default=None, help="Override the preset's number of days.")
@click.option("--start-date", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First local day.")
@click.option("--blips-per-day", type=click.IntRange(min=0), default=None,
              help="Benign 1-2 minute error bursts a day, no incident (default 4; 0 for none).")
def world_generate(preset_name: str, seed: int, out: Path | None, tenants: int | None, days: int | None,
                   start_date, blips_per_day: int | None) -> None:
    """Write a world's landing zone and truth folder."""
    try:
        cfg = preset(preset_name, seed=seed, tenants=tenants, days=days,
                     start_date=start_date.date() if start_date else None, blips_per_day=blips_per_day)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if cfg.days < 3 or cfg.tenants < 3:
        raise click.UsageError("a world needs at least 3 tenants and 3 days")
    state_world = StatePaths.from_env().world
    out = out or state_world
    if out.exists() and not out.is_dir():
        raise click.UsageError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not world_exists(out):
        # Generating replaces landing/ and truth/: only over a world, never over other files.
        raise click.UsageError(f"--out {out} holds files but no world ({out / 'manifest.json'} is missing): "
                               "choose an empty or new folder, or a world to regenerate")
    replaced = world_exists(out)
    t0 = time.perf_counter()
    try:
        rows = _generate(cfg, out)
    except OSError as exc:
        raise click.ClickException(f"cannot write the world to {out}: {exc.strerror or exc}") from None
    dt = time.perf_counter() - t0
    console.print(f"[green]world written[/green] to {escape(str(out))} in {dt:.1f}s: "
                  f"{sum(rows.values()):,} rows ({', '.join(f'{k} {v:,}' for k, v in rows.items())})")
    if replaced and out.resolve() == state_world.resolve():
        console.print("[yellow]note:[/yellow] this replaced the state folder's world: the warehouse and the "
                      "ledger still hold what the old one loaded; `ops-platform demo` (which keeps an existing world) or "
                      "the ingest jobs load the new one")


@main.command()
def paths() -> None:
    """Print where the platform keeps its state."""
    from .guard.runtime import control_url, shown_url

    p = StatePaths.from_env()
    rows = [(name, getattr(p, name)) for name in ("home", "world", "landing", "truth", "warehouse")]
    store = shown_url(control_url(p))  # the store in use: the state folder's SQLite, or OPS_PLATFORM_CONTROL_URL
    rows += [("control_store", store), ("spool", p.spool_file), ("flags", p.live_flags),
             ("invoices", p.invoices), ("dagster_home", p.dagster_home), ("keys_dir", p.keys_dir)]
    for name, value in rows:  # plain lines, never wrapped: scripts read them
        click.echo(f"{name:14} {value}")


def _prepare_dagster_home(p: StatePaths) -> None:
    from sensors.runner import prepare_dagster_home

    p.ensure()
    for note in prepare_dagster_home(p.dagster_home):
        console.print(f"[yellow]warning:[/yellow] {escape(note)}")
    os.environ["DAGSTER_HOME"] = str(p.dagster_home)
    os.environ.setdefault("OPS_PLATFORM_WAREHOUSE", str(p.warehouse))


@main.command()
@click.option("--preset", "preset_name", type=click.Choice(["S", "M", "L"]), default="S", show_default=True,
              help="World preset if none exists yet.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--fresh", is_flag=True, help="Regenerate the world even if one exists (and start a new ledger if "
              "the control store went missing).")
def demo(preset_name: str, seed: int, fresh: bool) -> None:
    """Generate the demo world (if absent), materialize every asset and check, print a summary."""
    from .guard.runtime import lost_ledger

    p = StatePaths.from_env()
    try:
        p.ensure()
    except OSError as exc:
        raise click.ClickException(f"cannot write the state folder {p.home} ({exc.strerror}): set "
                                   "OPS_PLATFORM_HOME to a writable folder") from None
    if not os.access(p.home, os.W_OK):
        raise click.ClickException(f"the state folder {p.home} is not writable: set OPS_PLATFORM_HOME to a "
                                   "writable folder")
    if not fresh and (problem := lost_ledger(p)):
        raise click.ClickException(problem)
    t0 = time.perf_counter()
    if fresh or not world_exists(p.world):
        _generate(preset(preset_name, seed=seed), p.world)
    else:
        console.print(f"using the existing world at {escape(str(p.world))} (--fresh regenerates it)")
        from .world.generate import SIMULATOR_VERSION, older_simulator

        if (made := older_simulator(p.world)) is not None:
            console.print(f"[yellow]note:[/yellow] an older simulator made this world (version {made}; this one "
                          f"makes version {SIMULATOR_VERSION}): its figures differ from a new world's and from the "
                          "docs'. `ops-platform demo --fresh` (make demo DEMO_ARGS=--fresh) makes a new one.")
    _prepare_dagster_home(p)

    import dagster as dg

    from ops_platform.definitions import build_definitions
    from sensors.runner import release_stale_runs, run_everything

    defs = build_definitions(p)
    keys = defs.resolve_job_def("ingest_daily").partitions_def.get_partition_keys()
    with dg.DagsterInstance.get() as instance, _progress() as prog:
        stale = release_stale_runs(instance)
        if stale:
            console.print(f"{len(stale)} run(s) left started by an interrupted run marked failed, their "
                          "DuckDB pool slot freed")
        task = prog.add_task("materializing", total=len(keys) + 7)
        report = run_everything(defs, instance, on_step=lambda label: (
            prog.advance(task), prog.update(task, description=f"materialized {label}")),
            release_pipeline=lambda: _ramp_latest_bad_build(p))
    _summary(p, keys, report, time.perf_counter() - t0)
    if report.failed_runs:
        sys.exit(1)


def _ramp_latest_bad_build(p: StatePaths) -> str | None:
    """The demo's stand-in for the release pipeline: the live flag file starts as the world's
    initial one, and the world's ramps are history, so put the last build the controller
    judged bad back on its flag at the split it had when judged: the controller then holds
    a live ramp (the other verdicts name builds no longer on a flag, and say so)."""
    from .ramp.flag_executor import flag_file_lock
    from .ramp.flags import FlagFile
    from .ramp.switchboard import live_flag_file
    from .warehouse import Warehouse
    from .world.releases import ramp_on_flag

    wh = Warehouse(p.warehouse)
    bad = wh.query("SELECT build_id, acted_at FROM ramp.verdicts WHERE action IN ('pause', 'rollback') "
                   "ORDER BY acted_at DESC LIMIT 1")
    if bad.height == 0:
        return None
    build, at = bad.row(0)
    live = live_flag_file(p.home, p.world)
    with flag_file_lock(live):
        try:
            flags = ramp_on_flag(FlagFile.load(live), wh.query("SELECT * FROM raw.ramp_steps"), build, at)
        except ValueError as exc:  # e.g. a former run left another candidate serving on that flag
            return f"release pipeline: {build} not put on its flag ({exc})"
        flags.save(live)
    state = next(r for r in flags.releases().values() if r.candidate == build)
    split = ", ".join(f"{c} {pct}%" for c, pct in state.cohort_percent.items() if pct)
    return f"release pipeline: {build} ramping on {state.flag} ({split or 'at 0%'}) when the controller ran"


def _ramp_story(p: StatePaths, report) -> None:
    """What the ramp controller did with the failed burn checks, and the receipts it left."""
    import json

    from .guard.roster import CONTROLLER_ACTOR
    from .guard.runtime import open_store
    from .ramp.flags import FlagFile

    store = open_store(p)
    every = [e for e in store.events(actor=CONTROLLER_ACTOR) if e["target_kind"] == "flag"
             and e["kind"] in ("action_completed", "action_denied", "action_pending_receipt")]
    # This run's actions: a demo run again finds the earlier runs' actions in the ledger.
    since = report.controller_since or ""
    acted = [e for e in every if e["ts"] >= since]
    receipts = {e["receipt_id"] for e in acted if e["receipt_id"]}  # the controller's own, not the ledger's
    if report.release_pipeline:
        click.echo(report.release_pipeline)
    earlier = len(every) - len(acted)
    click.echo(f"ramp controller: {report.controller_signals} signal(s) from failed burn and ramp verdict "
               f"checks -> {len(acted)} guarded action(s), {len(receipts)} receipt(s)"
               + (f" this run ({earlier} from earlier runs stand)" if earlier else ""))
    # What changed a flag first, then what was receipted without a change (and why).
    acted.sort(key=lambda e: "skipped" in json.loads(e["payload"]))
    for e in acted[:8]:
        payload = json.loads(e["payload"])
        build = (payload.get("params") or {}).get("build_id") or ""
        rid = f" receipt {e['receipt_id'][:12]}" if e["receipt_id"] else ""
        what = f"skipped: {payload['skipped']}" if "skipped" in payload else e["kind"]
        click.echo(f"  {payload.get('action', ''):<9} {e['target_id']:<18} {build:<13} {what}{rid}")
    if len(acted) > 8:
        click.echo(f"  ... {len(acted) - 8} more (ops-platform switchboard log FLAG)")
    _backtest_line(p)
    _alerts_line(p)
    live = p.live_flags
    if live.exists():
        held = [f for f, r in FlagFile.load(live, lenient=True).releases().items() if r.paused or r.frozen]
        console.print(f"  flags held: {escape(', '.join(held)) or 'none'}  (ops-platform switchboard status; "
                      "switchboard log FLAG; receipts verify)")


def _finops_story(p: StatePaths, report) -> None:
    """Reconciliation and its score against the truth, anomalies found, invoice files written."""
    import polars as pl

    from .finops.anomalies import score_anomalies
    from .finops.attribution import Attribution
    from .finops.score import score_attribution
    from .warehouse import Warehouse

    wh = Warehouse(p.warehouse)
    try:
        att = Attribution(wh.query("SELECT * FROM finops.tenant_day"), wh.query("SELECT * FROM finops.day"),
                          wh.query("SELECT * FROM finops.reconciliation"))
        anomalies = wh.query("SELECT * FROM finops.anomalies")
    except Exception:  # noqa: BLE001 - the finops job did not run: nothing to tell
        return
    day = att.day
    exact = int((day["billed_micros"] == day["attributed_micros"]).sum())
    currency = _bill_currency(wh) or "USD"
    click.echo(f"cost reconciliation: {int(day['billed_micros'].sum()) / 1e6:,.2f} {currency} billed over {day.height} "
               f"day(s), {exact} exact to the micro-dollar; confidence min {day['confidence'].min():.3f} "
               f"(final days {day.filter(pl.col('final'))['confidence'].min():.3f})")
    truth = p.truth / "tenant_daily_cost.parquet"
    if truth.exists():
        f = score_attribution(att, pl.read_parquet(truth))
        click.echo(f"  scored against the truth: MAPE {f['mape']:.3%}, {f['within_5pct']:.1%} of tenant-days "
                   "within 5% (ops-platform finops score)")
    model = anomalies.filter(pl.col("model_flag"))
    click.echo(f"  anomalies flagged: {model.height} (model), {int(anomalies['baseline_flag'].sum())} (baseline)")
    for r in model.sort("impact_usd", descending=True).head(5).iter_rows(named=True):
        who = r["tenant_id"] or r["service"]
        click.echo(f"    {r['utc_date']} {r['kind']:<23} {who:<9} {r['meter'] or '':<17} "
                   f"{r['value']:,.1f} vs {r['expected']:,.1f} expected, impact {r['impact_usd']:,.2f} {currency}")
    if (p.truth / "cost_anomalies.parquet").exists():
        sc = score_anomalies(anomalies, pl.read_parquet(p.truth / "cost_anomalies.parquet"))
        click.echo(f"    vs injected: model precision {sc['model']['precision']:.2f} recall {sc['model']['recall']:.2f}; "
                   f"baseline precision {sc['baseline']['precision']:.2f} recall {sc['baseline']['recall']:.2f}")
    folder = p.invoices / (report.invoice_period or "")
    files = sorted(folder.glob("*")) if report.invoice_period else []
    if files:
        click.echo(f"  invoices released for {report.invoice_period} (guarded, receipted): {folder}")
        for f in files:
            click.echo(f"    {f.name}")
    click.echo("  calendar months wait for the release sensor: ops-platform invoices export --period YYYY-MM")


def _bill_currency(wh) -> str | None:
    """The currency of the bill the warehouse holds, by the rule attribution applies; the
    currencies joined by '+' for a bill in several (which attribution refuses)."""
    from .finops.pipeline import bill_currency

    return bill_currency(wh.query("SELECT DISTINCT BillingCurrency FROM raw.billing_focus"))


def _backtest_line(p: StatePaths) -> None:
    """The controller's score against the world's truth, as the `ramp/backtest` asset stored it."""
    from .warehouse import Warehouse

    try:
        rows = Warehouse(p.warehouse).query("SELECT metric, value FROM ramp.backtest WHERE policy = 'controller'")
    except Exception:  # noqa: BLE001 - no backtest table (e.g. the score job failed): say nothing
        return
    f = dict(zip(rows["metric"], rows["value"], strict=True))
    click.echo(f"  scored against the truth: {f['caught_before_general']:.0f}/{f['bad_builds']:.0f} bad builds held "
               f"before the general cohort, {f['false_pauses']:.0f} false pause(s) in {f['good_builds']:.0f} good "
               f"ramps, median {f['median_minutes_to_pause'] or 0:.1f} min to pause (ops-platform backtest ramps)")


def _alerts_line(p: StatePaths) -> None:
    """The SLO burn alerts' score per tier, as the `slo/alert_backtest` asset stored it."""
    from .warehouse import Warehouse

    try:
        rows = Warehouse(p.warehouse).query(
            "SELECT tier, metric, value FROM slo.alert_backtest WHERE slo = 'all' ORDER BY rowid")
    except Exception:  # noqa: BLE001 - no alert backtest table (e.g. the score job failed): say nothing
        return
    tiers: dict[str, dict] = {}
    for tier, metric, value in rows.rows():
        tiers.setdefault(tier, {})[metric] = value
    if not tiers:
        return
    click.echo("  SLO alerts vs the truth: " + "; ".join(
        f"{t} {s['caught']:.0f}/{s['events']:.0f} events caught, {s['false_alerts']:.0f} of {s['alerts']:.0f} "
        "alerts without cause" for t, s in tiers.items()) + " (ops-platform backtest alerts)")


def _summary(p: StatePaths, keys: list[str], report, seconds: float) -> None:
    from .warehouse import Warehouse

    wh = Warehouse(p.warehouse)
    counts = wh.table_counts()
    q = wh.query("SELECT source_table, count(*) AS n FROM raw.quarantine GROUP BY 1 ORDER BY 1")
    table = Table(title="Warehouse tables", show_lines=False)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    console.print(f"partitions: {len(keys)} ({keys[0]} .. {keys[-1]}, daily in "
                  f"{os.environ.get('OPS_PLATFORM_TZ', 'America/Denver')})")
    console.print(f"runs: {report.runs}, failed: {len(report.failed_runs)} {report.failed_runs or ''}")
    for label, reason in report.failure_reasons.items():
        console.print(f"  [red]failed[/red] {escape(label)}: {escape(reason)}", highlight=False)
    _ramp_story(p, report)
    _finops_story(p, report)
    console.print(f"checks: {report.checks_passed} passed, {len(report.checks_failed)} failed, "
                  f"{len(report.checks_warned)} warnings")
    for label, names in (("[red]failed[/red] ", report.checks_failed), ("[yellow]warning[/yellow]", report.checks_warned)):
        by_asset: dict[str, list[str]] = {}
        for name in names:
            asset, check = name.split(":", 1)
            by_asset.setdefault(asset.split("[", 1)[0], []).append(check)
        for asset, checks in sorted(by_asset.items()):
            top = ", ".join(f"{c} x{n}" for c, n in Counter(checks).most_common(4))
            console.print(f"  {label} {asset}: {len(checks)} ({top})")
    console.print("quarantined rows: " + (", ".join(f"{r['source_table']} {r['n']}" for r in q.iter_rows(named=True))
                                          or "none"))
    console.print(f"warehouse:    {escape(str(p.warehouse))}  (read-only SQL: see README.md, Ad hoc SQL)")
    console.print(f"landing zone: {escape(str(p.landing))}")
    console.print(f"truth:        {escape(str(p.truth))}")
    console.print(f"done in {seconds:.0f}s. Open the UI with [bold]make dev[/bold] (http://127.0.0.1:3000).")


@main.group()
def receipts() -> None:
    """Verify, inspect and complete the signed receipts ledger."""


_store_option = click.option("--store", "url", default=None, metavar="URL",
                             help="An existing control store's URL, for this run (default: OPS_PLATFORM_CONTROL_URL, "
                                  "else the state folder's SQLite file, either created on first use).")


def _guard_paths() -> StatePaths:
    return StatePaths.from_env().ensure()


@receipts.command("verify")
@_store_option
def receipts_verify(url: str | None) -> None:
    """Check every signature, the hash chain, the checkpoints and file digests, and that each
    released invoice folder holds only the files its receipt names."""
    from .finops.export import unreceipted_files
    from .guard.runtime import control_url, existing_store, file_digest_in, verify_store

    p = StatePaths.from_env()  # read only: verify creates no folder, store or key
    store = existing_store(url or control_url(p))  # NoStore: a one-line error (_Main)
    verifiers = _public_keys(p)
    _say_if_no_keys(p, verifiers)
    report = verify_store(store, verifiers, file_digest=file_digest_in(p.home), keys_dir=p.keys_dir)
    # Released invoice folders hold exactly the files their receipts name (a file added beside
    # them would pass for part of the release).
    extra = unreceipted_files(store, p.home, verifiers)
    if report.ok and not extra:
        console.print(f"[green]ledger verified[/green]: {report.entries} receipts, {report.checkpoints} signed tree heads")
        return
    # Every problem at once: a changed file (the ledger's check) and a file added beside the
    # released ones are both named, not the second only once the first is mended.
    for problems, head in ((report.errors if not report.ok else [], f"ledger verification FAILED at {report.first_bad}"),
                           (extra, f"released files do not match their receipts ({report.entries} receipts read)")):
        if problems:
            console.print(f"[red]{escape(head)}[/red]")
            for err in problems[:20]:
                console.print(f"  {escape(str(err))}")
    sys.exit(1)


@receipts.command("show")
@click.argument("receipt_id")
@_store_option
def receipts_show(receipt_id: str, url: str | None) -> None:
    """Print a receipt (by id or unique prefix) with its Merkle inclusion proof, and whether
    the ledger holding it verifies (exit 1 if not: what it says may have been altered)."""
    import json

    from .guard.runtime import control_url, existing_store, file_digest_in, verify_store
    from .receipts.canonical import strict_loads
    from .receipts.dsse import VerificationError, envelope_statement
    from .receipts.keys import KeyRing
    from .receipts.ledger import inclusion

    if not receipt_id.strip():
        raise click.BadParameter("name a receipt id or a prefix of one", param_hint="RECEIPT_ID")
    p = StatePaths.from_env()
    # Read only, as verify: a mistyped store or state folder is an error (_Main), not a new store.
    store = existing_store(url or control_url(p))
    try:
        entry = store.entry(receipt_id)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if entry is None:
        raise click.ClickException(f"no receipt with id {receipt_id!r}")
    snapshot = store.ledger_snapshot()
    entries, checkpoints, _ = snapshot
    out: dict = {"seq": entry.seq, "receipt_id": entry.receipt_id,
                 "chain": {"prev_hash": entry.prev_hash, "entry_hash": entry.entry_hash}}
    unreadable = []  # a tampered entry is shown as far as it reads, then reported, never a traceback
    try:
        envelope = strict_loads(entry.envelope)
        out["statement"] = envelope_statement(envelope)
        out["signatures"] = [{"keyid": sg.get("keyid")} for sg in envelope.get("signatures") or []
                             if isinstance(sg, dict)]
    except (ValueError, TypeError, AttributeError, VerificationError) as exc:
        out["envelope"] = entry.envelope[:2000]
        unreadable.append(f"receipt seq={entry.seq} does not read: {exc}")
    try:
        proof = inclusion(entries, entry.seq)
        cps = [c for c in checkpoints if c.tree_size == proof["tree_size"]]
        out["inclusion_proof"] = proof
        out["signed_tree_head"] = strict_loads(cps[-1].envelope) if cps else None
    except (ValueError, TypeError) as exc:
        unreadable.append(f"no inclusion proof for seq={entry.seq}: {exc}")
    try:
        report = verify_store(store, KeyRing(p.keys_dir).verifiers(), file_digest=file_digest_in(p.home),
                              snapshot=snapshot, keys_dir=p.keys_dir)
        out["ledger_verified"], problems = report.ok, report.errors[:5]
    except (OSError, ValueError) as exc:
        out["ledger_verified"], problems = False, [f"cannot read the public keys in {p.keys_dir}: {exc}"]
    if unreadable:
        out["ledger_verified"], problems = False, unreadable + problems
    out["ledger_problems"] = problems
    click.echo(json.dumps(out, indent=2, sort_keys=True))
    if not out["ledger_verified"]:
        click.echo(f"the ledger does not verify ({problems[0] if problems else 'see receipts verify'}): this "
                   "receipt may have been altered", err=True)
        sys.exit(1)


@receipts.command("new-key")
def receipts_new_key() -> None:
    """Create a first signing key in OPS_PLATFORM_KEYS_DIR on purpose (the old one lost for
    good): receipts it signs verify; earlier ones need their key's public half in public/.
    Every earlier key is retired: whoever may hold the lost one cannot sign after the new one."""
    from .guard.key_rotation import ledger_sizes
    from .guard.runtime import open_store
    from .receipts.keys import KeyRing
    from .timezones import utcnow

    p = _guard_paths()
    ring = KeyRing(p.keys_dir)
    if ring.has_active_key():
        raise click.ClickException(f"{p.keys_dir} holds a signing key already")
    try:
        ring.retirements()  # a record that does not read stops it here, before a key is made
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    store = open_store(p)
    with store.write() as tx:  # this store's entries counted under its lock; the others' as witnessed
        counted, witnessed = ledger_sizes(p.keys_dir, store, tx)
        ring = KeyRing.load_or_create(p.keys_dir)
        retired = ring.retire_all_but_active(utcnow(), counted, witnessed)
    console.print(f"created a signing key in {escape(str(p.keys_dir))}"
                  + (f"; retired {len(retired)} earlier key(s): {', '.join(k[:16] for k in retired)}" if retired else ""))


@receipts.command("rotate-key")
@click.option("--actor", required=True, help="Who rotates it (sre in the actor roster).")
@click.option("--reason", required=True, help="Why, in at least 20 non-blank characters (it goes into the receipt), e.g. 'quarterly rotation per the key policy' or 'suspected leak of a laptop backup'.")
@_store_option
def receipts_rotate_key(actor: str, reason: str, url: str | None) -> None:
    """Replace the signing key with a new one: a guarded action, receipted by the new key. The
    old key's private half is removed, and its retirement records how many entries each
    ledger held: `receipts verify`, and whatever acts on a receipt, refuse what it signs past
    them (docs/receipts.md)."""
    from .guard.key_rotation import rotate_request
    from .receipts.keys import KeyRing, SignerUnavailable, keyid_of

    actor, _ = _human(actor)
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    ring = KeyRing(_guard_paths().keys_dir)
    if not ring.has_active_key():
        raise click.ClickException(f"no signing key in {ring.keys_dir}: nothing to rotate (a key lost for good: "
                                   "`ops-platform receipts new-key`)")
    try:
        ring.retirements()  # a record that does not read: said before anything is done
        active = keyid_of(ring.signer().public_key())
    except (SignerUnavailable, ValueError) as exc:  # e.g. a retired key put back: nothing to sign with
        raise click.ClickException(str(exc)) from None
    out = _any_action_protocol(url).submit(rotate_request(active, actor, reason.strip()))
    if out.status != "completed":
        raise _not_done(out)
    click.echo(f"retired signing key {active[:16]}; the active key is now {keyid_of(ring.signer().public_key())[:16]} "
               f"(in {ring.keys_dir}); receipt {out.receipt_id[:12]}")


@receipts.command("retry")
@_store_option
def receipts_retry(url: str | None) -> None:
    """Receipt protective actions that waited for the signer, retry failed ones, drain the spool."""
    report = _any_action_protocol(url).retry()
    console.print(f"receipted {report.receipted}, retried {report.retried}, dead-lettered {report.to_dlq}, "
                  f"spool drained {report.spool_drained} (left {report.spool_left})")
    for line in report.failing:
        console.print(f"  [yellow]failed again[/yellow] (retried later, dead-lettered once out of attempts): "
                      f"{escape(line)}")


def _named_store(url: str | None) -> str | None:
    """``--store``'s URL once it names a control store that exists: one named for a run is never
    started (a typo would begin a new, empty ledger while the live flag file changes); a new
    store starts as the default (``OPS_PLATFORM_CONTROL_URL``, else the state folder's file)."""
    from .guard.runtime import existing_store

    if url:
        existing_store(url)  # NoStore: a one-line error naming what is wrong (_Main)
    return url


def _not_done(out) -> click.ClickException:
    """The one-line error for a guarded request that did not complete: its status once (a
    denial's reason already begins with it) and its receipt, if it has one (a denial does)."""
    said = out.reason if out.reason.startswith(out.status) else f"{out.status}: {out.reason}"
    return click.ClickException(said + (f" (receipt {out.receipt_id[:12]})" if out.receipt_id else ""))


def _any_action_protocol(url: str | None):
    """The guarded path with every executor: a retry or a replay may meet any action."""
    from .executors import guarded_executors
    from .guard.runtime import build_protocol, open_store
    from .ramp.switchboard import live_flag_file

    p = _guard_paths()
    store = open_store(p, _named_store(url))
    executors = guarded_executors(store, lambda: live_flag_file(p.home, p.world), p.warehouse, p.invoices,
                                  home=p.home, verifiers=lambda: _public_keys(p), keys_dir=p.keys_dir)
    return build_protocol(p, executors=executors, store=store)


@main.group()
def dlq() -> None:
    """The dead-letter queue of privileged actions that ran out of retries."""


@dlq.command("list")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print the items as JSON.")
def dlq_list(url: str | None, as_json: bool) -> None:
    """List dead-lettered requests with their last error (and anything still spooled)."""
    import json

    from .guard.actions import stored_request
    from .guard.runtime import control_url, existing_store, spool

    p = StatePaths.from_env()  # read only: a mistyped store or home is an error, not an empty queue
    items = existing_store(url or control_url(p)).dlq_items()
    requests = [stored_request(it["request"]) for it in items]  # None: a request that does not read
    if as_json:
        click.echo(json.dumps([{**{k: it[k] for k in ("dlq_id", "attempts", "last_error", "created_at")},
                                "request": json.loads(req.to_json()) if req else None,
                                **({} if req else {"unreadable_request": it["request"]})}
                               for it, req in zip(items, requests, strict=True)], indent=2, default=str))
        return
    rows = []
    for it, req in zip(items, requests, strict=True):
        what = ((req.action, f"{req.target_kind}:{req.target_id}", req.actor) if req else
                ("?", f"unreadable request {it['request'][:60]!r} (dlq discard {it['dlq_id']})", "?"))
        rows.append((str(it["dlq_id"]), *what, str(it["attempts"]), it["last_error"], it["created_at"]))
    if console.is_terminal:
        table = Table(title=f"dead-letter queue ({len(items)})")
        for col in ("id", "action", "target", "actor", "attempts", "last error", "since"):
            table.add_column(col, no_wrap=col != "last error")
        for row in rows:
            table.add_row(*map(escape, row))
        console.print(table)
    else:  # plain tab-separated lines for scripts and logs
        click.echo(f"dead-letter queue: {len(items)} item(s)")
        for row in rows:
            click.echo("\t".join(row))
    try:
        spooled = spool(p).items()
    except ValueError as exc:  # a line that is no request: `receipts retry` moves it aside
        raise click.ClickException(f"the spool {p.spool_file} holds a line that is no request ({exc}); "
                                   "`ops-platform receipts retry` moves such lines aside") from None
    if spooled:
        console.print(f"{len(spooled)} request(s) wait in the local spool for the control store "
                      "(`ops-platform receipts retry` replays them)")


@dlq.command("replay")
@click.option("--id", "dlq_id", type=int, default=None, help="Replay this item (ops-platform dlq list).")
@click.option("--all", "every", is_flag=True, help="Replay every item of the queue.")
@_store_option
def dlq_replay(dlq_id: int | None, every: bool, url: str | None) -> None:
    """Send dead-lettered requests through the guarded path again with a fresh retry budget:
    one (--id N) or all of them (--all), named on purpose, since each may act on a flag or a
    period now."""
    from .guard.actions import stored_request

    if (dlq_id is None) == (not every):
        raise click.UsageError("name one item with --id N (ops-platform dlq list) or replay them all with --all")
    proto = _any_action_protocol(url)
    # What each replayed item asks for and since when, said with its outcome.
    said = {}
    for item in proto.store.dlq_items():
        req = stored_request(item["request"])
        said[req.action_id if req else item["action_id"]] = (
            f"{req.describe() if req else 'unreadable request'} (dead-lettered {item['created_at']})")
    outcomes = proto.replay_dlq(dlq_id)
    if not outcomes and dlq_id is not None:
        raise click.ClickException(f"nothing to replay with id {dlq_id}")
    if not outcomes:  # an empty queue is a healthy system: no error for a cron job to page on
        console.print("nothing to replay: the dead-letter queue is empty")
        return
    for o in outcomes:
        console.print(f"{o.action_id}: {escape(said.get(o.action_id, ''))}: {o.status} {escape(o.reason)}")
    if any(o.status != "completed" and o.status != "denied" for o in outcomes):
        sys.exit(1)


@dlq.command("discard")
@click.argument("dlq_id", type=int)
@click.option("--actor", required=True, help="Who discards it (oncall or sre in the actor roster).")
@click.option("--reason", required=True, help="Why (it goes into the receipt).")
@_store_option
def dlq_discard(dlq_id: int, actor: str, reason: str, url: str | None) -> None:
    """Take an item off the dead-letter queue without running it (e.g. a key conflict,
    resubmitted under a new key): a guarded action, receipted."""
    from .guard.dlq import discard_request

    actor, _ = _human(actor)
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    proto = _any_action_protocol(url)
    item = next((i for i in proto.store.dlq_items() if i["dlq_id"] == dlq_id), None)
    if item is None:
        raise click.ClickException(f"no dead-lettered item with id {dlq_id} (ops-platform dlq list)")
    out = proto.submit(discard_request(dlq_id, actor, reason.strip()))
    if out.status != "completed":
        raise _not_done(out)
    click.echo(f"discarded dead-lettered item {dlq_id} ({item['last_error']}); receipt {out.receipt_id[:12]}")


@main.group()
def backtest() -> None:
    """Replay a world's history through decision policies and score them against its truth."""


def _replay(world_dir: Path | None, score: Callable[[Path], dict]) -> tuple[Path, dict]:
    """(world, figures): ``score`` run on a world (default: the demo world) that has the truth
    the backtests are scored against; a missing world, truth file or landing table is a
    clear error."""
    world_dir = world_dir or StatePaths.from_env().world
    if not world_exists(world_dir):
        raise click.ClickException(f"no world at {world_dir}; run `ops-platform world generate` or `make demo`")
    missing = [f for f in ("bad_builds.parquet", "incidents.parquet") if not (world_dir / "truth" / f).exists()]
    if missing:
        raise click.ClickException(f"{world_dir / 'truth'} lacks {', '.join(missing)}: the backtest scores "
                                   "decisions against a world's truth folder")
    import polars as pl

    try:
        return world_dir, score(world_dir)
    except (ValueError, OSError, pl.exceptions.PolarsError) as exc:  # a missing table, an unreadable file
        raise click.ClickException(f"cannot replay {world_dir}: {exc}") from exc


@backtest.command("ramps")
@click.option("--world", "world_dir", type=click.Path(path_type=Path), default=None,
              help="World folder (default: the demo world in the state folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures per policy as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when the controller misses a target (for CI gates).")
def backtest_ramps(world_dir: Path | None, as_json: bool, check: bool) -> None:
    """Score the ramp controller and two baselines on every ramp of a world."""
    import json

    from .ramp.backtest import run_backtest, targets_missed

    world_dir, results = _replay(world_dir, run_backtest)
    missed = targets_missed(results) if check else []
    for line in missed:
        click.echo(f"target missed: {line}", err=True)
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True))
        if missed:
            sys.exit(1)
        return
    metrics = list(next(iter(results.values())))
    table = Table(title=f"ramp backtest: {escape(str(world_dir))}")
    table.add_column("metric")
    for policy in results:
        table.add_column(policy, justify="right")
    for m in metrics:
        row = [results[p][m] for p in results]
        table.add_row(m, *[("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)) for v in row])
    console.print(table)
    if missed:
        sys.exit(1)


@backtest.command("alerts")
@click.option("--world", "world_dir", type=click.Path(path_type=Path), default=None,
              help="World folder (default: the demo world in the state folder).")
@click.option("--slos", "slo_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of OpenSLO files (default: the platform's slos/).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures per SLO and tier as JSON.")
def backtest_alerts(world_dir: Path | None, slo_dir: Path | None, as_json: bool) -> None:
    """Score the SLO burn alerts (each tier, on the SLO as a whole) on a world's whole history:
    incidents and bad builds caught, minutes to alert, alerts with no cause in the truth."""
    import json

    from .slo.alert_score import TABLE_CAPTION, TABLE_COLUMNS, score_world, table_rows

    slos = _slos(slo_dir)
    world_dir, results = _replay(world_dir, lambda world: score_world(world, slos))
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True))
        return
    table = Table(title=f"SLO alert backtest: {escape(str(world_dir))}", box=box.SIMPLE_HEAD)
    table.add_column(TABLE_COLUMNS[0], no_wrap=True, min_width=max(len(k) for k in results))
    table.add_column(TABLE_COLUMNS[1], no_wrap=True)
    for title in TABLE_COLUMNS[2:]:
        table.add_column(title, justify="right", min_width=len(title))
    table.caption = TABLE_CAPTION
    for row in table_rows(results):
        table.add_row(*row)
    _print_whole(table)


@main.group()
def slo() -> None:
    """Check OpenSLO files and export them as Prometheus rules."""


def _slos(slo_dir: Path | None) -> list:
    from .paths import SLO_DIR
    from .slo.spec import SLOSpecError, load_slos

    try:
        return load_slos(slo_dir or SLO_DIR)
    except SLOSpecError as exc:
        raise click.ClickException(str(exc)) from exc


_SLO_DIR_OPTION = click.option("--slos", "slo_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
                               help="Folder of OpenSLO files (default: the platform's slos/).")


def _landing_day(world: Path) -> dict:
    """The SLI sources of a world's first landing day, as ``minute_events`` takes them."""
    import polars as pl

    from .ingest.landing import LandingZoneReader

    reader, frames = LandingZoneReader(world / "landing"), {}
    for name, table in (("counters", "request_counters"), ("latency", "latency_buckets"), ("lag", "lag_samples")):
        files = reader.files(table)
        if not files:
            raise click.BadParameter(f"{world} has no landing files of {table}", param_hint="--world")
        day = files[0][0]
        batches = list(reader.read(table, (day, day)))
        if bad := next((b.error for b in batches if b.frame is None), None):
            raise click.ClickException(bad)
        frames[name] = pl.concat([b.frame for b in batches], how="diagonal_relaxed")
    return frames


def _window_text(s) -> str:
    """An SLO's window as the tables show it (28d, calendar month)."""
    from .slo.burn import window_name

    return window_name(s.window.duration) if s.window.rolling else f"calendar {s.window.calendar_unit}"


@slo.command("validate")
@_SLO_DIR_OPTION
@click.option("--world", "world_dir", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Also run each SLO on the first day of this world's landing data: a service, pipeline or "
                   "latency bound the data does not have fails here, not at the first burn computation.")
def slo_validate(slo_dir: Path | None, world_dir: Path | None) -> None:
    """Load and check every SLO file (exit 1 naming the file and field of the first error);
    list each SLO's tiers with the share of its error budget each lets go before firing."""
    from .slo.burn import minute_events, window_name

    slos = _slos(slo_dir)
    if world_dir is not None:  # every SLO that would judge nothing, not only the first
        frames = _landing_day(world_dir)
        problems = []
        for s in slos:
            try:
                minute_events(s, **frames)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise click.ClickException("\n".join(problems))
    table = Table(title=f"{len(slos)} SLO(s) valid", box=box.SIMPLE_HEAD)
    for title in ("slo", "budgeting", "target", "window", "tier", "burn", "windows", "budget spent to fire",
                  "ramp", "platform"):
        table.add_column(title, no_wrap=True)
    for s in slos:
        window = _window_text(s)
        for i, t in enumerate(s.tiers):
            head = (escape(s.name), s.budgeting, repr(s.objective.target), window) if i == 0 else ("", "", "", "")
            table.add_row(*head, t.name, f"{t.burn_rate:g}x",
                          f"{window_name(t.long_window)}/{window_name(t.short_window)}",
                          f"{s.budget_spent_to_fire(t):.1%}", t.ramp_action, t.platform_action)
    _print_whole(table)


@slo.command("status")
@click.option("--json", "as_json", is_flag=True, help="One object per SLO.")
def slo_status(as_json: bool) -> None:
    """Each SLO's error budget left over its window and the burn tiers firing, as of the
    newest day the warehouse holds (what `make demo` or the daily job materialized)."""
    import json

    import duckdb


    slos = _slos(None)
    p = StatePaths.from_env()
    wh = _stored_warehouse(p, "run `make demo` or materialize the SLO assets")
    try:
        stored = set(wh.query("SELECT column_name FROM information_schema.columns "
                              "WHERE table_schema = 'slo' AND table_name = 'burn_service'")["column_name"])
        # A tier added or renamed since the burn series were stored has no column yet: the
        # other tiers and SLOs are still shown, and it is named as not stored.
        tiers = sorted({t.name for s in slos for t in s.tiers if f"firing_{t.name}" in stored})
        budget = wh.query("SELECT * FROM slo.budget_remaining "
                          "QUALIFY row_number() OVER (PARTITION BY slo ORDER BY day DESC) = 1")
        # Per SLO, its newest day: the tiers that fired in any minute of it, and at its last minute.
        firing = wh.query(
            "WITH newest AS (SELECT slo, max(partition_key) AS p FROM slo.burn_service GROUP BY slo), "
            "day AS (SELECT b.* FROM slo.burn_service b JOIN newest n ON b.slo = n.slo AND b.partition_key = n.p) "
            "SELECT slo, max(ts) AS last_minute, "
            + ", ".join(f"bool_or(coalesce(firing_{t}, false)) AS day_{t}, count(firing_{t}) AS n_{t}, "
                        f"bool_or(coalesce(firing_{t}, false)) FILTER (WHERE ts = (SELECT max(ts) FROM day d "
                        f"WHERE d.slo = day.slo)) AS now_{t}" for t in tiers)
            + " FROM day GROUP BY slo")
    except (duckdb.Error, OSError) as exc:
        raise click.ClickException(f"cannot read the SLO tables of {p.warehouse}: {str(exc).splitlines()[0]}") from None
    left = {r["slo"]: r for r in budget.iter_rows(named=True)}
    fired = {r["slo"]: r for r in firing.iter_rows(named=True)}
    rows = []
    for s in slos:
        b, f = left.get(s.name), fired.get(s.name) or {}
        mine = [t.name for t in s.tiers]
        rows.append({
            "slo": s.name, "owner": s.owner, "objective": s.objective.target,
            "window": _window_text(s),
            "as_of": str(b["day"]) if b else None, "budget_remaining": b["budget_remaining"] if b else None,
            "days_stored": b["days_stored"] if b else None,
            "fired_that_day": [t for t in mine if f.get(f"day_{t}")],
            "firing_at_last_minute": [t for t in mine if f.get(f"now_{t}")],
            # A tier of this name stored for another SLO, or on an older day, is not this day's.
            "tiers_not_stored": [t for t in mine if not f.get(f"n_{t}")],
            "last_minute": f["last_minute"].isoformat() if f.get("last_minute") else None})
    if as_json:
        click.echo(json.dumps({"slos": rows}, indent=2))
        return
    table = Table(title="SLOs as of the newest day stored", box=box.SIMPLE_HEAD)
    for title in ("slo", "owner", "objective", "window", "as of", "budget left", "days stored", "fired that day",
                  "firing at its last minute"):
        table.add_column(title, no_wrap=True)
    for r in rows:
        left_ = r["budget_remaining"]
        shown = "" if left_ is None else f"{left_:.1%}"
        if left_ is not None and left_ < 0:
            shown = f"[red]{shown} (spent)[/red]"
        table.add_row(escape(r["slo"]), escape(r["owner"]), repr(r['objective']), r["window"], r["as_of"] or "not stored",
                      shown, "" if r["days_stored"] is None else str(r["days_stored"]),
                      ", ".join(r["fired_that_day"]), ", ".join(r["firing_at_last_minute"]))
    _print_whole(table)
    unstored = [f"{r['slo']} ({', '.join(r['tiers_not_stored'])})" for r in rows if r["tiers_not_stored"] and r["as_of"]]
    if unstored:
        console.print(f"tiers not in the stored burn series yet (materialize slo/burn again): {escape('; '.join(unstored))}")


@slo.command("rules")
@_SLO_DIR_OPTION
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the rule file here (default: print it).")
def slo_rules(slo_dir: Path | None, out: Path | None) -> None:
    """Export the SLOs as Prometheus recording and alerting rules (check them with
    `promtool check rules`)."""
    from .slo.rules import rules_yaml

    text = rules_yaml(_slos(slo_dir))
    if out is None:
        click.echo(text, nl=False)
        return
    if out.is_symlink():  # a rules file linked into Prometheus' folder: its target is replaced
        if not out.exists():
            raise click.BadParameter(f"{out} is a link to nothing ({os.readlink(out)})", param_hint="--out")
        out = out.resolve()
    if not out.parent.is_dir():  # a typo in the folder must not create a new one somewhere
        raise click.BadParameter(f"{out.parent} is no folder", param_hint="--out")
    from .paths import SLO_DIR

    folder = slo_dir or SLO_DIR
    # Resolved, and as written: the loader follows linked subfolders (a team's folder linked in).
    inside = (out.resolve().is_relative_to(folder.resolve())
              or Path(os.path.abspath(out)).is_relative_to(Path(os.path.abspath(folder))))
    if out.suffix.lower() in (".yaml", ".yml") and inside:
        # Every later load of the folder (and the platform's, for slos/) would refuse it.
        raise click.BadParameter(f"{out} is inside the SLO folder {folder}, where a rule file is read as an SLO "
                                 "file and refused: write it outside (e.g. prometheus/slo-rules.yaml)",
                                 param_hint="--out")
    from .files import open_atomic

    try:
        with open_atomic(out) as fh:
            fh.write(text.encode())
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote {out}", err=True)


@main.group()
def finops() -> None:
    """Per-tenant cost attribution reconciled to the bill, and its score against the truth."""


@finops.command("score")
@click.option("--world", "world_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="World folder (default: the demo world in the state folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when a target is not met (for CI gates).")
def finops_score(world_dir: Path | None, as_json: bool, check: bool) -> None:
    """Attribute a world's bill to its tenants and score it against the true per-tenant cost."""
    import json

    from .finops.score import ANOMALY_TARGET, MAPE_TARGET, WITHIN_5_TARGET, score_world

    world_dir = world_dir or StatePaths.from_env().world
    truth = world_dir / "truth" / "tenant_daily_cost.parquet"
    if not world_exists(world_dir):
        raise click.ClickException(f"no world at {world_dir}; run `ops-platform world generate` or `make demo`")
    if not truth.exists():
        raise click.ClickException(f"the world at {world_dir} lacks its true costs ({truth}): regenerate it with "
                                   "`ops-platform world generate`")
    try:
        figures = score_world(world_dir)
    except ValueError as exc:  # bad input or settings (a bill in two currencies, a bad window): say so
        raise click.ClickException(str(exc)) from exc
    model, base = figures["anomalies"]["model"], figures["anomalies"]["baseline"]
    # Each target --check judges: (its value in --json, whether it is met).
    judged = {"mape": (MAPE_TARGET, figures["mape"] < MAPE_TARGET),
              "within_5pct": (WITHIN_5_TARGET, figures["within_5pct"] >= WITHIN_5_TARGET),
              "anomaly_model_precision": (ANOMALY_TARGET, model["precision"] >= ANOMALY_TARGET),
              "anomaly_model_recall": (ANOMALY_TARGET, model["recall"] >= ANOMALY_TARGET),
              "anomaly_model_f1_above_baseline": (True, model["f1"] > base["f1"])}
    missed = [name for name, (_, met) in judged.items() if not met]
    ok = not missed
    if as_json:
        targets = {name: value for name, (value, _) in judged.items()}
        click.echo(json.dumps({**figures, "targets": targets, "targets_met": ok, "targets_missed": missed},
                              indent=2, sort_keys=True))
        if check and not ok:
            sys.exit(1)
        return
    click.echo(f"cost attribution: {world_dir}")
    click.echo(f"  tenant-days            {figures['tenant_days']}")
    click.echo(f"  MAPE                   {figures['mape']:.4%}   (target < {MAPE_TARGET:.0%})")
    click.echo(f"  within 5% of truth     {figures['within_5pct']:.2%}  (target >= {WITHIN_5_TARGET:.0%})")
    def exact(micros: int) -> str:  # micro-units as decimal text, every digit kept
        return f"{Decimal(micros).scaleb(-6):,.6f}"

    click.echo(f"  bill / attributed      {exact(figures['billed_micros'])} / {exact(figures['attributed_micros'])} "
               f"{figures['currency']} ({figures['days_summing_exactly']}/{figures['days']} days exact to the micro-dollar)")
    click.echo(f"  unallocated            {exact(figures['unallocated_micros'])} {figures['currency']}")
    if figures["unbilled_days"]:
        days = figures["unbilled_days"]
        click.echo(f"  unbilled days          {len(days)} with final usage and no bill (first {days[0]})")
    if figures["quarantined_billing_rows"]:
        files = figures["quarantined_billing_files"]
        click.echo(f"  quarantined bill rows  {figures['quarantined_billing_rows']:,}"
                   + (f" from {len(files)} file(s) (first {files[0]})" if files else "")
                   + f": {figures['repaired_billing_rows']:,} repaired and attributed, "
                     f"{figures['refused_billing_rows']:,} refused (left out"
                   + (f": {exact(figures['refused_billing_micros'])} {figures['currency']} by size"
                      if figures["refused_billing_micros"] else "")
                   + (f", {figures['unreadable_billing_rows']:,} of unknown cost" if figures["unreadable_billing_rows"]
                      else "") + ")")
    final = figures["min_final_day_confidence"]
    if figures["days_past_usage"]:
        click.echo(f"  days past usage        {figures['days_past_usage']} (a charge amortized over days no usage has "
                   f"reached yet: {exact(figures['billed_past_usage_micros'])} {figures['currency']}, not in the "
                   "confidences below)")
    def share(x: float | None) -> str:  # none when every billed day is past the usage
        return "-" if x is None else f"{x:.3f}"

    click.echo(f"  confidence per day     min {share(figures['min_day_confidence'])}, "
               f"mean {share(figures['mean_day_confidence'])}"
               + (f"; final days min {final:.3f} (invoices are held below 0.95)" if final is not None else ""))
    for name, f in (("model (IsolationForest)", model), ("baseline (robust z)", base)):
        click.echo(f"  anomalies, {name:<24} precision {f['precision']:.2f} recall {f['recall']:.2f} "
                   f"F1 {f['f1']:.2f} ({f['true_positives']}/{f['injected']} injected, {f['flagged']} flagged)")
    click.echo("  targets " + ("met" if ok else "NOT met: " + ", ".join(missed)))
    if check and not ok:
        sys.exit(1)


@finops.command("report")
@click.option("--world", "world_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="World folder (default: the demo world in the state folder).")
@click.option("--period", default=None, help="YYYY-MM or YYYY-MM-DD..YYYY-MM-DD, end exclusive (default: the first "
                                             "usage day to the last day the bill covers).")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=0), help="Tenants listed, by cost.")
@click.option("--json", "as_json", is_flag=True, help="Every tenant and tier as JSON (money in micro-units).")
def finops_report(world_dir: Path | None, period: str | None, top: int, as_json: bool) -> None:
    """Cost, revenue at the rate card and margin per tenant and tier, from a world's bill and
    metering (no truth needed): which tenants cost more than they pay."""
    import json
    from datetime import timedelta

    import polars as pl

    from .finops.invoices import parse_period
    from .finops.pipeline import FinOpsInputs, run
    from .finops.report import (
        billed_period,
        tenant_margins,
        tier_margins,
        unbilled_in,
        usage_period,
    )

    try:
        chosen = parse_period(period) if period else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    world_dir = world_dir or StatePaths.from_env().world
    if not world_exists(world_dir):
        raise click.ClickException(f"no world at {world_dir}; run `ops-platform world generate` or `make demo`")
    try:
        if not as_json:
            click.echo(f"reading {world_dir / 'landing'} through the contracts and attributing the bill ...", err=True)
        inputs = FinOpsInputs.from_landing(world_dir)
        result = run(inputs)
        held = usage_period(result.usage)
        chosen = chosen or billed_period(result)
        tenants = tenant_margins(inputs, result, chosen)
    except ValueError as exc:  # bad input or settings (a bill in two currencies): say so
        raise click.ClickException(str(exc)) from exc
    if not tenants.height:
        raise click.ClickException(f"no cost and no usage in {chosen.name}: the books hold usage from {held.start} "
                                   f"to {held.end - timedelta(days=1)}")
    tiers = tier_margins(tenants)
    unbilled = unbilled_in(result, chosen)
    if as_json:
        click.echo(json.dumps({"period": chosen.name, "first_day": str(chosen.start),
                               "last_day": str(chosen.end - timedelta(days=1)),
                               "unbilled_days": [str(d) for d in unbilled],
                               "tiers": tiers.to_dicts(), "tenants": tenants.to_dicts()}, indent=2, default=str))
        return
    currency = tenants["cost_currency"].drop_nulls().first() if tenants.height else None

    def money(micros) -> str:
        return "" if micros is None else f"{micros / 1e6:,.2f}"

    def share(x) -> str:
        return "" if x is None else f"{x:.0%}"

    click.echo(f"period {chosen.name} ({chosen.start} to {chosen.end - timedelta(days=1)}), money in {currency}"
               + (" (revenue in its invoice currency where a tier row names another)"
                  if any(c != currency for c in tiers["currency"].to_list()) else ""))
    if unbilled:
        console.print(f"[yellow]note:[/yellow] no bill yet for {len(unbilled)} day(s) with usage ({unbilled[0]}"
                      + (f" to {unbilled[-1]}" if len(unbilled) > 1 else "") + "): their revenue stands against "
                      "no cost, so margins read high")
    table = Table(title="per tier", box=box.SIMPLE_HEAD)
    for title in ("tier", "invoiced in", "tenants", "cost", "revenue", "margin", "margin %", "below cost"):
        table.add_column(title, justify="left" if title in ("tier", "invoiced in") else "right")
    for r in tiers.iter_rows(named=True):
        table.add_row(str(r["tier"]), str(r["currency"] or ""), str(r["tenants"]), money(r["cost_micros"]),
                      money(r["revenue_micros"]), money(r["margin_micros"]), share(r["margin"]),
                      "" if r["below_cost"] is None else str(r["below_cost"]))
    _print_whole(table)
    table = Table(title=f"the {min(top, tenants.height)} tenant(s) that cost most", box=box.SIMPLE_HEAD)
    for title in ("tenant", "tier", "cost", "revenue", "margin", "margin %", "min confidence"):
        table.add_column(title, justify="left" if title in ("tenant", "tier") else "right")

    def revenue(r) -> str:  # in each invoice currency when it is not the bill's
        if r["invoice_currency"] in (None, currency):
            return money(r["revenue_micros"])
        return " + ".join(f"{money(c['revenue_micros'])} {c['currency']}" for c in r["revenue_by_currency"])

    for r in tenants.head(top).iter_rows(named=True):
        table.add_row(r["tenant_id"], str(r["tier"]), money(r["cost_micros"]), revenue(r),
                      money(r["margin_micros"]), share(r["margin"]),
                      "" if r["min_confidence"] is None else f"{r['min_confidence']:.3f}")
    if top:
        _print_whole(table)
    losing = tenants.filter(pl.col("margin_micros") < 0)
    click.echo(f"{losing.height} of {tenants.height} tenant(s) cost more than they pay"
               + (f", {money(-losing['margin_micros'].sum())} {currency} in all" if losing.height else ""))
    other = tenants.filter(pl.col("invoice_currency").is_not_null() & (pl.col("invoice_currency") != currency))
    if other.height:
        click.echo(f"{other.height} tenant(s) are invoiced in another currency than the bill's, or in more than "
                   "one: no margin shown")


@finops.command("anomalies")
@click.option("--world", "world_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Find them in this world's landing zone (default: read what the platform flagged, "
                   "finops.anomalies in the warehouse).")
@click.option("--period", default=None, help="YYYY-MM or YYYY-MM-DD..YYYY-MM-DD, end exclusive (default: every day).")
@click.option("--tenant", default=None, help="Only this tenant's (service capacity spikes belong to none).")
@click.option("--by", "detector", type=click.Choice(["either", "model", "baseline"]), default="either",
              show_default=True, help="Which detector's flags to list.")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=0),
              help="Anomalies listed, costliest first (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Every anomaly listed as JSON.")
def finops_anomalies(world_dir: Path | None, period: str | None, tenant: str | None, detector: str, top: int,
                     as_json: bool) -> None:
    """Cost anomalies, costliest first: what moved, against what range, what it cost and its driver."""
    import json

    from .finops.anomalies import listed
    from .finops.invoices import parse_period

    try:
        chosen = parse_period(period) if period else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    if world_dir is not None:
        from .finops.pipeline import FinOpsInputs, bill_currency, run

        if not world_exists(world_dir):
            raise click.ClickException(f"no world at {world_dir}; run `ops-platform world generate` or `make demo`")
        if not as_json:
            click.echo(f"reading {world_dir / 'landing'} through the contracts and attributing the bill ...", err=True)
        try:
            inputs = FinOpsInputs.from_landing(world_dir)
            found, currency = run(inputs).anomalies, bill_currency(inputs.billing)
        except ValueError as exc:  # bad input or settings (a bill in two currencies): say so
            raise click.ClickException(str(exc)) from exc
        known, where = inputs.tenants["tenant_id"].to_list(), f"world {world_dir}"
    else:
        import duckdb

        p = StatePaths.from_env()
        wh = _stored_warehouse(p, "run `make demo` or materialize the finops assets")
        try:
            found, currency = wh.query("SELECT * FROM finops.anomalies"), _bill_currency(wh)
            known = wh.query("SELECT DISTINCT tenant_id FROM raw.tenants")["tenant_id"].to_list()
        except (duckdb.Error, OSError) as exc:
            raise click.ClickException(f"cannot read finops.anomalies in {p.warehouse}: {str(exc).splitlines()[0]} "
                                       "(materialize the finops assets first)") from None
        where = f"warehouse {p.warehouse}"
    if tenant is not None and tenant not in known:  # a typo is no quiet tenant
        raise click.BadParameter(f"no tenant {tenant!r} in the {where}", param_hint="--tenant")
    rows = listed(found, detector=detector, tenant=tenant, start=chosen.start if chosen else None,
                  end=chosen.end if chosen else None)
    shown = rows.head(top) if top else rows
    if as_json:
        click.echo(json.dumps({"source": where, "currency": currency, "detector": detector, "anomalies": rows.height,
                               "listed": shown.drop("partition_key", strict=False).to_dicts()},
                              indent=2, default=str))
        return
    scope = " ".join(x for x in (f"of {tenant}" if tenant else "", f"in {chosen.name}" if chosen else "") if x)
    if not rows.height:
        by = {"either": "either detector", "model": "the model", "baseline": "the baseline"}[detector]
        click.echo(f"no anomaly flagged by {by}" + (f" {scope}" if scope else "") + f" ({where})")
        return
    table = Table(title=f"{rows.height} anomal{'y' if rows.height == 1 else 'ies'}" + (f" {scope}" if scope else "")
                  + (f", the {shown.height} costliest" if shown.height < rows.height else "")
                  + f" ({where})", box=box.SIMPLE_HEAD)
    for title in ("day", "kind", "tenant / service", "meter", "value", "expected (range)", "impact", "flagged by"):
        table.add_column(title, justify="right" if title in ("value", "impact") else "left")
    for r in shown.iter_rows(named=True):
        table.add_row(str(r["utc_date"]), r["kind"], escape(r["tenant_id"] or r["service"] or ""),
                      escape(r["meter"] or "idle cost"), f"{r['value']:,.1f}",
                      f"{r['expected']:,.1f} ({r['expected_low']:,.1f}-{r['expected_high']:,.1f})",
                      f"{r['impact_usd']:,.2f} {currency or ''}".strip(), r["flagged_by"])
    _print_whole(table)


@main.group()
def invoices() -> None:
    """Invoice-ready exports per tenant and billing period, released through the guard."""


@invoices.command("export")
@click.option("--period", required=True, help="YYYY-MM (calendar month) or YYYY-MM-DD..YYYY-MM-DD (end exclusive).")
@click.option("--actor", default="finops-analyst", show_default=True,
              help="Who releases (needs the finops role in the actor roster; a period already out is answered "
                   "with its release, files re-checked, whoever asks).")
@click.option("--rationale", default="period reconciled; releasing invoices", show_default=True)
@_store_option
def invoices_export(period: str, actor: str, rationale: str, url: str | None) -> None:
    """Release a period's invoices (Parquet and CSV) when its reconciliation holds.

    Releases what the `finops/attribution` asset last stored, held while its checks fail or the
    period's raw rows changed since (exit 3, with the reasons)."""
    from .finops.export import release_invoices
    from .finops.invoices import parse_period
    from .finops.pipeline import BooksUnavailable, StoredFinOps
    from .guard.runtime import build_protocol

    actor, roster = _human(actor)
    p = StatePaths.from_env()
    try:
        chosen = parse_period(period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    wh = _stored_warehouse(p, "run `make demo` first")
    try:
        stored = StoredFinOps.from_warehouse(wh)
    except BooksUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    url = _named_store(url)
    blockers, out = release_invoices(stored, chosen, p.invoices,
                                     lambda executors: build_protocol(_guard_paths(), executors, url), actor, rationale,
                                     lambda: _public_keys(p), roster=roster)
    if out is None:
        click.echo(f"held: invoices for {chosen.name} are not released")
        for why in blockers:
            click.echo(f"  - {why}")
        sys.exit(3)  # held: not a usage mistake (click exits 2 for those)
    click.echo(f"export_release {chosen.name}: {out.status} {out.reason}".rstrip())
    if out.receipt_id:
        click.echo(f"  receipt {out.receipt_id} (ops-platform receipts show {out.receipt_id[:12]})")
    folder = p.invoices / chosen.name
    for f in sorted(folder.glob("*")) if out.status == "completed" else []:
        click.echo(f"  {f}")
    if out.status != "completed":
        sys.exit(1)


def _human(actor: str):
    """(actor, roster): a human's --actor, stripped, checked (not blank, a plain name, not a
    machine identity's), and the roster its roles come from."""
    from .guard.roster import RosterError, human_actor, load_roster

    try:
        actor = human_actor(actor)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--actor") from None
    try:
        return actor, load_roster()
    except RosterError as exc:
        raise click.ClickException(str(exc)) from None


def _stored_warehouse(p: StatePaths, run: str):
    """The state folder's warehouse, or a one-line error saying what to ``run`` first."""
    from .warehouse import Warehouse

    if not p.warehouse.exists():
        raise click.ClickException(f"no warehouse at {p.warehouse}: {run}")
    return Warehouse(p.warehouse)


@main.group()
def ramp() -> None:
    """The ramp controller's verdicts on each build's ramp."""


@ramp.command("verdicts")
@click.option("--all", "every", is_flag=True, help="Every ramp, the ones left alone too (default: those acted on).")
@click.option("--service", default=None, help="Only this service's ramps.")
@click.option("--json", "as_json", is_flag=True, help="One object per ramp.")
def ramp_verdicts(every: bool, service: str | None, as_json: bool) -> None:
    """Each ramp's latest verdict as the warehouse holds it (`ramp/verdicts`, materialized
    by `make demo` or the daily job): the action, when and why, the cohorts it had reached and
    the candidate's burn rate before the action (its error ratio over the budget). A pause
    keeps the split; a rollback sends everyone back to the stable build."""
    import json

    import duckdb

    from .warehouse import current_names

    p = StatePaths.from_env()
    wh = _stored_warehouse(p, "run `make demo` or materialize ramp/verdicts")
    where = ["action IS NOT NULL"] if not every else []
    params: list = []
    if service is not None:
        where.append("service = ?")
        params.append(service)
    try:
        # A ramp that spans days has a row per day until it is decided: its newest one counts.
        rows = wh.query(
            "SELECT * FROM (SELECT * FROM ramp.verdicts QUALIFY row_number() OVER "
            "(PARTITION BY build_id ORDER BY partition_key DESC) = 1)"
            + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY ramp_start, build_id", params)
        known = wh.query("SELECT DISTINCT service FROM ramp.verdicts ORDER BY service")["service"].to_list()
        rows = current_names(rows, "ramp", "verdicts")  # a warehouse no run has written since a rename
    except (duckdb.Error, OSError) as exc:
        raise click.ClickException(f"cannot read ramp.verdicts in {p.warehouse}: {str(exc).splitlines()[0]} "
                                   "(materialize ramp/verdicts first)") from None
    if service is not None and service not in known:  # a typo is no quiet service
        raise click.BadParameter(f"no ramp of service {service!r} in the warehouse (services: "
                                 f"{', '.join(known) or 'none yet'})", param_hint="--service")
    shown = [{"build_id": r["build_id"], "service": r["service"], "ramp_start": r["ramp_start"].isoformat(),
              "action": r["action"], "acted_at": r["acted_at"].isoformat() if r["acted_at"] else None,
              "reason": r["reason"], "trusted_baseline": r["trusted_baseline"],
              "cohorts_reached": r["cohorts_reached"],
              "burn_rate_before_action": round(r["burn_rate_before_action"], 4)}
             for r in rows.iter_rows(named=True)]
    if as_json:
        click.echo(json.dumps({"ramps": shown}, indent=2))
        return
    if not shown:
        click.echo("no ramp acted on" + (f" for service {service}" if service else "") + " in the warehouse"
                   + ("" if every else " (--all lists every ramp)"))
        return
    table = Table(title="Ramp verdicts (times UTC)", box=box.SIMPLE_HEAD)
    for title in ("build", "service", "ramp start", "action", "acted at", "cohorts", "burn before", "why"):
        table.add_column(title, no_wrap=title != "why")
    for r in shown:
        table.add_row(r["build_id"], r["service"], r["ramp_start"][:16].replace("T", " "), r["action"] or "none",
                      (r["acted_at"] or "")[:16].replace("T", " "), r["cohorts_reached"],
                      f"{r['burn_rate_before_action']:.2f}x", escape(r["reason"]))
    _print_whole(table)


@main.group()
def switchboard() -> None:
    """Human overrides of ramps (with a rationale and a TTL) and the timeline of a flag."""


# Each unit at most once, the largest first (1h30m; not 12h12h, which reads as a slip).
_TTL = re.compile("".join(rf"(?:(\d+(?:\.\d+)?){u})?" for u in "wdhms"))  # a fraction too, as Go's 1.5h
_TTL_UNIT = (7 * 86400, 86400, 3600, 60, 1)


def _ttl_seconds(ttl: str) -> int:
    """``--ttl`` in seconds: a duration as Flagger and Argo Rollouts write one (30m, 4h, 1h30m,
    1.5h), or in days (1d); a usage error saying what is wrong otherwise."""
    text = ttl.strip()
    parts = _TTL.fullmatch(text)
    if not text or parts is None:
        what = ("M is months, which a TTL does not take: write minutes as m" if re.fullmatch(r"\d+M", text)
                else "is not a duration")
        raise click.UsageError(f"--ttl {ttl!r} {what}: use one like 30m, 4h, 1h30m or 1d")
    exact = sum(Decimal(n) * unit for n, unit in zip(parts.groups(), _TTL_UNIT, strict=True) if n)
    if exact != int(exact):
        raise click.UsageError(f"--ttl {ttl!r} is {exact} seconds: a TTL is whole seconds")
    seconds = int(exact)
    if seconds <= 0:
        raise click.UsageError(f"--ttl {ttl!r} is no time at all: use one like 30m, 4h, 1h30m or 1d")
    if seconds > 10 ** 12:  # the policy allows a day; past this the number is a slip, said so
        raise click.UsageError(f"--ttl {ttl!r} is too long a duration (the guard's policy allows at most 1d)")
    return seconds


@switchboard.command("override")
@click.argument("flag")
@click.option("--action", "directive", type=click.Choice(["resume", "hold", "rollback"]), required=True,
              help="resume: ramp on, the controller kept out until the TTL expires (a freeze on FLAG lifted); "
                   "hold: the ramp stops advancing, but the controller may still roll back a build that burns; "
                   "rollback: the candidate back to 0%, the controller kept out until the TTL expires.")
@click.option("--rationale", required=True, help="Why (at least 20 non-blank characters; it goes into the receipt).")
@click.option("--ttl", default="4h", show_default=True, help="How long the override wins over the controller (e.g. 30m, 4h, 1h30m, 1d; "
              "the guard's policy allows at most 1d, policies/guard.rego); a hold stays after it "
              "until someone resumes the ramp.")
@click.option("--actor", required=True, help="Who is overriding (a human with the oncall role in the actor roster).")
@click.option("--idempotency-key", default=None, help="Make a retried command a no-op (default: a new key).")
@_store_option
def switchboard_override(flag: str, directive: str, rationale: str, ttl: str, actor: str,
                         idempotency_key: str | None, url: str | None) -> None:
    """Override the ramp controller on FLAG until the TTL expires: a resume or a rollback wins
    over the controller; a hold keeps the ramp from advancing, not the controller from rolling
    back a build that burns (docs/ramps.md)."""
    import uuid

    from .guard.actions import ActionRequest

    actor, roster = _human(actor)
    key = idempotency_key or f"override-{uuid.uuid4()}"
    seconds = _ttl_seconds(ttl)
    if not rationale.strip():  # a slip of the shell, not a request to receipt (the policy judges the rest)
        raise click.BadParameter("it is blank; say why, in words the receipt will keep", param_hint="--rationale")
    p = _guard_paths()
    from .guard.actions import reserved_key_problem
    from .ramp.flags import FlagFileError
    from .ramp.switchboard import check_override, live_flag_file, replaced_overrides

    if idempotency_key is not None and (idempotency_key != idempotency_key.strip() or not idempotency_key):
        raise click.UsageError(f"--idempotency-key {idempotency_key!r}: a key is not blank and has no spaces "
                               "around it (one key spelt two ways would run twice)")
    if idempotency_key and (problem := reserved_key_problem(idempotency_key, actor=actor, action="override")):
        raise click.UsageError(f"--idempotency-key{problem.removeprefix('idempotency key')}: choose another key")
    try:
        notes = check_override(live_flag_file(p.home, p.world), flag, directive)
    except FlagFileError as exc:  # the file is broken, not the command
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read the live flag file: {exc}") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    proto = _any_action_protocol(url)
    replaced = replaced_overrides(proto.store, flag)
    out = proto.submit(ActionRequest(
        actor=actor, roles=roster.roles(actor), action="override", target_kind="flag", target_id=flag,
        rationale=rationale.strip(), idempotency_key=key, ttl_seconds=seconds, params={"directive": directive}))
    notes += replaced
    colour = {"completed": "green", "denied": "red"}.get(out.status, "yellow")
    console.print(f"[{colour}]{out.status}[/{colour}] {directive} on {escape(flag)}: {escape(out.reason)}"
                  + (f" (receipt {out.receipt_id[:12]})" if out.receipt_id else ""))
    if out.status == "denied" and "ttl_seconds" in out.reason:  # the policy counts seconds; the user typed --ttl
        console.print(f"[yellow]note:[/yellow] --ttl {escape(ttl)} is {seconds} seconds")
    if out.status == "denied" and not roster.roles(actor):  # a roster slip, said with its fix
        console.print(f"[yellow]note:[/yellow] {escape(repr(actor))} is not in the actor roster {escape(str(roster.path))}: "
                      f"an override needs the oncall role there (`{escape(actor)}: \\[oncall]`), or set OPS_PLATFORM_ROSTER "
                      "to another roster")
    if out.status == "completed" and out.created:
        for note in notes:
            console.print(f"[yellow]note:[/yellow] {escape(note)}")
    if out.status not in ("completed", "denied", "conflict"):
        # Kept, not dropped: a guarded request is retried until it is decided (or dead-lettered).
        console.print(f"[yellow]the request is kept:[/yellow] `ops-platform receipts retry` (and the "
                      "retry_guarded_actions job, started within 5 minutes by its sensor) runs it again once the cause is fixed, its "
                      f"TTL counted from then. Check on it with the same command and --idempotency-key {escape(key)} "
                      "(a new key would be a second request).")
    if out.status not in ("completed",):
        sys.exit(1)


@switchboard.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one object per release flag.")
@_store_option
def switchboard_status(as_json: bool, url: str | None) -> None:
    """Every release flag at a glance: its builds, the share of each cohort on the candidate,
    paused or frozen, and the override in force."""
    import json

    from .guard.runtime import store_to_read
    from .ramp.flags import FlagFile, FlagFileError
    from .ramp.switchboard import flag_file_to_read
    from .timezones import iso_utc, utcnow

    p = StatePaths.from_env()  # reading: nothing is created
    # The live file, read only; before the first guarded change, the world's seed it starts from.
    try:
        path = flag_file_to_read(p.home, p.world)
        file = FlagFile.load(path, lenient=True)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, FlagFileError) as exc:
        raise click.ClickException(f"cannot read the flag file {path}: {exc}") from None
    store = store_to_read(p, url)  # none yet: nothing was ever overridden
    keys = functools.cache(lambda: _public_keys(p))  # read once, and only if an override is in force
    now = iso_utc(utcnow())
    rows = []
    for flag in sorted([*file.release_flags, *file.broken]):
        active = store.active_overrides(flag, now) if store is not None else []
        override = ({k: active[-1][k] for k in ("directive", "actor", "expires_at", "rationale")}
                    if active else None)
        if override is not None:  # the controller obeys it only as its receipt says
            override["not_obeyed"] = store.override_problem(active[-1], keys())
        if flag in file.broken:
            rows.append({"flag": flag, "broken": str(file.broken[flag]), "override": override})
            continue
        r = file.release(flag)
        state = (", ".join(w for w, on in (("disabled", r.disabled), ("frozen", r.frozen), ("paused", r.paused))
                           if on)
                 or ("ramping" if r.exposed else "no ramp" if r.candidate is None else "at 0%"))
        rows.append({"flag": flag, "stable": r.stable, "candidate": r.candidate, "cohort_percent": dict(r.cohort_percent),
                     "paused": r.paused, "frozen": r.frozen, "disabled": r.disabled, "state": state,
                     "changed_at": iso_utc(r.changed_at) if r.changed_at else None, "override": override})
    if any(r["override"] for r in rows):
        _say_if_no_keys(p, keys(), then=OVERRIDES_UNOBEYED)
    if as_json:
        click.echo(json.dumps({"flag_file": str(path), "as_of": now, "flags": rows}, indent=2))
        return
    cohorts = list(next((r["cohort_percent"] for r in rows if "cohort_percent" in r), {}))
    table = Table(title=f"release flags ({escape(str(path))})", box=box.SIMPLE_HEAD)
    for title in ("flag", "stable", "candidate", *cohorts, "state", "override in force", "changed"):
        table.add_column(title, no_wrap=title != "override in force")
    for r in rows:
        o = r["override"]
        said = escape(f"{o['directive']} by {o['actor']} until {o['expires_at']}") if o else ""
        if o and o["not_obeyed"]:
            said = f"[red]{said}, not obeyed: its receipt does not vouch for it (receipts verify)[/red]"
        if "broken" in r:
            table.add_row(escape(r["flag"]), "", "", *[""] * len(cohorts), f"[red]broken: {escape(r['broken'])}[/red]",
                          said, "")
            continue
        colour = ("red" if r["disabled"] else "yellow" if r["paused"] or r["frozen"]
                  else "green" if r["state"] == "ramping" else None)
        table.add_row(escape(r["flag"]), escape(r["stable"] or ""), escape(r["candidate"] or ""),
                      *[f"{r['cohort_percent'].get(c, 0)}%" for c in cohorts],
                      f"[{colour}]{r['state']}[/{colour}]" if colour else r["state"], said, r["changed_at"] or "")
    _print_whole(table)
    console.print("why a flag is where it is: `ops-platform switchboard log FLAG`")


@switchboard.command("log")
@click.argument("flag")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON (events, active overrides).")
@_store_option
def switchboard_log(flag: str, as_json: bool, url: str | None) -> None:
    """The timeline of FLAG: requests, decisions, actions, overrides with rationale, receipts."""
    import json

    from .guard.runtime import control_url, shown_url, store_to_read
    from .ramp.controller import FREEZE_TARGET
    from .timezones import iso_utc, utcnow

    if not flag.strip():
        raise click.UsageError("name a flag (e.g. release-api)")
    p = StatePaths.from_env()  # reading: nothing is created
    store = store_to_read(p, url)  # None: nothing was recorded yet
    own = store.events(flag) if store is not None else []
    if not own and flag != FREEZE_TARGET:  # a misspelt flag must not read as one that only saw freezes
        known = _release_flags(p)
        if known is not None and flag not in known:
            raise click.ClickException(f"no release flag {flag!r} (flags: {', '.join(known)})")
    if store is None:
        raise click.ClickException(f"no Switchboard events for {flag!r}: nothing was recorded yet "
                                   f"(no control store at {shown_url(control_url(p))})")
    # A freeze holds every release flag but those it exempted (under an override): it is in
    # each one's timeline.
    freezes = [e for e in store.events(FREEZE_TARGET)
               if flag not in (json.loads(e["payload"]).get("params") or {}).get("exempt", [])]
    events = sorted(own + (freezes if flag != FREEZE_TARGET else []), key=lambda e: e["event_id"])
    if not events:
        raise click.ClickException(f"no Switchboard events for {flag!r}")
    recorded = {o["action_id"]: o for o in store.overrides(flag)}
    requests: dict[str, dict] = {}  # an override's request (its directive, TTL and rationale), by action id
    timeline = []
    for e in events:
        payload = json.loads(e["payload"])
        what = payload.get("reason") or payload.get("rationale") or payload.get("error") or ""
        if payload.get("action") == "override" and e["action_id"]:
            if e["action_id"] not in requests:
                with store.read() as conn:
                    row = store.get_action(conn, e["action_id"])
                requests[e["action_id"]] = json.loads(row["params"]) if row else {}
            what = _override_line(requests[e["action_id"]], recorded.get(e["action_id"]), payload, what)
        if payload.get("skipped"):
            what = f"{what}; skipped: {payload['skipped']}"
        if payload.get("drift"):  # {flag: what}; a list in events recorded before
            drift = payload["drift"]
            what = f"{what}; drift: {'; '.join(drift.values() if isinstance(drift, dict) else drift)}".lstrip("; ")
            if payload.get("seen_by"):
                what = f"{what} (seen by {payload['seen_by']})"
        if payload.get("unreadable_flags"):
            what = f"{what}; left as they are, unreadable: {', '.join(payload['unreadable_flags'])}"
        entry = {"ts": e["ts"], "kind": e["kind"], "action": payload.get("action", ""), "actor": e["actor"],
                 "what": what, "receipt_id": e["receipt_id"], "action_id": e["action_id"], "payload": payload}
        if payload.get("action") == "override" and e["action_id"]:  # its terms as fields, not only in `what`
            o = recorded.get(e["action_id"])
            entry["override"] = {"directive": requests[e["action_id"]].get("params", {}).get("directive"),
                                 "ttl_seconds": requests[e["action_id"]].get("ttl_seconds"),
                                 "expires_at": o["expires_at"] if o else None}
        timeline.append(entry)
    active = store.active_overrides(flag, iso_utc(utcnow()))
    keys = _public_keys(p) if active else {}
    if active:
        _say_if_no_keys(p, keys, then=OVERRIDES_UNOBEYED)
    # Why the controller does not obey an override (its receipt does not vouch for it), or None.
    problems = [store.override_problem(o, keys) for o in active]
    if as_json:  # the same events, whole, for scripts
        click.echo(json.dumps({"flag": flag, "events": timeline,
                               "active_overrides": [{**{k: o[k] for k in ("directive", "actor", "expires_at", "rationale",
                                                                          "created_at", "action_id")},
                                                     "not_obeyed": problem}
                                                    for o, problem in zip(active, problems, strict=True)]},
                              indent=2, default=str))
        return
    for t in timeline:
        receipt = f" receipt {t['receipt_id'][:12]}" if t["receipt_id"] else ""
        click.echo(f"{t['ts']}  {t['kind']:<24} {t['action']:<10} {t['actor']:<16} {_one_line(t['what'])}{receipt}")
    for o, problem in zip(active, problems, strict=True):
        click.echo(f"active override: {o['directive']} by {o['actor']} until {o['expires_at']}: "
                   f"{_one_line(o['rationale'])}"
                   + (f" (not obeyed by the controller: {problem})" if problem else ""))
    if not active and recorded:  # the newest one ran out: say so, and what it left behind
        last = list(recorded.values())[-1]
        after = ("the hold stays until someone resumes the ramp" if last["directive"] in ("hold", "rollback")
                 else "the controller acts again on new burn checks")
        click.echo(f"override expired: {last['directive']} by {last['actor']} at {last['expires_at']}; {after}")


def _print_whole(table: Table) -> None:
    """A table printed whole, however narrow the terminal (or a pipe's 80 columns): a cut
    column hides figures."""
    natural = Console(width=1000).measure(table).maximum
    Console(width=max(console.width, natural)).print(table)


def _public_keys(p: StatePaths) -> dict:
    """Every public key of the key folder, by keyid (reading them makes no key)."""
    from .receipts.keys import KeyRing

    try:
        return KeyRing(p.keys_dir).verifiers()
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the public keys in {p.keys_dir}: {exc}") from None


OVERRIDES_UNOBEYED = ", so no override reads as obeyed"


def _say_if_no_keys(p: StatePaths, verifiers: dict, then: str = "") -> None:
    """A note on stderr when the key folder holds no public key: every signature then reads as
    unchecked (a mistyped OPS_PLATFORM_KEYS_DIR, not tampering), so say which folder it was."""
    if not verifiers:
        click.echo(f"note: no public keys in {p.keys_dir / 'public'} (OPS_PLATFORM_KEYS_DIR): no receipt's "
                   f"signature can be checked{then}", err=True)


def _one_line(text: str) -> str:
    """Free text (a rationale) on one timeline line: a newline or a control character is shown
    escaped, so no text can print a line that reads as another event."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _release_flags(p: StatePaths) -> list[str] | None:
    """The release flags of the live flag file, else of the world's seed (read only: nothing is
    seeded); None when neither can be read."""
    from .ramp.flags import FlagFile
    from .ramp.switchboard import world_flag_file

    for path in (lambda: p.live_flags, lambda: world_flag_file(p.world)):
        try:
            file = FlagFile.load(path(), lenient=True)
            return sorted([*file.release_flags, *file.broken])
        except (OSError, ValueError):  # no world is a FileNotFoundError too
            continue
    return None


def _override_line(request: dict, recorded: dict | None, payload: dict, what: str) -> str:
    """An override's timeline text: directive, TTL, expiry once recorded, the rationale, and
    the guard's reason when it is not the rationale."""
    from datetime import timedelta

    from .slo.burn import window_name

    directive = (payload.get("params") or {}).get("directive") or "?"
    ttl = request.get("ttl_seconds")
    parts = [directive]
    if ttl:
        parts.append(f"ttl {window_name(timedelta(seconds=ttl))}")
    if recorded:
        parts.append(f"until {recorded['expires_at']}")
    rationale = request.get("rationale") or payload.get("rationale") or ""
    head = f"{' '.join(parts)}: {rationale}"
    return head if what in ("", rationale) else f"{head} ({what})"


@main.group()
def focus() -> None:
    """FOCUS billing files."""


@focus.command("check")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--max-memory", type=click.FloatRange(min=0, min_open=True), default=None, metavar="GIB",
              help="Memory the check may take, in GiB (default: what the machine or container has free); "
                   "a file that would need more is refused before it is read.")
def focus_check(file: Path, as_json: bool, max_memory: float | None) -> None:
    """Check a FOCUS 1.2 file (CSV or Parquet) against the billing contract before loading it."""
    import json

    from .contracts.definitions import BILLING_FOCUS
    from .ingest.check_file import check_file, example_text

    report = check_file(file, BILLING_FOCUS, None if max_memory is None else int(max_memory * 2**30))
    if as_json:
        click.echo(json.dumps({**report.__dict__, "loads": report.loads, "nothing_accepted": not report.accepted},
                              indent=2, sort_keys=True))
    else:
        verdict = (click.style("refused", fg="red") if not report.loads
                   else click.style("loads, but accepts no row", fg="yellow") if report.rows and not report.accepted
                   else click.style("loads", fg="green"))
        click.echo(f"{file}: {verdict}; {report.rows:,} rows, {report.accepted:,} accepted, "
                   f"{report.quarantined_rows:,} quarantined"
                   + (f", {report.duplicates_removed:,} duplicate(s) removed" if report.duplicates_removed else ""))
        for err in report.schema_errors:
            click.echo(f"  {err}")
        for reason, n in report.quarantined.items():
            shown = [example_text(e) for e in report.examples.get(reason, [])]
            click.echo(f"  {n:,} row(s) would be quarantined: {reason}"
                       + (f"\n    {'first: ' if n > len(shown) else ''}{', '.join(shown)}" if shown else ""))
        for warning in report.warnings:
            click.echo(click.style(f"  warning: {warning}", fg="yellow"))
    if not report.loads:
        sys.exit(1)


if __name__ == "__main__":
    main()
