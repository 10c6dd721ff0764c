"""Filing, approving, revoking and reviewing deviation exceptions, and their ops.run_events rows.

Shared by the HTTP routes (gateway/routes/exceptions.py) and the CLI (gateway/cli/exceptions.py),
so both refuse the same things with the same words. The engine's side (parsing, verification,
compilation) is engine.exceptions; this side writes files, signs with the vault's key and records.

Invariants:
- Every check of a step (role, existence, state, four eyes, expiry) runs before any secret is
  touched: `check_*` functions read only files and the Trust handed in; the key comes after.
- The filer is the identity a verified token proves, bound to exception.yaml by a signed receipt
  (filing.json); the approval carries that filer and is refused when the approver is the filer,
  whatever exception.yaml says, and when exception.yaml changed since it was filed.
- A revocation is permanent: revoked by file or by the audit trail (Trust.revoked), never approved again.

Every step is one row: provider "opsgate", tool "exception.<step>" (filed, approved, refused,
expired, revoked, reviewed, key_added), `exception_ids` naming the exception, the actor as caller_id.
"applied" is every decision row whose `exception_ids` names it (gateway/audit.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

from engine.exceptions import (
    APPROVAL,
    APPROVER_ROLE,
    EXPIRING_WITHIN,
    FILING,
    KIND_OF_RULE,
    README,
    REPOSITORY_ONLY,
    REVOCATION,
    SELF_APPROVAL,
    SPEC_FILE,
    Approval,
    ExceptionSpec,
    Filing,
    Record,
    Revocation,
    SpecError,
    Trust,
    approver_problems,
    content_digest,
    find,
    iso,
    lifetime_problems,
    never_waivable,
    new_private_key,
    parse_spec,
    scan,
    sign,
    spec_digest,
    spec_to_yaml,
)
from gateway.edge.current import client_address
from otel.events import EventStore, RunEvent, new_event_id, utc_timestamp
from providers.sdk.vault import get_or_create

SIGNING_KEY = "opsgate_exception_signing_key"  # vault secret name
REVIEWS = "REVIEWS.json"
STEPS = ("filed", "approved", "refused", "expired", "revoked", "reviewed", "key_added")


class Actor(Protocol):
    """Who acts: a verified token's user id and role (gateway.auth Caller)."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str | None: ...


class Refused(Exception):
    """A lifecycle step refused. `status` is the HTTP status it maps to; `problems` are sentences."""

    def __init__(self, exception_id: str, problems: Iterable[str], status: int = 403) -> None:
        self.exception_id = exception_id
        self.problems = tuple(problems)
        self.status = status
        super().__init__(f"{exception_id}: " + "; ".join(self.problems))


async def approval_key(vault: Any) -> str:
    """The approvers' Ed25519 key from the vault, created there on first use. Call it only after
    the step's checks passed (a refused request must not create a secret)."""
    return await get_or_create(vault, SIGNING_KEY, new_private_key)


def _write_json(path: Path, record: msgspec.Struct) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(record)) + b"\n")


# -- filing --------------------------------------------------------------------------------------------


class Draft(msgspec.Struct, frozen=True):
    """A checked filing, not yet written or signed."""

    id: str
    spec: ExceptionSpec
    text: str  # exception.yaml
    readme: str


def folder_name(provider: str, rule: int, suffix: str | None = None) -> str:
    return f"mcp-exception-{provider}-{rule}" + (f"-{suffix}" if suffix else "")


