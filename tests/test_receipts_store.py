"""The stored ledger: tampering with any row or byte is caught, and the CLI says where."""

from __future__ import annotations

import random
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from ops_platform.cli import main
from ops_platform.control.store import ControlStore
from ops_platform.receipts.keys import KeyRing
from ops_platform.receipts.ledger import verify_ledger

from .test_guard_protocol import Env, req

N_CASES = 1000


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ledger")
    env = Env(f"sqlite:///{tmp / 'control.sqlite'}", tmp)
    for i in range(30):
        action = ["pause", "freeze", "resume", "rollback"][i % 4]
        env.proto.submit(req(action, key=f"k{i}"))  # resume by the controller: denied, also receipted
    assert env.verify().ok
    env.store.engine.dispose()  # closing the last connection folds the WAL into the file we copy
    return tmp / "control.sqlite", env


def _tamper(db, rng: random.Random) -> str:
    con = sqlite3.connect(db)
    table = rng.choice(["ledger", "ledger", "ledger", "checkpoints"])
    cols = {"ledger": ["seq", "receipt_id", "envelope", "prev_hash", "entry_hash"],
            "checkpoints": ["tree_size", "root_hash", "envelope"]}[table]
    key = cols[0]
    keys = [r[0] for r in con.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]
    kind = rng.choice(["flip", "flip", "flip", "delete", "insert"])
    target = rng.choice(keys)
    if kind == "delete":
        con.execute(f"DELETE FROM {table} WHERE {key} = ?", [target])
    elif kind == "insert":
        row = con.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {key} = ?", [target]).fetchone()
        new_key = max(keys) + 1 if rng.random() < 0.5 else -1
        values = list(row)
        values[0] = new_key
        if table == "ledger":
            values[1] = values[1][::-1]  # receipt ids are unique: a forged copy needs its own
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
    else:
        col = rng.choice(cols)
        value = con.execute(f"SELECT {col} FROM {table} WHERE {key} = ?", [target]).fetchone()[0]
        if isinstance(value, int):
            new = value + rng.choice([-1, 1, 7])
            if new in keys and col == key:
                new = max(keys) + 5
        else:
            data = bytearray(value.encode())
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(7)  # stays ASCII, so the column stays valid text
            new = data.decode()
        con.execute(f"UPDATE {table} SET {col} = ? WHERE {key} = ?", [new, target])
        kind = f"flip {col}"
    con.commit()
    con.close()
    return f"{kind} {table} {target}"


def test_every_single_tamper_of_the_stored_ledger_is_caught(ledger_db, tmp_path):
    db, env = ledger_db
    verifiers = KeyRing.load_or_create(env.keys).verifiers()
    rng = random.Random(2026)
    missed = []
    for case in range(N_CASES):
        copy = tmp_path / f"c{case % 4}.sqlite"
        shutil.copyfile(db, copy)
        what = _tamper(copy, rng)
        store = ControlStore(f"sqlite:///{copy}")
        report = verify_ledger(store.ledger_entries(), store.checkpoints(), verifiers)
        store.engine.dispose()
        if report.ok:
            missed.append(what)
    assert not missed, missed[:10]


def test_cli_verify_passes_then_names_the_first_bad_entry(ledger_db, tmp_path, monkeypatch):
    db, env = ledger_db
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(env.keys))
    copy = tmp_path / "control.sqlite"
    shutil.copyfile(db, copy)
    url = f"sqlite:///{copy}"
    ok = CliRunner().invoke(main, ["receipts", "verify", "--store", url])
    assert ok.exit_code == 0 and "30 receipts" in ok.output
    con = sqlite3.connect(copy)
    env_text = con.execute("SELECT envelope FROM ledger WHERE seq = 12").fetchone()[0]
    con.execute("UPDATE ledger SET envelope = ? WHERE seq = 12", [env_text.replace('"sig":"', '"sig":"A', 1)])
    con.commit()
    con.close()
    bad = CliRunner().invoke(main, ["receipts", "verify", "--store", url])
    assert bad.exit_code == 1
    assert "entry seq=12" in bad.output


