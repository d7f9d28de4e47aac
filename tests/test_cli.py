"""The `ops-platform` command: help everywhere, world generation, clear errors."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ops_platform.cli import main


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [(), *list(_commands(main))], ids=lambda p: " ".join(p) or "root")
def test_every_subcommand_has_help(path):
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and len(res.output.splitlines()) > 3


def test_world_generate_writes_landing_and_truth(tmp_path):
    out = tmp_path / "w"
    res = CliRunner().invoke(main, ["world", "generate", "--preset", "S", "--tenants", "5", "--days", "3",
                                    "--seed", "9", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "world written" in res.output
    assert (out / "landing" / "usage_events").is_dir() and (out / "truth" / "bad_builds.parquet").exists()


def test_unknown_preset_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["world", "generate", "--preset", "XL", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown preset 'XL'" in res.output
    assert "Traceback" not in res.output


def test_paths_show_the_control_store_in_use_without_its_password(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ops_platform.cli import main

    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPS_PLATFORM_CONTROL_URL", "postgresql+psycopg2://ops:s3cret@db:5432/ops")
    out = CliRunner().invoke(main, ["paths"]).output
    assert "postgresql+psycopg2://ops:***@db:5432/ops" in out and "s3cret" not in out
    assert f"invoices       {tmp_path / 'home' / 'invoices'}" in out and "flags" in out


def test_python_dash_m_runs_the_command():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ops_platform", "slo", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Usage: ops-platform slo" in proc.stdout, proc.stdout + proc.stderr
