"""The exceptions directory as found on disk, read against what the gateway vouches for (Trust):
each bundle, its filing receipt and approval checked against the approvers.pub chain, its state.

States (at a given instant):
    invalid   the spec is malformed or waives rule 1-4; it was not filed by a verified identity
              (no valid filing.json), or exception.yaml was edited since; or an approval exists but
              does not verify
    pending   filed (the receipt verifies), not (yet) approved
    active    approved (the approval verifies, its approver is not its filer) and now < expires_at
    expired   approved, now >= expires_at (auto-revoked: it no longer grants anything)
    revoked   revoked by an ops_admin: revocation.json, or the audit trail's row once that file is gone
`expiring` marks an active exception that ends within 14 days (the monthly review lists those).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from engine.exceptions.approvers import Chain, read_chain
from engine.exceptions.signing import Approval, Filing, Revocation, Signed, verify
from engine.exceptions.spec import (
    APPROVAL,
    FILING,
    MAX_LIFETIME,
    REVOCATION,
    SPEC_FILE,
    ExceptionSpec,
    SpecError,
    content_digest,
    iso,
    parse_spec,
    spec_digest,
)
from engine.exceptions.trust import REPOSITORY_ONLY, Trust

EXPIRING_WITHIN = timedelta(days=14)
PREFIX = "mcp-exception-"
APPROVER_ROLE = "ops_admin"
SELF_APPROVAL = "the requester cannot approve their own exception; another ops_admin must"
UNFILED = ("it was not filed by a verified identity (no filing.json): the requester files it with "
           "`opsgate exception new --token-file ...` or POST /v1/exceptions, which sign a receipt for the user "
           "their token proves; a requested_by field anyone can type proves nothing")


class Record(msgspec.Struct, frozen=True):
    """One exception bundle as read. `problems` say why it can never be active as it stands."""

    id: str
    folder: str
    spec: ExceptionSpec | None
    approval: Approval | None
    revocation: Revocation | None
    problems: tuple[str, ...] = ()  # everything wrong, the filing's and the approval's problems included
    approval_issues: tuple[str, ...] = ()  # the part of `problems` that is about the approval record
    filing: Filing | None = None
    revoked: bool = False  # revocation.json exists, or the audit trail says so (Trust.revoked)

    @property
    def filer(self) -> str | None:
        """Who filed it, as the receipt proves (None: no receipt)."""
        return self.filing.filed_by if self.filing is not None else None

    def state(self, now: datetime) -> str:
        if self.revoked and self.spec is not None:
            return "revoked"
        if self.problems or self.spec is None:
            return "invalid"
        if self.approval is None:
            return "pending"
        return "active" if now < self.spec.expires_at else "expired"

    def active(self, now: datetime) -> bool:
        return self.state(now) == "active"

    def expiring(self, now: datetime) -> bool:
        return self.active(now) and self.spec is not None and self.spec.expires_at - now <= EXPIRING_WITHIN


def signature_problem(record: Signed, chain: Chain) -> str | None:
    if chain.refused:
        return f"the {record.WHAT} cannot be verified: {chain.refused}"
    return verify(record, chain.keys)


def filing_problems(exception_id: str, spec: ExceptionSpec | None, filing: Filing | None, digest: str,
                    chain: Chain) -> list[str]:
    """Why the filing receipt does not prove who asked for this exception.yaml; empty when it does."""
    if filing is None:
        return [UNFILED]
    problems: list[str] = []
    if filing.exception != exception_id:
        problems.append(f"the filing receipt is for {filing.exception!r}, not this exception (copied receipt)")
    if filing.spec_sha256 != digest:
        problems.append(f"{SPEC_FILE} was edited after it was filed (by {filing.filed_by} at {filing.filed_at}): "
                        "the filing is void; whoever wants this version must file it again")
    elif spec is not None and spec.requested_by != filing.filed_by:
        problems.append(f"{SPEC_FILE} names requested_by {spec.requested_by}, but {filing.filed_by} filed it")
    bad = signature_problem(filing, chain)
    if bad:
        problems.append(bad)
    return problems


def approval_problems(exception_id: str, spec: ExceptionSpec, approval: Approval, digest: str, chain: Chain,
                      filing: Filing | None = None) -> list[str]:
    """Why an approval record does not make this exception active; empty when it does."""
    problems: list[str] = []
    if approval.exception != exception_id:
        problems.append(f"the approval is for {approval.exception!r}, not this exception (copied approval)")
    if approval.content_sha256 != digest:
        problems.append("the bundle was edited after approval (its content no longer matches the signed "
                        "digest): the approval is void; it needs a new approval")
    bad = signature_problem(approval, chain)
    if bad:
        problems.append(bad)
    if filing is not None and approval.filed_by != filing.filed_by:
        problems.append(f"the approval names {approval.filed_by} as the filer, but the filing receipt says "
                        f"{filing.filed_by}")
    filers = {approval.filed_by, spec.requested_by} | ({filing.filed_by} if filing is not None else set())
    problems += approver_problems(approval.approved_by, approval.approver_role, filers)
    try:
        approved_at = datetime.fromisoformat(approval.approved_at)
    except ValueError:
        return [*problems, "approved_at is not an ISO 8601 timestamp"]
    if approval.expires_at != iso(spec.expires_at):
        problems.append("expires_at differs from the approved expiry")
    problems += lifetime_problems(spec, approved_at)
    return problems


def approver_problems(approver_id: str, approver_role: str | None, filers: Iterable[str]) -> list[str]:
    """Four eyes: the approver is an ops_admin and none of the identities that asked for it."""
    problems = []
    if approver_role != APPROVER_ROLE:
        problems.append(f"the approver's role is {approver_role or 'none'!s}; only an {APPROVER_ROLE} may approve")
    if approver_id in set(filers):
        problems.append(SELF_APPROVAL)
    return problems


def lifetime_problems(spec: ExceptionSpec, approved_at: datetime) -> list[str]:
    if approved_at.utcoffset() is None:
        return ["approved_at must carry a timezone"]
    if spec.expires_at - approved_at > MAX_LIFETIME:
        days = (spec.expires_at - approved_at).total_seconds() / 86400
        return [f"expires_at is {days:.1f} days after approval; an exception may last at most 90 days"]
    return []


def read_record(folder: Path, chain: Chain, trust: Trust = REPOSITORY_ONLY) -> Record:
    exception_id = folder.name
    spec_path = folder / SPEC_FILE
    revoked = (folder / REVOCATION).exists() or exception_id in trust.revoked  # even a mangled file revokes
    if not spec_path.is_file():
        return Record(exception_id, str(folder), None, None, None, (f"{SPEC_FILE} is missing",), revoked=revoked)
    problems: list[str] = []
    spec: ExceptionSpec | None = None
    try:
        spec = parse_spec(exception_id, spec_path.read_bytes())
    except SpecError as e:
        problems += e.problems
    if not (folder / "README.md").is_file() or not (folder / "README.md").read_text().strip():
        problems.append("README.md is missing or empty (why the exception is needed, the compensating controls)")
    filing = _read_json(folder / FILING, Filing, problems)
    approval = _read_json(folder / APPROVAL, Approval, problems)
    revocation = _read_json(folder / REVOCATION, Revocation, problems)
    problems += filing_problems(exception_id, spec, filing, spec_digest(folder), chain)
    issues: list[str] = []
    if approval is not None and spec is not None:
        issues = approval_problems(exception_id, spec, approval, content_digest(folder), chain, filing)
    return Record(exception_id, str(folder), spec, approval, revocation, (*problems, *issues), tuple(issues),
                  filing=filing, revoked=revoked)


def _read_json(path: Path, kind: type, problems: list[str]) -> object | None:
    if not path.is_file():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        problems.append(f"{path.name} is malformed: {e}")
        return None


def scan(root: str | Path, trust: Trust = REPOSITORY_ONLY, chain: Chain | None = None) -> list[Record]:
    """Every `mcp-exception-*` folder under `root` (none when it does not exist), by id."""
    root = Path(root)
    if not root.is_dir():
        return []
    chain = chain if chain is not None else read_chain(root, trust.root)
    return [read_record(d, chain, trust) for d in sorted(root.iterdir()) if d.is_dir() and d.name.startswith(PREFIX)]


def find(root: str | Path, exception_id: str, trust: Trust = REPOSITORY_ONLY) -> Record | None:
    folder = Path(root) / exception_id
    if not exception_id.startswith(PREFIX) or "/" in exception_id or not folder.is_dir():
        return None
    return read_record(folder, read_chain(root, trust.root), trust)


def active_build_waivers(rule: int, root: str | Path, now: datetime, trust: Trust = REPOSITORY_ONLY) -> set[str]:
    """What the CI check for a build-time rule must let through right now:
    rule 9 -> tool names (`<provider>.<tool>`) whose breaking schema change is waived;
    rules 6 and 10 -> provider names. Only filed, approved, verified, unexpired, unrevoked exceptions
    (CI sees the repository only unless it is handed the gateway's Trust)."""
    out: set[str] = set()
    if trust.unavailable:
        return out
    for r in scan(root, trust):
        if r.spec is None or r.spec.rule != rule or not r.active(now):
            continue
        tools = getattr(r.spec.grant, "tools", None)
        out.update(tools if rule == 9 and tools else [r.spec.provider])
    return out


__all__ = ["APPROVER_ROLE", "EXPIRING_WITHIN", "PREFIX", "SELF_APPROVAL", "UNFILED", "Record", "active_build_waivers",
           "approval_problems", "approver_problems", "filing_problems", "find", "lifetime_problems", "read_record",
           "scan", "signature_problem"]