def prepare_filing(root: str | Path, filer: Actor, *, provider: str, rule: int, grant: dict[str, Any],
                   justification: str, compensating_controls: list[str], expires_at: datetime,
                   requested_at: datetime, suffix: str | None = None, readme: str | None = None) -> Draft:
    """Check a filing by `filer` (a verified caller: the requester is who the token proves, never a
    field); raises Refused (no ops role, rules 1-4, a bad spec, a taken name). Writes nothing."""
    exception_id = folder_name(provider, rule, suffix)
    if filer.role is None:
        raise Refused(exception_id, ["an ops role is required to file an exception"], 403)
    refusal = never_waivable(rule)
    if refusal:
        raise Refused(exception_id, [refusal], 422)
    grant = {"kind": grant.get("kind") or KIND_OF_RULE.get(rule, ""), **grant}
    try:
        spec = msgspec.convert({"provider": provider, "rule": rule, "grant": grant, "requested_by": filer.id,
                                "justification": justification, "compensating_controls": compensating_controls,
                                "requested_at": iso(requested_at), "expires_at": iso(expires_at)}, ExceptionSpec)
        text = spec_to_yaml(spec)
        parse_spec(exception_id, text)  # exactly what every later reader will check
    except msgspec.ValidationError as e:
        raise Refused(exception_id, [str(e)], 422) from None
    except SpecError as e:
        raise Refused(exception_id, e.problems, 422) from None
    folder = Path(root) / exception_id
    if folder.exists():
        raise Refused(exception_id, [f"{folder} already exists; give this one a suffix (--suffix)"], 409)
    return Draft(exception_id, spec, text, readme or default_readme(exception_id, spec))


def write_filing(root: str | Path, draft: Draft, filer: Actor, key: str, now: datetime) -> Record:
    """Write the bundle and its receipt, signed with `key` (a key approvers.pub trusts)."""
    folder = Path(root) / draft.id
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(draft.text)
    (folder / README).write_text(draft.readme)
    receipt = sign(Filing(exception=draft.id, filed_by=filer.id, filer_role=filer.role or "", filed_at=iso(now),
                          spec_sha256=spec_digest(folder)), key)
    _write_json(folder / FILING, receipt)
    record = find(root, draft.id)
    assert record is not None
    return record


def withdraw_filing(root: str | Path, exception_id: str) -> None:
    """Undo a just-written filing whose event could not be recorded (no unaudited filings)."""
    folder = Path(root) / exception_id
    for name in (FILING, SPEC_FILE, README):
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()


def default_readme(exception_id: str, spec: ExceptionSpec) -> str:
    controls = "\n".join(f"- {c}" for c in spec.compensating_controls)
    return (f"# {exception_id}\n\nWaives constitution rule {spec.rule} for `{spec.provider}` until "
            f"{iso(spec.expires_at)}.\n\n## Why it is needed\n\n{spec.justification.strip()}\n\n"
            f"## Compensating controls\n\n{controls}\n")


# -- approval and revocation -----------------------------------------------------------------------------


def _record(root: str | Path, exception_id: str, trust: Trust) -> Record:
    record = find(root, exception_id, trust)
    if record is None:
        raise Refused(exception_id, [f"no exception {exception_id!r} under {root}"], 404)
    return record


def require_admin(exception_id: str, actor: Actor, step: str) -> None:
    """The first check of approving, revoking and adding a key (`step`): nothing else is read,
    nothing touched, before it."""
    if actor.role != APPROVER_ROLE:
        problem = (approver_problems(actor.id, actor.role, ())[0] if step == "approve"
                   else f"only an {APPROVER_ROLE} may {step} (role: {actor.role or 'none'})")
        raise Refused(exception_id, [problem], 403)


def check_approval(root: str | Path, exception_id: str, approver: Actor, now: datetime,
                   trust: Trust = REPOSITORY_ONLY) -> Record:
    """Everything an approval must satisfy, from files and `trust` alone; raises Refused."""
    require_admin(exception_id, approver, "approve")
    record = _record(root, exception_id, trust)
    spec = record.spec
    if spec is None:
        raise Refused(exception_id, record.problems, 422)
    if record.revoked:
        raise Refused(exception_id, ["it was revoked, and a revocation is permanent (the audit trail keeps it even "
                                     "without revocation.json); file a new exception instead (--suffix)"], 409)
    if record.approval is not None and not record.problems:
        raise Refused(exception_id, [f"it is already approved (by {record.approval.approved_by})"], 409)
    if approver.id in {record.filer, spec.requested_by}:
        raise Refused(exception_id, [SELF_APPROVAL], 403)
    problems = [p for p in record.problems if p not in record.approval_issues]  # a void approval may be redone
    if problems:
        raise Refused(exception_id, problems, 422)
    if spec.expires_at <= now:
        raise Refused(exception_id, [f"it expired at {iso(spec.expires_at)}"], 422)
    problems = lifetime_problems(spec, now)
    if problems:
        raise Refused(exception_id, problems, 422)
    return record


