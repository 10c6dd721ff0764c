"""Signed records of an exception's lifecycle: the filing receipt, the approval, the revocation.

Each is signed with Ed25519 by an approvers' key (the private half lives in a vault: the gateway
and the CLI hand its raw bytes in; the public halves are in `exceptions/approvers.pub`, a chain of
trust: engine.exceptions.approvers). What a signature covers is the record without `signature`,
as canonical JSON, prefixed by the record's own domain (`opsgate-exception-filing\\0`, ...), so a
signature made for one kind of record never verifies as another.

- Filing (filing.json): who filed (a verified token's user id, never a field anyone can type),
  when, and the sha256 of exception.yaml as filed. An edit of exception.yaml voids it.
- Approval (approval.json): the filer (from the receipt), the approver and role, the time, the
  expiry, and the sha256 of every other file of the bundle (filing.json included).
- Revocation (revocation.json): who revoked, when, why. It is not the anchor of a revocation (the
  audit trail is: a file can be deleted), but it says so in the repository and is attributable.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import ClassVar, TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PUBLIC_KEYS = "approvers.pub"


class Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A record signed by an approvers' key. Subclasses name their DOMAIN."""

    DOMAIN: ClassVar[bytes] = b""
    WHAT: ClassVar[str] = "record"
    key_id: str = ""
    signature: str = ""

    def message(self) -> bytes:
        body = msgspec.to_builtins(self)
        body.pop("signature")
        return self.DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class Filing(Signed, frozen=True):
    DOMAIN: ClassVar[bytes] = b"opsgate-exception-filing\0"
    WHAT: ClassVar[str] = "filing receipt"
    exception: str
    filed_by: str  # the verified filer's user id (a token's sub)
    filer_role: str
    filed_at: str
    spec_sha256: str  # sha256 of exception.yaml as filed


class Approval(Signed, frozen=True):
    DOMAIN: ClassVar[bytes] = b"opsgate-exception-approval\0"
    WHAT: ClassVar[str] = "approval"
    exception: str
    filed_by: str  # copied from the filing receipt: the approver must not be this user
    approved_by: str
    approver_role: str
    approved_at: str
    expires_at: str
    content_sha256: str


class Revocation(Signed, frozen=True):
    DOMAIN: ClassVar[bytes] = b"opsgate-exception-revocation\0"
    WHAT: ClassVar[str] = "revocation"
    exception: str
    revoked_by: str
    revoked_at: str
    reason: str


def new_private_key() -> str:
    """A fresh signing key as base64 of its 32 raw bytes (what the vault stores)."""
    return base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()


def private_key(key_b64: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(key_b64))


def public_key_b64(private_b64: str) -> str:
    return base64.b64encode(private_key(private_b64).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def key_id(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def public_key_line(private_b64: str) -> str:
    """`<key id> <base64 public key>`: how approvers.pub names a key."""
    pub = public_key_b64(private_b64)
    return f"{key_id(pub)} {pub}"


S = TypeVar("S", bound=Signed)


def sign(record: S, private_b64: str) -> S:
    pub = public_key_b64(private_b64)
    unsigned = msgspec.structs.replace(record, key_id=key_id(pub), signature="")
    sig = private_key(private_b64).sign(unsigned.message())
    return msgspec.structs.replace(unsigned, signature=base64.b64encode(sig).decode())


def verify(record: Signed, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None when the signature is good and by a trusted key; otherwise why not."""
    key = keys.get(record.key_id)
    if key is None:
        return (f"the {record.WHAT} is signed by key {record.key_id!r}, which exceptions/{PUBLIC_KEYS} does not "
                "trust")
    try:
        key.verify(base64.b64decode(record.signature, validate=True), record.message())
    except (InvalidSignature, ValueError):
        return f"the {record.WHAT}'s signature does not verify (the record was altered or forged)"
    return None


__all__ = ["PUBLIC_KEYS", "Approval", "Filing", "Revocation", "Signed", "key_id", "new_private_key",
           "private_key", "public_key_b64", "public_key_line", "sign", "verify"]
