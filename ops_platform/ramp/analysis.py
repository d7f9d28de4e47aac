"""Ramp analysis: is a candidate build worse than the build it replaces?

The controller compares the candidate with the stable build serving the same service at the
same minutes: errors, and requests slower than the stable build's own p95 bucket. Evidence
accumulates minute by minute in a CUSUM of log-likelihood ratios between "as good as the
baseline, within a small margin" and "clearly worse" (a sequential test: it decides as soon
as the evidence is enough, and low traffic simply takes longer). Below a minimum number of
requests the result is inconclusive and the ramp holds. Comparing with the live baseline
cancels incidents that hit every build alike, which fixed thresholds and plain burn-rate
alerts mistake for a bad build.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

# The error-rate SLO's budget (slos/api-availability.yaml, 99.5%), which grades a candidate's
# burn on every service; a test holds the two equal, so a new target moves both or neither.
ERROR_MARGIN = 0.005
ERROR_H0, ERROR_H1 = 0.002, 0.015  # "as good as baseline" vs "clearly worse": extra error ratio
LATENCY_H0, LATENCY_H1 = 0.01, 0.10  # the same for the share beyond the baseline's p95 bucket
# Without a trusted baseline, also the share beyond the pre-ramp median bucket: where a
# slower build shows first (a p95 bucket moves little when every request is 3x slower).
MID_H0, MID_H1 = 0.03, 0.20
BURN_H0, BURN_H1 = 2.0, 6.0  # absolute test: burning the budget at most 2x vs at least 6x
THRESHOLD = 5.5  # CUSUM alarm level (log-likelihood ratio); higher = fewer false pauses, slower
MIN_REQUESTS = 10  # below this the evidence is inconclusive: hold, neither advance nor roll back
FAST_BURN = 14.4  # a candidate burning the error budget this fast is rolled back, whatever the baseline
BASELINE_WINDOW = 1  # minutes of the stable build's traffic each minute is compared with (1: the same minute)
MIN_BASELINE = 20  # requests the stable build needs in that window to serve as a baseline
MINUTE = timedelta(minutes=1)  # a minute's counts exist once it is over: the earliest anyone can act on them
BURST_SIGMAS = 3.0  # a stable build's rise above its usual error ratio is a burst beyond this many std errors
SUSTAINED = 5  # minutes the stable build must burn, each one, before the service is in an incident (a freeze)


@dataclass(frozen=True)
class Verdict:
    ts: object  # when the controller acts: the end of the minute whose counts decided (None: never)
    action: str | None  # pause | rollback
    reason: str


def _cumulative(frame: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    return frame.sort("ts").with_columns(pl.col(c).cum_sum().alias(f"cum_{c}") for c in cols)


def candidate_series(counters: pl.DataFrame, latency: pl.DataFrame, build: str, service: str,
                     start, end, reference_end=None) -> pl.DataFrame:
    """Per minute in [start, end): candidate and baseline requests, errors, slow requests
    (beyond the stable build's pre-ramp p95 bucket) and ``mid`` ones (beyond its median
    bucket, whose pre-ramp share is ``pre_mid``). The latency reference is the ramp-long
    window before ``reference_end`` (default: the ramp's start)."""
    window = (pl.col("ts") >= start) & (pl.col("ts") < end) & (pl.col("service") == service)
    c = counters.filter(window)
    lat = latency.filter(window)
    ref_end = reference_end or start
    before = latency.filter((pl.col("service") == service) & (pl.col("ts") < ref_end)
                            & (pl.col("ts") >= ref_end - (end - start)))
    # The stable build's p95 bucket, from its traffic before the ramp began.
    ref = before.group_by("le").agg(pl.col("count").sum()).sort("le")
    if ref.height:
        total = ref.filter(pl.col("le").is_infinite())["count"][0] or 1
        le_ref = ref.filter((pl.col("count") / total) >= 0.95)["le"].min()
        le_mid = ref.filter((pl.col("count") / total) >= 0.5)["le"].min()
        pre_mid = 1 - ref.filter(pl.col("le") == le_mid)["count"][0] / total
    else:
        le_ref = le_mid = float("inf")
        pre_mid = 0.5
    beyond = pl.col("count").filter(pl.col("le").is_infinite()).sum()
    slow = lat.group_by(["ts", pl.col("build_id") == build]).agg(
        (beyond - pl.col("count").filter(pl.col("le") == le_ref).sum()).alias("slow"),
        (beyond - pl.col("count").filter(pl.col("le") == le_mid).sum()).alias("mid")).rename({"build_id": "is_cand"})
    req = c.group_by(["ts", pl.col("build_id") == build]).agg(pl.col("requests").sum(),
                                                              pl.col("errors").sum()).rename(
        {"build_id": "is_cand"})
    both = req.join(slow, on=["ts", "is_cand"], how="left").with_columns(pl.col("slow", "mid").fill_null(0))
    cand = both.filter(pl.col("is_cand")).drop("is_cand")
    base = both.filter(~pl.col("is_cand")).drop("is_cand", "mid").rename(
        {"requests": "b_requests", "errors": "b_errors", "slow": "b_slow"})
    out = cand.join(base, on="ts", how="left").fill_null(0).with_columns(pl.lit(pre_mid).alias("pre_mid"))
    out = _cumulative(out, ["requests", "errors", "slow", "b_requests", "b_errors", "b_slow"])
    # The stable build's usual error ratio (before the ramp), to tell an incident from a chronic state.
    pre = counters.filter((pl.col("service") == service) & (pl.col("ts") < start)
                          & (pl.col("ts") >= start - (end - start)))
    pre_ratio = float(pre["errors"].sum()) / max(float(pre["requests"].sum()), 1.0)
    return out.with_columns(pl.lit(le_ref).alias("le_ref"), pl.lit(pre_ratio).alias("b_pre_error_ratio"))


def _llr(bad: np.ndarray, n: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Per-minute log-likelihood ratio of "clearly worse" over "as good" for binomial counts."""
    p0, p1 = np.clip(p0, 1e-6, 1 - 1e-6), np.clip(p1, 1e-6, 1 - 1e-6)
    return bad * np.log(p1 / p0) + (n - bad) * np.log((1 - p1) / (1 - p0))


def _cusum(steps: np.ndarray) -> np.ndarray:
    out, acc = np.empty(len(steps)), 0.0
    for i, x in enumerate(steps):
        acc = max(0.0, acc + x)
        out[i] = acc
    return out


def _trailing(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` minutes, this one included."""
    c = np.concatenate([[0.0], np.cumsum(values, dtype=float)])
    idx = np.arange(1, len(values) + 1)
    return c[idx] - c[np.maximum(idx - window, 0)]


def _run_length(flags: np.ndarray) -> np.ndarray:
    """How many minutes in a row, this one included, ``flags`` has held (0 where it does not)."""
    idx = np.arange(len(flags))
    last_off = np.maximum.accumulate(np.where(flags, -1, idx))  # the last minute it did not hold
    return np.where(flags, idx - last_off, 0)


def decide(series: pl.DataFrame, trusted_baseline: bool = True) -> Verdict:
    """The first minute with enough evidence against the candidate, and the action it calls for.

    Sequential tests run side by side. The comparative ones ask whether the candidate is
    worse than the stable build serving the same minute (so an incident that hits every
    build alike is not blamed on the candidate), for errors and for requests beyond the
    stable build's pre-ramp p95 bucket. The absolute one asks whether the candidate burns
    the error budget at 6x or more whatever the stable build usually does: a candidate that
    replaces a bad build must not ramp just because it is less bad. It skips the first minutes
    (under ``SUSTAINED``) of a burst the stable build suffers beyond its usual ratio (every build
    errs alike: a blip, not the candidate). A stable build the controller has already rejected is no
    baseline (``trusted_baseline=False``): then only the absolute tests run, latency against
    the pre-ramp p95. When a usually healthy stable build has burnt for ``SUSTAINED`` minutes
    on end and the candidate burns as well, the service is in an incident and the answer is
    to freeze ramps, not to blame one; a shorter burst freezes nothing.
    """
    if series.height == 0:
        return Verdict(None, None, "no traffic")
    n = series["requests"].to_numpy().astype(float)
    err = series["errors"].to_numpy().astype(float)
    slow = series["slow"].to_numpy().astype(float)
    nb = _trailing(series["b_requests"].to_numpy(), BASELINE_WINDOW)
    has_base = nb >= MIN_BASELINE
    nb_safe = np.maximum(nb, 1)
    p_base = _trailing(series["b_errors"].to_numpy(), BASELINE_WINDOW) / nb_safe
    compare = has_base & trusted_baseline
    # Without a live baseline, "slow" is judged against its definition: 5% beyond the pre-ramp p95.
    s_base = np.where(compare, np.maximum(_trailing(series["b_slow"].to_numpy(), BASELINE_WINDOW) / nb_safe, 0.05),
                      0.05)
    err_score = _cusum(compare * _llr(err, n, p_base + ERROR_H0, p_base + ERROR_H1))
    slow_score = _cusum(_llr(slow, n, s_base + LATENCY_H0, s_base + LATENCY_H1))
    if "mid" in series.columns and not trusted_baseline:
        mid = series["mid"].to_numpy().astype(float)
        m_base = np.full(len(n), float(series["pre_mid"][0]))
        mid_score = _cusum(_llr(mid, n, m_base + MID_H0, m_base + MID_H1))
        slow_score = np.maximum(slow_score, mid_score)
    # A blip: the stable build burns 2x or more, beyond its usual ratio by more than binomial
    # noise, for less than SUSTAINED minutes so far (a deploy hiccup, a pause: every build errs
    # alike). The absolute test takes no evidence from those minutes: a 30% burst swamps the 1%
    # vs 3% it weighs, and a canary's few requests in it would read as its own burn. From a
    # burst's SUSTAINED-th minute on it counts again: a stable build that stays worse than it
    # was must not blind the test to a candidate that burns as badly.
    usual_ratio = float(series["b_pre_error_ratio"][0])
    burn_h0, burn_h1 = ERROR_MARGIN * BURN_H0, ERROR_MARGIN * BURN_H1
    base_burns = has_base & (p_base >= burn_h0)
    noise = BURST_SIGMAS * np.sqrt(max(usual_ratio, 1e-4) * (1 - usual_ratio) / nb_safe)
    burst = base_burns & (p_base - usual_ratio > noise)
    blip = burst & (_run_length(burst) < SUSTAINED)
    burn_llr = _llr(err, n, np.full(len(n), burn_h0), np.full(len(n), burn_h1))
    burn_score = _cusum(np.where(blip, 0.0, burn_llr))
    # An incident, not a blip: the stable build, usually healthy, has burnt 2x or more in each
    # of the last SUSTAINED minutes while the candidate burns as well.
    usual = usual_ratio / ERROR_MARGIN
    raw_burn = _cusum(burn_llr)
    incident = (_trailing(base_burns.astype(float), SUSTAINED) >= SUSTAINED) & (usual < BURN_H0) & (raw_burn >= THRESHOLD)
    enough = series["cum_requests"].to_numpy() >= MIN_REQUESTS
    worse = (err_score >= THRESHOLD) | (slow_score >= THRESHOLD)
    hit = enough & (worse | (burn_score >= THRESHOLD) | incident)
    if not hit.any():
        return Verdict(None, None, "no regression" if enough.any() else "inconclusive: too few requests")
    i = int(np.argmax(hit))
    acted_at = series["ts"][i] + MINUTE
    cum_n, cum_err = series["cum_requests"][i], series["cum_errors"][i]
    ratio = cum_err / max(cum_n, 1)
    freeze = not worse[i] and incident[i]  # the service's incident: no build to blame
    evidence = max(err_score[i], slow_score[i], raw_burn[i] if freeze else burn_score[i])
    numbers = (f"{cum_err}/{cum_n} errors, {series['cum_slow'][i]} slow, evidence {evidence:.1f}"
               + ("" if freeze else f" (alarm at {THRESHOLD:g})"))  # what the evidence is measured against
    if freeze:
        return Verdict(acted_at, "freeze",
                       f"budget burn {ratio / ERROR_MARGIN:.1f}x on candidate and {p_base[i] / ERROR_MARGIN:.1f}x on "
                       f"stable for {SUSTAINED}+ minutes (usually {usual:.1f}x): {numbers}")
    if not worse[i]:
        what = "budget burn"
        # Burning where the stable build it would go back to usually does not.
        clear = trusted_baseline and usual < BURN_H0
    else:
        what = "errors" if err_score[i] >= THRESHOLD else "latency"
        clear = trusted_baseline
    # Clearly worse than a trusted, healthy stable build: back to it, as Flagger, Argo
    # Rollouts and guarded rollouts do (a pause would keep serving the build the evidence
    # rejects). A pause where going back helps no one (the stable build burns as well, or was
    # rejected itself), unless the candidate burns the budget 14.4x or faster.
    action = "rollback" if clear or ratio / ERROR_MARGIN >= FAST_BURN else "pause"
    return Verdict(acted_at, action, f"{what}: {numbers}")
