"""Ed25519 signing keys on disk: created on first use, 0600, rotatable, never logged.

Layout of ``keys_dir`` (mode 0700)::

    active.key              PEM PKCS8 private key that signs new receipts (0600)
    public/<keyid>.pub      PEM SubjectPublicKeyInfo of every key that was ever active
    retired/<keyid>.json    when a key stopped signing, the key that took over, and how many
                            entries each known ledger held then

A retired key's private half is not kept: nothing may sign with it again. Its public half
still verifies what it signed before (``RetiredKey``), and only that: an entry past the
ledger sizes its record names, in any ledger, is refused by ``receipts verify`` and by
whatever acts on a receipt (a leaked key cannot extend a ledger).

Every file is written to a temporary name created with ``O_CREAT|O_EXCL`` and mode 0600
and then renamed or linked into place, so no key is ever world-readable (not even for a
moment) and a crash never leaves a half-written key behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..files import exclusive_lock
from ..timezones import iso_utc

logger = logging.getLogger(__name__)

ACTIVE_KEY = "active.key"
PUBLIC_DIR = "public"
RETIRED_DIR = "retired"
_DIR_MODE = 0o700
_SECRET_MODE = 0o600


@dataclass(frozen=True)
class Retirement:
    """A key that stopped signing at ``retired_at`` (RFC 3339, UTC), replaced by ``successor``;
    ``ledgers``: per ledger (its first entry's hash) counted then, how many entries it held:
    the key signed entries 0 to n - 1 there, and none after; ``witnessed``: other ledgers,
    at least that many entries (as witnessed, which may lag)."""

    keyid: str
    retired_at: str
    successor: str
    ledgers: dict[str, int] = field(default_factory=dict)
    witnessed: dict[str, int] = field(default_factory=dict)  # at least this many (the witness lags)

    def signed_before(self, ledger: str | None, seq: int) -> bool | None:
        """Whether entry ``seq`` of ``ledger`` comes before the retirement (None: its record
        cannot tell: a ledger not counted then, or past what was witnessed of it)."""
        if ledger is None:
            return None
        if (bound := self.ledgers.get(ledger)) is not None:
            return seq < bound
        return True if seq < self.witnessed.get(ledger, 0) else None


class RetiredKey:
    """A retired key's public half as a verifier: it checks signatures as the key does, and
    carries the retirement, so whoever reads a receipt it signed can tell whether it signed
    before it was retired."""

    __slots__ = ("key", "retirement")

    def __init__(self, key: Ed25519PublicKey, retirement: Retirement) -> None:
        self.key, self.retirement = key, retirement

    def verify(self, signature: bytes, data: bytes) -> None:
        self.key.verify(signature, data)

    def __repr__(self) -> str:
        return f"RetiredKey({self.retirement.keyid[:16]!r}, retired_at={self.retirement.retired_at!r})"



# What verifies a signature: a public key, or a retired one that says when it was retired.
Verifier = Ed25519PublicKey | RetiredKey

class SignerUnavailable(Exception):
    """The active signing key cannot be used right now (missing or unreadable)."""


def keyid_of(public_key: Ed25519PublicKey) -> str:
    """Fingerprint of a public key: hex sha256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


class Signer:
    """Signs bytes with one private key; its repr shows the keyid only, never the key.
    ``retired_dir``: where its retirement would be recorded (``is_retired``)."""

    __slots__ = ("_key", "keyid", "_retired_dir")

    def __init__(self, private_key: Ed25519PrivateKey, retired_dir: Path | None = None) -> None:
        self._key = private_key
        self.keyid: str = keyid_of(private_key.public_key())
        self._retired_dir = retired_dir

    def is_retired(self) -> bool:
        """Whether this key has been retired since it was read (a rotation meanwhile)."""
        return self._retired_dir is not None and (self._retired_dir / f"{self.keyid}.json").exists()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"Signer(keyid={self.keyid!r})"


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class KeyFileError(ValueError):
    """A key file or retirement record that does not read as one (corrupt, of another kind):
    a configuration error naming the file, not an outage."""


class InsecureKeys(KeyFileError):
    """A key folder or private key others may write or read: refused, with the chmod to run."""


def _ensure_dir(path: Path) -> None:
    """Create ``path`` as 0700 if missing (chmod too, because mkdir honours the umask); an
    existing folder that group or others may write is refused (anyone could swap the key)."""
    try:
        path.mkdir(mode=_DIR_MODE, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a directory") from None
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o022:
            raise InsecureKeys(f"key folder {path} is writable by others (mode {mode:04o}): anyone could swap "
                               f"the signing key; run: chmod 700 {path}") from None
        return
    os.chmod(path, _DIR_MODE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh 0600 file in ``directory`` (exclusive create) and fsync it."""
    tmp = directory / f".tmp-{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _SECRET_MODE)
    try:
        os.fchmod(fd, _SECRET_MODE)  # exact mode whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _install(directory: Path, name: str, data: bytes, *, replace: bool) -> bool:
    """Atomically place ``data`` at ``directory/name``; False if it existed and not ``replace``."""
    tmp = _write_temp(directory, data)
    try:
        if replace:
            os.replace(tmp, directory / name)
        else:
            try:
                os.link(tmp, directory / name)  # atomic create-if-absent
            except FileExistsError:
                return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)
    return True


def _read_private_key(path: Path) -> Ed25519PrivateKey:
    """Load a private key file, refusing it if group or others have any access to it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)  # check the file we actually read, not a path that may change
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"private key {path} is not a regular file")
        if st.st_mode & 0o077:
            raise InsecureKeys(f"private key {path} has insecure mode "
                             f"{stat.S_IMODE(st.st_mode):04o}; run: chmod 600 {path}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            pem = fh.read()
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"private key {path} is not an unencrypted PEM PKCS8 key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"private key {path} is not an Ed25519 key")
    return key


def _read_public_key(path: Path) -> Ed25519PublicKey:
    """Load ``public/<keyid>.pub`` and check that the file name is the key's fingerprint."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"public key {path} is not a PEM SubjectPublicKeyInfo key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {path} is not an Ed25519 key")
    if keyid_of(key) != path.stem:
        raise KeyFileError(f"public key {path} is named after another key's fingerprint")
    return key


def _read_retirement(path: Path) -> Retirement:
    """One ``retired/<keyid>.json``; ValueError naming the file for anything else."""
    def bad(why: str) -> ValueError:
        return KeyFileError(f"retirement record {path} {why}: it should be JSON with keyid, retired_at (RFC 3339 "
                          "with a time zone), successor and ledgers; put back the record the rotation wrote")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise bad(f"does not read ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("keyid", "retired_at", "successor")):
        raise bad("is not an object with text keyid, retired_at and successor")
    ledgers, witnessed = data.get("ledgers", {}), data.get("witnessed", {})
    if not all(isinstance(m, dict) and all(type(n) is int and n >= 0 for n in m.values()) for m in (ledgers, witnessed)):
        raise bad("has ledgers that are not entry counts")
    if data["keyid"] != path.stem:
        raise bad(f"names another key ({data['keyid'][:16]!r})")
    try:
        if datetime.fromisoformat(data["retired_at"]).tzinfo is None:
            raise ValueError
    except ValueError:
        raise bad(f"has retired_at {data['retired_at']!r}, not a time with its zone") from None
    return Retirement(data["keyid"], data["retired_at"], data["successor"], dict(ledgers), dict(witnessed))


class KeyRing:
    """The signing keys in one directory: the active key plus every public key ever used."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = Path(keys_dir)

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> KeyRing:
        """Open ``keys_dir``, creating it and a first key if needed; validate the active key."""
        ring = cls(keys_dir)
        _ensure_dir(ring.keys_dir)
        _ensure_dir(ring._public_dir)
        if not ring._active_path.exists():
            new = Ed25519PrivateKey.generate()
            if _install(ring.keys_dir, ACTIVE_KEY, _private_pem(new), replace=False):
                logger.info("created signing key %s in %s", keyid_of(new.public_key()),
                            ring.keys_dir)
        ring._publish(_read_private_key(ring._active_path).public_key())
        return ring

    def has_active_key(self) -> bool:
        return self._active_path.exists()

    @property
    def _active_path(self) -> Path:
        return self.keys_dir / ACTIVE_KEY

    @property
    def _public_dir(self) -> Path:
        return self.keys_dir / PUBLIC_DIR

    def _publish(self, key: Ed25519PublicKey) -> str:
        """Make sure ``public/<keyid>.pub`` exists so receipts by ``key`` stay verifiable."""
        keyid = keyid_of(key)
        if not (self._public_dir / f"{keyid}.pub").exists():
            _install(self._public_dir, f"{keyid}.pub", _public_pem(key), replace=True)
        return keyid

    def signer(self) -> Signer:
        """A signer for the key that is active now (re-read, so rotations elsewhere apply).

        Raises SignerUnavailable if the key file is missing or unreadable, or is a retired
        key (a backup of an old ``active.key`` put back), and ValueError if it exists but is
        insecure or corrupt (a configuration error, not an outage).
        """
        try:
            signer = Signer(_read_private_key(self._active_path), self.keys_dir / RETIRED_DIR)
        except OSError as exc:
            raise SignerUnavailable(f"signing key {self._active_path} is unavailable: "
                                    f"{exc.strerror or type(exc).__name__}") from None
        if signer.is_retired():
            raise SignerUnavailable(f"signing key {self._active_path} is key {signer.keyid[:16]}, retired: what it "
                                    "signs now would fail verification (a backup put back?). Put the current "
                                    "active.key back, or move this one aside and run `ops-platform receipts new-key`")
        return signer

    def verifiers(self) -> dict[str, Verifier]:
        """Every public key ever active, by keyid (old receipts must stay verifiable), a retired
        one as a ``RetiredKey`` (it verifies only what it signed before its retirement). They are
        the trust anchors: a folder or key file that group or others may write is refused, as
        signing refuses it (anyone could add a key, re-sign a forged ledger and have it verify)."""
        if not self._public_dir.is_dir():
            return {}
        keys = sorted(self._public_dir.glob("*.pub"))
        for path in (self.keys_dir, self._public_dir, *keys):
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o022:
                raise InsecureKeys(f"{path} is writable by others (mode {mode:04o}): anyone could add or swap a "
                                   f"public key and have forged receipts verify; run: chmod go-w {path}")
        retired = self.retirements()
        return {p.stem: RetiredKey(_read_public_key(p), retired[p.stem]) if p.stem in retired else _read_public_key(p)
                for p in keys}

    def retirements(self) -> dict[str, Retirement]:
        """Every retired key's record, by keyid. Trusted as the public keys are (from a folder
        group and others cannot write: removing a record would let a retired key sign again);
        a record that does not read is an error naming it, never a key taken as not retired."""
        folder = self.keys_dir / RETIRED_DIR
        if not folder.is_dir():
            return {}
        records = sorted(folder.glob("*.json"))
        for path in (folder, *records):
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o022:
                raise InsecureKeys(f"{path} is writable by others (mode {mode:04o}): anyone could remove a "
                                   f"retirement and have a retired key sign again; run: chmod go-w {path}")
        return {r.keyid: r for r in map(_read_retirement, records)}

    def rotate(self, now: datetime, ledgers: dict[str, int], expected: str | None = None,
               witnessed: dict[str, int] | None = None) -> tuple[str, str] | None:
        """Make a new active key and retire the old one as of ``now``; (old keyid, new keyid),
        or None when the active key is not ``expected`` (another rotation got there first).
        ``ledgers``, ``witnessed``: the ledgers' sizes now (``Retirement``).

        One rotation at a time (a lock in the folder). Crash safety: the new public key is
        published before ``active.key`` is atomically replaced (the old private half goes
        with the file), and the old key's retirement recorded after: a crash in between
        leaves it replaced, no longer signing, but not yet retired, which the retried
        rotation (``KeyRotateExecutor``) records. A signer that read the old key meanwhile
        finds it retired when it appends (``Signer.is_retired``) and signs nothing.
        """
        with exclusive_lock(self.keys_dir / ".rotate.lock"):
            old = _read_private_key(self._active_path)
            old_id = keyid_of(old.public_key())
            if expected is not None and old_id != expected:
                return None
            new = Ed25519PrivateKey.generate()
            new_id = self._publish(new.public_key())
            self._publish(old.public_key())
            _install(self.keys_dir, ACTIVE_KEY, _private_pem(new), replace=True)
            self.retire(old_id, new_id, now, ledgers, witnessed)
        logger.info("rotated signing key %s -> %s", old_id, new_id)
        return old_id, new_id

    def retire_all_but_active(self, now: datetime, ledgers: dict[str, int],
                              witnessed: dict[str, int] | None = None) -> list[str]:
        """Retire, as of ``now``, every published key other than the active one that has no
        record yet (a key lost, or stolen, and replaced by ``new-key``): the keyids retired."""
        active = keyid_of(_read_private_key(self._active_path).public_key())
        done = set(self.retirements())
        retired = [k for k in self.verifiers() if k != active and k not in done]
        for keyid in retired:
            self.retire(keyid, active, now, ledgers, witnessed)
        return retired

    def retire(self, keyid: str, successor: str, now: datetime, ledgers: dict[str, int],
               witnessed: dict[str, int] | None = None) -> None:
        """Record ``keyid`` as retired (see ``Retirement``)."""
        folder = self.keys_dir / RETIRED_DIR
        _ensure_dir(folder)
        record = {"keyid": keyid, "retired_at": iso_utc(now), "successor": successor,
                  "ledgers": dict(sorted(ledgers.items())),
                  "witnessed": dict(sorted((k, n) for k, n in (witnessed or {}).items() if k not in ledgers))}
        _install(folder, f"{keyid}.json", json.dumps(record, indent=1).encode(), replace=True)

    def __repr__(self) -> str:
        return f"KeyRing({str(self.keys_dir)!r})"
