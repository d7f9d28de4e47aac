"""FinOps: exact allocation, the late-data window, billing repairs, attribution scored on a world."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.finops import usage as usage_module
from ops_platform.finops.allocation import allocate
from ops_platform.finops.attribution import UNALLOCATED, attribute, cost_lines
from ops_platform.finops.repair import repair_billing
from ops_platform.finops.score import score_attribution
from ops_platform.finops.usage import daily_usage


def test_largest_remainder_sums_exactly_and_stays_within_one_unit():
    rng = random.Random(5)
    for case in range(200):
        n = rng.randint(1, 40)
        amount = rng.choice([0, 1, 7, rng.randint(1, 10**6), rng.randint(10**9, 10**13)])
        weights = [rng.choice([0.0, rng.random(), rng.random() * 1e6]) for _ in range(n)]
        if sum(weights) == 0:
            weights[0] = 1.0
        pools = pl.DataFrame({"p": [case], "amount": [amount]})
        w = pl.DataFrame({"p": [case] * n, "t": [f"t{i:03d}" for i in range(n)], "weight": weights})
        got = allocate(pools, w, ["p"], "t")
        assert got["allocated"].sum() == amount, case
        total = sum(weights)
        exact = {f"t{i:03d}": amount * weights[i] / total for i in range(n) if weights[i] > 0}
        assert set(got["t"]) == set(exact)  # zero weight gets no row, not a zero row
        for t, units in zip(got["t"], got["allocated"], strict=True):
            assert abs(units - exact[t]) < 1.0 + 1e-6 * max(1.0, exact[t]), (case, t)
        assert got.equals(allocate(pools, w, ["p"], "t"))  # deterministic


def test_pools_without_weight_are_left_to_the_caller():
    pools = pl.DataFrame({"p": [1, 2], "amount": [10, 20]})
    got = allocate(pools, pl.DataFrame({"p": [1], "t": ["a"], "weight": [0.0]}), ["p"], "t")
    assert got.height == 0


def test_pools_that_repeat_a_key_are_refused_not_allocated_twice():
    pools = pl.DataFrame({"p": [1, 1], "amount": [10, 10]})
    weights = pl.DataFrame({"p": [1, 1], "t": ["a", "b"], "weight": [1.0, 1.0]})
    with pytest.raises(ValueError, match="repeat a key"):
        allocate(pools, weights, ["p"], "t")


def _event(i, day, arrived, tenant="t-1", meter="api_calls", qty=1.0, source="//s"):
    return {"id": f"e{i}", "source": source, "subject": tenant, "meter": meter, "quantity": qty,
            "event_time": datetime(2026, 3, day, 12, tzinfo=UTC),
            "_source_file": f"usage_events/dt=2026-03-{arrived:02d}/events.parquet"}


def test_usage_dedups_on_source_and_id_and_late_events_become_corrections():
    events = pl.DataFrame([_event(1, 1, 1), _event(1, 1, 1), _event(1, 1, 2, source="//other"),
                           _event(2, 1, 3), _event(3, 1, 4, qty=5.0), _event(4, 5, 5)])
    usage, corrections, _ = daily_usage(events)
    day1 = usage.filter(pl.col("utc_date") == date(2026, 3, 1))
    # e1 twice from //s is one event; e1 from //other is another; e2 arrives at T+2 (in time).
    assert day1["quantity"].to_list() == [Decimal(3)] and day1["final"].to_list() == [True]
    assert corrections.to_dicts() == [{"utc_date": date(2026, 3, 1), "tenant_id": "t-1", "meter": "api_calls",
                                       "arrived": date(2026, 3, 4), "quantity": Decimal(5), "events": 1}]
    assert usage.filter(pl.col("utc_date") == date(2026, 3, 5))["final"].to_list() == [False]


@pytest.mark.parametrize("weak_hash", [False, True], ids=["hash", "colliding-hash"])
def test_usage_counts_the_first_arrival_of_an_event_resent_with_other_content(monkeypatch, weak_hash):
    # e1 arrives on 03-01 (1 unit on 03-01); a later partition brings it again with another
    # time and quantity: the first arrival counts, the later version is reported, not summed.
    if weak_hash:
        monkeypatch.setattr(usage_module, "_IDENTITY_HASH", "hash(1)")
    events = pl.DataFrame([_event(1, 1, 1), _event(1, 2, 3, qty=9.0), _event(2, 2, 2, qty=4.0)])
    usage, corrections, superseded = daily_usage(events)
    got = {(r["utc_date"], r["quantity"], r["events"]) for r in usage.to_dicts()}
    assert got == {(date(2026, 3, 1), Decimal(1), 1), (date(2026, 3, 2), Decimal(4), 1)}
    assert corrections.height == 0
    assert superseded.select("utc_date", "arrived", "quantity", "events").to_dicts() == [
        {"utc_date": date(2026, 3, 2), "arrived": date(2026, 3, 3), "quantity": Decimal(9), "events": 1}]


def test_the_finality_window_is_a_setting(monkeypatch, world_run, small_world):
    from ops_platform.finops.pipeline import FinOpsInputs
    from ops_platform.settings import usage_final_after_days

    assert usage_final_after_days() == 2
    monkeypatch.setenv("OPS_PLATFORM_USAGE_FINAL_AFTER_DAYS", "0")
    same_day = FinOpsInputs.from_landing(small_world)
    default = world_run[0]
    # With no window every event that arrived after its day is a correction, not usage.
    assert same_day.corrections["events"].sum() > default.corrections["events"].sum()
    assert same_day.usage["events"].sum() < default.usage["events"].sum()
    monkeypatch.setenv("OPS_PLATFORM_USAGE_FINAL_AFTER_DAYS", "two")
    with pytest.raises(ValueError, match="whole number of days"):
        usage_final_after_days()


def _usage_by_reference(events: pl.DataFrame) -> dict:
    """Usage per (day, tenant, meter) in plain Python: first delivery of each identity wins."""
    first: dict = {}
    for e in sorted(events.to_dicts(), key=lambda e: e["_source_file"]):
        first.setdefault((e["source"], e["id"]), e)
    out: dict = {}
    for e in first.values():
        arrived = int(e["_source_file"].split("dt=2026-03-")[1][:2])
        if arrived <= e["event_time"].day + 2:
            key = (e["event_time"].date(), e["subject"], e["meter"])
            out[key] = out.get(key, Decimal(0)) + Decimal(str(e["quantity"]))
    return out


def test_usage_dedup_stays_exact_when_identity_hashes_collide(monkeypatch):
    rng = random.Random(11)
    events = [_event(i, rng.randint(1, 4), 0, tenant=rng.choice(["t-1", "t-2"]), qty=rng.choice([1.0, 2.5]),
                     source=rng.choice(["//a", "//b"])) for i in range(400)]
    for e in events:  # arrive on the day or up to four days later, some delivered twice
        e["_source_file"] = f"usage_events/dt=2026-03-{e['event_time'].day + rng.choice([0, 0, 1, 3, 4]):02d}/x.parquet"
    events += [dict(e, _source_file=e["_source_file"].replace("/x.", "/y.")) for e in rng.sample(events, 60)]
    frame = pl.DataFrame(events)
    expected = _usage_by_reference(frame)
    fast, _, _ = daily_usage(frame)
    # A hash with three values: every event's hash repeats, so every event is grouped by its
    # identity, and distinct events sharing a hash and a content must still count apart.
    monkeypatch.setattr(usage_module, "_IDENTITY_HASH", "hash(source, id) % 3")
    collided, _, _ = daily_usage(frame)
    for usage in (fast, collided):
        got = {(r["utc_date"], r["tenant_id"], r["meter"]): r["quantity"] for r in usage.to_dicts()}
        assert got == expected
    assert sum(expected.values()) < sum(Decimal(str(e["quantity"])) for e in events)  # dups and late ones dropped


def test_usage_identity_with_a_null_part_is_its_own_identity(monkeypatch):
    # (NULL, e1) and (//a, e1) are two events; with a hash of the id alone they share a hash
    # and a content, and are told apart by the identity itself.
    events = pl.DataFrame([_event(1, 1, 1, source=None), _event(1, 1, 1, source="//a"), _event(1, 1, 2, source="//a")])
    monkeypatch.setattr(usage_module, "_IDENTITY_HASH", "hash(id)")
    usage, _, _ = daily_usage(events)
    assert usage.select("quantity", "events").row(0) == (Decimal(2), 2)


@pytest.mark.parametrize("identities", [
    [("//a", "b1"), ("//ab", "1")],  # the same characters end to end
    [(None, "e1"), ("~", "e1"), ("", "e1")],  # NULL, the NULL marker, empty
    [("//a", "1:x"), ("//a1", ":x")],  # a part that looks like a length prefix
])
def test_usage_identities_that_spell_alike_stay_apart(monkeypatch, identities):
    # A constant hash makes every event a candidate, so only the identity key tells them apart;
    # each identity is delivered twice and counts once.
    events = pl.DataFrame([dict(_event(1, 1, arrived), source=source, id=event_id)
                           for source, event_id in identities for arrived in (1, 2)])
    monkeypatch.setattr(usage_module, "_IDENTITY_HASH", "hash(1)")
    usage, _, _ = daily_usage(events)
    assert usage.select("quantity", "events").row(0) == (Decimal(len(identities)), len(identities))


def _record(**kw) -> str:
    base = {"BilledCost": "2.000000", "EffectiveCost": "2.000000", "ContractedCost": "2.000000",
            "ListCost": "2.500000", "BillingAccountId": "ba-1", "BillingCurrency": "USD", "ChargeCategory": "Usage",
            "ChargePeriodStart": "2026-03-02 00:00:00.000000+00:00", "ResourceId": "vol/t-1",
            "Tags": '{"tenant": "t-1"}', "x_LineItemId": "li-1"}
    return json.dumps({**base, **kw})


@pytest.mark.parametrize(("reason", "record", "repaired"), [
    ("ChargePeriodEnd: not after ChargePeriodStart", _record(), True),
    ("ChargePeriodEnd: not after ChargePeriodStart", _record(ChargePeriodEnd="2026-03-01 23:00:00.000000+00:00"), True),
    ("ChargeCategory: not a FOCUS charge category", _record(ChargeCategory="Usage-ish"), True),
    ("ChargeCategory: not a FOCUS charge category",  # its own three-day period is kept
     _record(ChargeCategory="Usage-ish", ChargePeriodEnd="2026-03-05 00:00:00.000000+00:00"), True),
    ("BilledCost: negative on a Usage charge",
     _record(BilledCost="-2.000000", EffectiveCost="-2.000000", ContractedCost="-2.000000"), True),
    ("BilledCost: negative on a Usage charge",  # bigger than its list cost: not a sign slip
     _record(BilledCost="-9.000000", EffectiveCost="-9.000000", ContractedCost="-9.000000"), False),
    ("EffectiveCost: negative on a Usage charge", _record(EffectiveCost="-2.000000"), True),  # only the effective
    ("EffectiveCost: negative on a Usage charge", _record(EffectiveCost="-3.000000"), False),  # beyond ListCost
    ("BillingCurrency: not an ISO 4217 code", _record(BillingCurrency=None), True),
    ("Tags: not a JSON object of scalar values", _record(Tags='{"tenant": "t-1"'), True),
    ("Tags: not a JSON object of scalar values; BilledCost: required", _record(Tags="{"), False),
    ("Tags: not a JSON object of scalar values", _record(Tags="{", BillingCurrency="EUR"), False),  # not our currency
    # A currency given but not an ISO code is no missing one: euros summed as dollars otherwise.
    ("BillingCurrency: not an ISO 4217 code", _record(BillingCurrency="eur"), False),
    ("BillingCurrency: not an ISO 4217 code", _record(BillingCurrency="¥"), False),
    ("BillingCurrency: missing value; BillingCurrency: not an ISO 4217 code", _record(BillingCurrency=""), True),
    # A row without a resource has no "same resource": another row's tags would bill a tenant.
    ("Tags: not a JSON object of scalar values", _record(Tags="{", ResourceId=None), False),
    ("Tags: not a JSON object of scalar values", _record(Tags="{", ResourceId="vol/t-2"), False),
    # FOCUS values spelt in another case (Google's FOCUS view): the category or class itself.
    ("ChargeCategory: not a FOCUS charge category", _record(ChargeCategory="tax"), True),
    ("ChargeClass: must be null or Correction", _record(ChargeClass="correction"), True),
    ("ChargeClass: must be null or Correction", _record(ChargeClass="Refund"), False),
    # The sign rules hold for the row as repaired: a lower-case `usage` sign slip is turned
    # as any sign slip is (not counted negative), one past its list cost stays out, and a
    # lower-case `correction` keeps its negative cost (not flipped into a charge).
    ("ChargeCategory: not a FOCUS charge category",
     _record(ChargeCategory="usage", BilledCost="-2.000000", EffectiveCost="-2.000000", ContractedCost="-2.000000"),
     True),
    ("ChargeCategory: not a FOCUS charge category",
     _record(ChargeCategory="usage", BilledCost="-9.000000", EffectiveCost="-9.000000", ContractedCost="-9.000000"),
     False),
    # Azure's reservation usage (no PublisherName) and credits (no ServiceName): columns
    # attribution never reads; a missing cost or account is still no repair.
    ("PublisherName: missing value", _record(PublisherName=None), True),
    ("ServiceName: missing value; PublisherName: missing value", _record(), True),
    ("ServiceName: missing value; BillingAccountId: missing value", _record(), False),
])
def test_billing_repairs_are_rules_with_a_reason(reason, record, repaired):
    # The resource's other rows: one tagged, one with an empty field (no tags: never copied).
    # Rows of other resources: no tags written as null or {} (never copied), none at all.
    accepted = pl.DataFrame({"ResourceId": ["vol/t-1", "vol/t-1", None, "vol/t-2", "vol/t-2"],
                             "Tags": ['{"tenant": "t-1"}', " ", '{"x": 1}', "null", "{}"],
                             "BillingAccountId": ["ba-1"] * 5, "BillingCurrency": ["USD"] * 5})
    quarantine = pl.DataFrame({"reason": [reason], "record": [record], "file": ["billing_focus/dt=2026-03-02/f"]})
    fixed, left = repair_billing(quarantine, accepted)
    assert (fixed.height, left.height) == ((1, 0) if repaired else (0, 1))
    if repaired:
        assert fixed["EffectiveCost"][0] == Decimal("2.000000") and fixed["repair"][0]
        assert json.loads(fixed["Tags"][0]) == {"tenant": "t-1"}
        end = json.loads(record).get("ChargePeriodEnd")
        days = 3 if end and not reason.startswith("ChargePeriodEnd") else 1  # the period repair: one day
        assert fixed["ChargePeriodEnd"][0] - fixed["ChargePeriodStart"][0] == timedelta(days=days)
        if "ChargeCategory" in json.loads(record) and json.loads(record)["ChargeCategory"] == "tax":
            assert fixed["ChargeCategory"][0] == "Tax" and fixed["repair"][0] == "charge category read as Tax"
        if reason.startswith("BillingCurrency: missing"):  # one repair said once for its two reasons
            assert fixed["repair"][0] == "currency USD from the billing account"


def test_a_lower_case_correction_keeps_its_negative_cost():
    record = _record(ChargeClass="correction", BilledCost="-3.000000", EffectiveCost="-3.000000",
                     ContractedCost="-3.000000", ListCost="3.000000")
    reason = ("ChargeClass: must be null or Correction; BilledCost: negative on a Usage charge that is no refund "
              "(its EffectiveCost is not negative or its ListCost is positive: a sign slip)")
    fixed, left = repair_billing(pl.DataFrame({"reason": [reason], "record": [record],
                                               "file": ["billing_focus/dt=2026-03-02/f"]}),
                                 pl.DataFrame({"ResourceId": ["vol/t-1"], "Tags": ['{"tenant": "t-1"}'],
                                               "BillingAccountId": ["ba-1"], "BillingCurrency": ["USD"]}))
    assert left.height == 0 and fixed["EffectiveCost"].to_list() == [Decimal("-3")]


def _bill(rows):
    return pl.DataFrame([{"ChargePeriodStart": datetime(2026, 3, 1, tzinfo=UTC), "x_LineItemId": f"li-{i}",
                          "EffectiveCost": Decimal(cost), "Tags": json.dumps(tags)} for i, (cost, tags) in enumerate(rows)],
                        schema_overrides={"EffectiveCost": pl.Decimal(18, 6)})


def test_a_day_whose_costs_add_up_past_64_bit_micro_units_is_refused_not_wrapped():
    # Ten lines each under the contract's per-line bound: their day's sum would wrap negative
    # (and reconcile, bill and attribution wrapping alike); attribution says which day instead.
    bill = _bill([("999999999999.000000", {"tenant": "a"})] * 10).cast({"EffectiveCost": pl.Decimal(18, 6)})
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    services = pl.DataFrame({"service": ["api"], "meter": ["api_calls"]})
    with pytest.raises(ValueError, match=r"costs of 1 day\(s\) add up past .* \(first 2026-03-01\)"):
        attribute(bill, usage, services)
    assert attribute(bill.head(9), usage, services).day["billed_micros"][0] == 9 * 999_999_999_999_000_000


def test_the_reconciliation_sums_metered_quantities_exactly():
    from decimal import Decimal

    from ops_platform.finops.usage import QUANTITY

    bill = _bill([("3.000000", {"service": "api", "pool": "serving"})])
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)] * 3, "tenant_id": ["a", "b", "c"], "meter": ["api_calls"] * 3,
                          "quantity": [Decimal("0.1"), Decimal("0.2"), Decimal("14765405.244")], "events": [1, 1, 1],
                          "final": [True] * 3}, schema_overrides={"quantity": QUANTITY})
    recon = attribute(bill, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]})).reconciliation.row(
        0, named=True)
    assert recon["quantity"] == Decimal("14765405.544000")  # as usage_daily holds it, no float's last digits
    assert recon["unit_cost_usd"] == 3.0 / 14765405.544


def test_attribution_rules_and_unallocated_cost_is_reported_not_dropped():
    bill = _bill([("1.000001", {"tenant": "a"}), ("3.000000", {"service": "api", "pool": "serving"}),
                  ("1.000000", {"service": "api", "pool": "warm"}), ("0.500000", {"service": "platform"}),
                  ("0.700000", {"service": "graph", "pool": "serving"})])  # graph: nobody used it
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)] * 2, "tenant_id": ["a", "b"], "meter": ["api_calls"] * 2,
                          "quantity": [1.0, 2.0], "events": [1, 2], "final": [True, True]})
    services = pl.DataFrame({"service": ["api", "graph"], "meter": ["api_calls", "graph_queries"]})
    result = attribute(bill, usage, services)
    rows = {r["tenant_id"]: r for r in result.tenant_day.iter_rows(named=True)}
    assert rows["a"]["direct_micros"] == 1_000_001
    assert (rows["a"]["serving_micros"], rows["b"]["serving_micros"]) == (1_000_000, 2_000_000)
    assert rows["a"]["idle_micros"] + rows["b"]["idle_micros"] == 1_000_000
    assert rows[UNALLOCATED]["total_micros"] == 700_000 and rows[UNALLOCATED]["confidence"] == 0.0
    day = result.day.row(0, named=True)
    assert day["billed_micros"] == day["attributed_micros"] == 6_200_001
    recon = result.reconciliation.filter(pl.col("service") == "graph").row(0, named=True)
    assert recon["unexplained_micros"] == 700_000 and recon["unit_cost_usd"] is None
    # Per service, shared and tagged cost add up to the day's bill (the tenant's line has no
    # service tag: the null service); unit costs per API call, shared and fully loaded.
    assert result.reconciliation["total_micros"].sum() == 6_200_001
    services = {r["service"]: r for r in result.reconciliation.iter_rows(named=True)}
    assert services[None]["direct_micros"] == services[None]["total_micros"] == 1_000_001
    api = services["api"]
    assert (api["cost_micros"], api["direct_micros"], api["idle_micros"]) == (4_000_000, 0, 1_000_000)
    assert api["unit_cost_usd"] == api["loaded_unit_cost_usd"] == 4.0 / 3.0
    # Per tenant and service: the tenant lines split by whose cost they are, summing to both.
    by_service = result.tenant_service_day()
    assert by_service["total_micros"].sum() == 6_200_001
    per_tenant = by_service.group_by("tenant_id").agg(pl.col("total_micros").sum())
    assert dict(per_tenant.iter_rows()) == {r["tenant_id"]: r["total_micros"] for r in rows.values()}
    b_rows = {(r["service"], r["tenant_id"]): r for r in by_service.iter_rows(named=True)}
    assert b_rows[("api", "b")]["serving_micros"] == 2_000_000 and b_rows[("graph", UNALLOCATED)]["total_micros"] == 700_000
    assert b_rows[("platform", "a")]["overhead_micros"] + b_rows[("platform", "b")]["overhead_micros"] == 500_000
    assert b_rows[(None, "a")]["direct_micros"] == 1_000_001  # the tenant's line had no service tag


def test_untagged_shared_cost_is_unexplained_under_the_null_service():
    bill = _bill([("2.000000", {"tenant": "a", "service": "api"}), ("0.300000", {})])
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    recon = attribute(bill, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]})).reconciliation
    untagged = recon.filter(pl.col("service").is_null()).row(0, named=True)
    assert (untagged["cost_micros"], untagged["unexplained_micros"]) == (300_000, 300_000)


def test_untagged_account_charges_are_overhead_and_untagged_usage_stays_unallocated():
    # Providers tag no tax, account credit or adjustment: left unallocated (confidence 0),
    # a month's tax held every invoice of the month. They are overhead, spread by API calls,
    # booked to the (account) service; an untagged Usage row is a tagging gap and stays
    # unallocated.
    bill = _bill([("2.000000", {"tenant": "a", "service": "api"}), ("0.300000", {}), ("-0.100000", {}),
                  ("0.070000", {}), ("0.400000", {})]).with_columns(
        pl.Series("ChargeCategory", ["Usage", "Tax", "Credit", "Adjustment", "Usage"]))
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)] * 2, "tenant_id": ["a", "b"], "meter": ["api_calls"] * 2,
                          "quantity": [3.0, 1.0], "events": [1, 1], "final": [True, True]})
    result = attribute(bill, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}))
    rows = {r["tenant_id"]: r for r in result.tenant_day.iter_rows(named=True)}
    assert (rows["a"]["overhead_micros"], rows["b"]["overhead_micros"]) == (202_500, 67_500)
    assert rows[UNALLOCATED]["total_micros"] == 400_000
    # Under their own service: no service's unit cost (what a spike is priced at) carries them.
    account = result.reconciliation.filter(pl.col("service") == "(account)").row(0, named=True)
    assert account["cost_micros"] == 270_000 and result.reconciliation.filter(pl.col("service") == "platform").is_empty()
    # Without the column (a caller passing only what attribution used to read), as before.
    before = attribute(bill.drop("ChargeCategory"), usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}))
    assert {r["tenant_id"]: r["total_micros"] for r in before.tenant_day.iter_rows(named=True)}[UNALLOCATED] == 670_000


def test_a_tag_naming_no_known_tenant_is_unallocated_not_a_new_tenant():
    # "A" for tenant "a": booking it to a tenant "A" at full confidence would bill nobody
    # and leave "a" short without a word; it is unallocated, and the day says how much.
    bill = _bill([("2.000000", {"tenant": "a", "service": "api"}), ("0.500000", {"tenant": "A", "service": "api"}),
                  ("1.000000", {"service": "api", "pool": "serving"})])
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    services = pl.DataFrame({"service": ["api"], "meter": ["api_calls"]})
    result = attribute(bill, usage, services, tenants=pl.Series(["a", "b"]))
    rows = {r["tenant_id"]: r for r in result.tenant_day.iter_rows(named=True)}
    assert set(rows) == {"a", UNALLOCATED}
    assert (rows["a"]["direct_micros"], rows[UNALLOCATED]["direct_micros"]) == (2_000_000, 500_000)
    assert rows[UNALLOCATED]["confidence"] == 0.0
    day = result.day.row(0, named=True)
    assert day["unknown_tenant_micros"] == 500_000 and day["tenants"] == 1
    assert day["billed_micros"] == day["attributed_micros"] == 3_500_000 and day["confidence"] < 0.9
    # without the catalog (none loaded), a tag is taken at its word
    assert "A" in attribute(bill, usage, services).tenant_day["tenant_id"].to_list()


def test_shared_cost_driven_by_usage_of_an_unknown_tenant_is_unallocated_and_holds_the_release():
    # Events metered for a tenant the catalog lacks (a typo, a tenant not loaded yet): its share
    # of the serving pool is nobody's to bill, and spreading it over "a" would bill "a" for it.
    from ops_platform.finops.invoices import Period
    from ops_platform.finops.pipeline import StoredFinOps

    bill = _bill([("3.000000", {"service": "api", "pool": "serving"})])
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)] * 2, "tenant_id": ["a", "t-99999"], "meter": ["api_calls"] * 2,
                          "quantity": [1.0, 2.0], "events": [1, 2], "final": [True, True]})
    result = attribute(bill, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}), tenants=pl.Series(["a"]))
    rows = {r["tenant_id"]: r["serving_micros"] for r in result.tenant_day.iter_rows(named=True)}
    assert rows == {"a": 1_000_000, UNALLOCATED: 2_000_000}
    day = result.day.row(0, named=True)
    assert day["unknown_tenant_micros"] == 2_000_000 and day["attributed_micros"] == day["billed_micros"] == 3_000_000
    stored = StoredFinOps(day=result.day, usage=usage, tenant_day=result.tenant_day,
                          corrections=pl.DataFrame(schema={"utc_date": pl.Date, "tenant_id": pl.String, "meter": pl.String,
                                                           "arrived": pl.Date, "quantity": pl.Float64}),
                          tenants=pl.DataFrame({"tenant_id": ["a"], "tier": ["pro"]}), price_list=pl.DataFrame())
    held = stored.blockers(Period("2026-03-01..2026-03-02", date(2026, 3, 1), date(2026, 3, 2)))
    assert any("1 tenant(s) the catalog does not know (t-99999)" in h for h in held), held


@pytest.mark.parametrize("lines", [
    [("1.000000", {"tenant": "a"}), ("-0.250000", {"service": "graph"})],  # an unallocated credit
    [("1.000000", {"tenant": "a"}), ("-1.000000", {"tenant": "a"})],  # a day that nets to zero
    [("2.000000", {"tenant": "a"}), ("-1.500000", {"service": "api"}), ("0.2", {"service": "api"})],
])
def test_confidence_stays_a_share_with_credits(lines):
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    services = pl.DataFrame({"service": ["api", "graph"], "meter": ["api_calls", "graph_queries"]})
    result = attribute(_bill(lines), usage, services)
    for conf in [*result.tenant_day["confidence"].to_list(), *result.day["confidence"].to_list()]:
        assert conf is not None and 0.0 <= conf <= 1.0, result.day


def test_an_empty_tags_field_is_no_tags_and_a_bill_in_two_currencies_is_refused(world_run):
    from dataclasses import replace

    from ops_platform.finops.pipeline import run

    bill = _bill([("1.000000", {"tenant": "a"}), ("2.000000", {})]).with_columns(
        pl.Series("Tags", ['{"tenant": "a"}', ""]))
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    result = attribute(bill, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}))
    rows = {r["tenant_id"]: r["total_micros"] for r in result.tenant_day.iter_rows(named=True)}
    assert rows == {"a": 1_000_000, UNALLOCATED: 2_000_000}  # untagged, so unallocated: reported, not lost
    inputs = world_run[0]
    mixed = inputs.billing.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("EUR"))
                                        .otherwise(pl.col("BillingCurrency")).alias("BillingCurrency"))
    first = mixed.row(0, named=True)
    # Which row to convert or drop is named: the rarer currency's first line id and its file.
    with pytest.raises(ValueError, match=rf"mixes currencies \(EUR, USD: USD {mixed.height - 1:,} row\(s\), EUR 1 "
                                         rf"row\(s\), first {first['x_LineItemId']} in {re.escape(first['_source_file'])}\)"):
        run(replace(inputs, billing=mixed))


def test_sub_micro_dollar_lines_keep_the_days_total():
    # A thousand charges of 400 micro-dollars, a whole-dollar line and a credit of 1.5
    # micro-dollars: the day is 0.4 + 2 - 0.0000015 USD, rounded once (half to even).
    n = 1000
    bill = pl.DataFrame({"ChargePeriodStart": [datetime(2026, 3, 1, tzinfo=UTC)] * (n + 2),
                         "x_LineItemId": [f"li-{i:04d}" for i in range(n + 2)],
                         "EffectiveCost": [Decimal("0.0004")] * n + [Decimal("2"), Decimal("-0.0000015")],
                         "Tags": ['{"tenant": "a"}'] * (n + 2)},
                        schema_overrides={"EffectiveCost": pl.Decimal(38, 12)})
    lines = cost_lines(bill)
    assert lines["micros"].sum() == 400_000 + 2_000_000 - 2  # -1.5 micro-dollars rounds to -2 (even)
    assert set(lines["micros"].to_list()) == {400, 2_000_000, -2}  # whole lines keep their value
    # The same lines at 0.4 micro-dollars each: rounded one by one they would all be 0.
    tiny = cost_lines(bill.with_columns(pl.lit(Decimal("0.0000004")).cast(pl.Decimal(38, 12)).alias("EffectiveCost")))
    assert tiny["micros"].sum() == round(Decimal("0.0000004") * (n + 2) * 10**6)  # 408, not 0
    assert set(tiny["micros"].to_list()) == {0, 1}


def test_a_charge_over_several_days_is_amortized_over_them_and_each_day_rounded_once():
    from fractions import Fraction

    from ops_platform.finops.attribution import billed_days, cost_lines

    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [  # (start, end, cost, tags)
        (start, start + timedelta(days=1), "1.5", {"tenant": "a"}),  # a daily line
        (start, datetime(2026, 4, 1, tzinfo=UTC), "31.000001", {"service": "api"}),  # a monthly fee
        (start + timedelta(hours=23), start + timedelta(days=1, hours=2), "3", {"tenant": "b"}),  # over midnight
        (start, start + timedelta(days=3), "-1.000001", {"tenant": "c"}),  # a three-day credit
        (start, None, "2", {"tenant": "d"}),  # a file without ends: its start day
        # a thousand charges of 0.4 micro-dollars, each half an hour either side of midnight
        *[(start + timedelta(hours=23, minutes=30), start + timedelta(days=1, minutes=30), "0.0000004",
           {"tenant": "e"})] * 1000,
    ]
    bill = pl.DataFrame({"ChargePeriodStart": [r[0] for r in rows], "ChargePeriodEnd": [r[1] for r in rows],
                         "x_LineItemId": [f"li-{i:04d}" for i in range(len(rows))],
                         "EffectiveCost": [Decimal(r[2]) for r in rows], "Tags": [json.dumps(r[3]) for r in rows]},
                        schema_overrides={"EffectiveCost": pl.Decimal(38, 12)})
    lines = cost_lines(bill)
    # Each day's exact share of every line, rounded once per day (half to even).
    exact: dict[date, Fraction] = {}
    for begin, end, cost, _ in rows:
        end = end or begin.replace(hour=0) + timedelta(days=1)
        day = begin.replace(hour=0, minute=0)
        while day < end:
            inside = min(end, day + timedelta(days=1)) - max(begin, day)
            exact[day.date()] = exact.get(day.date(), Fraction(0)) + Fraction(cost) * Fraction(inside / (end - begin))
            day += timedelta(days=1)
    per_day = dict(lines.group_by("utc_date").agg(pl.col("micros").sum()).iter_rows())
    # round(): half to even. The sub-micro charges count (200 micro-dollars on each side of
    # midnight): split and rounded line by line, they would be 0.
    assert per_day == {d: round(v * 10**6) for d, v in exact.items()}
    line = pl.col("line_id").str.split("@").list.first()
    month = lines.filter(line == "li-0001").sort("utc_date")
    assert month.height == 31 and month["utc_date"][-1] == date(2026, 3, 31)
    assert lines.filter(line == "li-0002").sort("utc_date")["micros"].to_list() == [1_000_000, 2_000_000]
    assert lines.filter(line.is_in(["li-0000", "li-0004"]))["utc_date"].to_list() == [date(2026, 3, 1)] * 2
    assert lines["line_id"].is_unique().all()
    # A day is billed by the lines of a day or less that fall on it, not by a monthly fee's part.
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    day = attribute(bill, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]})).day
    assert sorted(billed_days(day).to_list()) == [date(2026, 3, 1), date(2026, 3, 2)]
    assert day.height == 31  # the fee's days are attributed all the same
    monthly_only = attribute(bill.filter(pl.col("x_LineItemId") == "li-0001"), usage,
                             pl.DataFrame({"service": ["api"], "meter": ["api_calls"]})).day
    assert billed_days(monthly_only).len() == 31  # a bill of long charges covers the days they cover


def test_platform_overhead_is_spread_by_api_calls_even_when_the_catalog_lists_platform():
    # A catalog entry for "platform" must not give its pool a second meter (and the pool a
    # second allocation): overhead follows API calls, and the day still sums to its bill.
    bill = _bill([("1.000000", {"service": "platform"})])
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)] * 3, "tenant_id": ["a", "b", "b"],
                          "meter": ["api_calls", "api_calls", "storage_gb_hours"], "quantity": [1.0, 3.0, 9.0],
                          "events": [1, 3, 9], "final": [True] * 3})
    services = pl.DataFrame({"service": ["platform"], "meter": ["storage_gb_hours"]})
    result = attribute(bill, usage, services)
    rows = {r["tenant_id"]: r["overhead_micros"] for r in result.tenant_day.iter_rows(named=True)}
    assert rows == {"a": 250_000, "b": 750_000}
    day = result.day.row(0, named=True)
    assert day["billed_micros"] == day["attributed_micros"] == 1_000_000


@pytest.fixture(scope="module")
def world_run(small_world):
    from ops_platform.finops.pipeline import FinOpsInputs, run

    inputs = FinOpsInputs.from_landing(small_world)
    return inputs, run(inputs)


def test_attribution_of_a_world_sums_to_its_bill_and_meets_the_accuracy_targets(world_run, small_world):
    result = world_run[1].attribution
    day = result.day
    assert (day["billed_micros"] == day["attributed_micros"]).all()  # exact, every day
    figures = score_attribution(result, pl.read_parquet(small_world / "truth" / "tenant_daily_cost.parquet"))
    assert figures["mape"] < 0.01 and figures["within_5pct"] >= 0.99
    assert 0.9 < figures["min_day_confidence"] <= figures["mean_day_confidence"] <= 1.0


def test_billing_lines_redelivered_in_a_later_partition_count_once_as_last_delivered(world_run):
    # Month-to-date provider exports restate earlier days as discounts settle: the latest
    # delivery of a line counts, the earlier one is listed as restated, not missing money.
    from ops_platform.finops.pipeline import _latest_deliveries

    billing = world_run[0].billing
    assert billing["x_LineItemId"].is_unique().all()
    # A provider re-sends five lines in a later file (its own partition); one of them changed.
    again = billing.head(5).with_columns(pl.lit("2099-01-01").alias("partition_key"),
                                         pl.lit("billing_focus/dt=2099-01-01/resent.csv").alias("_source_file"))
    changed = billing["x_LineItemId"][0]
    again = again.with_columns(pl.when(pl.col("x_LineItemId") == changed).then(pl.col("EffectiveCost") * 2)
                               .otherwise(pl.col("EffectiveCost")).alias("EffectiveCost"))
    table = pl.concat([billing, again]).sort("partition_key", "_source_file", "_source_row")
    rows, restated = _latest_deliveries(table)
    first = billing.filter(pl.col("x_LineItemId") == changed)["EffectiveCost"][0]
    assert rows.height == billing.height and rows["EffectiveCost"].sum() == billing["EffectiveCost"].sum() + first
    assert rows.filter(pl.col("x_LineItemId") == changed)["_source_file"][0].endswith("resent.csv")
    assert restated.height == 1 and restated["reason"][0] == "restated in a later file date (the later delivery counts)"
    assert changed in restated["record"][0] and not restated["file"][0].endswith("resent.csv")
    # Restated lines are not refused money: the day's books carry the restated cost.
    from ops_platform.finops.repair import billing_for_attribution

    _, quality = billing_for_attribution(rows, restated.with_columns(pl.lit("billing_focus").alias("source_table")))
    assert quality.height == 0 or quality["refused_rows"].sum() == 0


def test_cli_finops_score_json(small_world):
    res = CliRunner().invoke(main, ["finops", "score", "--world", str(small_world), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {"mape", "within_5pct", "billed_usd", "attributed_usd", "min_day_confidence"} <= set(out)
    assert out["billed_usd"] == out["attributed_usd"]
    # Exact money: integer micro-units, and the text prints every one of them (a float of
    # dollars loses micro-dollars on a bill past about 10^10).
    assert isinstance(out["billed_micros"], int) and out["billed_micros"] == out["attributed_micros"] > 0
    text = CliRunner().invoke(main, ["finops", "score", "--world", str(small_world)]).output
    dollars, micros = divmod(out["billed_micros"], 10 ** 6)
    assert f"{dollars:,}.{micros:06d} / {dollars:,}.{micros:06d}" in text, text
    assert isinstance(out["targets_met"], bool) and out["currency"] == "USD"
    # every target --check judges is listed, the anomaly model's included
    assert {"mape", "within_5pct", "anomaly_model_precision", "anomaly_model_recall",
            "anomaly_model_f1_above_baseline"} == set(out["targets"])


def test_cli_finops_score_names_the_bills_currency(small_world, tmp_path):
    # A bill in euros is reported in euros, not labelled USD.
    import shutil

    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    for f in (world / "landing" / "billing_focus").rglob("*.parquet"):
        pl.read_parquet(f).with_columns(pl.lit("EUR").alias("BillingCurrency")).write_parquet(f)
    res = CliRunner().invoke(main, ["finops", "score", "--world", str(world)])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if "bill / attributed" in x)
    assert line.split("(")[0].split()[-1] == "EUR" and "USD" not in res.output, res.output


def test_cli_finops_score_check_exits_1_when_a_target_is_missed(small_world, monkeypatch):
    import ops_platform.finops.score as score

    monkeypatch.setattr(score, "MAPE_TARGET", 0.0)  # no attribution has an error under 0
    res = CliRunner().invoke(main, ["finops", "score", "--world", str(small_world), "--check"])
    assert res.exit_code == 1 and "targets NOT met: mape" in res.output  # which one, not only that one is
    res = CliRunner().invoke(main, ["finops", "score", "--world", str(small_world), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["targets_met"] is False  # without --check: a report
    assert json.loads(res.output)["targets_missed"] == ["mape"]


def test_anomalies_carry_score_expected_range_impact_and_driver():
    from ops_platform.finops.anomalies import detect_anomalies

    rng = random.Random(3)
    rows = []
    for t in range(30):
        for d in range(1, 15):
            n = rng.randint(40, 60)
            qty = n * 100.0 * rng.uniform(0.9, 1.1) * (8.0 if (t, d) == (7, 9) else 1.0)
            rows.append({"utc_date": date(2026, 3, d), "tenant_id": f"t-{t:02d}", "meter": "api_calls",
                         "quantity": qty, "events": n})
    usage = pl.DataFrame(rows)
    cost = pl.DataFrame({"utc_date": [date(2026, 3, d) for d in range(1, 15)], "service": "api",
                         "meter": "api_calls", "cost_micros": 10_000_000, "idle_micros": 2_000_000,
                         "quantity": 1.0, "unit_cost_usd": 0.001})
    found = detect_anomalies(usage, cost)
    (spike,) = found.filter(pl.col("model_flag")).iter_rows(named=True)
    assert (spike["tenant_id"], spike["utc_date"], spike["service"], spike["meter"]) == (
        "t-07", date(2026, 3, 9), "api", "api_calls")
    assert spike["expected_low"] <= spike["expected"] <= spike["expected_high"] < spike["value"]
    assert spike["impact_usd"] == pytest.approx((spike["value"] - spike["expected"]) * 0.001)
    assert spike["model_score"] > 0


def test_anomaly_model_beats_the_baseline_on_a_world(world_run, small_world):
    from ops_platform.finops.score import score_anomalies

    figures = score_anomalies(world_run[1].anomalies, pl.read_parquet(small_world / "truth" / "cost_anomalies.parquet"))
    assert figures["model"]["recall"] == 1.0 and figures["model"]["precision"] >= 0.9  # the issue's targets
    assert figures["model"]["f1"] > figures["baseline"]["f1"]


def test_invoice_amounts_use_each_currencys_minor_unit():
    from ops_platform.finops.invoices import _amount

    assert _amount(Decimal(10), Decimal("1.005"), "USD") == 1005  # cents
    assert _amount(Decimal(10), Decimal(1), "KRW") == 10  # the won has no minor unit
    assert _amount(Decimal(1), Decimal("1.2345"), "KWD") == 1234  # fils: three digits, half to even
    assert _amount(Decimal(1), Decimal("1.5"), "IDR") == 150  # ISO 4217 says 2, whatever displays show
    with pytest.raises(ValueError, match="'XYZ' is not an ISO 4217 code"):
        _amount(Decimal(1), Decimal(1), "XYZ")
    with pytest.raises(ValueError, match="'XTS' has no minor unit"):
        _amount(Decimal(1), Decimal(1), "XTS")


def test_a_tenant_billed_in_two_currencies_gets_one_invoice_per_currency():
    from ops_platform.finops.invoices import build_invoices, parse_period

    usage = pl.DataFrame({"utc_date": [date(2026, 3, 2)] * 2, "tenant_id": ["t-00001"] * 2,
                          "meter": ["api_calls", "storage_gb_hours"], "quantity": [Decimal(10), Decimal(3)]})
    corrections = pl.DataFrame(schema={"utc_date": pl.Date, "tenant_id": pl.String, "meter": pl.String,
                                       "arrived": pl.Date, "quantity": pl.Decimal(38, 6)})
    prices = pl.DataFrame({"tier": ["pro"] * 2, "meter": ["api_calls", "storage_gb_hours"], "unit": ["call", "GB-h"],
                           "unit_price": ["0.01", "0.5"], "currency": ["USD", "EUR"]})
    tenants = pl.DataFrame({"tenant_id": ["t-00001"], "tier": ["pro"], "name": ["Acme"]})
    lines, summary = build_invoices(parse_period("2026-03"), usage, corrections, tenants, prices)
    # Ordered by currency within the tenant, so the same inputs give the same bytes.
    assert summary["invoice_id"].to_list() == ["INV-2026-03-t-00001-EUR", "INV-2026-03-t-00001-USD"]
    for _ in range(20):
        assert build_invoices(parse_period("2026-03"), usage, corrections, tenants, prices)[1].equals(summary)
    assert dict(zip(summary["currency"], summary["total_minor"], strict=True)) == {"USD": 10, "EUR": 150}
    assert lines["line_id"].is_unique().all() and summary["tenant_name"].to_list() == ["Acme", "Acme"]


def test_a_price_change_inside_a_period_prices_each_day_at_the_price_in_effect():
    # The rate card gains a row from 2026-03-16: usage before is priced at the old price, from
    # that day at the new one, in a line each; a correction at its usage day's price. A day
    # no row prices yet is an error naming it, never a silent zero.
    from ops_platform.contracts.definitions import CONTRACTS
    from ops_platform.finops.invoices import build_invoices, parse_period

    days = [date(2026, 3, d) for d in (10, 15, 16, 20)]
    usage = pl.DataFrame({"utc_date": days, "tenant_id": ["t-1"] * 4, "meter": ["api_calls"] * 4,
                          "quantity": [Decimal(100)] * 4}, schema_overrides={"quantity": pl.Decimal(38, 6)})
    corrections = pl.DataFrame({"utc_date": [date(2026, 2, 27)], "tenant_id": ["t-1"], "meter": ["api_calls"],
                                "arrived": [date(2026, 3, 3)], "quantity": [Decimal(10)]},
                               schema_overrides={"quantity": pl.Decimal(38, 6)})
    prices = pl.DataFrame({"tier": ["pro"] * 2, "meter": ["api_calls"] * 2, "unit": ["call"] * 2,
                           "unit_price": ["0.01", "0.02"], "currency": ["USD"] * 2,
                           "effective_from": [None, date(2026, 3, 16)]})
    tenants = pl.DataFrame({"tenant_id": ["t-1"], "tier": ["pro"]})
    lines, summary = build_invoices(parse_period("2026-03"), usage, corrections, tenants, prices)
    got = {r["line_id"]: (r["quantity"], r["unit_price"], r["amount_minor"]) for r in lines.iter_rows(named=True)}
    assert got == {"INV-2026-03-t-1-USD/correction/api_calls/2026-02-27": ("10", "0.01", 10),
                   "INV-2026-03-t-1-USD/usage/api_calls": ("200", "0.01", 200),
                   "INV-2026-03-t-1-USD/usage/api_calls@2026-03-16": ("200", "0.02", 400)}
    assert summary["total_minor"].to_list() == [610]
    # A rate card without effective days prices as it always did (the same line ids).
    plain, _ = build_invoices(parse_period("2026-03"), usage, corrections, tenants, prices.head(1).drop("effective_from"))
    assert plain["line_id"].to_list() == ["INV-2026-03-t-1-USD/correction/api_calls/2026-02-27",
                                          "INV-2026-03-t-1-USD/usage/api_calls"]
    with pytest.raises(ValueError, match=r"no rate card price for tier 'pro' and meter 'api_calls' on 2026-02-27 "
                                         r"\(tenant t-1\): 1 usage row\(s\)"):
        build_invoices(parse_period("2026-03"), usage, corrections, tenants, prices.tail(1).with_columns(
            pl.lit(date(2026, 3, 1)).alias("effective_from")))
    # The contract: a price's day is optional, and two prices from one day are one too many.
    contract = CONTRACTS["price_list"]
    assert "effective_from" in contract.names and contract.unique_key == ("tier", "meter", "effective_from")


def test_a_rate_card_with_effective_days_loads_and_its_bad_rows_say_why(tmp_path):
    from ops_platform.contracts.definitions import CONTRACTS
    from ops_platform.ingest.landing import LandingZoneReader
    from ops_platform.ingest.pipeline import ingest_partition

    (tmp_path / "catalog").mkdir()
    pl.DataFrame({"tier": ["pro"] * 4, "meter": ["api_calls"] * 3 + ["graph_queries"], "unit": ["call"] * 4,
                  "unit_price": ["0.01", "0.02", "0.03", "0.5"], "currency": ["USD"] * 4,
                  "effective_from": [None, "2026-03-16", "2026-03-16", "2026-13-01"]}).write_parquet(
        tmp_path / "catalog" / "price_list.parquet")
    res = ingest_partition(CONTRACTS["price_list"], LandingZoneReader(tmp_path))
    assert res.accepted.select("unit_price", "effective_from").rows() == [("0.01", None), ("0.02", date(2026, 3, 16))]
    assert sorted(res.quarantine["reason"].to_list()) == [
        "conflicting re-delivery of tier, meter, effective_from", "effective_from: not a valid date"]


def test_invoice_totals_equal_usage_priced_by_the_rate_card_for_every_tenant(world_run, small_world):
    from decimal import ROUND_HALF_EVEN

    from ops_platform.contracts.definitions import CONTRACTS
    from ops_platform.finops.pipeline import StoredFinOps, final_period
    from ops_platform.ingest.landing import LandingZoneReader
    from ops_platform.ingest.pipeline import ingest_partition

    inputs, result = world_run
    period = final_period(result.usage)
    lines, summary = StoredFinOps.from_run(inputs, result).invoices(period)
    # Independently: the accepted events of the period, deduplicated, priced by tier.
    events = ingest_partition(CONTRACTS["usage_events"], LandingZoneReader(small_world / "landing")).accepted
    ev = (events.unique(subset=["source", "id"])
          .filter((pl.col("event_time").dt.date() >= period.start) & (pl.col("event_time").dt.date() < period.end)))
    tiers = dict(zip(inputs.tenants["tenant_id"], inputs.tenants["tier"], strict=True))
    prices = {(r["tier"], r["meter"]): Decimal(r["unit_price"]) for r in inputs.price_list.iter_rows(named=True)}
    expected: dict[str, int] = {}
    for (tenant, meter), part in ev.group_by(["subject", "meter"]):
        qty = sum((Decimal(repr(q)) for q in part["quantity"].to_list()), Decimal(0))
        cents = (qty * prices[(tiers[tenant], meter)] * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        expected[tenant] = expected.get(tenant, 0) + int(cents)
    got = dict(zip(summary["tenant_id"], summary["total_minor"], strict=True))
    assert got == expected and len(got) == inputs.tenants.height
    per_lines = lines.group_by("tenant_id").agg(pl.col("amount_minor").sum())
    assert dict(zip(per_lines["tenant_id"], per_lines["amount_minor"], strict=True)) == got
    assert summary["reconciliation_confidence"].is_between(0.9, 1.0).all()
    # For a spreadsheet: the money in dollars as exact text, and the days the period holds.
    for frame, minor, major in ((lines, "amount_minor", "amount"), (summary, "total_minor", "total")):
        assert all(Decimal(m) * 100 == n and len(m.split(".")[1]) == 2 for m, n in zip(frame[major], frame[minor], strict=True))
        assert set(frame["first_day"]) == {period.start} and set(frame["last_day"]) == {period.end - timedelta(days=1)}
    # For a billing system's import: an id per invoice (one per tenant and period) and per
    # line, stable across exports, and the customer's name from the tenant catalog.
    assert lines["line_id"].is_unique().all() and summary["invoice_id"].is_unique().all()
    assert set(lines["invoice_id"]) == set(summary["invoice_id"])
    assert (lines["invoice_id"] == "INV-" + lines["period"] + "-" + lines["tenant_id"] + "-" + lines["currency"]).all()
    assert lines["line_id"].str.starts_with(lines["invoice_id"] + "/").all()
    named = dict(zip(inputs.tenants["tenant_id"], inputs.tenants["name"], strict=True))
    assert all(named[t] == n for t, n in zip(summary["tenant_id"], summary["tenant_name"], strict=True))
    again, _ = StoredFinOps.from_run(inputs, result).invoices(period)
    assert again["line_id"].to_list() == lines["line_id"].to_list()


def test_invoice_files_are_deterministic_and_leave_no_partial_file(world_run, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from ops_platform.files import file_sha256
    from ops_platform.finops.invoices import write_invoices
    from ops_platform.finops.pipeline import StoredFinOps, final_period

    inputs, result = world_run
    lines, summary = StoredFinOps.from_run(inputs, result).invoices(final_period(result.usage))
    written = write_invoices(lines, summary, tmp_path / "a")
    a, b = list(written), list(write_invoices(lines, summary, tmp_path / "b"))
    assert [file_sha256(x) for x in a] == [file_sha256(x) for x in b] == list(written.values())
    before = file_sha256(a[0])

    real = pq.write_table

    def crash(table, where, **kwargs):  # half the file reaches the disk, then the disk fills up
        real(table, where, **kwargs)
        where.flush()
        where.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError):
        write_invoices(lines.head(3), summary, tmp_path / "a")
    assert file_sha256(a[0]) == before  # the old file is intact, not half-written
    assert sorted((tmp_path / "a").iterdir()) == sorted(a)  # and nothing else appeared
    monkeypatch.undo()
    # The folder is written whole or not at all: when the last of its four files fails, a
    # new release's folder does not appear with three files a billing import could pick up.
    import ops_platform.finops.invoices as invoices_module

    real_text = invoices_module.write_text

    def fail_summary_csv(text, path):
        if path.name == "invoice_summary.csv":
            raise OSError("disk full")
        real_text(text, path)

    monkeypatch.setattr(invoices_module, "write_text", fail_summary_csv)
    with pytest.raises(OSError):
        write_invoices(lines, summary, tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no folder, no staging left
    monkeypatch.undo()
    # A folder written again (a retried release) holds exactly the new files.
    (tmp_path / "a" / "stray.csv").write_text("x")
    assert list(write_invoices(lines, summary, tmp_path / "a")) == a and sorted((tmp_path / "a").iterdir()) == sorted(a)


def test_release_is_held_with_reasons_then_guarded_with_receipted_file_digests(world_run, tmp_path):
    from ops_platform.finops.attribution import billed_days
    from ops_platform.finops.export import InvoiceExportExecutor, release_request
    from ops_platform.finops.invoices import parse_period
    from ops_platform.finops.pipeline import StoredFinOps, final_period
    from ops_platform.guard.actions import ActionRequest

    from .test_guard_protocol import Env

    inputs, result = world_run
    month = parse_period("2026-03")
    stored = StoredFinOps.from_run(inputs, result)
    assert any("no billing" in r for r in stored.blockers(month))
    # A period past the bill, or before it, says so (not only "no billing for 31 of 31 days").
    [future] = [r for r in stored.blockers(parse_period("2030-01")) if r.startswith("no billing")]
    last = max(billed_days(stored.day).to_list())
    assert future == f"no billing for 31 of 31 day(s) (first 2030-01-01; the bill so far runs to {last}: those " \
                     "days are not billed yet)", future
    [past] = [r for r in stored.blockers(parse_period("2025-12")) if r.startswith("no billing")]
    assert past.endswith(f"; the bill begins on {min(billed_days(stored.day).to_list())})"), past
    period = final_period(result.usage)
    assert stored.blockers(period) == []
    # A usage file of the period that did not load holds it: its events are missing.

    day = period.start + timedelta(days=1)
    broken = dataclasses.replace(stored, unloaded=pl.DataFrame({
        "source_table": ["usage_events", "usage_events"],
        "file": [f"usage_events/dt={day}/events.parquet", f"usage_events/dt={period.end + timedelta(days=30)}/x.parquet"],
        "reason": ["unreadable file (truncated)", "unreadable file (truncated)"]}))
    [reason] = broken.blockers(period)
    assert reason.startswith("1 usage or billing file(s) did not load") and f"dt={day}" in reason
    # A folder that names no day (the landing reader reports it) holds every period, no crash.
    nameless = dataclasses.replace(stored, unloaded=pl.DataFrame({
        "source_table": ["billing_focus"], "file": ["billing_focus/dt=2026-02-30"],
        "reason": ["not in a dt=YYYY-MM-DD folder"]}))
    [reason] = nameless.blockers(period)
    assert "billing_focus/dt=2026-02-30" in reason
    # Low confidence says how much of it is cost nobody carries, the usual cause.
    low = dataclasses.replace(stored, day=stored.day.with_columns(
        pl.when(pl.col("utc_date") == day).then(0.5).otherwise(pl.col("confidence")).alias("confidence"),
        pl.when(pl.col("utc_date") == day).then(1_234_560_000).otherwise(0).alias("unallocated_micros")))
    [reason] = low.blockers(period)
    assert reason.startswith("reconciliation confidence under 95% on 1 day(s)") and "1,234.56 of their cost is " \
        "unallocated" in reason and "finops.tenant_service_day" in reason, reason

    env = Env(f"sqlite:///{tmp_path / 'control.sqlite'}", tmp_path)
    ex = InvoiceExportExecutor(tmp_path / "invoices", stored)
    proto = env.protocol(executor=ex)
    denied = proto.submit(ActionRequest(actor="ramp-controller", roles=("ramp_controller",), action="export_release",
                                        target_kind="invoice_period", target_id=period.name, rationale="not mine",
                                        idempotency_key="x", params={"period": period.name}))
    assert denied.status == "denied" and not (tmp_path / "invoices").exists()
    held = proto.submit(release_request(month, "finops-analyst", "a retry must not bypass the release check"))
    assert held.status != "completed" and "held: 2026-03" in held.reason
    assert not (tmp_path / "invoices").exists()
    out = proto.submit(release_request(period, "finops-analyst", "period reconciled; releasing invoices"))
    assert out.status == "completed" and out.receipt_id
    # Its receipt vouches for this period's files, not another's (an event naming it by mistake).
    from ops_platform.finops.export import released_file_problems

    assert released_file_problems(env.store, out.receipt_id, None, env.ring.verifiers(), period) == []
    [wrong] = released_file_problems(env.store, out.receipt_id, None, env.ring.verifiers(), parse_period("2026-01"))
    assert "is not the release of 2026-01" in wrong
    [denial] = released_file_problems(env.store, denied.receipt_id, None, env.ring.verifiers())
    assert "is not the release of a period" in denial
    files = sorted((tmp_path / "invoices" / period.name).iterdir())
    assert len(files) == 4
    assert env.verify().ok
    # A period that shares a day with the released one is held, by either path: those days
    # are invoiced already. The released period itself is the same action, answered once.
    from ops_platform.finops.export import (
        altered_releases,
        release_invoices,
        released_file_problems,
    )
    from ops_platform.finops.invoices import Period

    inner = Period(f"{period.start}..{period.start + timedelta(days=1)}", period.start, period.start + timedelta(days=1))
    assert stored.blockers(inner) == []
    reasons, none = release_invoices(stored, inner, tmp_path / "invoices",
                                     lambda executors: env.protocol(executor=executors["export_release"]), "finops-analyst",
                                     "an overlapping range must not bill its days twice", env.ring.verifiers)
    assert none is None and reasons == [f"overlaps {period.name}, already released ({period.start} to "
                                        f"{period.start} invoiced there)", "every day of it is out already"]
    # A wider range is told which of its days are not out yet, as a period it can name.
    wider = Period(f"{period.start}..{period.end + timedelta(days=2)}", period.start, period.end + timedelta(days=2))
    held, _ = release_invoices(stored, wider, tmp_path / "invoices",
                               lambda executors: env.protocol(executor=executors["export_release"]), "finops-analyst",
                               "a wider range must not bill the released days twice", env.ring.verifiers)
    assert held[-1] == f"not out yet: {period.end}..{period.end + timedelta(days=2)}", held
    bypass = env.protocol(executor=InvoiceExportExecutor(tmp_path / "invoices", stored,
                                                        released=lambda: [period])).submit(
        release_request(inner, "finops-analyst", "a retry must not bypass the overlap check either"))
    assert bypass.status != "completed" and "overlaps" in bypass.reason
    again, out2 = release_invoices(stored, period, tmp_path / "invoices",
                                   lambda executors: env.protocol(executor=executors["export_release"]), "finops-analyst",
                                   "the same period again is the same release", env.ring.verifiers)
    assert again == [] and out2.status == "completed" and out2.receipt_id == out.receipt_id
    files[0].write_bytes(files[0].read_bytes() + b"\n")  # someone edits an exported file
    report = env.verify()
    assert not report.ok and "differs from the receipt" in report.first_bad
    # Until it is restored, no other period goes out: a later invoice nets its late usage
    # against what the released files billed, which an edited file no longer says. Held by
    # either path (the command's check, and the executor's on a retry or a replay).
    later = Period(f"{period.end}..{period.end + timedelta(days=1)}", period.end, period.end + timedelta(days=1))
    held, none = release_invoices(stored, later, tmp_path / "invoices",
                                  lambda executors: env.protocol(executor=executors["export_release"]),
                                  "finops-analyst", "the next day", env.ring.verifiers)
    assert none is None and any(h.startswith(f"{period.name}, already released, no longer matches its receipt")
                                and f"{files[0]} differs" in h for h in held), held
    retried = env.protocol(executor=InvoiceExportExecutor(
        tmp_path / "invoices", stored, released=lambda: [period],
        altered=lambda p: altered_releases(env.store, None, env.ring.verifiers(), but=p))).submit(
        release_request(later, "finops-analyst", "a retry must not bypass it either"))
    assert retried.status != "completed" and "no longer matches its receipt" in retried.reason
    assert not (tmp_path / "invoices" / later.name).exists()
    files[1].unlink()  # and deletes another: a re-run says so instead of "already decided"
    _, rerun = release_invoices(stored, period, tmp_path / "invoices",
                                lambda executors: env.protocol(executor=executors["export_release"]),
                                "finops-analyst", "the same period again is the same release", env.ring.verifiers)
    assert rerun.status == "files_changed" and rerun.receipt_id == out.receipt_id
    assert f"{files[0]} differs from its receipted sha256" in rerun.reason and f"{files[1]} is missing" in rerun.reason
    assert not files[1].exists()  # nothing rewritten
    # A receipt rewritten in the store to carry the altered file's digest, re-signed by a key
    # that is not ours, vouches for nothing: the re-run says so rather than "intact".
    from pathlib import Path

    import sqlalchemy as sa

    from ops_platform.control import schema
    from ops_platform.files import file_sha256
    from ops_platform.receipts.canonical import canonical_json
    from ops_platform.receipts.dsse import envelope_statement, sign_envelope
    from ops_platform.receipts.keys import KeyRing

    files[1].write_bytes(b"")
    entry = env.store.entry(out.receipt_id)
    statement = envelope_statement(entry.envelope)
    for subject in statement["subject"]:
        if Path(subject["name"]).is_file():
            subject["digest"]["sha256"] = file_sha256(Path(subject["name"]))
    forged = sign_envelope(canonical_json(statement), KeyRing.load_or_create(tmp_path / "other-keys").signer())
    with env.store.engine.begin() as conn:
        conn.execute(sa.update(schema.ledger).where(schema.ledger.c.seq == entry.seq).values(
            envelope=json.dumps(forged)))
    # Even under the key that signed it, its payload is not the one the receipt id names.
    said = released_file_problems(env.store, out.receipt_id, None, KeyRing(tmp_path / "other-keys").verifiers())
    assert len(said) == 1 and "another receipt's envelope" in said[0], said
    _, forged_run = release_invoices(stored, period, tmp_path / "invoices",
                                     lambda executors: env.protocol(executor=executors["export_release"]),
                                     "finops-analyst", "the same period again is the same release", env.ring.verifiers)
    assert forged_run.status == "files_changed" and "does not verify" in forged_run.reason, forged_run.reason
    assert "unknown key id" in forged_run.reason
    # Another receipt's envelope, signed by our own key (the denial), copied into the release's
    # row: well signed, but not this receipt, and not a release: it vouches for nothing either.
    with env.store.engine.begin() as conn:
        conn.execute(sa.update(schema.ledger).where(schema.ledger.c.seq == entry.seq).values(
            envelope=env.store.entry(denied.receipt_id).envelope))
    said = released_file_problems(env.store, out.receipt_id, None, env.ring.verifiers(), period)
    assert len(said) == 1 and "another receipt's envelope" in said[0], said


def test_focus_13_allocated_charges_are_read_through_their_allocated_tags():
    bill = _bill([("2.000000", {"service": "api", "pool": "serving"}),
                  ("1.000000", {"service": "api", "pool": "serving"})]).with_columns(
        pl.Series("AllocatedMethodId", [None, "split-by-namespace"]),
        pl.Series("AllocatedTags", [None, json.dumps({"tenant": "b", "service": "api"})]))
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)] * 2, "tenant_id": ["a", "b"], "meter": ["api_calls"] * 2,
                          "quantity": [1.0, 1.0], "events": [1, 1], "final": [True, True]})
    result = attribute(bill, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}))
    rows = {r["tenant_id"]: r for r in result.tenant_day.iter_rows(named=True)}
    assert rows["b"]["direct_micros"] == 1_000_000  # the allocated part is b's own
    assert rows["a"]["serving_micros"] + rows["b"]["serving_micros"] == 2_000_000


def test_focus_13_allocated_tags_add_to_the_origin_charges_tags():
    # FOCUS 1.3: AllocatedTags hold only what the split added; the part carries the origin's
    # Tags too. A tenant's part stays of the origin's service, and an untagged part (unused
    # capacity) stays the service's serving cost, not the unallocated line.
    origin = {"service": "api", "pool": "serving"}
    bill = _bill([("3.000000", origin), ("1.000000", origin)]).with_columns(
        pl.Series("AllocatedMethodId", ["eks-split", "eks-split"]),
        pl.Series("AllocatedTags", [json.dumps({"tenant": "b"}), json.dumps({"k8s/namespace": "kube-system"})]))
    lines = cost_lines(bill)
    assert lines.sort("micros").select("tenant", "service", "pool", "kind").rows() == [
        (None, "api", "serving", "serving"), ("b", "api", "serving", "direct")]


def test_an_invoice_confidence_stays_a_share_when_a_tenant_nets_credits():
    # A day of -5.00 (a credit) beside a day of 95 micro-dollars: each weighs by its amount,
    # as the day's confidence does; signed weights gave -3658934.0.
    from ops_platform.finops.invoices import Period, _confidence

    tenant_day = pl.DataFrame({"utc_date": [date(2026, 3, 6), date(2026, 3, 7), date(2026, 3, 6)],
                               "tenant_id": ["a", "a", "b"], "total_micros": [-5_000_000, 95, 0],
                               "confidence": [0.9, 1.0, 0.97]})
    got = dict(_confidence(Period("p", date(2026, 3, 6), date(2026, 3, 8)), tenant_day).iter_rows())
    assert got["a"] == pytest.approx((0.9 * 5_000_000 + 95) / 5_000_095, abs=1e-6)
    assert got["b"] == 0.97  # no cost at all: its days' plain mean


def test_refused_billing_money_is_counted_on_its_charge_day_and_can_hold_a_period():
    # Rows the contract refused and no repair fixes: their cost is missing from the books. A
    # cost that reads is counted (on its charge day, not the day its file arrived); one that
    # does not is a charge of unknown size, so that day's bill is not known.
    from ops_platform.finops.invoices import Period
    from ops_platform.finops.pipeline import StoredFinOps
    from ops_platform.finops.repair import billing_for_attribution

    bill = _bill([("100.000000", {"tenant": "a"})]).with_columns(
        pl.col("ChargePeriodStart").dt.cast_time_unit("us"),
        (pl.col("ChargePeriodStart").dt.cast_time_unit("us") + pl.duration(days=1)).alias("ChargePeriodEnd"),
        pl.lit("r-1").alias("ResourceId"), pl.lit("ba-1").alias("BillingAccountId"), pl.lit("USD").alias("BillingCurrency"))
    late_file = "billing_focus/dt=2026-03-09/focus-extra.csv"

    def refused(cost, start="2026-03-01 00:00:00.000000+00:00"):
        record = {"EffectiveCost": cost, "ChargePeriodStart": start, "x_LineItemId": f"x-{cost}", "ChargeClass": "x"}
        return {"reason": "ChargeClass: must be null or Correction", "record": json.dumps(record), "file": late_file}

    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    services = pl.DataFrame({"service": ["api"], "meter": ["api_calls"]})
    period = Period("p", date(2026, 3, 1), date(2026, 3, 2))
    empty = pl.DataFrame(schema={"utc_date": pl.Date, "tenant_id": pl.String, "meter": pl.String})

    def books(*rows):
        rows_, quality = billing_for_attribution(bill, pl.DataFrame(list(rows)))
        result = attribute(rows_, usage, services, quality)
        stored = StoredFinOps(result.day, usage, empty, result.tenant_day, pl.DataFrame(), pl.DataFrame())
        return result.day.row(0, named=True), stored.blockers(period)

    day, reasons = books(refused("-2.000000"))  # a refused credit of 2: 2% of the bill, under the 5% tolerance
    assert day["utc_date"] == date(2026, 3, 1) and (day["refused_rows"], day["refused_micros"]) == (1, 2_000_000)
    assert not [r for r in reasons if "refused" in r], reasons
    day, reasons = books(refused("-2.000000"), refused("30.000000"))
    assert day["refused_micros"] == 32_000_000 and any("add up to 32.00" in r for r in reasons), reasons
    # A restated copy (the latest is in the books) and a refused row whose corrected line is
    # in the books are not missing money.
    restated = refused("30.000000") | {"reason": "restated in a later file date (the later delivery counts)"}
    corrected = refused("40.000000") | {"record": json.dumps({"EffectiveCost": "40.0", "x_LineItemId": "li-0",
                                                             "ChargePeriodStart": "2026-03-01 00:00:00+00:00"})}
    day, reasons = books(refused("-2.000000"), restated, corrected)
    assert (day["refused_rows"], day["refused_micros"]) == (1, 2_000_000), day
    # A conflicting re-delivery (one id, two contents in one delivery) is money in doubt, even
    # with its line's first copy in the books: a derived id may join two charges alike in
    # everything but tags (the second was lost without a word).
    conflict = refused("3.000000") | {"reason": "conflicting re-delivery of x_LineItemId", "record": json.dumps(
        {"EffectiveCost": "3.0", "x_LineItemId": "li-0", "ChargePeriodStart": "2026-03-01 00:00:00+00:00"}),
        "file": "billing_focus/dt=2026-03-01/part-1.csv"}
    day, reasons = books(refused("-2.000000"), conflict)
    assert (day["refused_rows"], day["refused_micros"]) == (2, 5_000_000), day
    day, reasons = books(refused(None))  # "50,000.00" did not cast: its size is unknown
    assert day["unreadable_rows"] == 1 and day["confidence"] == 0.0
    assert any("whose cost does not read" in r for r in reasons), reasons


def test_a_lines_latest_delivery_counts_whether_accepted_repaired_or_refused():
    # Under latest-wins restatements: a repaired copy replaces an earlier accepted one (and a
    # later accepted copy replaces a repaired one) instead of both counting; a refused copy
    # later than the line's last readable one is missing money, not silently the old value.
    from ops_platform.finops.repair import billing_for_attribution

    def accepted(cost, day):
        return _bill([(cost, {"tenant": "a"})]).with_columns(
            pl.lit("li-0").alias("x_LineItemId"), pl.lit("r-1").alias("ResourceId"),
            pl.lit("ba-1").alias("BillingAccountId"), pl.lit("USD").alias("BillingCurrency"),
            (pl.col("ChargePeriodStart") + pl.duration(days=1)).alias("ChargePeriodEnd"),
            pl.lit(f"billing_focus/dt=2026-03-{day:02d}/f.csv").alias("_source_file"))

    def quarantined(cost, day, reason):
        record = {"EffectiveCost": cost, "ListCost": "10", "BilledCost": cost, "ContractedCost": cost,
                  "ChargePeriodStart": "2026-03-01 00:00:00.000000+00:00",
                  "ChargePeriodEnd": "2026-03-02 00:00:00.000000+00:00", "x_LineItemId": "li-0",
                  "Tags": '{"tenant": "a"}', "BillingCurrency": "USD", "ChargeCategory": "Usage"}
        return pl.DataFrame([{"reason": reason, "record": json.dumps(record),
                              "file": f"billing_focus/dt=2026-03-{day:02d}/g.csv"}])

    slip = "BilledCost: negative on a Usage charge"
    rows, quality = billing_for_attribution(accepted("10.000000", 2), quarantined("-7.000000", 5, slip))
    assert rows["EffectiveCost"].to_list() == [Decimal("7")] and quality["repaired_rows"].sum() == 1
    rows, quality = billing_for_attribution(accepted("7.000000", 5), quarantined("-10.000000", 2, slip))
    assert rows["EffectiveCost"].to_list() == [Decimal("7")] and quality["repaired_rows"].sum() == 0
    # Refused (no repair for an empty account) on a later date: the books still hold 10, so
    # the 7 is counted as missing; refused on an earlier date, it was restated since.
    broken = "BillingAccountId: missing value"
    rows, quality = billing_for_attribution(accepted("10.000000", 2), quarantined("7.000000", 5, broken))
    assert rows["EffectiveCost"].to_list() == [Decimal("10")]
    assert (quality["refused_rows"].sum(), quality["refused_micros"].sum()) == (1, 7_000_000)
    rows, quality = billing_for_attribution(accepted("10.000000", 5), quarantined("7.000000", 2, broken))
    assert quality.height == 0 or quality["refused_rows"].sum() == 0


def test_sub_micro_quantities_are_summed_before_the_day_is_rounded():
    # A thousand events of 0.0000004 GB-hours: 0.0004 in all, not a thousand zeros.
    n = 1000
    events = pl.DataFrame({"source": ["s"] * n, "id": [f"e{i}" for i in range(n)], "subject": ["t"] * n,
                           "meter": ["storage_gb_hours"] * n, "quantity": [0.0000004] * n,
                           "event_time": [datetime(2026, 3, 1, 1, tzinfo=UTC)] * n,
                           "_source_file": ["usage_events/dt=2026-03-01/a.parquet"] * n})
    usage, _, _ = daily_usage(events)
    assert usage["quantity"].to_list() == [Decimal("0.000400")]


def test_what_of_a_month_is_not_out_yet():
    from ops_platform.finops.export import unreleased_parts
    from ops_platform.finops.invoices import parse_period

    march = parse_period("2026-03")
    assert unreleased_parts(march, []) == [march]
    parts = unreleased_parts(march, [parse_period("2026-03-01..2026-03-14"), parse_period("2026-03-20..2026-03-22")])
    assert [p.name for p in parts] == ["2026-03-14..2026-03-20", "2026-03-22..2026-04-01"]
    assert unreleased_parts(march, [march]) == [] and unreleased_parts(march, [parse_period("2026-02")]) == [march]


def test_late_usage_loaded_after_its_period_went_out_is_billed_with_the_next_release(tmp_path):
    # Files loaded into February's arrival folders after February went out: a late event (a
    # correction) and an on-time one (usage). Neither was billed; the next release bills both,
    # and a release of an earlier gap afterwards does not bill them again.
    from ops_platform.finops.export import billed_lines
    from ops_platform.finops.invoices import carried_corrections, parse_period, write_invoices

    q = pl.Decimal(38, 6)
    feb, mar, apr = parse_period("2026-02"), parse_period("2026-03"), parse_period("2026-04")
    usage = pl.DataFrame({"utc_date": [date(2026, 2, 20)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [Decimal("128")]}).with_columns(pl.col("quantity").cast(q))
    corrections = pl.DataFrame({
        "utc_date": [date(2026, 2, 1), date(2026, 2, 2), date(2026, 2, 3)], "tenant_id": ["a", "a", "b"],
        "meter": ["api_calls"] * 3, "arrived": [date(2026, 2, 21), date(2026, 2, 21), date(2026, 3, 5)],
        "quantity": [Decimal("5"), Decimal("7.5"), Decimal("3")]}).with_columns(pl.col("quantity").cast(q))

    def lines(period, rows):  # an invoice as released: (line_kind, meter, usage_date, quantity) per tenant a/b
        frame = pl.DataFrame([{"tenant_id": tenant, "period": period.name, "line_kind": kind, "meter": "api_calls",
                               "usage_date": day, "quantity": qty} for tenant, kind, day, qty in rows],
                             schema={"tenant_id": pl.String, "period": pl.String, "line_kind": pl.String,
                                     "meter": pl.String, "usage_date": pl.Date, "quantity": pl.String})
        write_invoices(frame, pl.DataFrame({"tenant_id": ["a"]}), tmp_path / period.name)

    # February went out with 28 of the 128 calls and the 02-01 correction (it arrived then).
    lines(feb, [("a", "usage", None, "28"), ("a", "correction", date(2026, 2, 1), "5")])
    billed, problems = billed_lines(tmp_path, [feb])
    assert problems == [] and billed.height == 2
    carried = carried_corrections(usage, corrections, apr, [feb], billed)
    # the usage (100) and the backfilled correction (7.5), under the first day of the period they complete
    assert carried.rows() == [("a", "api_calls", date(2026, 2, 1), Decimal("107.5"))]
    # An event billed as a correction that later counts as on-time usage (its first delivery
    # was found) is owed once: as usage now, but billed already.
    as_usage = usage.with_columns(pl.col("quantity") + Decimal("5"))  # the 02-01 correction, now usage
    assert carried_corrections(as_usage, corrections.filter(pl.col("utc_date") != date(2026, 2, 1)),
                               apr, [feb], billed).rows() == carried.rows()
    # April goes out with them; March (the gap) after it carries nothing again, and its own
    # arrival (b's correction, arrived 03-05) is its own to bill, not a carried one.
    lines(apr, [("a", "correction", day, str(qty)) for _, _, day, qty in carried.rows()])
    billed, problems = billed_lines(tmp_path, [feb, apr])
    assert problems == [] and carried_corrections(usage, corrections, mar, [feb, apr], billed).height == 0
    # A release whose lines are gone: what it billed is not known, so nothing goes out.
    (tmp_path / feb.name / "invoice_lines.parquet").unlink()
    assert "2026-02, already released, cannot be read" in billed_lines(tmp_path, [feb, apr])[1][0]


@pytest.mark.parametrize(("first", "then"), [(10, 2), (2, 10), (2, 2), (6, 3)])
def test_changing_the_late_data_window_between_releases_bills_every_event_once(tmp_path, first, then):
    # March goes out with one late-data window, April with another. Events whose lateness
    # lies between the two windows change sides (on-time usage of March under one, a
    # correction arriving in April under the other): each is billed once all the same.
    from ops_platform.finops.export import billed_lines
    from ops_platform.finops.invoices import (
        build_invoices,
        carried_corrections,
        parse_period,
        write_invoices,
    )

    mar, apr = parse_period("2026-03"), parse_period("2026-04")
    # (usage day, arrival day, quantity): on time, 3, 5, 8 and 40 days late, and April's own
    events = [(date(2026, 3, 5), date(2026, 3, 5), 1), (date(2026, 3, 25), date(2026, 3, 28), 10),
              (date(2026, 3, 27), date(2026, 4, 1), 100), (date(2026, 3, 30), date(2026, 4, 7), 1000),
              (date(2026, 3, 2), date(2026, 4, 11), 10000), (date(2026, 4, 3), date(2026, 4, 3), 100000)]

    def arrived_by(last):
        return pl.DataFrame([{"id": f"e{i}", "source": "//s", "subject": "t-1", "meter": "api_calls",
                              "quantity": float(q), "event_time": datetime(d.year, d.month, d.day, 12, tzinfo=UTC),
                              "_source_file": f"usage_events/dt={a}/events.parquet"}
                             for i, (d, a, q) in enumerate(events) if a <= last])

    tenants = pl.DataFrame({"tenant_id": ["t-1"], "tier": ["pro"]})
    prices = pl.DataFrame({"tier": ["pro"], "meter": ["api_calls"], "unit": ["call"], "unit_price": ["1"],
                           "currency": ["USD"]})
    # March's books as of its release: what had arrived by then, under the first window.
    usage, corrections, _ = daily_usage(arrived_by(mar.end + timedelta(days=first)), first)
    lines, _ = build_invoices(mar, usage, corrections, tenants, prices)
    write_invoices(lines, pl.DataFrame({"tenant_id": ["t-1"]}), tmp_path / mar.name)
    # April's books, every event in, under the other window.
    usage, corrections, _ = daily_usage(arrived_by(date(2026, 6, 1)), then, as_of=date(2026, 6, 1))
    billed, problems = billed_lines(tmp_path, [mar])
    carried = carried_corrections(usage, corrections, apr, [mar], billed)
    april, _ = build_invoices(apr, usage, corrections, tenants, prices, carried=carried)
    both = pl.concat([lines, april])
    assert problems == [] and both["amount_minor"].sum() == 111111 * 100  # each event once, at 1 USD
    assert (both["amount_minor"] > 0).all()  # no empty or negative line
    if first > then:  # March billed some of April's corrections on time: no line repeats them
        assert april.filter(pl.col("line_kind") == "correction")["usage_date"].to_list() == sorted(
            d for d, a, _ in events if d.month == 3 and (a - d).days > first)


def test_cli_finops_score_names_a_day_whose_bill_was_refused(small_world, tmp_path):
    # A bill file without ChargeCategory is refused whole: its day is unbilled, and the score
    # says so instead of only showing it in the error figures.
    import shutil

    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    folders = sorted((world / "landing" / "billing_focus").glob("dt=*"))
    [f] = folders[len(folders) // 2].glob("*.parquet")  # a day in the middle: its usage is final
    rows = pl.read_parquet(f)
    rows.drop("ChargeCategory").write_parquet(f)
    charged = rows["ChargePeriodStart"].dt.date().unique().to_list()
    res = CliRunner().invoke(main, ["finops", "score", "--world", str(world), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [d.isoformat() for d in charged] == out["unbilled_days"] and out["refused_billing_rows"] >= rows.height
    assert out["quarantined_billing_rows"] == out["repaired_billing_rows"] + out["refused_billing_rows"]
    assert any(name.endswith(f.name) for name in out["quarantined_billing_files"]), out["quarantined_billing_files"]
    text = CliRunner().invoke(main, ["finops", "score", "--world", str(world)]).output
    assert "unbilled days" in text and "quarantined bill rows" in text, text
    # The money left out is said, by size and exactly (the refused file's rows all read).
    assert out["refused_billing_micros"] == int(sum(abs(c) for c in rows["EffectiveCost"].to_list()) * 10**6)
    money = f"{Decimal(out['refused_billing_micros']).scaleb(-6):,.6f}"
    assert f"{out['refused_billing_rows']:,} refused (left out: {money} USD by size)" in text, text
    # The lowest confidence of a final day (what the release check judges) beside the lowest of any day.
    assert out["min_final_day_confidence"] >= out["min_day_confidence"]
    assert f"final days min {out['min_final_day_confidence']:.3f}" in text, text


def test_repaired_billing_rows_are_listed_with_their_repair(world_run):
    # finops.day only counts them; the analyst needs which lines were changed and how.
    inputs, result = world_run
    repairs = result.repairs
    assert repairs.height == int(result.attribution.day["repaired_rows"].sum()) > 0
    refused = set(inputs.billing_quarantine["record"].str.json_path_match("$.x_LineItemId").to_list())
    assert set(repairs["x_LineItemId"].to_list()) <= refused
    assert repairs["repair"].str.len_chars().min() > 0 and repairs["effective_cost"].null_count() == 0
    # Money as raw.billing_focus holds it, so the two are compared and summed without a cast.
    assert repairs.schema["effective_cost"] == inputs.billing.schema["EffectiveCost"] == pl.Decimal(38, 12)


def test_a_release_is_refused_when_its_days_are_out_already_by_any_path(world_run, tmp_path):
    # Released by another action (a retry after someone else's release), or written by a release
    # still being receipted: either way its days would be invoiced twice.
    from ops_platform.finops.export import HeldRelease, InvoiceExportExecutor
    from ops_platform.finops.invoices import Period
    from ops_platform.finops.pipeline import StoredFinOps, final_period
    from ops_platform.guard.actions import ActionRequest

    inputs, result = world_run
    stored, period = StoredFinOps.from_run(inputs, result), final_period(result.usage)

    def release(p: Period, released: list[Period]):
        request = ActionRequest(actor="finops-analyst", roles=("finops",), action="export_release",
                                target_kind="invoice_period", target_id=p.name, rationale="month end",
                                idempotency_key=p.name, params={"period": p.name})
        return InvoiceExportExecutor(tmp_path / "invoices", stored, lambda: released).apply(p.name, request)

    with pytest.raises(HeldRelease, match="released by another action"):
        release(period, [period])
    assert not (tmp_path / "invoices").exists()
    assert release(period, []).files  # written; its action not receipted yet
    first_day = Period(f"{period.start}..{period.start + timedelta(days=1)}", period.start,
                       period.start + timedelta(days=1))
    with pytest.raises(HeldRelease, match=f"overlaps {period.name}"):
        release(first_day, [])
    # Once the period is out, its own retried attempt is not an earlier release of itself.
    assert release(period, []).files


@pytest.mark.parametrize(("text", "reason"), [
    ("2026-13", "month must be 01-12"), ("2026-3", "expected YYYY-MM"), ("march", "expected YYYY-MM"),
    ("9999-12", "ends after 9998-12-29"), ("2026-03-15..9999-12-31", "ends after 9998-12-29"),
    ("2026-03-05..2026-03-05", "the end must be after the start"),
    ("2026-02-30..2026-03-02", "day is out of range")])
def test_a_period_no_calendar_holds_is_a_usage_error_not_a_traceback(text, reason):
    # 9999-12 ends on 10000-01-01, past the last date: it was an OverflowError traceback; a
    # period ending days before the last date overflowed adding its late-data window.
    res = CliRunner().invoke(main, ["invoices", "export", "--period", text])
    assert res.exit_code == 2, res.output
    assert reason in res.output and "Traceback" not in res.output


def test_a_tier_invoiced_in_two_currencies_is_not_summed_across_them():
    from ops_platform.finops.report import tier_margins

    tenants = pl.DataFrame({
        "tenant_id": ["a", "b", "c", "d"], "tier": ["free", "free", "pro", "pro"], "cost_micros": [5, 7, 10, 3],
        "revenue_micros": [None, 100, 20, 30], "margin_micros": [-5, None, 10, 27], "margin": [None, None, 0.5, 0.9],
        "min_confidence": [1.0] * 4, "cost_currency": ["USD"] * 4, "invoice_currency": [None, "EUR", "USD", "USD"]})
    rows = {(r["tier"], r["currency"]): r for r in tier_margins(tenants).iter_rows(named=True)}
    assert set(rows) == {("free", "USD"), ("free", "EUR"), ("pro", "USD")}
    euro = rows[("free", "EUR")]  # euros beside a dollar cost: no margin, rather than a margin of 0
    assert euro["revenue_micros"] == 100 and euro["margin_micros"] is None and euro["margin"] is None
    assert euro["below_cost"] is None
    assert (rows[("free", "USD")]["margin_micros"], rows[("free", "USD")]["below_cost"]) == (-5, 1)  # no invoice
    assert (rows[("pro", "USD")]["margin_micros"], rows[("pro", "USD")]["margin"]) == (37, 0.74)


def test_finops_report_shows_cost_revenue_and_margin_per_tenant_and_tier(small_world):
    # Cost from the attribution, revenue at the rate card (the invoices' own pricing), their
    # difference; the tenants add up to the attributed bill and the tiers to the tenants.
    from ops_platform.finops.attribution import UNALLOCATED
    from ops_platform.finops.invoices import build_invoices, parse_period
    from ops_platform.finops.pipeline import FinOpsInputs, run

    res = CliRunner().invoke(main, ["finops", "report", "--world", str(small_world), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    tenants, tiers = pl.DataFrame(out["tenants"]), pl.DataFrame(out["tiers"])
    inputs = FinOpsInputs.from_landing(small_world)
    result = run(inputs)
    period = parse_period(out["period"])
    assert (str(period.start), str(period.end - timedelta(days=1))) == (out["first_day"], out["last_day"])
    attributed = result.attribution.tenant_day.filter(period.covers() & (pl.col("tenant_id") != UNALLOCATED))
    assert tenants["cost_micros"].sum() == attributed["total_micros"].sum()
    _, summary = build_invoices(period, result.usage, result.corrections, inputs.tenants, inputs.price_list)
    billed = dict(zip(summary["tenant_id"], summary["subtotal_minor"], strict=True))
    for r in tenants.iter_rows(named=True):
        assert r["revenue_micros"] == billed[r["tenant_id"]] * 10_000  # cents to micro-dollars
        assert r["margin_micros"] == r["revenue_micros"] - r["cost_micros"]
    assert tiers["tenants"].sum() == tenants.height and tiers["margin_micros"].sum() == tenants["margin_micros"].sum()
    assert tiers["below_cost"].sum() == (tenants["margin_micros"] < 0).sum()
    shown = CliRunner().invoke(main, ["finops", "report", "--world", str(small_world), "--top", "3",
                                      "--period", out["period"]])
    assert shown.exit_code == 0, shown.output
    text = shown.output
    losing = int((tenants["margin_micros"] < 0).sum())
    assert f"{losing} of {tenants.height} tenant(s) cost more than they pay" in text, text
    assert "the 3 tenant(s) that cost most" in text and tenants["tenant_id"][0] in text
    # By default the days the bill covers: usage past them has no cost yet to set against.
    from ops_platform.finops.attribution import billed_days

    covered = billed_days(result.attribution.day)
    assert out["last_day"] == str(covered.max()) and out["unbilled_days"] == []
    beyond = result.usage.filter(pl.col("utc_date") > covered.max())["utc_date"].unique().sort()
    assert beyond.len()  # the world's last usage day has no bill yet
    later = f"{beyond[0]}..{beyond[-1] + timedelta(days=1)}"
    res = CliRunner().invoke(main, ["finops", "report", "--world", str(small_world), "--period", later])
    assert res.exit_code == 0 and f"no bill yet for {beyond.len()} day(s) with usage ({beyond[0]}" in res.output, \
        res.output
    for bad, said in (("2026-13", "month must be 01-12"), ("2026-02-30..2026-03-01", "not a day of the calendar")):
        res = CliRunner().invoke(main, ["finops", "report", "--world", str(small_world), "--period", bad])
        assert res.exit_code == 2 and said in res.output, res.output  # a usage error, as invoices export says it
    empty = CliRunner().invoke(main, ["finops", "report", "--world", str(small_world), "--period", "2031-01"])
    assert empty.exit_code == 1 and f"no cost and no usage in 2031-01: the books hold usage from {out['first_day']}" \
        in empty.output, empty.output


def test_a_release_receipt_totals_each_currency_and_owns_its_folder(world_run, tmp_path):
    # Review: the signed result summed minor units across currencies (cents and yen) and
    # called invoices tenants; a file added beside the released ones passed for part of the
    # release (listed by the command, `receipts verify` green); a price in a currency with
    # no minor unit failed the release's run instead of holding it.
    from ops_platform.finops.export import (
        InvoiceExportExecutor,
        altered_releases,
        release_request,
        released_file_problems,
        unreceipted_files,
    )
    from ops_platform.finops.pipeline import StoredFinOps, final_period
    from ops_platform.receipts.ledger import entry_statement

    from .test_guard_protocol import Env

    inputs, result = world_run
    stored = StoredFinOps.from_run(inputs, result)
    period = final_period(result.usage)
    xts = dataclasses.replace(stored, price_list=stored.price_list.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("XTS")).otherwise(pl.col("currency")).alias("currency")))
    assert xts.blockers(period) == ["currency 'XTS' has no minor unit in ISO 4217: it cannot be invoiced "
                                    "(a price in raw.price_list): fix the price list"]
    env = Env(f"sqlite:///{tmp_path / 'control.sqlite'}", tmp_path)
    out = env.protocol(executor=InvoiceExportExecutor(tmp_path / "invoices", stored)).submit(
        release_request(period, "finops-analyst", "period reconciled; releasing invoices"))
    assert out.status == "completed"
    statement = entry_statement(env.store.entry(out.receipt_id), env.ring.verifiers(), env.store.ledger_id())
    detail = statement["predicate"]["result"]
    summary = pl.read_parquet(tmp_path / "invoices" / period.name / "invoice_summary.parquet")
    assert "total_minor" not in detail and detail["invoices"] == summary.height
    assert detail["tenants"] == summary["tenant_id"].n_unique()
    assert detail["total_minor_by_currency"] == {
        c: t for c, t in summary.group_by("currency").agg(pl.col("total_minor").sum()).iter_rows()}
    assert released_file_problems(env.store, out.receipt_id, None, env.ring.verifiers(), period) == []
    extra = tmp_path / "invoices" / period.name / "invoice_extra.csv"
    extra.write_text("invoice_id,total_minor\nINV-forged,100\n")
    assert released_file_problems(env.store, out.receipt_id, None, env.ring.verifiers(), period) == [
        f"{extra} is in the released folder but not in its receipt"]
    assert any(f"{extra} is in the released folder" in a for a in altered_releases(env.store, None, env.ring.verifiers()))
    # What `receipts verify` and the ledger check add to the digests they check themselves.
    assert unreceipted_files(env.store, None, env.ring.verifiers()) == [
        f"{extra} is in the released folder but not in its receipt: remove it (receipt {out.receipt_id[:12]} "
        "released the folder without it)"]


@pytest.mark.parametrize("text", ["２０２６-０３", "٢٠٢٦-٠٣", "２０２６-０３-０１..２０２６-０３-１５"])
def test_a_period_in_other_digits_is_refused_not_named_in_them(text):
    # It named the release, its folder and every invoice id in those digits: 2026-03 was
    # then answered by that release, and INV-2026-03-... never existed.
    from ops_platform.finops.invoices import parse_period

    with pytest.raises(ValueError, match="expected YYYY-MM"):
        parse_period(text)


def test_invoice_csv_keeps_a_spreadsheet_from_running_catalog_text_as_a_formula(tmp_path):
    from ops_platform.finops.invoices import LINE_SCHEMA, SUMMARY_SCHEMA, write_invoices

    summary = pl.DataFrame([{"invoice_id": "INV-2026-03-t-00001-USD", "tenant_id": "t-00001",
                             "tenant_name": '=HYPERLINK("http://x","pay")', "period": "2026-03",
                             "first_day": date(2026, 3, 1), "last_day": date(2026, 3, 31), "tier": "-pro",
                             "lines": 1, "subtotal_minor": -120, "credits_minor": 0, "total_minor": -120,
                             "total": "-1.20", "currency": "USD", "reconciliation_confidence": 1.0}],
                           schema=SUMMARY_SCHEMA)
    write_invoices(pl.DataFrame(schema=LINE_SCHEMA), summary, tmp_path / "2026-03")
    csv = pl.read_csv(tmp_path / "2026-03" / "invoice_summary.csv", infer_schema=False)
    assert csv["tenant_name"][0] == '\'=HYPERLINK("http://x","pay")' and csv["tier"][0] == "'-pro"
    assert csv["total"][0] == "-1.20" and csv["total_minor"][0] == "-120"  # numbers as they are
    parquet = pl.read_parquet(tmp_path / "2026-03" / "invoice_summary.parquet")
    assert parquet["tenant_name"][0] == '=HYPERLINK("http://x","pay")'


def test_a_refused_charge_lowers_its_days_confidence_by_its_money_not_its_row_count():
    # 99 lines of 1.00 and one refused line of 100.00 (tags the contract refuses): one row in a
    # hundred, but half the day's money. The day must fail the 95% target (it passed at 0.99).
    from ops_platform.finops.attribution import CONFIDENCE_TARGET
    from ops_platform.finops.repair import billing_for_attribution

    bill = _bill([("1.000000", {"tenant": "a"})] * 99).with_columns(
        pl.col("ChargePeriodStart").dt.cast_time_unit("us"),
        (pl.col("ChargePeriodStart").dt.cast_time_unit("us") + pl.duration(days=1)).alias("ChargePeriodEnd"),
        pl.lit("r-1").alias("ResourceId"), pl.lit("ba-1").alias("BillingAccountId"), pl.lit("USD").alias("BillingCurrency"))
    record = {"EffectiveCost": "100.000000", "ChargePeriodStart": "2026-03-01 00:00:00+00:00",
              "x_LineItemId": "big", "Tags": '{"tenant": "a", "team": {"name": "x"}}'}
    quarantine = pl.DataFrame([{"reason": "Tags: not a JSON object of scalar values with unique keys",
                                "record": json.dumps(record), "file": "billing_focus/dt=2026-03-01/f.csv"}])
    usage = pl.DataFrame({"utc_date": [date(2026, 3, 1)], "tenant_id": ["a"], "meter": ["api_calls"],
                          "quantity": [1.0], "events": [1], "final": [True]})
    rows, quality = billing_for_attribution(bill, quarantine)
    day = attribute(rows, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}), quality).day.row(0, named=True)
    assert (day["refused_rows"], day["refused_micros"], day["billed_micros"]) == (1, 100_000_000, 99_000_000)
    assert day["confidence"] == pytest.approx(1 - 100 / 199) and day["confidence"] < CONFIDENCE_TARGET
    # A refused row small in money still costs its share of the rows.
    record |= {"EffectiveCost": "0.010000", "x_LineItemId": "small"}
    rows, quality = billing_for_attribution(bill, quarantine.with_columns(pl.lit(json.dumps(record)).alias("record")))
    day = attribute(rows, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}), quality).day.row(0, named=True)
    assert day["confidence"] == pytest.approx(1 - 1 / 100)


def test_days_no_usage_has_reached_are_left_out_of_the_day_confidences():
    # A monthly fee amortized over the whole month puts cost on days no usage has reached yet:
    # unallocated (no meter to spread it by), so confidence 0. Those days are not a low score.
    from ops_platform.finops.attribution import Attribution

    days = [date(2026, 3, d) for d in (1, 2, 3, 4)]
    day = pl.DataFrame({"utc_date": days, "billed_micros": [5_000_000] * 3 + [2_000_000],
                        "attributed_micros": [5_000_000] * 3 + [2_000_000], "unallocated_micros": [0, 0, 0, 2_000_000],
                        "confidence": [0.97, 0.98, 0.99, 0.0], "final": [True, True, False, False]})
    tenant_day = pl.DataFrame({"utc_date": days[:3], "tenant_id": ["a"] * 3, "total_micros": [5_000_000] * 3})
    truth = pl.DataFrame({"utc_date": days[:3], "tenant_id": ["a"] * 3, "true_cost_usd": [5.0] * 3})
    got = score_attribution(Attribution(tenant_day, day, pl.DataFrame()), truth, last_usage_day=date(2026, 3, 3))
    assert (got["min_day_confidence"], got["mean_day_confidence"]) == (0.97, pytest.approx(0.98))
    assert (got["days_past_usage"], got["billed_past_usage_micros"]) == (1, 2_000_000)
    assert got["billed_micros"] == got["attributed_micros"] == 17_000_000 and got["days"] == 4  # still in the bill
    whole = score_attribution(Attribution(tenant_day, day, pl.DataFrame()), truth)
    assert whole["min_day_confidence"] == 0.0 and whole["days_past_usage"] == 0
    ahead = score_attribution(Attribution(tenant_day, day, pl.DataFrame()), truth, last_usage_day=date(2026, 2, 28))
    assert ahead["min_day_confidence"] is None and ahead["days_past_usage"] == 4  # no usage yet: no confidence


def test_cli_finops_score_prints_no_confidence_when_no_day_has_usage_yet(small_world, monkeypatch):
    # Every billed day past the last usage day: no day confidence to show (a traceback before).
    import ops_platform.finops.score as score

    figures = score.score_world(small_world)
    figures |= {"min_day_confidence": None, "mean_day_confidence": None, "days_past_usage": figures["days"]}
    monkeypatch.setattr(score, "score_world", lambda world: figures)
    res = CliRunner().invoke(main, ["finops", "score", "--world", str(small_world)])
    assert res.exit_code == 0 and "confidence per day     min -, mean -" in res.output, res.output


def test_a_refused_monthly_fee_weighs_on_each_day_of_its_month_not_all_on_the_first():
    # $60 refused for April, against $100 a day accepted: 2% of each day's money. All on April 1
    # it read as 37.5% of that day missing, and held the month.
    from ops_platform.finops.repair import billing_for_attribution

    rows = [{"ChargePeriodStart": datetime(2026, 4, d, tzinfo=UTC), "x_LineItemId": f"li-{d}-{i}",
             "EffectiveCost": Decimal("1"), "Tags": json.dumps({"tenant": "a"})} for d in range(1, 31) for i in range(100)]
    bill = pl.DataFrame(rows, schema_overrides={"EffectiveCost": pl.Decimal(18, 6)}).with_columns(
        pl.col("ChargePeriodStart").dt.cast_time_unit("us"),
        (pl.col("ChargePeriodStart").dt.cast_time_unit("us") + pl.duration(days=1)).alias("ChargePeriodEnd"),
        pl.lit("r-1").alias("ResourceId"), pl.lit("ba-1").alias("BillingAccountId"), pl.lit("USD").alias("BillingCurrency"))
    fee = {"EffectiveCost": "60.000000", "ChargePeriodStart": "2026-04-01T00:00:00Z",
           "ChargePeriodEnd": "2026-05-01T00:00:00Z", "x_LineItemId": "fee", "Tags": '{"team": {"a": 1}}'}
    quarantine = pl.DataFrame([{"reason": "Tags: not a JSON object of scalar values with unique keys",
                                "record": json.dumps(fee), "file": "billing_focus/dt=2026-04-01/f.csv"}])
    rows_, quality = billing_for_attribution(bill, quarantine)
    per_day = dict(quality.select("utc_date", "refused_micros").rows())
    assert len(per_day) == 30 and set(per_day.values()) == {2_000_000} and sum(per_day.values()) == 60_000_000
    usage = pl.DataFrame({"utc_date": [date(2026, 4, d) for d in range(1, 31)], "tenant_id": ["a"] * 30,
                          "meter": ["api_calls"] * 30, "quantity": [1.0] * 30, "events": [1] * 30, "final": [True] * 30})
    day = attribute(rows_, usage, pl.DataFrame({"service": ["api"], "meter": ["api_calls"]}), quality).day
    assert day["confidence"].min() == pytest.approx(1 - 2 / 102)  # each day 2% missing: it passes 95%
    # A period that does not read leaves the fee on its start day, as before.
    undated = fee | {"ChargePeriodEnd": "soon"}
    _, quality = billing_for_attribution(bill, quarantine.with_columns(pl.lit(json.dumps(undated)).alias("record")))
    assert dict(quality.select("utc_date", "refused_micros").rows()) == {date(2026, 4, 1): 60_000_000}
    # Nor does one written in local time: its start is 02:00 UTC on April 2, and it counts there,
    # as a row spread over its days does (the date it is written with was April 1).
    local = undated | {"ChargePeriodStart": "2026-04-01T20:00:00-06:00"}
    _, quality = billing_for_attribution(bill, quarantine.with_columns(pl.lit(json.dumps(local)).alias("record")))
    assert dict(quality.select("utc_date", "refused_micros").rows()) == {date(2026, 4, 2): 60_000_000}


def test_a_refused_rate_card_row_holds_the_release(world_run):
    # A new price the contract refused (a day 2026-13-01, two rows of one day) leaves the older
    # one pricing the invoices without a word: the release waits for the fix instead.
    from ops_platform.finops.pipeline import StoredFinOps, final_period

    inputs, result = world_run
    books = StoredFinOps.from_run(inputs, result)
    period = final_period(result.usage)
    assert not [r for r in books.blockers(period) if "rate card" in r]
    refused = pl.DataFrame({"reason": ["effective_from: not a valid date"],
                            "record": ['{"tier":"pro","meter":"api_calls","unit_price":"0.02","effective_from":"2026-13-01"}']})
    held = [r for r in dataclasses.replace(books, refused_prices=refused).blockers(period) if "rate card" in r]
    assert held == ["1 rate card row(s) were refused, so a price the invoices need may be missing and an older one used "
                    "(first: effective_from: not a valid date: " + refused["record"][0] + "): fix the rate card and "
                    "load it again (raw.quarantine says why each was refused)"]