def test_cli_show_prints_statement_and_inclusion_proof(ledger_db, tmp_path, monkeypatch):
    import json

    db, env = ledger_db
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(env.keys))
    entry = ControlStore(f"sqlite:///{db}").ledger_entries()[7]
    res = CliRunner().invoke(main, ["receipts", "show", entry.receipt_id[:10], "--store", f"sqlite:///{db}"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["seq"] == 7 and out["statement"]["_type"] == "https://in-toto.io/Statement/v1"
    assert out["inclusion_proof"]["tree_size"] == 30 and out["inclusion_proof"]["proof"]
    assert out["signed_tree_head"]["payloadType"] == "application/vnd.summit.checkpoint+json"
    missing = CliRunner().invoke(main, ["receipts", "show", "ffffffff", "--store", f"sqlite:///{db}"])
    assert missing.exit_code == 1 and "no receipt" in missing.output
    # A mistyped store is an error, and show (like verify) creates nothing.
    typo = tmp_path / "typo" / "control.sqlite"
    res = CliRunner().invoke(main, ["receipts", "show", entry.receipt_id[:10], "--store", f"sqlite:///{typo}"])
    assert res.exit_code == 1 and not typo.parent.exists() and not (tmp_path / "home").exists()


def test_cli_dlq_list_and_replay(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(home))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "keys"))
    env = Env(f"sqlite:///{home / 'control.sqlite'}", tmp_path)
    env.signer_down()
    r = req("export_release", actor="fin", roles=("finops",), key="exp-cli")
    env.proto.submit(r)
    env.proto.retry()
    env.proto.retry()
    listed = CliRunner().invoke(main, ["dlq", "list"])
    assert listed.exit_code == 0 and "export_release" in listed.output and "signer unavailable" in listed.output
    env.signer_up()
    # The replay is decided on the roster's roles now, not the ones the request carried:
    # "fin" is on no roster, so the release is denied (with a receipt), not run.
    replay = CliRunner().invoke(main, ["dlq", "replay", "--all"])
    assert replay.exit_code == 0 and "denied" in replay.output, replay.output
    said = " ".join(replay.output.split())  # what was replayed, and since when
    assert f"{r.action_id}: export_release on {r.target_kind} {r.target_id} by fin (dead-lettered" in said, said
    assert env.store.dlq_items() == []  # replayed: back in the queue with a fresh budget
    (event,) = env.store.events(kind="dlq_replayed")
    assert '"action": "export_release"' in event["payload"]


def test_a_malformed_store_url_never_echoes_its_password(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(tmp_path / "keys"))
    for url in ("ops:S3cr:et/PW@host/db", "postgresql+psycopg2://ops:S3cr:et/PW@host@db/x"):
        res = CliRunner().invoke(main, ["receipts", "verify", "--store", url])
        assert res.exit_code == 1 and "S3cr" not in res.output and "PW" not in res.output, res.output


@pytest.mark.parametrize("envelope", ["not json", '{"payload": "!!!"}', "[]"])
def test_cli_show_reports_a_tampered_receipt_instead_of_crashing(ledger_db, tmp_path, monkeypatch, envelope):
    import json

    db, env = ledger_db
    copy = tmp_path / "copy.sqlite"
    shutil.copy(db, copy)
    monkeypatch.setenv("OPS_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPS_PLATFORM_KEYS_DIR", str(env.keys))
    con = sqlite3.connect(copy)
    con.execute("UPDATE ledger SET envelope = ? WHERE seq = 1", [envelope])
    con.commit()
    con.close()
    entry = ControlStore(f"sqlite:///{copy}").ledger_entries()[1]
    res = CliRunner().invoke(main, ["receipts", "show", entry.receipt_id[:10], "--store", f"sqlite:///{copy}"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    out = json.loads(res.output[:res.output.rindex("}") + 1])
    assert out["ledger_verified"] is False and out["envelope"] == envelope
    assert out["ledger_problems"][0].startswith("receipt seq=1 does not read")
