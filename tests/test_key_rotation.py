"""Rotating the signing key: the old key's private half goes, its retirement is recorded, and
whatever it signs after it was retired (a leaked copy extending the ledger) fails verification."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ops_platform.cli import main
from ops_platform.control.ledger_writer import append_receipts
from ops_platform.guard.runtime import open_store
from ops_platform.receipts import build_entry, sign_checkpoint, verify_ledger
from ops_platform.receipts.canonical import strict_loads
from ops_platform.receipts.dsse import VerificationError, envelope_statement
from ops_platform.receipts.keys import InsecureKeys, KeyRing, Signer, SignerUnavailable
from ops_platform.receipts.ledger import entry_statement
from ops_platform.receipts.statement import make_statement, target_subject

from .test_receipts_crypto import _ledger, _statement

RETIRED_AT = datetime(2026, 3, 8, 10, tzinfo=UTC)
REASON = "canary error spike is a known upstream DNS blip, INC-4412"


def _extend(entries, checkpoints, signer, n, at):
    """``n`` more entries signed by ``signer`` and one tree head over all of them, signed at ``at``."""
    for i in range(n):
        entries.append(build_entry(entries[-1], _statement(100 + len(entries) + i), signer))
    checkpoints.append(sign_checkpoint(entries, signer, at, checkpoints[-1]))


def test_a_leaked_retired_key_cannot_extend_the_ledger_once_rotated(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    leaked = ring.signer()  # a copy of the old private key, kept by whoever took it
    entries, checkpoints = _ledger(leaked, 3, (3,))
    ledger = entries[0].entry_hash
    old, new = ring.rotate(RETIRED_AT, {ledger: 3})
    assert old == leaked.keyid
    keys = ring.verifiers()
    record = ring.retirements()[old]
    assert (record.successor, record.retired_at, record.ledgers) == (new, "2026-03-08T10:00:00.000000Z", {ledger: 3})

    honest = (list(entries), list(checkpoints))
    _extend(*honest, ring.signer(), 2, "2026-03-08T11:00:00Z")
    assert verify_ledger(*honest, keys).ok  # what the old key signed before still verifies

    # Past the count its record keeps, an entry by the old key fails, however its tree head is
    # dated, and whether or not the new key has signed here yet.
    for base in (honest, (entries, checkpoints)):
        forged = (list(base[0]), list(base[1]))
        _extend(*forged, leaked, 1, "2026-03-08T09:00:00Z")
        n = len(forged[0]) - 1
        report = verify_ledger(*forged, keys)
        assert f"entry seq={n} (receipt {forged[0][n].receipt_id[:8]}…): signed by key {old[:16]}, retired at " \
               "2026-03-08T10:00:00.000000Z when this ledger held 3 entries" in report.errors, report.errors
        assert any(e.startswith(f"checkpoint tree_size={n + 1}: signed by key") for e in report.errors)
        # A reader that acts on one receipt refuses it as well (an override, a release).
        with pytest.raises(VerificationError, match="retired at"):
            entry_statement(forged[0][n], keys, ledger)
        assert entry_statement(forged[0][2], keys, ledger)["predicate"]  # signed before: it stands
        # In a ledger its record did not count, the record cannot tell: verify's other rules judge.
        assert entry_statement(forged[0][n], keys, "another ledger")["predicate"]
    assert verify_ledger(*forged, {k: getattr(v, "key", v) for k, v in keys.items()}).ok  # the record catches it


def test_in_a_ledger_its_record_does_not_know_the_successor_and_the_clock_bound_a_retired_key(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    first = ring.signer()
    entries, checkpoints = _ledger(first, 2, (2,))
    ring.rotate(RETIRED_AT, {})
    ring.rotate(datetime(2026, 3, 8, 12, tzinfo=UTC), {})  # the second key never signed here
    keys = ring.verifiers()
    early = (list(entries), list(checkpoints))
    _extend(*early, first, 1, "2026-03-08T10:30:00Z")  # signed after its retirement
    assert verify_ledger(*early, keys).errors == [
        f"checkpoint tree_size=3: signed by key {first.keyid[:16]} at 2026-03-08T10:30:00Z, not before it was "
        "retired at 2026-03-08T10:00:00.000000Z"]
    _extend(entries, checkpoints, ring.signer(), 1, "2026-03-08T13:00:00Z")
    assert verify_ledger(entries, checkpoints, keys).ok
    _extend(entries, checkpoints, first, 1, "2026-03-08T09:00:00Z")  # backdated, after the third key signed
    errors = verify_ledger(entries, checkpoints, keys).errors
    assert any("entry seq=3" in e and f"signed by key {first.keyid[:16]}" in e and "signed entry seq=2" in e
               for e in errors), errors


def test_a_rotation_is_one_at_a_time_and_a_retired_key_put_back_does_not_sign(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    backup = (tmp_path / "active.key").read_bytes()
    old, new = ring.rotate(RETIRED_AT, {})
    assert ring.rotate(RETIRED_AT, {}, expected=old) is None  # another rotation got there first
    assert ring.signer().keyid == new and set(ring.retirements()) == {old}
    (tmp_path / "active.key").write_bytes(backup)  # a restored backup of the keys folder, say
    with pytest.raises(SignerUnavailable, match=f"is key {old[:16]}, retired"):
        ring.signer()


def test_a_signer_read_before_a_rotation_appends_nothing_after_it(state):
    store = open_store(state)
    ring = KeyRing.load_or_create(state.keys_dir)
    before = ring.signer()
    ring.rotate(RETIRED_AT, {})
    with pytest.raises(SignerUnavailable, match="was retired while this action ran"), store.write() as tx:
        append_receipts(store, tx, [_statement(1)], before, "2026-03-08T11:00:00Z")
    assert store.ledger_entries() == []


@pytest.mark.parametrize(("record", "why"), [
    ("not json", "does not read"), ("[1, 2]", "is not an object"), (None, "does not read"),
    ('{"keyid": "K", "retired_at": "2026-03-08T10:00:00", "successor": "x"}', "not a time with its zone"),
    ('{"keyid": "K", "retired_at": "2026-03-08T10:00:00Z", "successor": null}', "is not an object"),
    ("[" * 100000 + "]" * 100000, "does not read")])
def test_a_retirement_record_that_does_not_read_is_a_clear_error(state, record, why):
    open_store(state)
    ring = KeyRing.load_or_create(state.keys_dir)
    old, _ = ring.rotate(RETIRED_AT, {})
    path = state.keys_dir / "retired" / f"{old}.json"
    path.unlink()
    if record is None:
        path.mkdir()  # a folder where the record was
    else:
        path.write_text(record.replace('"K"', f'"{old}"'))
    res = _cli("receipts", "verify")
    assert res.exit_code == 1 and "retirement record" in res.output and why in res.output, res.output
    assert isinstance(res.exception, SystemExit)  # a message, not a traceback


def test_retirement_records_are_trusted_only_from_a_folder_others_cannot_write(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    ring.rotate(RETIRED_AT, {})
    os.chmod(tmp_path / "retired", 0o777)  # anyone could remove the record and have the old key sign again
    with pytest.raises(InsecureKeys, match=r"retired is writable by others .*chmod go-w"):
        ring.retirements()


@pytest.fixture
def sre_roster(tmp_path, monkeypatch):
    path = tmp_path / "roster.yaml"
    path.write_text("actors:\n  dana: [oncall]\n  sam: [sre]\n")
    monkeypatch.setenv("OPS_PLATFORM_ROSTER", str(path))


def _cli(*args):
    return CliRunner().invoke(main, list(args))


def test_rotate_key_is_guarded_receipted_by_the_new_key_and_the_old_one_is_refused_after(state, sre_roster):
    assert _cli("switchboard", "override", "release-api", "--action", "hold", "--rationale", REASON,
                "--actor", "dana").exit_code == 0
    ring = KeyRing(state.keys_dir)
    # A copy of the private key taken before the rotation: a signer of its own, which knows
    # nothing of the keys folder's records.
    leaked = Signer(load_pem_private_key((state.keys_dir / "active.key").read_bytes(), None))
    denied = _cli("receipts", "rotate-key", "--actor", "dana", "--reason", "routine")
    assert denied.exit_code == 1 and "denied: role(s) oncall may not key_rotate (granted to: sre)" in \
        " ".join(denied.output.split()), denied.output
    assert ring.signer().keyid == leaked.keyid

    done = _cli("receipts", "rotate-key", "--actor", "sam", "--reason", "suspected leak of a laptop backup")
    assert done.exit_code == 0, done.output
    new = ring.signer().keyid
    assert new != leaked.keyid and f"retired signing key {leaked.keyid[:16]}" in done.output
    assert sorted(p.name for p in state.keys_dir.rglob("*.key")) == ["active.key"]  # no private half kept
    store = open_store(state)
    receipt = store.ledger_entries()[-1]
    envelope = strict_loads(receipt.envelope)
    # Signed by the new key: the guard re-reads the key under the ledger's lock, after the rotation.
    assert [s["keyid"] for s in envelope["signatures"]] == [new]
    predicate = envelope_statement(envelope)["predicate"]
    assert predicate["action"] == "key_rotate" and predicate["actor"] == "sam"
    assert predicate["result"] == {"retired": leaked.keyid, "active": new}
    assert _cli("receipts", "verify").exit_code == 0
    # The hold the old key receipted before the rotation is still obeyed.
    (hold,) = store.overrides("release-api")
    assert store.override_problem(hold, ring.verifiers()) is None

    # Whoever holds the old key and can write the store appends a receipt of their own: refused.
    forged = make_statement([target_subject("flag", "release-api")], "resume", {"actor": "dana"})
    with store.write() as tx:
        append_receipts(store, tx, [forged], leaked, "2026-01-01T00:00:00.000000Z")
    assert ring.retirements()[leaked.keyid].ledgers == {store.ledger_id(): 2}  # the override and the denial
    late = f"entry seq=3 (receipt {store.ledger_entries()[3].receipt_id[:8]}…): signed by key {leaked.keyid[:16]} " \
           "after the receipt of its rotation (entry seq=2)"
    res = _cli("receipts", "verify")
    assert res.exit_code == 1 and late in res.output, res.output
    # A keys folder put back from before the rotation has lost the record: the ledger's own
    # rotation receipt, signed by the new key, still says the old key signs nothing after it.
    (state.keys_dir / "retired" / f"{leaked.keyid}.json").unlink()
    res = _cli("receipts", "verify")
    assert res.exit_code == 1 and late in res.output, res.output


def test_new_key_retires_every_earlier_key(state):
    assert _cli("switchboard", "override", "release-api", "--action", "hold", "--rationale", REASON,
                "--actor", "dana").exit_code == 0
    ring = KeyRing(state.keys_dir)
    lost = ring.signer().keyid
    (state.keys_dir / "active.key").unlink()  # lost, or stolen: either way it must not sign again
    res = _cli("receipts", "new-key")
    assert res.exit_code == 0 and f"retired 1 earlier key(s): {lost[:16]}" in res.output, res.output
    record = ring.retirements()[lost]
    assert record.successor == ring.signer().keyid
    assert _cli("switchboard", "override", "release-graph", "--action", "hold", "--rationale", REASON,
                "--actor", "dana").exit_code == 0
    assert _cli("receipts", "verify").exit_code == 0  # the old receipt, then the new key's


def test_a_rotation_cut_short_is_finished_by_its_retry_and_records_every_witnessed_ledger(state, monkeypatch):
    from ops_platform.guard.key_rotation import KeyRotateExecutor, rotate_request
    from ops_platform.receipts import witness

    store = open_store(state)
    ring = KeyRing.load_or_create(state.keys_dir)
    old = ring.signer().keyid
    witness.remember(state.keys_dir, "another-ledger", 5, "00" * 32)  # a store sharing these keys
    executor, request = KeyRotateExecutor(state.keys_dir, store), rotate_request(old, "sam", "routine")

    def dies(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:  # the key replaced, then the process died before the record
        m.setattr(KeyRing, "retire", dies)
        with pytest.raises(OSError):
            executor.apply(request.action_id, request)
    assert ring.signer().keyid != old and old not in ring.retirements()
    retry = executor.apply(request.action_id, request).detail
    assert retry["retired"] == old and "without its retirement recorded" in retry["note"]
    record = ring.retirements()[old]  # this store holds no entry yet; the other as witnessed (at least)
    assert (record.ledgers, record.witnessed) == ({}, {"another-ledger": 5})
    again = executor.apply(request.action_id, request).detail
    assert "was retired at" in again["skipped"] and set(ring.retirements()) == {old}