def approve(root: str | Path, exception_id: str, approver: Actor, key: str, now: datetime,
            trust: Trust = REPOSITORY_ONLY) -> Approval:
    """Check everything (check_approval), then write approval.json signed with `key` (a key the
    approvers.pub chain trusts: gateway.exception_trust.trusted_key). Raises Refused."""
    record = check_approval(root, exception_id, approver, now, trust)
    assert record.spec is not None and record.filer is not None
    folder = Path(record.folder)
    approval = sign(Approval(exception=exception_id, filed_by=record.filer, approved_by=approver.id,
                             approver_role=approver.role or "", approved_at=iso(now),
                             expires_at=iso(record.spec.expires_at), content_sha256=content_digest(folder)), key)
    _write_json(folder / APPROVAL, approval)
    return approval


def withdraw_approval(root: str | Path, exception_id: str) -> None:
    """Undo a just-written approval whose event could not be recorded (no unaudited approvals)."""
    (Path(root) / exception_id / APPROVAL).unlink(missing_ok=True)


def check_revocation(root: str | Path, exception_id: str, actor: Actor, reason: str,
                     trust: Trust = REPOSITORY_ONLY) -> Record:
    require_admin(exception_id, actor, "revoke")
    record = _record(root, exception_id, trust)
    if record.revoked:
        raise Refused(exception_id, ["it is already revoked"], 409)
    if not reason.strip():
        raise Refused(exception_id, ["give a reason for the revocation"], 422)
    return record


def revoke(root: str | Path, exception_id: str, actor: Actor, reason: str, now: datetime, key: str,
           trust: Trust = REPOSITORY_ONLY) -> Revocation:
    """Write revocation.json signed with `key`. Its anchor is the `exception.revoked` row the
    caller records: the file may be deleted, the revocation stays."""
    record = check_revocation(root, exception_id, actor, reason, trust)
    revocation = sign(Revocation(exception=exception_id, revoked_by=actor.id, revoked_at=iso(now),
                                 reason=reason.strip()), key)
    _write_json(Path(record.folder) / REVOCATION, revocation)
    return revocation


# -- the monthly review --------------------------------------------------------------------------------


def summary(r: Record, now: datetime) -> dict[str, Any]:
    s = r.spec
    return {"id": r.id, "state": r.state(now), "expiring": r.expiring(now),
            "provider": s.provider if s else None, "rule": s.rule if s else None,
            "grant": msgspec.to_builtins(s.grant) if s else None, "requested_by": s.requested_by if s else None,
            "filed_by": r.filer, "filed_at": r.filing.filed_at if r.filing else None,
            "requested_at": iso(s.requested_at) if s else None, "expires_at": iso(s.expires_at) if s else None,
            "approved_by": r.approval.approved_by if r.approval else None,
            "approved_at": r.approval.approved_at if r.approval else None,
            "revoked_by": r.revocation.revoked_by if r.revocation else None,
            "revoked_at": r.revocation.revoked_at if r.revocation else None,
            "revocation_reason": r.revocation.reason if r.revocation else None,
            "problems": list(r.problems)}


def last_review(root: str | Path) -> dict[str, Any] | None:
    history = _reviews(root)
    return history[-1] if history else None


def _reviews(root: str | Path) -> list[dict[str, Any]]:
    path = Path(root) / REVIEWS
    return json.loads(path.read_text()) if path.is_file() else []


def review_report(root: str | Path, now: datetime, trust: Trust = REPOSITORY_ONLY) -> dict[str, Any]:
    rows = [summary(r, now) for r in scan(root, trust)]
    by = {state: [r for r in rows if r["state"] == state] for state in ("active", "pending", "expired", "revoked",
                                                                        "invalid")}
    last = last_review(root)
    return {"reviewed_at": iso(now), "last_review": last["reviewed_at"] if last else None,
            "expiring_within_days": EXPIRING_WITHIN.days,
            "active": by["active"], "expiring": [r for r in by["active"] if r["expiring"]],
            "expired": by["expired"], "revoked": by["revoked"], "pending": by["pending"], "invalid": by["invalid"]}


