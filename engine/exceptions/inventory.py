"""The exceptions directory as found on disk: each bundle, its approval checked, its state.

States (at a given instant):
    invalid   the spec is malformed or waives rule 1-4, or an approval exists but does not verify
    pending   well-formed, not (yet) approved
    active    approved (the approval verifies) and now < expires_at
    expired   approved, now >= expires_at (auto-revoked: it no longer grants anything)
    revoked   revoked by an ops_admin before expiry
`expiring` marks an active exception that ends within 14 days (the monthly review lists those).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engine.exceptions.signing import PUBLIC_KEYS, Approval, Revocation, read_public_keys, verify
from engine.exceptions.spec import (
    APPROVAL,
    MAX_LIFETIME,
    REVOCATION,
    SPEC_FILE,
    ExceptionSpec,
    SpecError,
    content_digest,
    iso,
    parse_spec,
)

EXPIRING_WITHIN = timedelta(days=14)
PREFIX = "mcp-exception-"
APPROVER_ROLE = "ops_admin"


class Record(msgspec.Struct, frozen=True):
    """One exception bundle as read. `problems` say why it can never be active as it stands."""

    id: str
    folder: str
    spec: ExceptionSpec | None
    approval: Approval | None
    revocation: Revocation | None
    problems: tuple[str, ...] = ()  # everything wrong, the approval's problems included
    approval_issues: tuple[str, ...] = ()  # the part of `problems` that is about the approval record

    def state(self, now: datetime) -> str:
        if self.problems or self.spec is None:
            return "invalid"
        if self.revocation is not None:
            return "revoked"
        if self.approval is None:
            return "pending"
        return "active" if now < self.spec.expires_at else "expired"

    def active(self, now: datetime) -> bool:
        return self.state(now) == "active"

    def expiring(self, now: datetime) -> bool:
        return self.active(now) and self.spec is not None and self.spec.expires_at - now <= EXPIRING_WITHIN


def approval_problems(exception_id: str, spec: ExceptionSpec, approval: Approval, digest: str,
                      keys: Mapping[str, Ed25519PublicKey]) -> list[str]:
    """Why an approval record does not make this exception active; empty when it does."""
    problems: list[str] = []
    if approval.exception != exception_id:
        problems.append(f"the approval is for {approval.exception!r}, not this exception (copied approval)")
    if approval.content_sha256 != digest:
        problems.append("the bundle was edited after approval (its content no longer matches the signed "
                        "digest): the approval is void; it needs a new approval")
    bad_signature = verify(approval, keys)
    if bad_signature:
        problems.append(bad_signature)
    problems += approver_problems(approval.approved_by, approval.approver_role, spec)
    try:
        approved_at = datetime.fromisoformat(approval.approved_at)
    except ValueError:
        return [*problems, "approved_at is not an ISO 8601 timestamp"]
    if approval.expires_at != iso(spec.expires_at):
        problems.append("expires_at differs from the approved expiry")
    problems += lifetime_problems(spec, approved_at)
    return problems


def approver_problems(approver_id: str, approver_role: str | None, spec: ExceptionSpec) -> list[str]:
    problems = []
    if approver_role != APPROVER_ROLE:
        problems.append(f"the approver's role is {approver_role or 'none'!s}; only an {APPROVER_ROLE} may approve")
    if approver_id == spec.requested_by:
        problems.append("the requester cannot approve their own exception; another ops_admin must")
    return problems


def lifetime_problems(spec: ExceptionSpec, approved_at: datetime) -> list[str]:
    if approved_at.utcoffset() is None:
        return ["approved_at must carry a timezone"]
    if spec.expires_at - approved_at > MAX_LIFETIME:
        days = (spec.expires_at - approved_at).total_seconds() / 86400
        return [f"expires_at is {days:.1f} days after approval; an exception may last at most 90 days"]
    return []


def read_record(folder: Path, keys: Mapping[str, Ed25519PublicKey]) -> Record:
    exception_id = folder.name
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        return Record(exception_id, str(folder), None, None, None, (f"{SPEC_FILE} is missing",))
    problems: list[str] = []
    spec: ExceptionSpec | None = None
    try:
        spec = parse_spec(exception_id, spec_path.read_bytes())
    except SpecError as e:
        problems += e.problems
    if not (folder / "README.md").is_file() or not (folder / "README.md").read_text().strip():
        problems.append("README.md is missing or empty (why the exception is needed, the compensating controls)")
    approval = _read_json(folder / APPROVAL, Approval, problems)
    revocation = _read_json(folder / REVOCATION, Revocation, problems)
    issues: list[str] = []
    if approval is not None and spec is not None:
        issues = approval_problems(exception_id, spec, approval, content_digest(folder), keys)
    return Record(exception_id, str(folder), spec, approval, revocation, (*problems, *issues), tuple(issues))


def _read_json(path: Path, kind: type, problems: list[str]) -> object | None:
    if not path.is_file():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        problems.append(f"{path.name} is malformed: {e}")
        return None


def scan(root: str | Path) -> list[Record]:
    """Every `mcp-exception-*` folder under `root` (none when it does not exist), by id."""
    root = Path(root)
    if not root.is_dir():
        return []
    keys = read_public_keys(root / PUBLIC_KEYS)
    return [read_record(d, keys) for d in sorted(root.iterdir()) if d.is_dir() and d.name.startswith(PREFIX)]


def find(root: str | Path, exception_id: str) -> Record | None:
    folder = Path(root) / exception_id
    if not exception_id.startswith(PREFIX) or "/" in exception_id or not folder.is_dir():
        return None
    return read_record(folder, read_public_keys(Path(root) / PUBLIC_KEYS))


def active_build_waivers(rule: int, root: str | Path, now: datetime) -> set[str]:
    """What the CI check for a build-time rule must let through right now:
    rule 9 -> tool names (`<provider>.<tool>`) whose breaking schema change is waived;
    rules 6 and 10 -> provider names. Only approved, verified, unexpired, unrevoked exceptions."""
    out: set[str] = set()
    for r in scan(root):
        if r.spec is None or r.spec.rule != rule or not r.active(now):
            continue
        tools = getattr(r.spec.grant, "tools", None)
        out.update(tools if rule == 9 and tools else [r.spec.provider])
    return out


__all__ = ["APPROVER_ROLE", "EXPIRING_WITHIN", "PREFIX", "Record", "active_build_waivers", "approval_problems",
           "approver_problems", "find", "lifetime_problems", "read_record", "scan"]
