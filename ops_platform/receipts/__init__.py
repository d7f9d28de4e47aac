"""Signed receipts: in-toto statements in DSSE envelopes on a hash-chained, Merkle-checkpointed ledger.

Pure Python (no Dagster, no database): the control store persists ``LedgerEntry`` and
``Checkpoint`` rows and calls ``verify_ledger`` to prove nothing was changed, inserted or removed.
"""

from .canonical import canonical_json, strict_loads
from .chain import GENESIS, entry_hash
from .dsse import PAYLOAD_TYPE, VerificationError, pae, sign_envelope, verify_envelope
from .keys import KeyRing, Signer, SignerUnavailable, keyid_of
from .ledger import (
    CHECKPOINT_PAYLOAD_TYPE,
    Checkpoint,
    LedgerEntry,
    VerifyReport,
    build_entry,
    inclusion,
    sign_checkpoint,
    verify_ledger,
)
from .merkle import inclusion_proof, leaf_hash, node_hash, verify_inclusion
from .statement import (
    ACTIONS,
    STATEMENT_TYPE,
    Subject,
    file_subject,
    make_statement,
    parse_statement,
    predicate_type,
    target_subject,
)

__all__ = [
    "ACTIONS",
    "CHECKPOINT_PAYLOAD_TYPE",
    "GENESIS",
    "PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "Checkpoint",
    "KeyRing",
    "LedgerEntry",
    "Signer",
    "SignerUnavailable",
    "Subject",
    "VerificationError",
    "VerifyReport",
    "build_entry",
    "canonical_json",
    "entry_hash",
    "file_subject",
    "inclusion",
    "inclusion_proof",
    "keyid_of",
    "leaf_hash",
    "make_statement",
    "node_hash",
    "pae",
    "parse_statement",
    "predicate_type",
    "sign_checkpoint",
    "sign_envelope",
    "strict_loads",
    "target_subject",
    "verify_envelope",
    "verify_inclusion",
    "verify_ledger",
]
