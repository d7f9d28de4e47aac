"""The Dagster definitions load, validate, and match the reviewed lineage snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from ops_platform.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _describe(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "owners": sorted(node.owners),
            "kinds": sorted(node.kinds),
            "partitioned": node.partitions_def is not None,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(c.name for c in node.check_keys),
        }
    jobs = sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__"))
    schedules = sorted(s.name for s in defs.schedules or [])
    sensors = sorted(s.name for s in defs.sensors or [])
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def test_definitions_load_and_validate(state):
    defs = build_definitions(state)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"raw/usage_events", "raw/billing_focus", "staging/stg_usage_events"} <= keys
    daily = defs.resolve_job_def("ingest_daily")
    keys = daily.partitions_def.get_partition_keys()
    assert keys[0] == "2026-03-06" and keys[-1] == "2026-03-10"  # the world's local days


def test_lineage_matches_snapshot(state):
    current = _describe(build_definitions(state))
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, "lineage changed: review it, then rerun with UPDATE_SNAPSHOTS=1"


def test_every_raw_asset_has_contract_and_quarantine_checks(state):
    snap = _describe(build_definitions(state))
    raw = {k: v for k, v in snap["assets"].items() if k.startswith("raw/")}
    assert len(raw) == 11
    for key, spec in raw.items():
        assert spec["checks"] == ["contract", "quarantine_rate"], key
        assert spec["owners"], key
    staging = {k: v for k, v in snap["assets"].items() if k.startswith("staging/")}
    assert all(v["deps"] and v["deps"][0].startswith("raw/") for v in staging.values())
    assert any(v["checks"] for v in staging.values())  # dbt tests show up as asset checks
    # A staging model is owned by its raw source's team and says what it holds.
    assert all(v["owners"] == snap["assets"][v["deps"][0]]["owners"] for v in staging.values()), \
        {k: (v["owners"], snap["assets"][v["deps"][0]]["owners"]) for k, v in staging.items()}
    graph = build_definitions(state).resolve_asset_graph()
    described = {k.to_user_string(): graph.get(k).description or "" for k in graph.get_all_asset_keys()}
    assert all(not described[k].startswith("dbt model") for k in staging), described
    # A dbt test says what it tests (dbt gives no description unless one is written).
    tests = [graph.get_check_spec(c) for k in graph.get_all_asset_keys() if k.path[0] == "staging"
             for c in graph.get(k).check_keys]
    assert tests and all(t.description and t.description.startswith("dbt test ") for t in tests), tests[:3]
    assert any(t.description.startswith("dbt test not_null on ") for t in tests)
    # Lineage starts at the files: the raw assets read the landing zone, the backtests it and the truth.
    assert all(v["deps"] == ["world/landing"] for v in raw.values()), raw
    for scored in ("ramp/backtest", "slo/alert_backtest"):
        assert snap["assets"][scored]["deps"] == ["world/landing", "world/truth"], snap["assets"][scored]


def test_the_books_follow_every_load(state, tmp_path):
    # After an ingest run, successful or failed later on, reconcile_costs is requested (the
    # release sensor holds a period whose raw rows changed since the last attribution), one
    # at a time: with one already waiting, the next load asks for no second.
    defs = build_definitions(state)
    sensors = {s.name: s for s in defs.sensors}
    for name in ("reconcile_after_successful_loads", "reconcile_after_failed_loads"):
        assert sensors[name].job_name == "reconcile_costs"
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING
    sensor = sensors["reconcile_after_successful_loads"]
    with dg.DagsterInstance.ephemeral() as instance:
        @dg.op
        def load():
            return 1

        @dg.job(name="ingest_daily")
        def fake_daily():
            load()

        result = fake_daily.execute_in_process(instance=instance)
        success = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)

        def evaluate():
            return sensor(dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_instance=instance,
                                                             dagster_run=result.dagster_run, dagster_event=success))

        request = evaluate()
        assert isinstance(request, dg.RunRequest) and request.run_key == f"after-{result.run_id}"
        waiting = instance.create_run_for_job(defs.resolve_job_def("reconcile_costs"),
                                              status=dg.DagsterRunStatus.NOT_STARTED)
        skipped = evaluate()
        assert isinstance(skipped, dg.SkipReason) and waiting.run_id in skipped.skip_message


def test_loading_the_definitions_prints_no_warning(state):
    """Dagster copies each sensor to attach resources and warns that `owners` is beta on
    every copy; that line would open every demo and run (the env carries the state folder)."""
    code = "from ops_platform.definitions import build_definitions; build_definitions().get_repository_def()"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                         cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr, run.stderr


def test_backtest_figures_keep_counts_as_integers_in_the_ui():
    # An event count shown as 4.0, or 142.0 bad requests, reads as a measurement of a rate.
    import numpy as np

    from assets import score_metadata

    assert score_metadata(4) == 4 and isinstance(score_metadata(np.int64(142)), int)
    assert score_metadata(0.123456) == 0.1235 and score_metadata(True) is True
    assert isinstance(score_metadata(None), dg.NullMetadataValue)
