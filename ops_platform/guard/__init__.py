"""The guard: every privileged action asks it first, and its answer goes into the receipt.

Re-exports the policy decision layer; see ``ops_platform.guard.policy``.
"""

from .policy import (
    Decision,
    DecisionInput,
    OpaHttpPolicy,
    PolicyEngine,
    PolicyError,
    Principal,
    RegoPolicy,
    policy_from_env,
)

__all__ = [
    "Decision",
    "DecisionInput",
    "OpaHttpPolicy",
    "PolicyEngine",
    "PolicyError",
    "Principal",
    "RegoPolicy",
    "policy_from_env",
]
