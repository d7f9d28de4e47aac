"""Builds, deploys and ramp steps per service; some builds are bad.

A ramp raises the share of traffic on a new build in steps (1% -> 5% -> 25% -> 50% ->
100%). Cohorts fill in order (canary, then early, then general), so a step's percentage
maps to a fraction of each cohort's traffic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from ..ramp.flags import FlagFile, release_flag
from .catalog import COHORT_WEIGHTS, COHORTS, SERVICE_NAMES
from .timeline import Timeline

RAMP_PERCENTS = (1, 5, 25, 50, 100)
BAD_BUILD_RATE = 0.2


def cohort_fraction(percent: float, cohort_index: int) -> float:
    """Share of one cohort's traffic on the new build when `percent` of all traffic is."""
    lo = sum(COHORT_WEIGHTS[:cohort_index]) * 100
    width = COHORT_WEIGHTS[cohort_index] * 100
    return float(min(1.0, max(0.0, (percent - lo) / width)))


@dataclass
class Releases:
    builds: pl.DataFrame
    ramp_steps: pl.DataFrame
    bad_builds: pl.DataFrame  # truth
    # Traffic segments: which build serves which share of a (service, cohort) over [start, end) minutes.
    segments: pl.DataFrame
    flags: dict


def generate_releases(tl: Timeline, rng: np.random.Generator) -> Releases:
    build_rows, step_rows, bad_rows, seg_rows = [], [], [], []
    start_ms = int(tl.start.timestamp() * 1000)
    flags: dict = {"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": {}}
    seen_effects: set[str] = set()
    for s_idx, service in enumerate(SERVICE_NAMES):
        version = 100
        prev_build = f"{service}-{version}"
        build_rows.append(_build_row(prev_build, service, version, start_ms - 86_400_000, rng))
        flags["flags"][release_flag(service)] = {
            "state": "ENABLED",
            "variants": {"stable": prev_build},
            "defaultVariant": "stable",
        }
        t = int(rng.integers(6 * 60, 30 * 60))  # first deploy within the first day
        prev_end = 0
        while True:
            step_len = int(rng.integers(30, 61))
            ramp_len = step_len * len(RAMP_PERCENTS)
            if t + ramp_len >= tl.minutes - 60:
                break
            version += 1
            build = f"{service}-{version}"
            build_rows.append(_build_row(build, service, version, start_ms + (t - 90) * 60_000, rng))
            draw, effect_draw = rng.random(), rng.random()
            # Every world has at least one bad build of each effect, so each is testable.
            forced = {0: "error_rate", 1: "latency"}.get(s_idx) if version == 101 else None
            if forced and forced in seen_effects:
                forced = None
            if draw < BAD_BUILD_RATE or forced:
                effect = forced or ("error_rate" if effect_draw < 0.6 else "latency")
                seen_effects.add(effect)
                magnitude = float(rng.uniform(0.02, 0.08)) if effect == "error_rate" else float(rng.uniform(2.5, 5.0))
                bad_rows.append(
                    {"build_id": build, "service": service, "effect": effect, "magnitude": round(magnitude, 4),
                     "deploy_started_at_ms": start_ms + t * 60_000,
                     "general_reached_at_ms": start_ms + (t + 3 * step_len) * 60_000}
                )
            # The previous build serves everything until this deploy starts.
            for cohort in COHORTS:
                seg_rows.append((service, cohort, prev_build, prev_end, t, 1.0))
            next_gap = int(rng.integers(14 * 60, 34 * 60))
            next_t = t + ramp_len + next_gap
            for j, pct in enumerate(RAMP_PERCENTS):
                s0 = t + j * step_len
                s1 = s0 + step_len if j < len(RAMP_PERCENTS) - 1 else min(next_t, tl.minutes)
                step_rows.append(
                    {"build_id": build, "service": service, "step": j + 1, "percent": pct,
                     "started_at_ms": start_ms + s0 * 60_000,
                     "ended_at_ms": start_ms + (s0 + step_len) * 60_000 if j < len(RAMP_PERCENTS) - 1 else None,
                     **{f"{c}_fraction": cohort_fraction(pct, ci) for ci, c in enumerate(COHORTS)}}
                )
                for c_idx, cohort in enumerate(COHORTS):
                    f = cohort_fraction(pct, c_idx)
                    if j == len(RAMP_PERCENTS) - 1:
                        continue  # covered by the tail segment below
                    if f > 0:
                        seg_rows.append((service, cohort, build, s0, s1, f))
                    if f < 1:
                        seg_rows.append((service, cohort, prev_build, s0, s1, 1.0 - f))
            prev_build = build
            prev_end = t + (len(RAMP_PERCENTS) - 1) * step_len
            t = next_t
        for cohort in COHORTS:
            seg_rows.append((service, cohort, prev_build, prev_end, tl.minutes, 1.0))
    segments = pl.DataFrame(
        seg_rows, schema=["service", "cohort", "build_id", "start_min", "end_min", "fraction"], orient="row"
    ).filter(pl.col("end_min") > pl.col("start_min"))
    ts = pl.Datetime("ms", "UTC")
    builds = pl.DataFrame(build_rows).with_columns(pl.col("created_at_ms").cast(ts).alias("created_at")).drop(
        "created_at_ms"
    )
    ramp_steps = pl.DataFrame(step_rows).with_columns(
        pl.col("started_at_ms").cast(ts).alias("started_at"), pl.col("ended_at_ms").cast(ts).alias("ended_at")
    ).drop("started_at_ms", "ended_at_ms")
    bad_schema = {"build_id": pl.String, "service": pl.String, "effect": pl.String, "magnitude": pl.Float64,
                  "deploy_started_at_ms": pl.Int64, "general_reached_at_ms": pl.Int64}
    bad_builds = pl.DataFrame(bad_rows, schema=bad_schema).with_columns(
        pl.col("deploy_started_at_ms").cast(ts).alias("deploy_started_at"),
        pl.col("general_reached_at_ms").cast(ts).alias("general_reached_at"),
    ).drop("deploy_started_at_ms", "general_reached_at_ms")
    return Releases(builds, ramp_steps, bad_builds, segments, flags)


def _build_row(build: str, service: str, version: int, created_ms: int, rng: np.random.Generator) -> dict:
    sha = "".join(f"{b:02x}" for b in rng.integers(0, 256, 20))
    return {"build_id": build, "service": service, "version": f"1.{version}.0", "commit_sha": sha,
            "created_at_ms": int(created_ms)}


def flags_json(flags: dict) -> str:
    return json.dumps(flags, indent=2, sort_keys=True) + "\n"


def ramp_on_flag(flags: FlagFile, steps: pl.DataFrame, build: str, at: datetime) -> FlagFile:
    """``flags`` with ``build`` ramping on its service's release flag at the split of its
    schedule's step running at ``at``: what the release pipeline that ramps builds would
    have written then (the demo stands in for it). A flag already carrying the build is left
    as it is: the pipeline put it there, and the controller may have held it since. On a
    held flag the build waits at 0%: no pipeline may widen a paused or frozen ramp."""
    row = steps.filter((pl.col("build_id") == build) & (pl.col("started_at") <= at)).sort("step").tail(1)
    if row.height == 0:
        raise ValueError(f"build {build!r} had no ramp step running at {at}")
    r = row.row(0, named=True)
    flag = release_flag(r["service"])
    if flags.release(flag).candidate == build:
        return flags
    started = flags.start_ramp(flag, build, at=at)
    if started.release(flag).held:
        return started
    return started.set_percent(flag, {c: round(100 * r[f"{c}_fraction"]) for c in COHORTS}, at=at)
