"""Shared fixtures: a small but complete world (includes the America/Denver DST day)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ops_platform.paths import StatePaths
from ops_platform.world import WorldConfig, generate_world

# 5 local days from 2026-03-06: 2026-03-08 is the 23-hour spring-forward day in Denver.
SMALL = WorldConfig(seed=11, tenants=24, days=5, start_date=date(2026, 3, 6))


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "world"
    generate_world(SMALL, out)
    return out


@pytest.fixture
def state(tmp_path, small_world, monkeypatch) -> StatePaths:
    """A state folder whose world is a copy-free symlink to the session world."""
    home = tmp_path / "state"
    home.mkdir()
    (home / "world").symlink_to(small_world, target_is_directory=True)
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(home))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    return StatePaths.from_env().ensure()
