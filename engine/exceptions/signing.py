"""Signed approvals: an Ed25519 signature by the approvers' key over an exception's content.

The private key lives in the vault (the gateway and the CLI hand its raw bytes in); the public
keys are in the repository (`exceptions/approvers.pub`, one `<key id> <base64 raw key>` a line,
`#` comments), so anyone can verify an approval and a key is trusted only by a reviewed commit.

What the signature covers (Approval without `signature`, as canonical JSON): the exception id,
the approver's id and role, the approval time, the expiry, and the sha256 of every other file
of the bundle. Editing any of those voids it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PUBLIC_KEYS = "approvers.pub"


class Approval(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exception: str
    approved_by: str
    approver_role: str
    approved_at: str
    expires_at: str
    content_sha256: str
    key_id: str
    signature: str = ""

    def message(self) -> bytes:
        body = msgspec.to_builtins(self)
        body.pop("signature")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class Revocation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    revoked_by: str
    revoked_at: str
    reason: str


def new_private_key() -> str:
    """A fresh signing key as base64 of its 32 raw bytes (what the vault stores)."""
    return base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()


def _private(key_b64: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(key_b64))


def public_key_b64(private_b64: str) -> str:
    return base64.b64encode(_private(private_b64).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def key_id(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def public_key_line(private_b64: str) -> str:
    pub = public_key_b64(private_b64)
    return f"{key_id(pub)} {pub}"


def read_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """key id -> key. A line whose id does not match its key is ignored (it could not verify)."""
    keys: dict[str, Ed25519PublicKey] = {}
    if not path.is_file():
        return keys
    for line in path.read_text().splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) != 2:
            continue
        kid, pub = parts
        try:
            if key_id(pub) == kid:
                keys[kid] = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub))
        except ValueError:
            continue
    return keys


def sign(approval: Approval, private_b64: str) -> Approval:
    pub = public_key_b64(private_b64)
    unsigned = msgspec.structs.replace(approval, key_id=key_id(pub), signature="")
    sig = _private(private_b64).sign(unsigned.message())
    return msgspec.structs.replace(unsigned, signature=base64.b64encode(sig).decode())


def verify(approval: Approval, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None when the signature is good; otherwise why not."""
    key = keys.get(approval.key_id)
    if key is None:
        return f"approval is signed by key {approval.key_id!r}, which is not in exceptions/{PUBLIC_KEYS}"
    try:
        key.verify(base64.b64decode(approval.signature, validate=True), approval.message())
    except (InvalidSignature, ValueError):
        return "approval signature does not verify (the approval record was altered or forged)"
    return None


__all__ = ["PUBLIC_KEYS", "Approval", "Revocation", "key_id", "new_private_key", "public_key_b64",
           "public_key_line", "read_public_keys", "sign", "verify"]
