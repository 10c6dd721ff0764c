"""Helpers for the exception tests: file, approve and forge bundles in a temporary directory."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from engine.exceptions import (
    APPROVAL,
    FILING,
    PUBLIC_KEYS,
    Approval,
    Filing,
    content_digest,
    iso,
    new_private_key,
    public_key_line,
    read_chain,
    sign,
    spec_digest,
)
from gateway.exception_lifecycle import approve, prepare_filing, write_filing
from tests.conftest import NOW

REQUESTER = str(uuid.uuid5(uuid.NAMESPACE_URL, "exceptions:requester"))
ADMIN = str(uuid.uuid5(uuid.NAMESPACE_URL, "exceptions:admin"))
KEY = new_private_key()


@dataclass(frozen=True)
class Actor:
    id: str
    role: str | None


ADMIN_ACTOR = Actor(ADMIN, "ops_admin")
REQUESTER_ACTOR = Actor(REQUESTER, "ops_admin")  # an admin who files: four eyes is the question


def trust_root(root: Path, key: str = KEY) -> None:
    """Make `key` approvers.pub's root when the file has none (what the first filing through the
    gateway or the CLI does, without a vault to pin it in)."""
    if read_chain(root).root is None:
        root.mkdir(parents=True, exist_ok=True)
        (root / PUBLIC_KEYS).write_text(public_key_line(key) + "\n")


def file(root: Path, provider: str, rule: int, grant: dict[str, Any], *, days: float = 30, at: datetime = NOW,
         suffix: str | None = None, filer: Actor = REQUESTER_ACTOR, key: str = KEY) -> str:
    trust_root(root, key)
    draft = prepare_filing(root, filer, provider=provider, rule=rule, grant=grant,
                           justification=f"{provider} needs it for a technical reason",
                           compensating_controls=["read-only token", "alerting on use"],
                           expires_at=at + timedelta(days=days), requested_at=at, suffix=suffix)
    return write_filing(root, draft, filer, key, at).id


def file_and_approve(root: Path, provider: str, rule: int, grant: dict[str, Any], *, days: float = 30,
                     at: datetime = NOW, suffix: str | None = None) -> str:
    exception_id = file(root, provider, rule, grant, days=days, at=at, suffix=suffix)
    approve(root, exception_id, ADMIN_ACTOR, KEY, at)
    return exception_id


def write_raw(root: Path, exception_id: str, yaml_text: str) -> Path:
    """A bundle written by hand, bypassing `new` (what a careless or hostile commit could do)."""
    folder = root / exception_id
    folder.mkdir(parents=True)
    (folder / "exception.yaml").write_text(yaml_text)
    (folder / "README.md").write_text("# hand written\n")
    return folder


def forge_filing(root: Path, exception_id: str, *, filed_by: str = REQUESTER, key: str = KEY,
                 at: datetime = NOW) -> None:
    """A correctly signed filing receipt written straight into the bundle, whoever it names."""
    folder = root / exception_id
    receipt = sign(Filing(exception=exception_id, filed_by=filed_by, filer_role="ops_admin", filed_at=iso(at),
                          spec_sha256=spec_digest(folder)), key)
    (folder / FILING).write_bytes(msgspec.json.encode(receipt))


def forge_approval(root: Path, exception_id: str, *, expires_at: datetime, approved_at: datetime = NOW,
                   approved_by: str = ADMIN, role: str = "ops_admin", key: str = KEY,
                   filed_by: str = REQUESTER) -> None:
    """A correctly signed approval written straight into the bundle, skipping every approval check."""
    folder = root / exception_id
    if key == KEY:
        trust_root(root, key)
    approval = sign(Approval(exception=exception_id, filed_by=filed_by, approved_by=approved_by,
                             approver_role=role, approved_at=iso(approved_at), expires_at=iso(expires_at),
                             content_sha256=content_digest(folder)), key)
    (folder / APPROVAL).write_bytes(msgspec.json.encode(approval))


def raw_spec(provider: str, rule: int, grant: str, *, days: float = 30, at: datetime = NOW,
             requested_by: str = REQUESTER) -> str:
    return (f"provider: {provider}\nrule: {rule}\ngrant:\n{grant}\nrequested_by: {requested_by}\n"
            f"justification: because\ncompensating_controls: [logging]\nrequested_at: '{iso(at)}'\n"
            f"expires_at: '{iso(at + timedelta(days=days))}'\n")
