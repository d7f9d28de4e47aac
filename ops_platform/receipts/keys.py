"""Ed25519 signing keys on disk: created on first use, 0600, rotatable, never logged.

Layout of ``keys_dir`` (mode 0700)::

    active.key              PEM PKCS8 private key that signs new receipts (0600)
    public/<keyid>.pub      PEM SubjectPublicKeyInfo of every key that was ever active
    retired/<keyid>.json    when a key stopped signing, and the key that took over

A retired key's private half is not kept: nothing may sign with it again, and the
retirement record lets ``receipts verify`` refuse what it signs after it was retired (a
leaked key cannot extend the ledger once its successor has signed).

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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..timezones import iso_utc

logger = logging.getLogger(__name__)

ACTIVE_KEY = "active.key"
PUBLIC_DIR = "public"
RETIRED_DIR = "retired"
_DIR_MODE = 0o700
_SECRET_MODE = 0o600


@dataclass(frozen=True)
class Retirement:
    """A key that stopped signing at ``retired_at`` (RFC 3339, UTC), replaced by ``successor``."""

    keyid: str
    retired_at: str
    successor: str


class SignerUnavailable(Exception):
    """The active signing key cannot be used right now (missing or unreadable)."""


def keyid_of(public_key: Ed25519PublicKey) -> str:
    """Fingerprint of a public key: hex sha256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


class Signer:
    """Signs bytes with one private key; its repr shows the keyid only, never the key."""

    __slots__ = ("_key", "keyid")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.keyid: str = keyid_of(private_key.public_key())

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


class InsecureKeys(ValueError):
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
            raise ValueError(f"private key {path} is not a regular file")
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
        raise ValueError(f"private key {path} is not an unencrypted PEM PKCS8 key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"private key {path} is not an Ed25519 key")
    return key


def _read_public_key(path: Path) -> Ed25519PublicKey:
    """Load ``public/<keyid>.pub`` and check that the file name is the key's fingerprint."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"public key {path} is not a PEM SubjectPublicKeyInfo key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"public key {path} is not an Ed25519 key")
    if keyid_of(key) != path.stem:
        raise ValueError(f"public key {path} is named after another key's fingerprint")
    return key


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
            signer = Signer(_read_private_key(self._active_path))
        except OSError as exc:
            raise SignerUnavailable(f"signing key {self._active_path} is unavailable: "
                                    f"{exc.strerror or type(exc).__name__}") from None
        if (self.keys_dir / RETIRED_DIR / f"{signer.keyid}.json").exists():
            raise SignerUnavailable(f"signing key {self._active_path} is key {signer.keyid[:16]}, retired: what it "
                                    "signs now would fail verification. Put the current active.key back, or run "
                                    "`ops-platform receipts new-key` after moving this one aside")
        return signer

    def verifiers(self) -> dict[str, Ed25519PublicKey]:
        """Every public key ever active, by keyid (old receipts must stay verifiable). They are
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
        return {p.stem: _read_public_key(p) for p in keys}

    def retirements(self) -> dict[str, Retirement]:
        """Every retired key's record, by keyid. Trusted as the public keys are (from a folder
        group and others cannot write: removing a record would let a retired key sign again)."""
        folder = self.keys_dir / RETIRED_DIR
        if not folder.is_dir():
            return {}
        records = sorted(folder.glob("*.json"))
        for path in (folder, *records):
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o022:
                raise InsecureKeys(f"{path} is writable by others (mode {mode:04o}): anyone could remove a "
                                   f"retirement and have a retired key sign again; run: chmod go-w {path}")
        out = {}
        for path in records:
            try:
                data = json.loads(path.read_bytes())
                record = Retirement(data["keyid"], data["retired_at"], data["successor"])
                datetime.fromisoformat(record.retired_at)
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"retirement record {path} is not JSON with keyid, retired_at (RFC 3339) "
                                 "and successor") from None
            if record.keyid != path.stem or not all(isinstance(v, str) for v in (record.successor, record.retired_at)):
                raise ValueError(f"retirement record {path} names another key ({record.keyid!r}) or is malformed")
            out[record.keyid] = record
        return out

    def rotate(self, now: datetime) -> tuple[str, str]:
        """Make a new active key and retire the old one as of ``now``; (old keyid, new keyid).

        Order matters for crash safety: the new public key is published before ``active.key``
        is atomically replaced, and the old key's retirement recorded after (until then it
        is simply no longer active); its private half goes with the replaced file.
        """
        old = _read_private_key(self._active_path)
        old_id = keyid_of(old.public_key())
        new = Ed25519PrivateKey.generate()
        new_id = self._publish(new.public_key())
        self._publish(old.public_key())
        _install(self.keys_dir, ACTIVE_KEY, _private_pem(new), replace=True)
        self._retire(old_id, new_id, now)
        logger.info("rotated signing key %s -> %s", old_id, new_id)
        return old_id, new_id

    def retire_all_but_active(self, now: datetime) -> list[str]:
        """Retire, as of ``now``, every published key other than the active one that has no
        record yet (a key lost, or stolen, and replaced by ``new-key``): the keyids retired."""
        active = keyid_of(_read_private_key(self._active_path).public_key())
        done = set(self.retirements())
        retired = [k for k in self.verifiers() if k != active and k not in done]
        for keyid in retired:
            self._retire(keyid, active, now)
        return retired

    def _retire(self, keyid: str, successor: str, now: datetime) -> None:
        folder = self.keys_dir / RETIRED_DIR
        _ensure_dir(folder)
        record = {"keyid": keyid, "retired_at": iso_utc(now), "successor": successor}
        _install(folder, f"{keyid}.json", json.dumps(record, indent=1).encode(), replace=True)

    def __repr__(self) -> str:
        return f"KeyRing({str(self.keys_dir)!r})"
