"""A demo killed mid-run leaves runs started and the DuckDB pool's one slot taken; the next
demo fails those runs and frees the slot instead of waiting for it forever."""

from __future__ import annotations

import os
import socket
import subprocess

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from sensors.runner import (
    INSTANCE_YAML,
    RUNNER_TAG,
    _runner,
    prepare_dagster_home,
    release_stale_runs,
)


def test_runs_left_started_by_a_dead_runner_are_failed_and_free_their_slot(tmp_path):
    (tmp_path / "dagster.yaml").write_text(INSTANCE_YAML)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        dead = subprocess.Popen(["true"])
        dead.wait()
        runs = {}
        host = socket.gethostname()
        for name, tags in (("dead", {RUNNER_TAG: f"{host}:{dead.pid}:123"}),
                           ("alive", {RUNNER_TAG: _runner(os.getpid())}),
                           # the same pid, but another process (started at another time): gone
                           ("reused", {RUNNER_TAG: f"{host}:{os.getpid()}:1"}),
                           ("elsewhere", {RUNNER_TAG: f"another-host:{dead.pid}:123"}),
                           ("re-executed", {RUNNER_TAG: f"{host}:{dead.pid}:123", "dagster/parent_run_id": "x"}),
                           ("untagged", {})):  # e.g. a run `make dev` launched
            run = DagsterRun(job_name="ingest_daily", run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED,
                             tags=tags)
            instance.add_run(run)
            runs[name] = run.run_id
        slots = instance.event_log_storage
        slots.set_concurrency_slots("duckdb", 1)
        slots.claim_concurrency_slot("duckdb", runs["dead"], "raw__usage_events")
        assert slots.get_concurrency_info("duckdb").active_slot_count == 1

        assert sorted(release_stale_runs(instance)) == sorted([runs["dead"], runs["reused"]])
        status = {name: instance.get_run_by_id(run_id).status for name, run_id in runs.items()}
        failed = {name for name, st in status.items() if st == dg.DagsterRunStatus.FAILURE}
        assert failed == {"dead", "reused"}
        assert slots.get_concurrency_info("duckdb").active_slot_count == 0
        assert release_stale_runs(instance) == []  # once


def test_a_dagster_home_without_the_one_writer_limit_is_named(tmp_path):
    new = tmp_path / "new"
    assert prepare_dagster_home(new) == [] and (new / "dagster.yaml").read_text() == INSTANCE_YAML
    own = tmp_path / "own"
    own.mkdir()
    mine = "telemetry:\n  enabled: false\n"
    (own / "dagster.yaml").write_text(mine)
    (note,) = prepare_dagster_home(own)
    assert "'duckdb' pool no limit" in note and "concurrency set duckdb 1" in note
    assert (own / "dagster.yaml").read_text() == mine  # the operator's file is left as it is
    with dg.DagsterInstance.from_config(str(own)) as instance:
        instance.event_log_storage.set_concurrency_slots("duckdb", 2)
    assert "a limit of 2" in prepare_dagster_home(own)[0]
    with dg.DagsterInstance.from_config(str(own)) as instance:
        instance.event_log_storage.set_concurrency_slots("duckdb", 1)
    assert prepare_dagster_home(own) == []


def test_a_dagster_home_that_does_not_open_is_named_not_fatal(tmp_path):
    (tmp_path / "dagster.yaml").write_text("event_log_storage:\n  module: no_such_module\n  class: Nope\n")
    (note,) = prepare_dagster_home(tmp_path)
    assert note.startswith("cannot open the Dagster instance") and "'duckdb' pool" in note
