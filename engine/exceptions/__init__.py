"""Deviation exceptions (the constitution's Deviation Protocol): spec bundles under `exceptions/`,
signed approvals, runtime grants compiled into Cedar with their expiry, build-time waivers for CI.

    from engine.exceptions import active_build_waivers, scan
    active_build_waivers(9, "exceptions", now)   # tools whose breaking schema change is waived now
    [(r.id, r.state(now)) for r in scan("exceptions")]

Parsing and verification live here because the engine loads exceptions; filing, approving and
recording lifecycle events (which need the vault and the event store) live in the gateway.
"""

from engine.exceptions.compile import Compiled, apply_carve_outs, compile_exceptions
from engine.exceptions.inventory import (
    APPROVER_ROLE,
    EXPIRING_WITHIN,
    Record,
    active_build_waivers,
    approval_problems,
    approver_problems,
    find,
    lifetime_problems,
    scan,
)
from engine.exceptions.signing import (
    PUBLIC_KEYS,
    Approval,
    Revocation,
    new_private_key,
    public_key_line,
    read_public_keys,
    sign,
)
from engine.exceptions.spec import (
    APPROVAL,
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
    spec_to_yaml,
)

__all__ = ["APPROVAL", "APPROVER_ROLE", "EXPIRING_WITHIN", "KIND_OF_RULE", "MAX_LIFETIME", "PUBLIC_KEYS", "README",
           "REVOCATION", "RULE_NAMES", "SPEC_FILE", "Approval", "Compiled", "ExceptionSpec", "Grant", "Record",
           "Revocation", "SpecError", "active_build_waivers", "apply_carve_outs", "approval_problems",
           "approver_problems", "compile_exceptions", "content_digest", "find", "iso", "lifetime_problems",
           "never_waivable", "new_private_key", "parse_spec", "public_key_line", "read_public_keys", "scan", "sign",
           "spec_to_yaml"]
