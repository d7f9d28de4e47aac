"""Prometheus as the SLI source: a backfilled world reads back exactly as its landing zone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ops_platform.contracts.definitions import LATENCY_BUCKETS, REQUEST_COUNTERS
from ops_platform.contracts.model import POLARS_TYPES, Contract
from ops_platform.slo.prometheus import (
    PROMETHEUS,
    PROMTOOL,
    PrometheusError,
    PrometheusServer,
    PrometheusSLISource,
    _free_port,
    backfill,
    write_openmetrics,
)
from ops_platform.world import WorldConfig, generate_world

TINY = WorldConfig(seed=3, tenants=8, days=2, start_date=date(2026, 4, 1))
COUNTER_KEY = ["ts", "service", "cohort", "build_id"]
LATENCY_KEY = [*COUNTER_KEY, "le"]


def _require_prometheus() -> None:
    missing = [str(p) for p in (PROMETHEUS, PROMTOOL) if not p.exists()]
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"Prometheus is required in CI but missing: {', '.join(missing)}")
    pytest.skip(f"Debian's prometheus package is not installed ({', '.join(missing)} missing); runs in CI")


def _schema(contract: Contract) -> dict[str, pl.DataType]:
    return {c.name: POLARS_TYPES[c.dtype] for c in contract.columns}


def _landing(world: Path, contract: Contract) -> pl.DataFrame:
    return pl.read_parquet(world / "landing" / contract.table / "*" / "*.parquet").cast(_schema(contract))


@dataclass
class Served:
    source: PrometheusSLISource
    counters: pl.DataFrame
    latency: pl.DataFrame
    start: datetime
    end: datetime


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    """The tiny world, written as OpenMetrics, backfilled and served by a real Prometheus."""
    _require_prometheus()
    root = tmp_path_factory.mktemp("prometheus")
    generate_world(TINY, root / "world")
    counters = _landing(root / "world", REQUEST_COUNTERS)
    latency = _landing(root / "world", LATENCY_BUCKETS)
    assert counters.filter(pl.col("requests") == 0).height > 0  # zero-traffic rows are in play
    om = root / "world.om"
    samples = write_openmetrics(counters, latency, om)
    # Each series: one sample per landing row plus its starting zero (the world has no gaps).
    series = counters.n_unique(COUNTER_KEY[1:]) * 2 + latency.n_unique(LATENCY_KEY[1:])
    assert samples == 2 * counters.height + latency.height + series
    backfill(om, root / "tsdb")
    with PrometheusServer(root / "tsdb") as server:
        start = counters["ts"].min()
        end = counters["ts"].max() + timedelta(minutes=1)
        yield Served(PrometheusSLISource(server.url), counters, latency, start, end)


def test_whole_world_reads_back_exactly(served):
    got = served.source.request_counters(served.start, served.end)
    assert got.schema == pl.Schema(_schema(REQUEST_COUNTERS))
    assert_frame_equal(got, served.counters.sort(COUNTER_KEY))
    got = served.source.latency_buckets(served.start, served.end)
    assert got.schema == pl.Schema(_schema(LATENCY_BUCKETS))
    assert_frame_equal(got, served.latency.sort(LATENCY_KEY))


def test_sub_window_reads_back_exactly_across_chunks(served):
    # Several chunks, a start between minutes, series that begin and end inside the window.
    source = PrometheusSLISource(served.source.base_url, chunk_minutes=301)
    start = served.start + timedelta(hours=13, minutes=7, seconds=30)
    end = served.start + timedelta(hours=29, minutes=31)
    inside = pl.col("ts").is_between(start, end, closed="left")
    assert_frame_equal(source.request_counters(start, end), served.counters.filter(inside).sort(COUNTER_KEY))
    assert_frame_equal(source.latency_buckets(start, end), served.latency.filter(inside).sort(LATENCY_KEY))
    empty = source.request_counters(end, end)
    assert empty.height == 0 and empty.schema == pl.Schema(_schema(REQUEST_COUNTERS))


def test_query_range_splits_past_the_points_limit(served):
    # 2 days at 15 s steps is 11,521 points: more than Prometheus answers in one request.
    got = served.source.query_range("time()", served.start, served.end, 15)
    assert got.columns == ["ts", "value"]
    assert got.height == 2 * 24 * 60 * 4 + 1
    assert got["ts"].is_unique().all() and got["ts"].is_sorted()
    assert (got["ts"].dt.epoch("s").cast(pl.Float64) == got["value"]).all()


def test_bad_promql_is_a_clear_error(served):
    with pytest.raises(PrometheusError, match=r"rejected query 'sum\(rate\(' \(HTTP 400\) bad_data: .*parse error"):
        served.source.query_range("sum(rate(", served.start, served.end, 60)


def test_unreachable_prometheus_is_a_clear_error():
    source = PrometheusSLISource(f"http://127.0.0.1:{_free_port()}", timeout=2)
    with pytest.raises(PrometheusError, match=r"cannot reach Prometheus at http://127\.0\.0\.1:\d+"):
        source.request_counters(datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 1, 1, tzinfo=UTC))


def _rows(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["ts", "service", "cohort", "build_id", "requests", "errors"],
                        orient="row").cast(_schema(REQUEST_COUNTERS))


T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_openmetrics_text_is_cumulative_and_deterministic(tmp_path):
    # A zero-traffic minute, then a two-minute gap: the run after it restarts from its sum.
    counters = _rows([(_at(0), "api", "canary", "api-1", 3, 1), (_at(1), "api", "canary", "api-1", 0, 0),
                      (_at(4), "api", "canary", "api-1", 5, 0)])
    latency = pl.DataFrame({"ts": [_at(0)] * 3, "service": "api", "cohort": "canary", "build_id": "api-1",
                            "le": [0.5, 1.0, float("inf")], "count": [1, 2, 3]}).cast(_schema(LATENCY_BUCKETS))
    a, b = tmp_path / "a.om", tmp_path / "b.om"
    assert write_openmetrics(counters, latency, a) == 5 + 5 + 6
    write_openmetrics(counters, latency, b)
    assert a.read_bytes() == b.read_bytes()
    t = int(T0.timestamp())
    lab = 'service="api",cohort="canary",build_id="api-1"'
    lines = a.read_text().splitlines()
    assert lines[:7] == [
        "# HELP summit_http_requests Requests served, per service, deployment cohort and build.",
        "# TYPE summit_http_requests counter",
        f"summit_http_requests_total{{{lab}}} 0 {t}",
        f"summit_http_requests_total{{{lab}}} 3 {t + 60}",
        f"summit_http_requests_total{{{lab}}} 3 {t + 120}",
        f"summit_http_requests_total{{{lab}}} 3 {t + 240}",
        f"summit_http_requests_total{{{lab}}} 8 {t + 300}",
    ]
    assert lines[-7:] == [
        f'summit_http_request_duration_seconds_bucket{{{lab},le="0.5"}} 0 {t}',
        f'summit_http_request_duration_seconds_bucket{{{lab},le="1"}} 0 {t}',
        f'summit_http_request_duration_seconds_bucket{{{lab},le="+Inf"}} 0 {t}',
        f'summit_http_request_duration_seconds_bucket{{{lab},le="0.5"}} 1 {t + 60}',
        f'summit_http_request_duration_seconds_bucket{{{lab},le="1"}} 2 {t + 60}',
        f'summit_http_request_duration_seconds_bucket{{{lab},le="+Inf"}} 3 {t + 60}',
        "# EOF",
    ]


@pytest.mark.parametrize(("rows", "reason"), [
    ([(_at(0), "api", "canary", "b", 1, 0), (_at(2), "api", "canary", "b", 1, 0)], "one-minute gap"),
    ([(_at(0), "api", "canary", "b", 1, 0), (_at(0), "api", "canary", "b", 2, 0)], "duplicate row"),
    ([(_at(0) + timedelta(seconds=5), "api", "canary", "b", 1, 0)], "ts: not at a whole minute"),
    ([(_at(0), "api", "canary", "b", -1, 0)], "requests: negative increase"),
])
def test_rows_that_cannot_round_trip_are_refused(tmp_path, rows, reason):
    latency = pl.DataFrame(schema=_schema(LATENCY_BUCKETS))
    with pytest.raises(ValueError, match=rf"^request_counters: {reason}.*build_id=b"):
        write_openmetrics(_rows(rows), latency, tmp_path / "x.om")


def test_gaps_resets_and_per_pod_series_read_back(tmp_path):
    """Series that stop and restart, escaped label values, and pods with a counter reset."""
    _require_prometheus()
    counters = _rows([(_at(m), "api", "canary", "api-1", m % 3, min(m % 3, m % 2))
                      for m in (*range(0, 5), *range(9, 12))]
                     + [(_at(m), "api", "early", 'api-1 "hot\\fix"', 2, 1) for m in range(3, 6)])
    latency = pl.DataFrame(schema=_schema(LATENCY_BUCKETS))
    write_openmetrics(counters, latency, tmp_path / "gaps.om")
    backfill(tmp_path / "gaps.om", tmp_path / "tsdb")
    # Two pods serve one build a month later; pod b restarts (its counter drops to 1).
    t = int(_at(60 * 24 * 30).timestamp())
    pods = [("a", [0, 4, 9, 9]), ("b", [10, 12, 1, 3])]
    text = "# TYPE summit_http_requests counter\n" + "".join(
        f'summit_http_requests_total{{service="api",cohort="general",build_id="api-2",pod="{pod}"}} {v} {t + 60 * i}\n'
        for pod, values in pods for i, v in enumerate(values)) + "# EOF\n"
    (tmp_path / "pods.om").write_text(text)
    backfill(tmp_path / "pods.om", tmp_path / "tsdb")
    with PrometheusServer(tmp_path / "tsdb") as server:
        source = PrometheusSLISource(server.url)
        assert_frame_equal(source.request_counters(_at(0), _at(60)), counters.sort(COUNTER_KEY))
        pod_rows = source.request_counters(_at(60 * 24 * 30), _at(60 * 24 * 30 + 10))
    ts = [datetime.fromtimestamp(t + 60 * i, UTC) for i in range(3)]
    assert pod_rows.select("ts", "requests", "errors").rows() == list(zip(ts, [4 + 2, 5 + 1, 0 + 2], [0, 0, 0],
                                                                       strict=True))


def test_promtool_failure_is_a_clear_error(tmp_path):
    _require_prometheus()
    bad = tmp_path / "bad.om"
    bad.write_text('summit_http_requests_total{service="api"} 1 1775023200\n')  # no "# EOF"
    with pytest.raises(PrometheusError, match=r"promtool could not backfill .*bad\.om.*# EOF"):
        backfill(bad, tmp_path / "tsdb")


def test_server_that_cannot_start_shows_its_log(tmp_path):
    _require_prometheus()
    server = PrometheusServer(tmp_path / "tsdb", retention="a while")
    with pytest.raises(PrometheusError, match=r"prometheus exited on start .*\n.*Error parsing .*a while"):
        server.start()
    with pytest.raises(PrometheusError, match="not running"):
        _ = server.url
