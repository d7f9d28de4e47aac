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


# Settings and state a user gets wrong: one line naming it, never a traceback, nothing written.


def test_a_missing_signing_key_beside_a_ledger_is_refused_not_replaced(state, tmp_path, monkeypatch):
    reason = "canary error spike is a known upstream DNS blip, INC-4412"
    args = ["switchboard", "override", "release-api", "--action", "hold", "--rationale", reason, "--actor", "dana"]
    assert CliRunner().invoke(main, args).exit_code == 0  # a first receipt, signed by the state's key
    import os

    keys = os.environ["OPS_PLATFORM_KEYS_DIR"]
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "typo-keys"))
    res = CliRunner().invoke(main, args[:-2] + ["--actor", "erin"])
    assert res.exit_code == 1 and "no signing key in" in res.output and "holds 1 receipt(s)" in res.output, res.output
    assert not (tmp_path / "typo-keys" / "active.key").exists() and "Traceback" not in res.output
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", keys)
    assert CliRunner().invoke(main, ["receipts", "verify"]).exit_code == 0  # the ledger is whole
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "typo-keys"))
    made = CliRunner().invoke(main, ["receipts", "new-key"])  # on purpose
    assert made.exit_code == 0 and (tmp_path / "typo-keys" / "active.key").exists(), made.output


@pytest.mark.parametrize(("env", "value", "said"), [
    ("OPS_PLATFORM_OPA_URL", "notaurl", "is not an http(s) URL"),
    ("OPS_PLATFORM_CONTROL_URL", "garbage", "is no control store URL"),
    # a mistyped URL is named without its password
    ("OPS_PLATFORM_CONTROL_URL", "postgresql:/ops:S3cretPW@127.0.0.1/ops", "postgresql:***@127.0.0.1/ops"),
    ("OPS_PLATFORM_CONTROL_URL", "ops:S3cretPW@db.internal/ops", "ops:***@db.internal/ops"),
])
def test_a_malformed_url_setting_is_one_line(state, monkeypatch, env, value, said):
    monkeypatch.setenv(env, value)
    res = CliRunner().invoke(main, ["switchboard", "override", "release-api", "--action", "hold", "--rationale",
                                    "canary error spike is a known upstream DNS blip", "--actor", "dana"])
    assert res.exit_code == 1 and said in res.output and "Traceback" not in res.output, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)
    assert "S3cretPW" not in res.output


def test_a_shown_store_url_hides_every_password():
    from ops_platform.guard.runtime import shown_url

    assert shown_url("postgresql://ops:p@ss@host/db") == "postgresql://ops:***@host/db"  # '@' not encoded
    shown = shown_url("postgresql://ops:pw@host/db?sslpassword=zz&sslmode=require")
    assert "zz" not in shown and "pw@" not in shown and "sslmode=require" in shown


def test_bad_time_zone_preset_and_window_settings_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(main, ["demo", "--preset", "X"])
    assert res.exit_code == 2 and "'X' is not one of 'S', 'M', 'L'" in res.output, res.output
    from ops_platform.paths import StatePaths
    from ops_platform.settings import SettingError, partition_range, usage_final_after_days

    # Settings errors are SettingError, which every command prints as one line.
    monkeypatch.setenv("OPS_PLATFORM_USAGE_FINAL_AFTER_DAYS", "abc")
    with pytest.raises(SettingError, match="must be a whole number of days"):
        usage_final_after_days()

    monkeypatch.setenv("OPS_PLATFORM_TZ", "Mars/Base")
    with pytest.raises(SettingError, match="'Mars/Base' is not an IANA time zone"):
        partition_range(StatePaths.from_env())


def test_an_empty_dead_letter_queue_is_nothing_to_page_on(state):
    res = CliRunner().invoke(main, ["dlq", "replay", "--all"])
    assert res.exit_code == 0 and "the dead-letter queue is empty" in res.output, res.output
    res = CliRunner().invoke(main, ["dlq", "replay", "--id", "7"])
    assert res.exit_code == 1 and "nothing to replay with id 7" in res.output
    # Replaying is named on purpose: one item, or all of them, never by leaving the id out.
    for args in ([], ["--id", "7", "--all"]):
        res = CliRunner().invoke(main, ["dlq", "replay", *args])
        assert res.exit_code == 2 and "--id N" in res.output and "--all" in res.output, res.output


def test_a_request_the_guard_could_not_decide_says_it_is_kept_and_how_to_follow_it(state, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_OPA_URL", "http://127.0.0.1:1")  # nothing listens
    res = CliRunner().invoke(main, ["switchboard", "override", "release-api", "--action", "hold", "--rationale",
                                    "canary error spike is a known upstream DNS blip", "--actor", "dana",
                                    "--idempotency-key", "hold-1"])
    assert res.exit_code == 1 and "policy error" in res.output, res.output
    assert "the request is kept" in res.output and "--idempotency-key hold-1" in res.output


def test_dlq_list_of_a_mistyped_store_is_an_error_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "typo-home"))
    res = CliRunner().invoke(main, ["dlq", "list"])
    assert res.exit_code == 1 and "no control store at" in res.output, res.output
    res = CliRunner().invoke(main, ["dlq", "list", "--store", f"sqlite:///{tmp_path / 'nope.sqlite'}"])
    assert res.exit_code == 1 and not (tmp_path / "nope.sqlite").exists() and not (tmp_path / "typo-home").exists()


def test_an_interrupted_regeneration_leaves_the_world_that_was_there(tmp_path, monkeypatch):
    from ops_platform.world import generate as gen
    from ops_platform.world import preset, world_exists

    out = tmp_path / "w"
    gen.generate_world(preset("S", seed=9, tenants=5, days=3), out)
    before = (out / "manifest.json").read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "generate_billing", interrupted)  # late in the run: usage already written
    with pytest.raises(KeyboardInterrupt):
        gen.generate_world(preset("S", seed=10, tenants=5, days=3), out)
    assert world_exists(out) and (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no staging folder left beside it


def test_version_and_the_small_refusals_of_a_new_users_walkthrough(tmp_path, monkeypatch):
    assert CliRunner().invoke(main, ["--version"]).output.startswith("ops-platform, version ")
    res = CliRunner().invoke(main, ["slo", "rules", "--out", str(tmp_path / "typo" / "rules.yaml")])
    assert res.exit_code == 2 and "is no folder" in res.output and not (tmp_path / "typo").exists()
    res = CliRunner().invoke(main, ["receipts", "show", " "])
    assert res.exit_code == 2 and "name a receipt id" in res.output
