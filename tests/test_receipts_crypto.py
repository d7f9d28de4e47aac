"""Receipts crypto core: canonical JSON, keys, DSSE, statements, Merkle trees, the ledger.

The tamper test is the contract from the design brief: any single changed, inserted or
removed byte (or entry, or checkpoint) must make ``verify_ledger`` fail.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import math
import os
import random
import stat
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ops_platform.receipts import (
    CHECKPOINT_PAYLOAD_TYPE,
    GENESIS,
    PAYLOAD_TYPE,
    Checkpoint,
    KeyRing,
    LedgerEntry,
    Signer,
    SignerUnavailable,
    Subject,
    VerificationError,
    build_entry,
    canonical_json,
    entry_hash,
    file_subject,
    inclusion,
    keyid_of,
    make_statement,
    merkle,
    pae,
    parse_statement,
    predicate_type,
    sign_checkpoint,
    sign_envelope,
    strict_loads,
    target_subject,
    verify_envelope,
    verify_inclusion,
    verify_ledger,
)
from ops_platform.receipts.merkle import leaf_hash, node_hash

# --- helpers ----------------------------------------------------------------------------


def _signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def _statement(i: int, action: str = "pause") -> dict:
    return make_statement([target_subject("flag", f"checkout-v{i % 7}")], action,
                          {"actor": "sre@summit", "rationale": f"burn rate alert {i}",
                           "request_id": f"req-{i:04d}"})


def _ledger(signer: Signer, n: int, checkpoint_sizes: tuple[int, ...], first: int = 0
            ) -> tuple[list[LedgerEntry], list[Checkpoint]]:
    entries: list[LedgerEntry] = []
    checkpoints: list[Checkpoint] = []
    actions = ("pause", "rollback", "freeze", "resume", "override", "export_release")
    for i in range(n):
        entries.append(build_entry(entries[-1] if entries else None,
                                   _statement(first + i, actions[i % len(actions)]), signer))
        if len(entries) in checkpoint_sizes:
            checkpoints.append(sign_checkpoint(entries, signer, f"2026-03-08T{i % 24:02d}:00:00Z",
                                               checkpoints[-1] if checkpoints else None))
    return entries, checkpoints


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 MTH, written recursively exactly as the RFC states it (reference)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n]), recursive reference."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


# --- canonical JSON and statements ------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": [1, 2.5], "é": "ü"}) == '{"a":[1,2.5],"b":1,"é":"ü"}'.encode()
    assert canonical_json({"n": None, "f": [1e-7, 1e16], "s": "\n\x00"}) == b'{"f":[1e-7,1e+16],"n":null,"s":"\\n\\u0000"}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("wrap", [lambda v: {"x": [v]}, lambda v: {"a": None, "b": {"c": (1, v)}}])
def test_canonical_json_rejects_non_finite(bad, wrap):
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json(wrap(bad))


@pytest.mark.parametrize("bad", [{1: "int key"}, {"big": 2**70}, {"obj": object()}])
def test_canonical_json_refuses_what_has_no_single_form(bad):
    with pytest.raises(ValueError, match="cannot canonicalise"):
        canonical_json(bad)


def test_strict_loads_rejects_duplicate_keys_and_nan():
    with pytest.raises(ValueError, match="duplicate"):
        strict_loads(b'{"a":1,"a":2}')
    with pytest.raises(ValueError):
        strict_loads(b'{"a":NaN}')


def test_statement_round_trip_and_validation(tmp_path):
    f = tmp_path / "invoice.parquet"
    f.write_bytes(os.urandom(3 * (1 << 20) + 17))  # several read chunks
    subj = file_subject(f)
    assert subj == Subject("invoice.parquet", hashlib.sha256(f.read_bytes()).hexdigest())
    target = target_subject("flag", "checkout-v2")
    assert target.name == "flag:checkout-v2"
    assert target.sha256 == hashlib.sha256(b'{"id":"checkout-v2","kind":"flag"}').hexdigest()
    stmt = make_statement([subj, target], "export_release", {"tenant": "t-001"})
    assert stmt["predicateType"] == "https://summit.example/receipts/export_release/v1"
    assert parse_statement(canonical_json(stmt)) == stmt
    with pytest.raises(ValueError):
        predicate_type("delete_everything")
    for broken in ({**stmt, "_type": "x"}, {**stmt, "subject": []},
                   {**stmt, "subject": [{"name": "a", "digest": {"sha256": "ABC"}}]},
                   {**stmt, "predicateType": "https://example.com/other/v1"}):
        with pytest.raises(ValueError):
            parse_statement(canonical_json(broken))


# --- DSSE --------------------------------------------------------------------------------


def test_pae_vector():
    assert (pae("http://example.com/HelloWorld", b"hello world")
            == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


def test_envelope_round_trip_and_any_payload_change_is_rejected():
    signer = _signer()
    verifiers = {signer.keyid: signer.public_key()}
    payload = canonical_json(_statement(1))
    env = sign_envelope(payload, signer)
    assert env["payloadType"] == PAYLOAD_TYPE and env["signatures"][0]["keyid"] == signer.keyid
    assert verify_envelope(env, verifiers) == payload
    for pos in range(len(payload)):
        changed = bytearray(payload)
        changed[pos] ^= 1 << (pos % 8)
        forged = {**env, "payload": base64.b64encode(bytes(changed)).decode()}
        with pytest.raises(VerificationError):
            verify_envelope(forged, verifiers)


def test_envelope_rejects_wrong_type_unknown_key_and_malformed():
    signer = _signer()
    verifiers = {signer.keyid: signer.public_key()}
    env = sign_envelope(b"{}", signer, payload_type=CHECKPOINT_PAYLOAD_TYPE)
    with pytest.raises(VerificationError, match="payload type"):
        verify_envelope(env, verifiers)
    with pytest.raises(VerificationError):
        verify_envelope(env, {_signer().keyid: _signer().public_key()}, CHECKPOINT_PAYLOAD_TYPE)
    retyped = {**env, "payloadType": PAYLOAD_TYPE}  # the PAE binds the type to the signature
    with pytest.raises(VerificationError):
        verify_envelope(retyped, verifiers)
    non_canonical = {**env, "payload": "e31="}  # decodes to b"{}" but padding bits are set
    with pytest.raises(VerificationError, match="canonical"):
        verify_envelope(non_canonical, verifiers, CHECKPOINT_PAYLOAD_TYPE)
    for broken in ([], {}, {**env, "signatures": []}, {**env, "payload": "!!"},
                   {**env, "signatures": [{"keyid": signer.keyid, "sig": 5}]}):
        with pytest.raises(VerificationError):
            verify_envelope(broken, verifiers, CHECKPOINT_PAYLOAD_TYPE)


# --- keys --------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keyring_creates_private_files_0600_in_0700_dir(tmp_path, monkeypatch):
    created = []
    real_open = os.open

    def spy_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT and not str(path).endswith(".rotate.lock"):  # the rotation's lock holds nothing
            created.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    old_umask = os.umask(0)  # even a permissive umask must not widen the modes
    try:
        ring = KeyRing.load_or_create(tmp_path / "keys")
        ring.rotate(datetime(2026, 3, 8, 12, tzinfo=UTC), {})
    finally:
        os.umask(old_umask)
    assert created and all(f & os.O_EXCL and m == 0o600 for f, m in created)
    keys = tmp_path / "keys"
    assert _mode(keys) == 0o700
    assert _mode(keys / "active.key") == 0o600
    assert all(_mode(p) == 0o600 for p in (keys / "retired").iterdir())
    assert all(b"PRIVATE" not in p.read_bytes() for p in (keys / "retired").iterdir())  # no private half kept
    assert b"BEGIN PRIVATE KEY" in (keys / "active.key").read_bytes()
    signer = ring.signer()
    assert (keys / "public" / f"{signer.keyid}.pub").exists()
    assert keyid_of(signer.public_key()) == signer.keyid and len(signer.keyid) == 64


def test_keyring_is_stable_and_refuses_readable_key(tmp_path):
    first = KeyRing.load_or_create(tmp_path).signer().keyid
    assert KeyRing.load_or_create(tmp_path).signer().keyid == first
    os.chmod(tmp_path / "active.key", 0o644)
    with pytest.raises(ValueError, match=r"active\.key.*mode 0644"):
        KeyRing.load_or_create(tmp_path)
    with pytest.raises(ValueError, match=r"active\.key"):
        KeyRing(tmp_path).signer()
    # A key folder others may write: anyone could swap the key in it.
    os.chmod(tmp_path / "active.key", 0o600)
    os.chmod(tmp_path, 0o777)
    with pytest.raises(ValueError, match=r"writable by others \(mode 0777\).*chmod 700"):
        KeyRing.load_or_create(tmp_path)
    os.chmod(tmp_path, 0o700)
    assert KeyRing.load_or_create(tmp_path).signer().keyid == first
    # The public keys are the verifier's trust anchors: a folder others may write is refused
    # there too (anyone could add a key and re-sign a forged ledger).
    assert list(KeyRing(tmp_path).verifiers()) == [first]
    for path in (tmp_path / "public", tmp_path / "public" / f"{first}.pub"):
        before = stat.S_IMODE(path.stat().st_mode)
        os.chmod(path, before | 0o002)
        with pytest.raises(ValueError, match=r"writable by others .*forged receipts verify; run: chmod go-w"):
            KeyRing(tmp_path).verifiers()
        os.chmod(path, before)


def test_missing_key_is_signer_unavailable(tmp_path):
    ring = KeyRing.load_or_create(tmp_path)
    (tmp_path / "active.key").unlink()
    with pytest.raises(SignerUnavailable):
        ring.signer()


def test_rotation_keeps_old_receipts_verifiable(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    ring = KeyRing.load_or_create(tmp_path)
    old = ring.signer()
    entries, _ = _ledger(old, 3, ())
    retired_id, new_id = ring.rotate(datetime(2026, 3, 8, 11, tzinfo=UTC), {})
    assert retired_id == old.keyid and new_id != old.keyid and ring.signer().keyid == new_id
    assert list((tmp_path / "retired").iterdir()) == [tmp_path / "retired" / f"{old.keyid}.json"]
    entries.append(build_entry(entries[-1], _statement(3), ring.signer()))
    checkpoint = sign_checkpoint(entries, ring.signer(), "2026-03-08T12:00:00Z")
    reloaded = KeyRing.load_or_create(tmp_path)
    assert set(reloaded.verifiers()) == {old.keyid, new_id}
    assert verify_ledger(entries, [checkpoint], reloaded.verifiers()).ok
    only_new = {new_id: reloaded.verifiers()[new_id]}
    assert not verify_ledger(entries, [checkpoint], only_new).ok
    assert "PRIVATE KEY" not in caplog.text and "PRIVATE" not in repr(ring.signer())


# --- Merkle ------------------------------------------------------------------------------

# RFC 6962 test leaves and roots (as used by certificate-transparency implementations).
_CT_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                         "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
_CT_ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
             "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
             "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
             "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
             "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
             "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]


def _hand_roots(d: list[bytes]) -> dict[int, bytes]:
    """The tree shapes of sizes 1..9 written out by hand from RFC 6962 2.1."""
    h = [leaf_hash(x) for x in d]
    n01, n23, n45, n67 = node_hash(h[0], h[1]), node_hash(h[2], h[3]), node_hash(h[4], h[5]), \
        node_hash(h[6], h[7])
    n0123, n4567 = node_hash(n01, n23), node_hash(n45, n67)
    return {1: h[0], 2: n01, 3: node_hash(n01, h[2]), 4: n0123, 5: node_hash(n0123, h[4]),
            6: node_hash(n0123, n45), 7: node_hash(n0123, node_hash(n45, h[6])),
            8: node_hash(n0123, n4567), 9: node_hash(node_hash(n0123, n4567), h[8])}


def test_merkle_roots_of_small_trees():
    assert merkle.root([]) == hashlib.sha256(b"").digest()
    data = [f"leaf-{i}".encode() for i in range(9)]
    for size, expected in _hand_roots(data).items():
        assert merkle.root(data[:size]) == expected, size
    for size, expected in enumerate(_CT_ROOTS, start=1):
        assert merkle.root(_CT_LEAVES[:size]).hex() == expected
    for size in range(0, 70):
        leaves = [os.urandom(8) for _ in range(size)]
        assert merkle.root(leaves) == _mth(leaves)
        tree = merkle.CompactRange()
        tree.extend(leaves)
        assert tree.root() == merkle.root(leaves)


def test_merkle_root_scales_linearly():
    leaves = [i.to_bytes(32, "big") for i in range(100_000)]
    assert len(merkle.root(leaves)) == 32


def test_inclusion_proofs_for_every_index():
    for size in range(1, 41):
        leaves = [f"entry-{i}".encode() for i in range(size)]
        tree_root = merkle.root(leaves)
        for index in range(size):
            proof = merkle.inclusion_proof(index, leaves)
            assert proof == _path(index, leaves)
            assert verify_inclusion(leaves[index], index, size, proof, tree_root)
            assert not verify_inclusion(b"forged", index, size, proof, tree_root)
            if size > 1:
                other = (index + 1) % size
                assert not verify_inclusion(leaves[index], other, size, proof, tree_root)
                assert not verify_inclusion(leaves[other], index, size, proof, tree_root)
            bigger_root = merkle.root([*leaves, b"appended"])
            assert not verify_inclusion(leaves[index], index, size, proof, bigger_root)
            if proof:
                assert not verify_inclusion(leaves[index], index, size, proof[:-1], tree_root)
            assert not verify_inclusion(leaves[index], size, size, proof, tree_root)
    with pytest.raises(IndexError):
        merkle.inclusion_proof(3, [b"a", b"b"])


# --- ledger ------------------------------------------------------------------------------

_SIZES = (10, 25, 40, 60)


@pytest.fixture(scope="module")
def ledger():
    signer = _signer()
    entries, checkpoints = _ledger(signer, 60, _SIZES)
    return signer, entries, checkpoints, {signer.keyid: signer.public_key()}


def test_ledger_of_60_entries_verifies(ledger):
    signer, entries, checkpoints, verifiers = ledger
    report = verify_ledger(entries, checkpoints, verifiers)
    assert report.ok and report.first_bad is None and report.errors == []
    assert (report.entries, report.checkpoints) == (60, 4)
    assert entries[0].prev_hash == GENESIS.hex()
    for e in entries:
        payload = verify_envelope(strict_loads(e.envelope), verifiers)
        assert e.receipt_id == hashlib.sha256(payload).hexdigest()
        assert e.entry_hash == entry_hash(bytes.fromhex(e.prev_hash), e.seq, e.receipt_id,
                                          e.envelope.encode()).hex()
    assert verify_ledger([], [], verifiers).ok


def test_inclusion_of_ledger_entries(ledger):
    _, entries, checkpoints, _ = ledger
    for seq in (0, 17, 59):
        proof = inclusion(entries, seq)
        assert proof["tree_size"] == 60 and proof["root"] == checkpoints[-1].root_hash
        assert verify_inclusion(bytes.fromhex(entries[seq].entry_hash), seq, 60,
                                [bytes.fromhex(p) for p in proof["proof"]],
                                bytes.fromhex(proof["root"]))


def test_first_bad_names_the_entry_and_checkpoint(ledger):
    signer, entries, checkpoints, verifiers = ledger
    env = strict_loads(entries[12].envelope)
    stmt = strict_loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["rationale"] = "nothing to see"
    env["payload"] = base64.b64encode(canonical_json(stmt)).decode()
    bad = dataclasses.replace(entries[12], envelope=canonical_json(env).decode())
    report = verify_ledger([*entries[:12], bad, *entries[13:]], checkpoints, verifiers)
    assert report.first_bad == f"entry seq=12 (receipt {entries[12].receipt_id[:8]}…): " \
                               "signature does not verify"
    other, _ = _ledger(signer, 40, (), first=500)
    forged_cp = sign_checkpoint(other, signer, "2026-03-08T00:00:00Z")
    report = verify_ledger(entries, [*checkpoints[:2], forged_cp, checkpoints[3]], verifiers)
    assert report.first_bad == "checkpoint tree_size=40: root mismatch"
    report = verify_ledger(entries, [], verifiers)
    assert not report.ok and "no checkpoint" in report.first_bad


def test_changed_subject_file_is_reported(tmp_path):
    signer = _signer()
    export = tmp_path / "tenant-001.csv"
    export.write_text("tenant,amount\nt-001,12.30\n")
    stmt = make_statement([file_subject(export), target_subject("tenant", "t-001")],
                          "export_release", {"rows": 1})
    entries = [build_entry(None, stmt, signer)]
    checkpoints = [sign_checkpoint(entries, signer, "2026-03-08T00:00:00Z")]
    verifiers = {signer.keyid: signer.public_key()}

    def digest(subject: Subject) -> str | None:
        path = tmp_path / subject.name
        return file_subject(path).sha256 if path.is_file() else None

    assert verify_ledger(entries, checkpoints, verifiers, digest).ok
    export.write_text("tenant,amount\nt-001,1.30\n")
    report = verify_ledger(entries, checkpoints, verifiers, digest)
    assert not report.ok and "tenant-001.csv" in report.first_bad
    assert verify_ledger(entries, checkpoints, verifiers).ok  # no file check requested


# --- randomized tampering ----------------------------------------------------------------

_ENTRY_FIELDS = ("seq", "receipt_id", "envelope", "prev_hash", "entry_hash")
_CHECKPOINT_FIELDS = ("tree_size", "root_hash", "envelope")


def _flip(value: int | str, rng: random.Random) -> int | str:
    """Flip one random bit: of the integer, or of one random byte of the string's UTF-8."""
    if isinstance(value, int):
        return value ^ (1 << rng.randrange(16))
    raw = bytearray(value.encode("utf-8"))
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    return raw.decode("utf-8", errors="surrogateescape")


