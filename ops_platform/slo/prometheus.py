"""Prometheus as an SLI source that gives exactly the landing zone's series.

The SLO assets read per-minute request/error increases and latency buckets either from
the landing zone or from a Prometheus HTTP API. This module makes the two interchangeable:

* `write_openmetrics` turns the world's per-minute increases into the cumulative counters
  an exporter exposes, as OpenMetrics text; `backfill` turns that text into TSDB blocks
  with promtool;
* `PrometheusServer` runs a throwaway local server over those blocks (tests, demos);
* `PrometheusSLISource` reads the counters back as frames of the landing contracts.

How the round trip stays exact:

* Every landing row (minute ``ts``) gives one sample at the *end* of its minute (ts + 60 s)
  holding the series' running sum, and every run of consecutive minutes starts with one
  sample at its first minute holding the sum before it (0 for a new series), so
  ``value(ts + 60 s) - value(ts)`` is exactly that minute's increase.
* Reading takes raw samples (an instant query of a range selector: no step, lookback or
  extrapolation, and far cheaper than a filtered range query). A series' value at a whole
  minute t is its latest sample in (t - 60 s, t]; a minute is a row when its series has a
  value at both its start and its end. Backfilled blocks carry no staleness markers, so a
  plain 60 s range query would carry a stopped series on for the lookback delta (5 min)
  and invent zero rows. Zero-traffic landing rows have samples and come back as 0 rows;
  minutes without a landing row have none and come back as nothing.
* Increases are differences of those values, never `increase()` or `rate()` (they
  extrapolate); a decrease is a counter reset and counts the new value, as Prometheus
  does. Series with extra labels (e.g. one per pod) are differenced, then added up.
* A gap of exactly one minute inside a series is refused when writing: at 60 s
  resolution it cannot be told from a minute without traffic. (The world has no gaps: a
  build serves a cohort over one contiguous interval.)
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import polars as pl

from ..files import open_atomic

log = logging.getLogger(__name__)

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")

REQUESTS_METRIC = "summit_http_requests_total"
ERRORS_METRIC = "summit_http_request_errors_total"
LATENCY_METRIC = "summit_http_request_duration_seconds"
BUCKET_METRIC = f"{LATENCY_METRIC}_bucket"
SERIES_LABELS = ("service", "cohort", "build_id")

# Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS_PER_SERIES = 11_000
# promtool rounds this down to its block ranges (2h * 3^n) -> 486h (20.25 days) blocks:
# it re-reads the whole file once per block, so 2h blocks would mean 360 passes for a
# 30-day world, while 486h keeps it to 2-3 passes; peak memory is the same (~the file size).
BACKFILL_BLOCK_DURATION = "486h"
_LINES_PER_WRITE = 1_000_000
_TS = pl.Datetime("us", "UTC")
COUNTER_SCHEMA = pl.Schema({"ts": _TS, "service": pl.String, "cohort": pl.String, "build_id": pl.String,
                            "requests": pl.Int64, "errors": pl.Int64})
LATENCY_SCHEMA = pl.Schema({"ts": _TS, "service": pl.String, "cohort": pl.String, "build_id": pl.String,
                            "le": pl.Float64, "count": pl.Int64})


class PrometheusError(RuntimeError):
    """Prometheus, promtool or the API refused or failed; the message carries their words."""


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Family:
    name: str  # OpenMetrics family name (a counter's samples add `_total`)
    kind: str
    help: str
    sample: str
    unit: str | None = None

    def header(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        if self.unit:
            lines.append(f"# UNIT {self.name} {self.unit}")
        return "\n".join(lines) + "\n"


_REQUESTS = _Family("summit_http_requests", "counter",
                    "Requests served, per service, deployment cohort and build.", REQUESTS_METRIC)
_ERRORS = _Family("summit_http_request_errors", "counter",
                  "Requests that ended in an error, per service, deployment cohort and build.", ERRORS_METRIC)
_LATENCY = _Family(LATENCY_METRIC, "histogram",
                   "Request latency, per service, deployment cohort and build.", BUCKET_METRIC, "seconds")


def _row_text(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.items())


def _cumulative(frame: pl.DataFrame, value: str, keys: list[str], table: str) -> pl.DataFrame:
    """Samples (keys..., t, v) of the running sums of `value`, validated, series by series."""
    missing = [c for c in ("ts", *keys, value) if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {', '.join(missing)}")
    if not isinstance(frame.schema["ts"], pl.Datetime):
        raise ValueError(f"{table}: ts must be a Datetime column, not {frame.schema['ts']}")
    df = frame.select("ts", *keys, pl.col(value).cast(pl.Int64))  # naive ts count as UTC
    for col in df.columns:
        nulls = df.filter(pl.col(col).is_null())
        if nulls.height:
            raise ValueError(f"{table}: null {col} in row {_row_text(nulls.row(0, named=True))}")
    checks = [(pl.col("ts").dt.epoch("ms") % 60_000 != 0, "ts: not at a whole minute"),
              (pl.col(value) < 0, f"{value}: negative increase")]
    if "le" in keys:
        checks.append((pl.col("le").is_nan() | (pl.col("le") < 0), "le: not a bucket bound"))
    for cond, reason in checks:
        bad = df.filter(cond)
        if bad.height:
            raise ValueError(f"{table}: {reason} in row {_row_text(bad.row(0, named=True))}")

    df = df.with_columns(pl.col("ts").dt.epoch("s").alias("t")).sort([*keys, "t"])
    step = pl.col("t") - pl.col("t").shift(1).over(keys)
    df = df.with_columns(step.alias("_step"), pl.col(value).cum_sum().over(keys).alias("_cum"))
    for gap, reason in ((0, "duplicate row"),
                        (120, "one-minute gap (indistinguishable from a zero-traffic minute in Prometheus)")):
        bad = df.filter(pl.col("_step") == gap)
        if bad.height:
            raise ValueError(f"{table}: {reason} at row {_row_text(bad.drop('t', '_step', '_cum').row(0, named=True))}")
    starts = df.filter(pl.col("_step").is_null() | (pl.col("_step") > 60)).select(
        *keys, "t", (pl.col("_cum") - pl.col(value)).alias("v"))
    ends = df.select(*keys, (pl.col("t") + 60).alias("t"), pl.col("_cum").alias("v"))
    order = [k for k in keys if k != "le"] + ["t"] + (["le"] if "le" in keys else [])
    return pl.concat([starts, ends]).sort(order)


def _escaped(col: str) -> pl.Expr:
    return (pl.col(col).str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
            .str.replace_all("\n", "\\n", literal=True))


def _le_text() -> pl.Expr:
    # As Prometheus 2 client libraries write it ("1", "2.5", "+Inf"); the exported SLO rules
    # match a whole bound written either way ("1" or Prometheus 3's "1.0").
    return (pl.when(pl.col("le").is_infinite()).then(pl.lit("+Inf"))
            .otherwise(pl.col("le").cast(pl.String).str.replace(r"\.0$", "")))


def _write_family(f: IO[bytes], family: _Family, samples: pl.DataFrame, keys: list[str]) -> int:
    parts: list[pl.Expr] = []
    for i, key in enumerate(keys):
        parts.append(pl.lit(("{" if i == 0 else '",') + f'{key}="'))
        parts.append(_le_text() if key == "le" else _escaped(key))
    parts += [pl.lit('"} '), pl.col("v").cast(pl.String), pl.lit(" "), pl.col("t").cast(pl.String)]
    line = pl.concat_str([pl.lit(family.sample), *parts]).alias("line")
    f.write(family.header().encode())
    for offset in range(0, samples.height, _LINES_PER_WRITE):
        f.flush()  # polars may write to the file descriptor itself
        samples.slice(offset, _LINES_PER_WRITE).select(line).write_csv(f, include_header=False, quote_style="never")
    return samples.height


def write_openmetrics(counters: pl.DataFrame, latency: pl.DataFrame, out: Path) -> int:
    """Write the landing counters and buckets as cumulative OpenMetrics series; returns samples.

    Families, in this order: `summit_http_requests_total` and
    `summit_http_request_errors_total` {service, cohort, build_id}, then
    `summit_http_request_duration_seconds_bucket` {service, cohort, build_id, le}. Samples
    are grouped by series and in time order within each (promtool silently drops a sample
    older than one already added for its series), a histogram's buckets for one timestamp
    together in `le` order (OpenMetrics), timestamps in whole seconds. The same frames give
    the same bytes. Raises ValueError, naming the table and row, on data that cannot round-trip.
    """
    keys = list(SERIES_LABELS)
    families = [
        (_REQUESTS, _cumulative(counters, "requests", keys, "request_counters"), keys),
        (_ERRORS, _cumulative(counters, "errors", keys, "request_counters"), keys),
        (_LATENCY, _cumulative(latency, "count", [*keys, "le"], "latency_buckets"), [*keys, "le"]),
    ]
    n = 0
    with open_atomic(Path(out)) as f:
        for family, samples, labels in families:
            n += _write_family(f, family, samples, labels)
        f.write(b"# EOF\n")
    return n


def backfill(openmetrics: Path, tsdb_dir: Path, *, promtool: Path = PROMTOOL,
             max_block_duration: str = BACKFILL_BLOCK_DURATION) -> None:
    """Turn an OpenMetrics file into TSDB blocks in `tsdb_dir` with promtool.

    Blocks are written next to whatever `tsdb_dir` holds; a Prometheus server picks them up
    when it starts (or at its next block reload).
    """
    if not Path(promtool).exists():
        raise PrometheusError(f"promtool not found at {promtool}; install Debian's `prometheus` package")
    Path(tsdb_dir).mkdir(parents=True, exist_ok=True)
    cmd = [str(promtool), "tsdb", "create-blocks-from", "openmetrics", "--quiet",
           f"--max-block-duration={max_block_duration}", str(openmetrics), str(tsdb_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output")[-4000:]
        raise PrometheusError(f"promtool could not backfill {openmetrics} into {tsdb_dir} "
                              f"(exit {proc.returncode}): {detail}")


# --------------------------------------------------------------------------- server


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _direct_opener() -> urllib.request.OpenerDirector:
    """An opener that ignores *_proxy variables: a loopback server is never behind a proxy."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_excerpt(path: Path, lines: int = 15) -> str:
    """The log's error lines, then its tail: flag errors come before a long usage text."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in text if re.search(r"^Error|level=error|\berr=", line)][-5:]
    tail = [line for line in text[-(5 if errors else lines):] if line not in errors]
    return "\n".join([*errors, *(["..."] if errors and tail else []), *tail]) or "(empty log)"


class PrometheusServer:
    """A throwaway Prometheus on 127.0.0.1 over `tsdb_dir` (tests, demos, notebooks).

    It scrapes nothing, so it serves exactly the backfilled blocks, and keeps them for a
    century: a world from months ago must not be deleted by retention on start. Use it as
    a context manager; `.url` is the base URL, `.log_path` the server's log while it runs.
    """

    def __init__(self, tsdb_dir: Path, *, binary: Path = PROMETHEUS, retention: str = "100y",
                 ready_timeout: float = 60.0, stop_timeout: float = 10.0):
        self.tsdb_dir = Path(tsdb_dir)
        self.binary = Path(binary)
        self.retention = retention
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise PrometheusError("the Prometheus server is not running; use it as a context manager")
        return self._url

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "prometheus.log" if self._workdir else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and wait until `/-/ready` answers 200 (or raise with its log tail)."""
        if self._proc is not None:
            return self
        if not self.binary.exists():
            raise PrometheusError(f"prometheus not found at {self.binary}; install Debian's `prometheus` package")
        self.tsdb_dir.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="summit-prometheus-"))
        config = self._workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n", encoding="utf-8")
        try:
            for _attempt in range(3):  # the free port can be taken between probe and bind
                port = _free_port()
                if self._launch(config, port):
                    self._url = f"http://127.0.0.1:{port}"
                    return self
            raise PrometheusError("prometheus could not bind a free port on 127.0.0.1 in 3 attempts")
        except BaseException:
            self.stop()
            raise

    def _launch(self, config: Path, port: int) -> bool:
        """True once ready; False if the port was taken; raises on any other failure."""
        assert self._workdir is not None
        log_path = self._workdir / "prometheus.log"
        cmd = [str(self.binary), f"--config.file={config}", f"--storage.tsdb.path={self.tsdb_dir}",
               f"--storage.tsdb.retention.time={self.retention}", f"--web.listen-address=127.0.0.1:{port}"]
        with open(log_path, "ab") as log_file:
            self._proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=self._workdir)
        deadline = time.monotonic() + self.ready_timeout
        ready = f"http://127.0.0.1:{port}/-/ready"
        opener = _direct_opener()
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                if "address already in use" in log_path.read_text(encoding="utf-8", errors="replace"):
                    return False
                raise PrometheusError(f"prometheus exited on start (tsdb {self.tsdb_dir}):\n"
                                      f"{_log_excerpt(log_path)}")
            try:
                with opener.open(ready, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus was not ready after {self.ready_timeout:g} s "
                              f"(tsdb {self.tsdb_dir}):\n{_log_excerpt(log_path)}")

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers) and remove its config and log."""
        proc, self._proc, self._url = self._proc, None, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


# --------------------------------------------------------------------------- reading

Instant = datetime | int | float


def _epoch_s(t: Instant) -> float:
    """Seconds since the epoch; naive datetimes are UTC (the platform's convention)."""
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return float(t)


def _minute_ceil(t: Instant) -> int:
    return int(math.ceil(_epoch_s(t) / 60.0)) * 60


class PrometheusSLISource:
    """Reads the SLI counters from a Prometheus HTTP API as landing-contract frames.

    `request_counters` and `latency_buckets` return the columns and dtypes of the
    REQUEST_COUNTERS and LATENCY_BUCKETS contracts for the minutes in [start, end) (naive
    datetimes are UTC), from raw samples (see the module docstring for the exactness
    rules). Long ranges are read `chunk_minutes` at a time (at most 10,999, under
    Prometheus's 11,000-points-per-series limit), which bounds memory; lower it if
    Prometheus reports that a query would load too many samples.
    """

    def __init__(self, base_url: str, timeout: float = 30, *, chunk_minutes: int = 1440):
        if not 1 <= chunk_minutes < MAX_POINTS_PER_SERIES:
            raise ValueError(f"chunk_minutes must be in [1, {MAX_POINTS_PER_SERIES - 1}], got {chunk_minutes}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.chunk_minutes = chunk_minutes
        local = urllib.parse.urlsplit(self.base_url).hostname in _LOOPBACK
        self._opener = _direct_opener() if local else urllib.request.build_opener()

    # -- raw API

    def _api(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.base_url}{path}"
        body = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        query = params.get("query", "")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                detail = f"{err.get('errorType', 'error')}: {err.get('error', raw[:500])}"
            except ValueError:
                detail = raw[:500].decode(errors="replace") or exc.reason
            raise PrometheusError(f"Prometheus at {self.base_url} rejected query {query!r} "
                                  f"(HTTP {exc.code}) {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url}: {reason}") from None
        except ValueError as exc:
            raise PrometheusError(f"Prometheus at {self.base_url} answered non-JSON to {query!r}: {exc}") from None
        if payload.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.base_url} failed query {query!r}: "
                                  f"{payload.get('errorType', 'error')}: {payload.get('error')}")
        for warning in payload.get("warnings") or ():
            log.warning("Prometheus warning for %r: %s", query, warning)
        return payload["data"]

    def query_range(self, query: str, start: Instant, end: Instant, step_s: int) -> pl.DataFrame:
        """All points of `query` at start, start + step, ... <= end: label columns, `ts`, `value`.

        Label columns are sorted by name (absent labels are null), `ts` is Datetime(us, UTC),
        `value` Float64. Split into requests of at most 11,000 points per series.
        """
        if step_s <= 0:
            raise ValueError(f"step_s must be positive, got {step_s}")
        s, e = _epoch_s(start), _epoch_s(end)
        if e < s:
            raise ValueError(f"end ({end}) is before start ({start})")
        span = (MAX_POINTS_PER_SERIES - 1) * step_s
        frames: list[pl.DataFrame] = []
        t = s
        while t <= e:
            t1 = min(t + span, e)
            data = self._api("/api/v1/query_range", {"query": query, "start": f"{t:.3f}", "end": f"{t1:.3f}",
                                                     "step": str(step_s)})
            if data.get("resultType") != "matrix":
                raise PrometheusError(f"query {query!r} gave a {data.get('resultType')}, not a range of series")
            frames.append(_matrix_frame(data["result"]))
            t = t1 + step_s
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame(schema={"ts": _TS, "value": pl.Float64})
        out = pl.concat(frames, how="diagonal_relaxed")
        return out.select(*sorted(set(out.columns) - {"ts", "value"}), "ts", "value")

    def raw_samples(self, selector: str, start: Instant, end: Instant) -> pl.DataFrame:
        """Every stored sample of `selector` with start < ts <= end, at its own timestamp.

        One instant query of a range selector (``selector[Ns]``): no step, no lookback, no
        extrapolation. Same columns as `query_range`.
        """
        s, e = _epoch_s(start), _epoch_s(end)
        if e <= s:
            raise ValueError(f"end ({end}) must be after start ({start})")
        window_ms = int(math.ceil((e - s) * 1000))
        data = self._api("/api/v1/query", {"query": f"{selector}[{window_ms}ms]", "time": f"{e:.3f}"})
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"selector {selector!r} gave a {data.get('resultType')}, not a range of series")
        # Prometheus 2 includes a sample exactly at `start`, Prometheus 3 does not.
        frame = _matrix_frame(data["result"])
        return frame.filter(pl.col("ts") > datetime.fromtimestamp(s, UTC))

    # -- SLI frames

    def _minute_increases(self, metric: str, start: Instant, end: Instant, keys: list[str]) -> pl.DataFrame:
        """(ts, keys..., inc) per minute in [start, end) from raw samples of a counter."""
        s, e = _minute_ceil(start), _minute_ceil(end)
        frames = []
        for c0 in range(s, e, self.chunk_minutes * 60):
            c1 = min(c0 + self.chunk_minutes * 60, e)
            # Values at the minute steps c0..c1 need the samples in (c0 - 60 s, c1].
            steps = _at_minute_steps(self.raw_samples(metric, c0 - 60, c1))
            frames.append(_increases(steps, keys, metric))
        return pl.concat(frames) if frames else _increases(pl.DataFrame(), keys, metric)

    def request_counters(self, start: Instant, end: Instant) -> pl.DataFrame:
        """The REQUEST_COUNTERS frame for minutes in [start, end), sorted like the landing files.

        A minute exists where the requests counter has samples at both ends; a missing errors
        counter counts as 0 errors.
        """
        keys = list(SERIES_LABELS)
        req = self._minute_increases(REQUESTS_METRIC, start, end, keys).rename({"inc": "requests"})
        err = self._minute_increases(ERRORS_METRIC, start, end, keys).rename({"inc": "errors"})
        out = req.join(err, on=["ts", *keys], how="left").with_columns(pl.col("errors").fill_null(0))
        return out.select(COUNTER_SCHEMA.names()).cast(dict(COUNTER_SCHEMA)).sort(["ts", *keys])

    def latency_buckets(self, start: Instant, end: Instant) -> pl.DataFrame:
        """The LATENCY_BUCKETS frame for minutes in [start, end), sorted like the landing files."""
        keys = [*SERIES_LABELS, "le"]
        out = self._minute_increases(BUCKET_METRIC, start, end, keys).rename({"inc": "count"})
        return out.select(LATENCY_SCHEMA.names()).cast(dict(LATENCY_SCHEMA)).sort(["ts", *keys])