def review_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Exception review {report['reviewed_at'][:10]}", "",
             f"Reviewed at {report['reviewed_at']}; last review: {report['last_review'] or 'never'}.", ""]
    sections = (("Active", "active"), (f"Expiring within {report['expiring_within_days']} days", "expiring"),
                ("Expired (auto-revoked)", "expired"), ("Revoked", "revoked"), ("Pending approval", "pending"),
                ("Invalid (refused: fix or withdraw)", "invalid"))
    for title, key in sections:
        rows = report[key]
        lines += [f"## {title} ({len(rows)})", ""]
        if not rows:
            lines += ["None.", ""]
            continue
        lines += ["| exception | provider | rule | expires | approved by | note |", "|---|---|---|---|---|---|"]
        for r in rows:
            note = (r["revocation_reason"] or "") if key == "revoked" else "; ".join(r["problems"])
            lines.append(f"| {r['id']} | {r['provider'] or '-'} | {r['rule'] or '-'} | {r['expires_at'] or '-'} | "
                         f"{r['approved_by'] or '-'} | {note.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def remember_review(root: str | Path, report: dict[str, Any], reviewer: str | None) -> None:
    """Append this review to exceptions/REVIEWS.json (what `last_review` reads next month)."""
    history = _reviews(root)
    history.append({"reviewed_at": report["reviewed_at"], "reviewed_by": reviewer,
                    "counts": {k: len(report[k]) for k in ("active", "expiring", "expired", "revoked", "pending",
                                                           "invalid")}})
    (Path(root) / REVIEWS).write_text(json.dumps(history, indent=2) + "\n")


# -- events --------------------------------------------------------------------------------------------


class LifecycleEvents:
    """Writes one ops.run_events row per lifecycle step into an otel.events store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def record(self, step: str, exception_id: str, *, actor: str | None, detail: dict[str, Any] | None = None,
                     exception_ids: list[str] | None = None, event_id: str | None = None) -> str:
        assert step in STEPS, step
        decision = {"approved": "allow", "refused": "deny"}.get(step, "none")
        event = RunEvent(id=event_id or new_event_id(), provider="opsgate", tool=f"exception.{step}", caller_id=actor,
                         payload={"exception": exception_id, **(detail or {})}, result={"status": step},
                         decision=decision, duration_ms=0, created_at=utc_timestamp(),
                         exception_ids=[exception_id] if exception_ids is None else exception_ids,
                         client_addr=client_address())  # the HTTP caller's; None from the CLI
        await self.store.append(event)
        return event.id

    async def record_expiries(self, records: Iterable[Record], now: datetime) -> list[str]:
        """An "expired" row for each approved exception now past its expiry that has none yet."""
        expired = [r for r in records if r.state(now) == "expired"]
        if not expired:
            return []
        seen = {i for e in await self.store.query(provider="opsgate", tool="exception.expired", limit=10_000)
                for i in e.exception_ids}
        new = [r for r in expired if r.id not in seen]
        for r in new:
            assert r.spec is not None
            # One id per exception and expiry: stores insert by id at most once, so gateways (and
            # `review`) noticing the same expiry at once still leave one row.
            once = str(uuid.uuid5(uuid.NAMESPACE_URL, f"opsgate:exception-expired:{r.id}:{iso(r.spec.expires_at)}"))
            await self.record("expired", r.id, actor=None, detail={"expires_at": iso(r.spec.expires_at)},
                              event_id=once)
        return [r.id for r in new]


__all__ = [
    "REVIEWS",
    "SIGNING_KEY",
    "STEPS",
    "Actor",
    "Draft",
    "LifecycleEvents",
    "Refused",
    "approval_key",
    "approve",
    "check_approval",
    "check_revocation",
    "default_readme",
    "folder_name",
    "last_review",
    "prepare_filing",
    "remember_review",
    "require_admin",
    "review_markdown",
    "review_report",
    "revoke",
    "summary",
    "withdraw_approval",
    "withdraw_filing",
    "write_filing",
]
