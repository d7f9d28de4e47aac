"""Rotating the signing key: the old key's private half goes, its retirement is recorded, and
whatever it signs after it was retired (a leaked copy extending the ledger) fails verification."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.control.ledger_writer import append_receipts
from ops_platform.guard.runtime import open_store
from ops_platform.receipts import build_entry, sign_checkpoint, verify_ledger
from ops_platform.receipts.canonical import strict_loads
from ops_platform.receipts.dsse import envelope_statement
from ops_platform.receipts.keys import InsecureKeys, KeyRing, SignerUnavailable
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
    old, new = ring.rotate(RETIRED_AT)
    assert old == leaked.keyid
    keys, retired = ring.verifiers(), ring.retirements()
    assert retired[old].successor == new and retired[old].retired_at == "2026-03-08T10:00:00.000000Z"

    honest = (list(entries), list(checkpoints))
    _extend(*honest, ring.signer(), 2, "2026-03-08T11:00:00Z")
    assert verify_ledger(*honest, keys, retired=retired).ok  # what the old key signed before still verifies

    # After the successor signed: an entry by the old key fails, however its tree head is dated.
    forged = (list(honest[0]), list(honest[1]))
    _extend(*forged, leaked, 1, "2026-03-08T09:00:00Z")
    report = verify_ledger(*forged, keys, retired=retired)
    assert not report.ok
    assert f"entry seq=5 (receipt {forged[0][5].receipt_id[:8]}…): signed by key {old[:16]}, retired at " \
           f"2026-03-08T10:00:00.000000Z, after its successor {new[:16]} signed entry seq=3" in report.errors
    assert any(e.startswith("checkpoint tree_size=6: signed by key") and "over entry seq=3" in e
               for e in report.errors), report.errors
    assert verify_ledger(*forged, keys).ok  # without the records it would pass: the records are what catch it

    # Before the successor signed anything: a tree head the old key signs after its retirement fails.
    early = (list(entries), list(checkpoints))
    _extend(*early, leaked, 1, "2026-03-08T10:30:00Z")
    report = verify_ledger(*early, keys, retired=retired)
    assert report.errors == [f"checkpoint tree_size=4: signed by key {old[:16]} at 2026-03-08T10:30:00Z, not "
                             "before it was retired at 2026-03-08T10:00:00.000000Z"]


def test_a_key_two_rotations_back_cannot_sign_after_the_newest(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    first = ring.signer()
    entries, checkpoints = _ledger(first, 2, (2,))
    ring.rotate(RETIRED_AT)
    ring.rotate(datetime(2026, 3, 8, 12, tzinfo=UTC))  # the second key never signed here
    _extend(entries, checkpoints, ring.signer(), 1, "2026-03-08T13:00:00Z")
    assert verify_ledger(entries, checkpoints, ring.verifiers(), retired=ring.retirements()).ok
    _extend(entries, checkpoints, first, 1, "2026-03-08T09:00:00Z")
    errors = verify_ledger(entries, checkpoints, ring.verifiers(), retired=ring.retirements()).errors
    assert any("entry seq=3" in e and f"signed by key {first.keyid[:16]}" in e and "signed entry seq=2" in e
               for e in errors), errors


def test_a_retired_key_put_back_as_the_active_key_does_not_sign(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    backup = (tmp_path / "active.key").read_bytes()
    old, _ = ring.rotate(RETIRED_AT)
    (tmp_path / "active.key").write_bytes(backup)  # a restored backup of the keys folder, say
    with pytest.raises(SignerUnavailable, match=f"is key {old[:16]}, retired"):
        ring.signer()


def test_retirement_records_are_trusted_only_from_a_folder_others_cannot_write(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    old, _ = ring.rotate(RETIRED_AT)
    folder = tmp_path / "retired"
    os.chmod(folder, 0o777)  # anyone could remove the record and have the old key sign again
    with pytest.raises(InsecureKeys, match=r"retired is writable by others .*chmod go-w"):
        ring.retirements()
    os.chmod(folder, 0o700)
    (folder / f"{old}.json").write_text(json.dumps({"keyid": old, "retired_at": "yesterday", "successor": "x"}))
    with pytest.raises(ValueError, match=f"retirement record .*{old}.json is not JSON with keyid, retired_at"):
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
    leaked = ring.signer()
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

    # Whoever holds the old key and can write the store appends a receipt of their own: refused.
    forged = make_statement([target_subject("flag", "release-api")], "resume", {"actor": "dana"})
    with store.write() as tx:
        append_receipts(store, tx, [forged], leaked, "2026-01-01T00:00:00.000000Z")
    res = _cli("receipts", "verify")
    assert res.exit_code == 1 and f"signed by key {leaked.keyid[:16]}, retired at" in res.output, res.output


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