def _matrix_frame(result: list[dict[str, Any]]) -> pl.DataFrame:
    """A Prometheus matrix result as (labels..., ts, value) without a Python loop per point."""
    if not result:
        return pl.DataFrame(schema={"ts": _TS, "value": pl.Float64})
    metrics = [r["metric"] for r in result]
    names = sorted({k for m in metrics for k in m})
    points = pl.DataFrame([p for r in result for p in r["values"]], orient="row",
                          schema=[("t", pl.Float64), ("v", pl.String)]).select(
        (pl.col("t") * 1_000_000).round().cast(pl.Int64).cast(_TS).alias("ts"),
        pl.col("v").cast(pl.Float64).alias("value"))
    if not names:
        return points
    labels = pl.DataFrame({k: [m.get(k) for m in metrics] for k in names}, schema=dict.fromkeys(names, pl.String))
    lengths = pl.Series([len(r["values"]) for r in result], dtype=pl.UInt32)
    index = pl.Series("i", range(len(result)), pl.UInt32).repeat_by(lengths).explode()
    return pl.concat([labels[index], points], how="horizontal")


def _at_minute_steps(samples: pl.DataFrame) -> pl.DataFrame:
    """Each series' value at every whole minute t: its latest sample in (t - 60 s, t].

    This is what a 60 s-step range query returns when samples are at most a step old;
    a series with no such sample has no value at t (backfilled blocks carry no staleness
    markers, so Prometheus itself would carry the last value on for its lookback delta).
    """
    if samples.height == 0:
        return samples
    labels = [c for c in samples.columns if c not in ("ts", "value")]
    minute = 60_000_000
    step = ((pl.col("ts").dt.epoch("us") + (minute - 1)) // minute * minute).cast(_TS)
    return (samples.with_columns(pl.col(labels).fill_null(""), step.alias("_step")).sort("ts")
            .group_by([*labels, "_step"]).agg(pl.col("value").last())
            .rename({"_step": "ts"}))


def _increases(points: pl.DataFrame, keys: list[str], metric: str) -> pl.DataFrame:
    """Per-minute differences of consecutive 60 s points of each raw series."""
    schema = {"ts": _TS, **{k: (pl.Float64 if k == "le" else pl.String) for k in keys}, "inc": pl.Int64}
    if points.height == 0:
        return pl.DataFrame(schema=schema)
    missing = [k for k in keys if k not in points.columns]
    if missing:
        raise PrometheusError(f"{metric}: series without label(s) {', '.join(missing)}")
    labels = [c for c in points.columns if c not in ("ts", "value")]
    # Prometheus treats an absent label as an empty one; nulls would not join.
    pts = points.with_columns(pl.col(labels).fill_null("")).select(*labels, "ts", "value")
    nxt = pts.select(*labels, (pl.col("ts") - timedelta(minutes=1)), pl.col("value").alias("next"))
    d = pts.join(nxt, on=[*labels, "ts"], how="inner")
    inc = pl.col("next") - pl.col("value")
    out = d.select("ts", *keys, pl.when(inc < 0).then(pl.col("next")).otherwise(inc).round().alias("inc"))
    if out.filter(pl.col("inc").is_nan() | pl.col("inc").is_infinite()).height:
        raise PrometheusError(f"{metric}: NaN or infinite counter values")
    if "le" in keys:
        out = out.with_columns(pl.col("le").cast(pl.Float64, strict=False))
        if out["le"].null_count():
            raise PrometheusError(f"{metric}: `le` label that is not a number")
    if set(labels) - {*keys, "__name__"}:  # several series per key (e.g. one per pod): add them up
        out = out.group_by(["ts", *keys]).agg(pl.col("inc").sum())
    return out.with_columns(pl.col("inc").cast(pl.Int64)).select(list(schema))
