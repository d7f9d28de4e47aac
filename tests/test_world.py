"""The world simulator: determinism and realism properties."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from ops_platform.world import WorldConfig, generate_world, load_manifest
from ops_platform.world.billing import FOCUS_MANDATORY
from ops_platform.world.catalog import LATENCY_BUCKETS

TINY = WorldConfig(seed=3, tenants=8, days=3, start_date=date(2026, 4, 1))


def test_same_seed_gives_identical_bytes(tmp_path):
    a = generate_world(TINY, tmp_path / "a")
    b = generate_world(TINY, tmp_path / "b")
    ma, mb = load_manifest(a.out), load_manifest(b.out)
    assert ma["files"] == mb["files"]
    assert len(ma["files"]) > 20
    for rel in list(ma["files"])[:50]:
        assert (a.out / rel).read_bytes() == (b.out / rel).read_bytes()


def test_a_world_says_which_simulator_made_it(tmp_path):
    from ops_platform.world.generate import MANIFEST, SIMULATOR_VERSION, older_simulator

    out = generate_world(TINY, tmp_path / "w").out
    assert load_manifest(out)["simulator_version"] == SIMULATOR_VERSION and older_simulator(out) is None
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["simulator_version"]  # as the first simulator wrote it
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert older_simulator(out) == 1


def test_different_seed_gives_different_world(tmp_path):
    a = generate_world(TINY, tmp_path / "a")
    b = generate_world(WorldConfig(**{**TINY.__dict__, "seed": 4}), tmp_path / "b")
    assert load_manifest(a.out)["files"] != load_manifest(b.out)["files"]


def _read(world, table):
    return pl.read_parquet(world / "landing" / table / "*" / "*.parquet")


def test_diurnal_and_weekly_seasonality(small_world):
    c = _read(small_world, "request_counters").with_columns(
        pl.col("ts").dt.convert_time_zone("America/Denver").alias("local"))
    by_hour = c.group_by(pl.col("local").dt.hour().alias("h")).agg(pl.col("requests").sum() / pl.len())
    afternoon = by_hour.filter(pl.col("h").is_between(13, 15))["requests"].mean()
    night = by_hour.filter(pl.col("h").is_between(1, 3))["requests"].mean()
    assert afternoon > 2.5 * night
    by_day = c.group_by(pl.col("local").dt.weekday().alias("wd")).agg(pl.col("requests").sum() / pl.len())
    weekend = by_day.filter(pl.col("wd") >= 6)["requests"].mean()
    weekday = by_day.filter(pl.col("wd") < 6)["requests"].mean()
    assert weekend < 0.8 * weekday


def test_incidents_and_bad_builds_are_visible_in_counters(small_world):
    c = _read(small_world, "request_counters")
    inc = pl.read_parquet(small_world / "truth" / "incidents.parquet")
    spikes = inc.filter(pl.col("kind") == "error_spike")
    assert spikes.height > 0
    for row in spikes.iter_rows(named=True):
        svc = c.filter(pl.col("service") == row["service"])
        inside = svc.filter(pl.col("ts").is_between(row["start"], row["end"], closed="left"))
        outside = svc.filter(~pl.col("ts").is_between(row["start"], row["end"], closed="left"))
        r_in = inside["errors"].sum() / inside["requests"].sum()
        r_out = outside["errors"].sum() / outside["requests"].sum()
        assert r_in > 10 * r_out, (row, r_in, r_out)
    bad = pl.read_parquet(small_world / "truth" / "bad_builds.parquet").filter(pl.col("effect") == "error_rate")
    assert bad.height > 0
    for row in bad.iter_rows(named=True):
        b = c.filter(pl.col("build_id") == row["build_id"])
        assert b["errors"].sum() / b["requests"].sum() > row["magnitude"] / 2


def test_blips_fail_requests_only_inside_their_minutes_and_service(small_world, tmp_path):
    blips = pl.read_parquet(small_world / "truth" / "blips.parquet")
    manifest = load_manifest(small_world)
    cfg = WorldConfig.from_json(manifest["config"])
    span = datetime.fromisoformat(manifest["end_utc"]) - datetime.fromisoformat(manifest["start_utc"])
    assert blips.height == cfg.blips_per_day * round(span / timedelta(days=1)) > 0  # a DST day is a day
    assert blips["start_min"].is_sorted() and blips["end_min"].max() <= span // timedelta(minutes=1)
    assert ((blips["end_min"] - blips["start_min"]).is_in([1, 2])).all()
    # The same world without blips: every count equal but errors inside a blip, which only rise.
    plain = tmp_path / "plain"
    generate_world(replace(cfg, blips_per_day=0), plain)
    assert pl.read_parquet(plain / "truth" / "blips.parquet").height == 0
    with_, without = _read(small_world, "request_counters"), _read(plain, "request_counters")
    assert with_.select(pl.exclude("errors")).equals(without.select(pl.exclude("errors")))
    inside = pl.any_horizontal((pl.col("service") == b["service"]) & pl.col("ts").is_between(b["start"], b["end"],
                                                                                             closed="left")
                               for b in blips.iter_rows(named=True))
    added = with_.with_columns(inside.alias("inside"), (with_["errors"] - without["errors"]).alias("added"))
    assert (added.filter(~pl.col("inside"))["added"] == 0).all()
    hit = added.filter(pl.col("inside"))
    assert (hit["added"] >= 0).all() and hit["errors"].sum() > 0.15 * hit["requests"].sum()
    # The tenant SLIs follow: more errors in the hours of the API's blips, every other row as it was.
    slis, plain_slis = _read(small_world, "tenant_slis"), _read(plain, "tenant_slis")
    assert slis.select(pl.exclude("errors")).equals(plain_slis.select(pl.exclude("errors")))
    api = blips.filter(pl.col("service") == "api")
    api_hours = pl.concat([api.select(pl.col(c).dt.offset_by(by).dt.truncate("1h").alias("hour"))
                           for c, by in (("start", "0m"), ("end", "-1m"))])  # a blip may cross an hour
    moved = slis.with_columns((slis["errors"] - plain_slis["errors"]).alias("added"),
                              pl.col("hour").is_in(api_hours["hour"].implode()).alias("blip_hour"))
    assert (moved.filter(~pl.col("blip_hour"))["added"] == 0).all() and (moved["added"] >= 0).all()
    assert api.height > 0 and moved.filter(pl.col("blip_hour"))["added"].sum() > 0


def test_latency_histograms_follow_prometheus_conventions(small_world):
    h = _read(small_world, "latency_buckets")
    c = _read(small_world, "request_counters")
    assert sorted(h["le"].unique().to_list()) == sorted(LATENCY_BUCKETS)
    mono = h.sort("le").group_by(["ts", "service", "cohort", "build_id"]).agg(
        (pl.col("count").diff().drop_nulls() >= 0).all().alias("ok"),
        pl.col("count").last().alias("inf"))
    assert mono["ok"].all()
    joined = mono.join(c, on=["ts", "service", "cohort", "build_id"])
    assert joined.height == c.height
    assert (joined["inf"] == joined["requests"]).all()


def test_dst_day_has_23_hours_of_minutes(small_world):
    c = _read(small_world, "request_counters").with_columns(
        pl.col("ts").dt.convert_time_zone("America/Denver").dt.date().alias("d"))
    minutes = c.group_by("d").agg(pl.col("ts").n_unique()).sort("d")
    by_day = dict(zip(minutes["d"].to_list(), minutes["ts"].to_list(), strict=True))
    assert by_day[date(2026, 3, 8)] == 23 * 60
    assert by_day[date(2026, 3, 7)] == 24 * 60


def test_focus_billing_rows_are_valid_and_sum_to_truth(small_world):
    b = _read(small_world, "billing_focus")
    assert set(FOCUS_MANDATORY) <= set(b.columns)
    for col in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert b.schema[col] == pl.Decimal(18, 6)
    assert b.schema["ChargePeriodStart"] == pl.Datetime("us", "UTC")
    assert all(c.startswith("x_") for c in b.columns if c not in FOCUS_MANDATORY and c[0].islower())
    malformed = set(pl.read_parquet(small_world / "truth" / "malformed_records.parquet")
                    .filter(pl.col("source_table") == "billing_focus")["record_id"])
    good = b.filter(~pl.col("x_LineItemId").is_in(list(malformed)))
    tags = [json.loads(t) for t in good["Tags"].to_list()]
    assert any("tenant" in t for t in tags) and any(t.get("pool") == "warm" for t in tags)
    truth = pl.read_parquet(small_world / "truth" / "tenant_daily_cost.parquet")
    billed = sum((d for d in b["BilledCost"].to_list()), Decimal(0))
    # Malformed rows mangle the landing copy only; the truth is computed from the real costs.
    assert abs(float(billed) - truth["true_cost_usd"].sum()) / truth["true_cost_usd"].sum() < 0.05


def test_usage_events_are_cloudevents_with_duplicates_and_late_arrivals(small_world):
    e = _read(small_world, "usage_events").with_columns(pl.col("data").struct.unnest())
    malformed = set(pl.read_parquet(small_world / "truth" / "malformed_records.parquet")
                    .filter(pl.col("source_table") == "usage_events")["record_id"])
    assert len(malformed) > 0
    good = e.filter(~pl.col("id").is_in(list(malformed)))
    assert (good["specversion"] == "1.0").all()
    for attr in ("id", "source", "type", "time", "subject"):
        assert good[attr].null_count() == 0
    assert (good["quantity"] >= 0).all()
    # Every meter but storage GB-hours counts whole things, on a tenant's runaway day too.
    spiked = pl.read_parquet(small_world / "truth" / "cost_anomalies.parquet").filter(
        pl.col("kind") == "tenant_usage_spike")
    counted = good.filter(pl.col("meter") != "storage_gb_hours")
    assert spiked.height and counted.join(spiked, left_on=["subject", "meter"], right_on=["tenant_id", "meter"]).height
    assert (counted["quantity"] == counted["quantity"].round(0)).all()
    assert good.select(pl.struct("source", "id").is_duplicated().sum()).item() > 0  # re-deliveries
    files = pl.read_parquet(small_world / "landing" / "usage_events" / "*" / "*.parquet", include_file_paths="f")
    arrival = files["f"].str.extract(r"dt=(\d{4}-\d{2}-\d{2})").str.to_date()
    event_day = files["time"].str.slice(0, 10).str.to_date(strict=False)
    assert ((arrival - event_day).dt.total_days() >= 1).sum() > 0  # late arrivals exist


def test_truth_is_separate_and_complete(small_world):
    truth = small_world / "truth"
    for name in ("incidents", "blips", "bad_builds", "tenant_daily_cost", "cost_anomalies", "malformed_records"):
        assert pl.read_parquet(truth / f"{name}.parquet").height > 0, name
    assert not any("truth" in p.parts for p in (small_world / "landing").rglob("*"))
    cost = pl.read_parquet(truth / "tenant_daily_cost.parquet")
    assert cost.select(pl.struct("utc_date", "tenant_id").is_unique().all()).item()


@pytest.mark.parametrize("bad", [{"tenants": 0}, {"days": 0}])
def test_cli_rejects_degenerate_worlds(tmp_path, bad):
    from click.testing import CliRunner

    from ops_platform.cli import main

    args = ["world", "generate", "--out", str(tmp_path / "w")]
    for k, v in bad.items():
        args += [f"--{k}", str(v)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert "at least" in res.output


def test_cli_refuses_a_bad_seed_or_folder_before_touching_anything(tmp_path):
    from click.testing import CliRunner

    from ops_platform.cli import main

    def gen(out, *extra):
        return CliRunner().invoke(main, ["world", "generate", "--tenants", "3", "--days", "3", "--out", str(out), *extra])

    world = tmp_path / "w"
    assert gen(world).exit_code == 0
    before = sorted(p.relative_to(world) for p in world.rglob("*"))
    bad_seed = gen(world, "--seed", "-1")
    assert bad_seed.exit_code == 2 and "seed -1" in bad_seed.output
    assert sorted(p.relative_to(world) for p in world.rglob("*")) == before  # the world is intact
    other = tmp_path / "other"
    (other / "landing").mkdir(parents=True)
    (other / "landing" / "mine.txt").write_text("keep me")
    res = gen(other)
    assert res.exit_code == 2 and "holds files but no world" in res.output
    assert (other / "landing" / "mine.txt").read_text() == "keep me"
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = gen(afile)
    assert res.exit_code == 2 and "is a file" in res.output and res.exception.__class__ is SystemExit
    # A file added inside a world is not the world's: regenerating leaves it out of the manifest.
    (world / "notes.txt").write_text("mine")
    assert gen(world).exit_code == 0
    assert "notes.txt" not in (world / "manifest.json").read_text()
