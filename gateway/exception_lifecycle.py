"""Filing, approving, revoking and reviewing deviation exceptions, and their ops.run_events rows.

Shared by the HTTP routes (gateway/routes/exceptions.py) and the CLI (gateway/cli/exceptions.py),
so both refuse the same things with the same words. The engine's side (parsing, verification,
compilation) is engine.exceptions; this side writes files, signs with the vault's key and records.

Every step is one row: provider "opsgate", tool "exception.<step>" (filed, approved, refused,
expired, revoked, reviewed), `exception_ids` naming the exception, the actor as caller_id.
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
    PUBLIC_KEYS,
    README,
    REVOCATION,
    SPEC_FILE,
    Approval,
    ExceptionSpec,
    Record,
    Revocation,
    SpecError,
    approver_problems,
    content_digest,
    find,
    iso,
    lifetime_problems,
    never_waivable,
    new_private_key,
    parse_spec,
    public_key_line,
    read_public_keys,
    scan,
    sign,
    spec_to_yaml,
)
from otel.events import EventStore, RunEvent, new_event_id, utc_timestamp
from providers.sdk.vault import get_or_create

SIGNING_KEY = "opsgate_exception_signing_key"  # vault secret name
REVIEWS = "REVIEWS.json"
STEPS = ("filed", "approved", "refused", "expired", "revoked", "reviewed")


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
    """The approvers' Ed25519 key from the vault, created there on first use."""
    return await get_or_create(vault, SIGNING_KEY, new_private_key)


# -- filing --------------------------------------------------------------------------------------------


def folder_name(provider: str, rule: int, suffix: str | None = None) -> str:
    return f"mcp-exception-{provider}-{rule}" + (f"-{suffix}" if suffix else "")