def _flip_field(items: list, fields: tuple[str, ...], rng: random.Random) -> str:
    i = rng.randrange(len(items))
    field = rng.choice(fields)
    items[i] = dataclasses.replace(items[i], **{field: _flip(getattr(items[i], field), rng)})
    return f"flip {field} of #{i}"


_KINDS = ("flip entry", "flip checkpoint", "delete entry", "delete checkpoint", "duplicate",
          "forge", "swap")


def _tamper(rng, entries, checkpoints, signer, attacker) -> tuple[str, str]:
    """Apply one random tampering in place; returns (kind, detail) for failure messages."""
    kind = _KINDS[rng.randrange(len(_KINDS))]
    if kind == "flip entry":
        return kind, _flip_field(entries, _ENTRY_FIELDS, rng)
    if kind == "flip checkpoint":
        return kind, _flip_field(checkpoints, _CHECKPOINT_FIELDS, rng)
    if kind == "delete entry":
        return kind, f"seq {entries.pop(rng.randrange(len(entries))).seq}"
    if kind == "delete checkpoint":
        return kind, f"tree_size {checkpoints.pop().tree_size}"
    if kind == "swap":
        i = rng.randrange(len(entries) - 1)
        entries[i], entries[i + 1] = entries[i + 1], entries[i]
        return kind, f"positions {i},{i + 1}"
    pos = rng.randrange(len(entries) + 1)
    if kind == "duplicate":
        entries.insert(pos, entries[rng.randrange(len(entries))])
        return kind, f"at {pos}"
    forger = rng.choice((signer, attacker))  # "forge": a well-formed entry, validly chained
    entries.insert(pos, build_entry(entries[pos - 1] if pos else None, _statement(1000 + pos),
                                    forger))
    return kind, f"at {pos} with the {'real' if forger is signer else 'attacker'} key"


def test_any_single_tampering_is_detected(ledger):
    signer, entries, checkpoints, verifiers = ledger
    attacker = _signer()
    missed, seen = [], Counter()
    for case in range(1200):
        rng = random.Random(case)
        tampered_entries, tampered_checkpoints = list(entries), list(checkpoints)
        kind, detail = _tamper(rng, tampered_entries, tampered_checkpoints, signer, attacker)
        seen[kind] += 1
        report = verify_ledger(tampered_entries, tampered_checkpoints, verifiers)
        if report.ok or not report.first_bad:
            missed.append(f"case {case}: {kind} {detail}")
    assert not missed, missed[:20]
    assert set(seen) == set(_KINDS) and min(seen.values()) >= 100, seen


def test_fast_envelope_text_is_the_canonical_json_of_the_envelope():
    from ops_platform.receipts.dsse import envelope_text, pae

    signer = _signer()
    for i in range(50):
        payload = canonical_json({"n": i, "text": "é" * (i % 7), "nested": {"b": [1, 2.5, None], "a": True}})
        fast = envelope_text(payload, signer.sign(pae(PAYLOAD_TYPE, payload)), signer.keyid)
        assert fast == canonical_json(sign_envelope(payload, signer)).decode()
