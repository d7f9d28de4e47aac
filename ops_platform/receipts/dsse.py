"""DSSE v1 envelopes (https://github.com/secure-systems-lab/dsse).

The signature covers the pre-authentication encoding (PAE) of the payload type and the
payload, so a signature for one type can never be replayed as another, and the payload is
verified as the exact bytes that were signed, before anyone parses it.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature

from .canonical import canonical_json, strict_loads
from .keys import Signer, Verifier

PAYLOAD_TYPE = "application/vnd.in-toto+json"


class VerificationError(Exception):
    """The envelope is malformed, unsigned by a known key, or of the wrong payload type."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 SP len(type) SP type SP len(payload) SP payload, lengths as ASCII decimals."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def sign_envelope(payload: bytes, signer: Signer, payload_type: str = PAYLOAD_TYPE) -> dict:
    """Sign ``payload`` into a single-signature DSSE envelope (standard base64)."""
    sig = signer.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": signer.keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=.-_;")


@functools.lru_cache(maxsize=64)
def _plain(text: str) -> bool:
    """True if ``text`` needs no JSON escaping (cached: keyids and media types repeat)."""
    return _SAFE.issuperset(text)


def envelope_text(payload: bytes, sig: bytes, keyid: str, payload_type: str = PAYLOAD_TYPE) -> str:
    """Canonical envelope JSON from a signature made elsewhere (e.g. on another thread).

    Every value is base64, hex or a plain media type, so none needs escaping and the keys
    are already in sorted order: this is byte-for-byte what ``canonical_json`` would give,
    at a fraction of the cost on the receipt-signing hot path.
    """
    b64sig = base64.b64encode(sig).decode("ascii")
    body = base64.b64encode(payload).decode("ascii")
    if not (_plain(payload_type) and _plain(keyid)):
        envelope = {"payload": body, "payloadType": payload_type,
                    "signatures": [{"keyid": keyid, "sig": b64sig}]}
        return canonical_json(envelope).decode("utf-8")
    return (f'{{"payload":"{body}","payloadType":"{payload_type}",'
            f'"signatures":[{{"keyid":"{keyid}","sig":"{b64sig}"}}]}}')


def _b64decode(value: Any, field: str) -> bytes:
    """Decode standard or URL-safe base64, accepting only its canonical (padded) spelling.

    Python ignores non-zero padding bits, so several strings decode to the same bytes;
    refusing all but the canonical one keeps envelopes byte-for-byte unambiguous.
    """
    if not isinstance(value, str):
        raise VerificationError(f"{field} is not a string")
    urlsafe = "-" in value or "_" in value
    try:
        raw = value.encode("ascii")
        data = (base64.urlsafe_b64decode(raw) if urlsafe
                else base64.b64decode(raw, validate=True))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise VerificationError(f"{field} is not valid base64") from None
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    if encoded != raw:
        raise VerificationError(f"{field} is not canonical base64")
    return data


def _signatures(envelope: dict) -> list[tuple[str, bytes]]:
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise VerificationError("envelope has no signatures")
    out = []
    for i, entry in enumerate(sigs):
        if not isinstance(entry, dict) or not isinstance(entry.get("keyid", ""), str):
            raise VerificationError(f"signature {i} is malformed")
        out.append((entry.get("keyid", ""), _b64decode(entry.get("sig"), f"signature {i}")))
    return out


def verify_envelope(envelope: dict, verifiers: Mapping[str, Verifier],
                    payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Return the payload bytes if a signature by a known keyid verifies over its PAE.

    Signatures whose keyid is absent or unknown are ignored (DSSE keyids are hints); at
    least one must verify, and the envelope's payload type must equal ``payload_type``.
    """
    return verify_envelope_by(envelope, verifiers, payload_type)[0]


def verify_envelope_by(envelope: dict, verifiers: Mapping[str, Verifier],
                       payload_type: str = PAYLOAD_TYPE) -> tuple[bytes, str]:
    """``verify_envelope``, with the keyid whose signature verified."""
    if not isinstance(envelope, dict):
        raise VerificationError("envelope is not a JSON object")
    env_type = envelope.get("payloadType")
    if not isinstance(env_type, str):
        raise VerificationError("envelope has no payloadType")
    payload = _b64decode(envelope.get("payload"), "payload")
    message = pae(env_type, payload)
    unknown, known = [], 0
    for keyid, sig in _signatures(envelope):
        key = verifiers.get(keyid)
        if key is None:
            unknown.append(keyid)
            continue
        known += 1
        try:
            key.verify(sig, message)
        except InvalidSignature:
            continue
        if env_type != payload_type:
            raise VerificationError(f"payload type {env_type!r} is not {payload_type!r}")
        return payload, keyid
    if unknown and not known:  # not a bad signature: a key this verifier does not have
        raise VerificationError(f"unknown key id {', '.join(k[:16] or '(none)' for k in unknown)} "
                                f"(not among the {len(verifiers)} public key(s) given)")
    raise VerificationError("signature does not verify")


def envelope_statement(envelope: str | dict, verifiers: Mapping[str, Verifier] | None = None) -> dict:
    """The statement an envelope (a dict or its JSON text, as the ledger stores it) carries.
    Without ``verifiers``, decoded without checking signatures: for reading receipts. With
    them (the public keys), only if a signature verifies (``verify_envelope``): for whatever
    acts on what a receipt says."""
    env = strict_loads(envelope) if isinstance(envelope, str) else envelope
    if not isinstance(env, dict):
        raise VerificationError("envelope is not a JSON object")
    payload = (verify_envelope(env, dict(verifiers)) if verifiers is not None
               else _b64decode(env.get("payload"), "payload"))
    statement = strict_loads(payload)
    if not isinstance(statement, dict):
        raise VerificationError("payload is not a JSON object")
    return statement