def file_exception(root: str | Path, *, provider: str, rule: int, grant: dict[str, Any], requested_by: str,
                   justification: str, compensating_controls: list[str], expires_at: datetime,
                   requested_at: datetime, suffix: str | None = None, readme: str | None = None) -> Record:
    """Write a new spec bundle after checking it; raises Refused (rules 1-4, a bad spec, a taken name)."""
    exception_id = folder_name(provider, rule, suffix)
    refusal = never_waivable(rule)
    if refusal:
        raise Refused(exception_id, [refusal], 422)
    grant = {"kind": grant.get("kind") or _kind(rule), **grant}
    try:
        spec = msgspec.convert({"provider": provider, "rule": rule, "grant": grant, "requested_by": requested_by,
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
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(text)
    (folder / README).write_text(readme or default_readme(exception_id, spec))
    record = find(root, exception_id)
    assert record is not None
    return record


def _kind(rule: int) -> str:
    from engine.exceptions import KIND_OF_RULE

    return KIND_OF_RULE.get(rule, "")


def default_readme(exception_id: str, spec: ExceptionSpec) -> str:
    controls = "\n".join(f"- {c}" for c in spec.compensating_controls)
    return (f"# {exception_id}\n\nWaives constitution rule {spec.rule} for `{spec.provider}` until "
            f"{iso(spec.expires_at)}.\n\n## Why it is needed\n\n{spec.justification.strip()}\n\n"
            f"## Compensating controls\n\n{controls}\n")


# -- approval and revocation -----------------------------------------------------------------------------


def _record(root: str | Path, exception_id: str) -> Record:
    record = find(root, exception_id)
    if record is None:
        raise Refused(exception_id, [f"no exception {exception_id!r} under {root}"], 404)
    return record


def approve(root: str | Path, exception_id: str, approver: Actor, key: str, now: datetime) -> Approval:
    """Check everything an approval must satisfy, then write a signed approval.json. Raises Refused."""
    record = _record(root, exception_id)
    spec = record.spec
    if spec is None:
        raise Refused(exception_id, record.problems, 422)
    if record.revocation is not None:
        raise Refused(exception_id, ["it was revoked; file a new exception instead"], 409)
    if record.approval is not None and not record.problems:
        raise Refused(exception_id, [f"it is already approved (by {record.approval.approved_by})"], 409)
    spec_problems = [p for p in record.problems if p not in record.approval_issues]  # a void approval may be redone
    problems = approver_problems(approver.id, approver.role, spec)
    if problems:
        raise Refused(exception_id, problems, 403)
    if spec_problems:
        raise Refused(exception_id, spec_problems, 422)
    if spec.expires_at <= now:
        raise Refused(exception_id, [f"it expired at {iso(spec.expires_at)}"], 422)
    problems = lifetime_problems(spec, now)
    if problems:
        raise Refused(exception_id, problems, 422)
    folder = Path(record.folder)
    approval = sign(Approval(exception=exception_id, approved_by=approver.id, approver_role=approver.role or "",
                             approved_at=iso(now), expires_at=iso(spec.expires_at),
                             content_sha256=content_digest(folder), key_id=""), key)
    ensure_public_key(root, key)
    (folder / APPROVAL).write_bytes(msgspec.json.format(msgspec.json.encode(approval)) + b"\n")
    return approval


def key_known(root: str | Path, key: str) -> bool:
    return public_key_line(key).split()[0] in read_public_keys(Path(root) / PUBLIC_KEYS)


def ensure_public_key(root: str | Path, key: str) -> bool:
    """Add the vault key's public half to exceptions/approvers.pub if it is not there (True when
    added: commit that file, it is how everyone else verifies the approvals)."""
    path = Path(root) / PUBLIC_KEYS
    line = public_key_line(key)
    if line.split()[0] in read_public_keys(path):
        return False
    head = "" if path.exists() else ("# Ed25519 public keys that sign exception approvals: <key id> <base64 raw key>.\n"
                                     "# A key is trusted by being committed here.\n")
    with path.open("a") as f:
        f.write(head + line + "\n")
    return True


def withdraw_approval(root: str | Path, exception_id: str) -> None:
    """Undo a just-written approval whose event could not be recorded (no unaudited approvals)."""
    (Path(root) / exception_id / APPROVAL).unlink(missing_ok=True)


def revoke(root: str | Path, exception_id: str, actor: Actor, reason: str, now: datetime) -> Revocation:
    record = _record(root, exception_id)
    if actor.role != APPROVER_ROLE:
        raise Refused(exception_id, [f"only an {APPROVER_ROLE} may revoke (role: {actor.role or 'none'})"], 403)
    if record.revocation is not None:
        raise Refused(exception_id, ["it is already revoked"], 409)
    if not reason.strip():
        raise Refused(exception_id, ["give a reason for the revocation"], 422)
    revocation = Revocation(revoked_by=actor.id, revoked_at=iso(now), reason=reason.strip())
    (Path(record.folder) / REVOCATION).write_bytes(msgspec.json.format(msgspec.json.encode(revocation)) + b"\n")
    return revocation


# -- the monthly review --------------------------------------------------------------------------------


def summary(r: Record, now: datetime) -> dict[str, Any]:
    s = r.spec
    return {"id": r.id, "state": r.state(now), "expiring": r.expiring(now),
            "provider": s.provider if s else None, "rule": s.rule if s else None,
            "grant": msgspec.to_builtins(s.grant) if s else None, "requested_by": s.requested_by if s else None,
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


def review_report(root: str | Path, now: datetime) -> dict[str, Any]:
    rows = [summary(r, now) for r in scan(root)]
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
                         exception_ids=[exception_id] if exception_ids is None else exception_ids)
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
    "LifecycleEvents",
    "Refused",
    "approval_key",
    "approve",
    "default_readme",
    "ensure_public_key",
    "file_exception",
    "folder_name",
    "key_known",
    "last_review",
    "remember_review",
    "review_markdown",
    "review_report",
    "revoke",
    "summary",
    "withdraw_approval",
]
