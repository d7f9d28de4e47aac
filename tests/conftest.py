"""Shared fixtures: a small but complete world (includes the America/Denver DST day)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from ops_platform.contracts.definitions import CONTRACTS
from ops_platform.ingest.landing import LandingZoneReader
from ops_platform.ingest.partitioning import PartitionSpace
from ops_platform.ingest.pipeline import ingest_partition
from ops_platform.paths import StatePaths
from ops_platform.warehouse import Warehouse
from ops_platform.world import WorldConfig, generate_world

# 5 local days from 2026-03-06: 2026-03-08 is the 23-hour spring-forward day in Denver.
SMALL = WorldConfig(seed=11, tenants=24, days=5, start_date=date(2026, 3, 6))
KEYS = [(SMALL.start_date + timedelta(days=i)).isoformat() for i in range(SMALL.days)]
SPACE = PartitionSpace.from_keys(KEYS[0], KEYS[-1], "America/Denver")


@pytest.fixture(autouse=True)
def _ample_memory_for_file_checks(monkeypatch) -> None:
    """A file check sees ample free memory: a test's files are small, and the free memory of
    a tight CI container must not refuse them (the guard's own tests say what is free)."""
    monkeypatch.setattr("ops_platform.ingest.check_file.free_memory", lambda: 2**40)


def load_warehouse(path: Path, landing: Path) -> Warehouse:
    """Every source of a world's landing zone ingested into the warehouse at `path`, as the
    daily assets would leave it."""
    wh, reader = Warehouse(path), LandingZoneReader(landing)
    for table, contract in CONTRACTS.items():
        for key in ([None] if contract.partition_rule == "static" else KEYS):
            res = ingest_partition(contract, reader, SPACE, key)
            wh.replace_partition(table, key, res.accepted, res.quarantine)
    return wh


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


PG_ADMIN_URL = os.environ.get("OPS_PLATFORM_TEST_PG_URL", "postgresql+psycopg2://ops:ops@127.0.0.1:5432/postgres")


def _pg_admin_engine():
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"no PostgreSQL reachable at {PG_ADMIN_URL} (run `bash .ci/services.sh`); "
                    "the PostgreSQL variant of this test runs in CI")
    return engine


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty control store URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'control.sqlite'}"
        return
    import sqlalchemy as sa

    admin = _pg_admin_engine()
    name = f"ops_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
