"""The `ops-platform` command."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .paths import StatePaths
from .world import generate_world, preset, world_exists

console = Console(stderr=False)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False, disable=not console.is_terminal and bool(os.environ.get("CI")))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Summit ops platform: SLOs, ramps, recovery and per-tenant cost, on Dagster."""


@main.group()
def world() -> None:
    """Generate and inspect the Summit world (the embedded default data source)."""


def _generate(cfg, out: Path) -> dict:
    stages = ["catalog", "releases", "request_counters", "latency_buckets", "slis", "usage_events",
              "billing_focus"]
    with _progress() as prog:
        task = prog.add_task(f"world {cfg.tenants} tenants x {cfg.days} days", total=len(stages) + cfg.days - 1)

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
def world_generate(preset_name: str, seed: int, out: Path | None, tenants: int | None, days: int | None,
                   start_date) -> None:
    """Write a world's landing zone and truth folder."""
    try:
        cfg = preset(preset_name, seed=seed, tenants=tenants, days=days,
                     start_date=start_date.date() if start_date else None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if cfg.days < 3 or cfg.tenants < 3:
        raise click.UsageError("a world needs at least 3 tenants and 3 days")
    out = out or StatePaths.from_env().world
    t0 = time.perf_counter()
    rows = _generate(cfg, out)
    dt = time.perf_counter() - t0
    console.print(f"[green]world written[/green] to {out} in {dt:.1f}s: "
                  f"{sum(rows.values()):,} rows ({', '.join(f'{k} {v:,}' for k, v in rows.items())})")


@main.command()
def paths() -> None:
    """Print where the platform keeps its state."""
    p = StatePaths.from_env()
    for name in ("home", "world", "landing", "truth", "warehouse", "control_store", "dagster_home", "exports",
                 "keys_dir"):
        console.print(f"{name:14} {getattr(p, name)}")


def _prepare_dagster_home(p: StatePaths) -> None:
    from sensors.runner import INSTANCE_YAML

    p.ensure()
    cfg = p.dagster_home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(p.dagster_home)
    os.environ.setdefault("OPS_PLATFORM_WAREHOUSE", str(p.warehouse))


@main.command()
@click.option("--preset", "preset_name", default="S", show_default=True, help="World preset if none exists yet.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--fresh", is_flag=True, help="Regenerate the world even if one exists.")
def demo(preset_name: str, seed: int, fresh: bool) -> None:
    """Generate the demo world (if absent), materialize every asset and check, print a summary."""
    p = StatePaths.from_env().ensure()
    t0 = time.perf_counter()
    if fresh or not world_exists(p.world):
        _generate(preset(preset_name, seed=seed), p.world)
    else:
        console.print(f"using the existing world at {p.world} (--fresh regenerates it)")
    _prepare_dagster_home(p)

    import dagster as dg

    from ops_platform.definitions import build_definitions
    from sensors.runner import run_everything

    defs = build_definitions(p)
    keys = defs.resolve_job_def("ingest_daily").partitions_def.get_partition_keys()
    with dg.DagsterInstance.get() as instance, _progress() as prog:
        task = prog.add_task("materializing", total=len(keys) + 2)
        report = run_everything(defs, instance, on_step=lambda label: (
            prog.advance(task), prog.update(task, description=f"materialized {label}")))
    _summary(p, keys, report, time.perf_counter() - t0)
    if report.failed_runs:
        sys.exit(1)


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
    console.print(f"checks: {report.checks_passed} passed, {len(report.checks_failed)} failed, "
                  f"{len(report.checks_warned)} warnings")
    for name in report.checks_failed[:10]:
        console.print(f"  [red]failed[/red]  {name}")
    for name in report.checks_warned[:10]:
        console.print(f"  [yellow]warning[/yellow] {name}")
    console.print("quarantined rows: " + (", ".join(f"{r['source_table']} {r['n']}" for r in q.iter_rows(named=True))
                                          or "none"))
    console.print(f"warehouse:    {p.warehouse}  (duckdb -readonly {p.warehouse})")
    console.print(f"landing zone: {p.landing}")
    console.print(f"truth:        {p.truth}")
    console.print(f"done in {seconds:.0f}s. Open the UI with [bold]make dev[/bold] (http://127.0.0.1:3000).")


if __name__ == "__main__":
    main()
