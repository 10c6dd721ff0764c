"""Deviation exceptions (the constitution's Deviation Protocol): spec bundles under `exceptions/`,
signed filing receipts and approvals, the approvers.pub chain of trust, runtime grants compiled
into Cedar with their expiry, build-time waivers for CI.

    from engine.exceptions import Trust, active_build_waivers, scan
    active_build_waivers(9, "exceptions", now)   # tools whose breaking schema change is waived now
    [(r.id, r.state(now)) for r in scan("exceptions", Trust(revoked=frozenset(...), root=pinned))]

Parsing and verification live here because the engine loads exceptions; filing, approving and
recording lifecycle events (which need the vault and the event store) live in the gateway, which
also hands in what the repository cannot vouch for (Trust: revocations, the pinned root).
"""

from engine.exceptions.approvers import Chain, endorse, parse_key_line, read_chain
from engine.exceptions.compile import Compiled, apply_carve_outs, compile_exceptions
from engine.exceptions.inventory import (
    APPROVER_ROLE,
    EXPIRING_WITHIN,
    SELF_APPROVAL,
    Record,
    active_build_waivers,
    approval_problems,
    approver_problems,
    filing_problems,
    find,
    lifetime_problems,
    scan,
    signature_problem,
)
from engine.exceptions.signing import (
    PUBLIC_KEYS,
    Approval,
    Filing,
    Revocation,
    new_private_key,
    public_key_line,
    sign,
    verify,
)
from engine.exceptions.spec import (
    APPROVAL,
    FILING,
    KIND_OF_RULE,
    MAX_LIFETIME,
    README,
    REVOCATION,
    RULE_NAMES,
    SPEC_FILE,
    ExceptionSpec,
    Grant,
    SpecError,
    content_digest,
    iso,
    never_waivable,
    parse_spec,
    spec_digest,
    spec_to_yaml,
)
from engine.exceptions.trust import REPOSITORY_ONLY, Trust

__all__ = ["APPROVAL", "APPROVER_ROLE", "EXPIRING_WITHIN", "FILING", "KIND_OF_RULE", "MAX_LIFETIME", "PUBLIC_KEYS",
           "README", "REPOSITORY_ONLY", "REVOCATION", "RULE_NAMES", "SELF_APPROVAL", "SPEC_FILE", "Approval", "Chain",
           "Compiled", "ExceptionSpec", "Filing", "Grant", "Record", "Revocation", "SpecError", "Trust",
           "active_build_waivers", "apply_carve_outs", "approval_problems", "approver_problems",
           "compile_exceptions", "content_digest", "endorse", "filing_problems", "find", "iso", "lifetime_problems",
           "never_waivable", "new_private_key", "parse_key_line", "parse_spec", "public_key_line", "read_chain",
           "scan", "sign", "signature_problem", "spec_digest", "spec_to_yaml", "verify"]
