"""`exceptions/approvers.pub` as a chain of trust: which keys may sign exception records.

    # comments
    <key id> <base64 key>                                         the root: the file's first key
    <key id> <base64 key> <signer key id> <base64 signature>      any other key, endorsed by a trusted one

Invariants kept here:
- The root is the first key line, trusted on first use. A gateway pins it (in its vault, where a
  commit cannot reach) and hands the pin in: a file whose root is another key trusts no key at all.
- Every other key is trusted only through an unbroken chain of endorsements from the root (the
  signature covers `<key id> <base64 key>` in the ENDORSEMENT domain). An unsigned, self-signed,
  wrongly signed or unknown-signer line is ignored and reported, never trusted: a commit alone
  cannot mint an approver. The order of endorsed lines does not matter.
Pure: the only I/O is reading the file.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engine.exceptions.signing import PUBLIC_KEYS, key_id, private_key, public_key_line

ENDORSEMENT = b"opsgate-exception-approver-key\0"
PIN_HINT = ("if the root really changed, an ops_admin sets the new first line in the gateway's vault: "
            "opsgate vault set opsgate_exception_root_key")


@dataclass(frozen=True)
class Chain:
    """The keys approvers.pub makes trustworthy, and what it ignored (each a sentence)."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)  # key id -> key
    root: str | None = None  # the file's root line, `<key id> <base64 key>`
    ignored: tuple[str, ...] = ()
    refused: str | None = None  # why no key at all is trusted (the root is not the pinned one)

    def summary(self) -> dict[str, object]:
        return {"root": self.root.split()[0] if self.root else None, "trusted": sorted(self.keys),
                "ignored": list(self.ignored), "refused": self.refused}


@dataclass(frozen=True)
class _Line:
    number: int
    kid: str
    pub: str
    key: Ed25519PublicKey
    signer: str | None = None
    signature: str | None = None


def endorsement_message(line: str) -> bytes:
    kid, pub = line.split()[:2]
    return ENDORSEMENT + f"{kid} {pub}".encode()


def endorse(line: str, signer_private_b64: str) -> str:
    """The approvers.pub line that adds `line`'s key, endorsed by the signer's key."""
    kid, pub = parse_key_line(line)
    signer = public_key_line(signer_private_b64).split()[0]
    sig = private_key(signer_private_b64).sign(endorsement_message(f"{kid} {pub}"))
    return f"{kid} {pub} {signer} {base64.b64encode(sig).decode()}"


def parse_key_line(line: str) -> tuple[str, str]:
    """(key id, base64 key) of a `<key id> <base64 key>` line; ValueError when it is not one."""
    parts = line.split()
    if len(parts) != 2:
        raise ValueError("a key is written `<key id> <base64 key>` (opsgate exception key prints it)")
    kid, pub = parts
    Ed25519PublicKey.from_public_bytes(base64.b64decode(pub, validate=True))
    if key_id(pub) != kid:
        raise ValueError(f"key id {kid!r} is not the id of that key ({key_id(pub)})")
    return kid, pub


def _lines(path: Path) -> tuple[list[_Line], list[str]]:
    found, ignored = [], []
    text = path.read_text() if path.is_file() else ""
    for number, raw in enumerate(text.splitlines(), 1):
        parts = raw.split("#", 1)[0].split()
        if not parts:
            continue
        where = f"{PUBLIC_KEYS} line {number}"
        if len(parts) not in (2, 4):
            ignored.append(f"{where}: not `<key id> <key>` or `<key id> <key> <signer key id> <signature>`")
            continue
        try:
            kid, pub = parse_key_line(" ".join(parts[:2]))
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub))
        except ValueError as e:
            ignored.append(f"{where}: {e}")
            continue
        found.append(_Line(number, kid, pub, key, *(parts[2:] or (None, None))))
    return found, ignored


def read_chain(root_dir: str | Path, pinned: str | None = None) -> Chain:
    """The trusted keys of `<root_dir>/approvers.pub`. `pinned` is the root line the gateway pinned
    (None: not pinned yet, the file's first key is the root)."""
    lines, ignored = _lines(Path(root_dir) / PUBLIC_KEYS)
    if not lines:
        refused = (f"{PUBLIC_KEYS} has no key, but this gateway pinned {pinned.split()[0]} as its root: "
                   f"restore the file") if pinned else None
        return Chain(ignored=tuple(ignored), refused=refused)
    first = lines[0]
    root = f"{first.kid} {first.pub}"
    if pinned is not None and pinned.split() != root.split():
        return Chain(root=root, ignored=tuple(ignored), refused=(
            f"{PUBLIC_KEYS} begins with key {first.kid}, but this gateway pinned {pinned.split()[0]} as the root of "
            f"trust: the file was replaced or reordered, so no key in it is trusted and no exception is in force "
            f"(restore it; {PIN_HINT})"))
    trusted = {first.kid: first.key}
    waiting = [ln for ln in lines[1:] if ln.kid != first.kid]
    progress = True
    while progress:  # a fixpoint: an endorsement by a key endorsed further down still counts
        progress = False
        for ln in list(waiting):
            if ln.signer in trusted and ln.kid not in trusted and _endorsed(ln, trusted[ln.signer]):
                trusted[ln.kid] = ln.key
                waiting.remove(ln)
                progress = True
    for ln in waiting:
        if ln.kid not in trusted:
            ignored.append(f"{PUBLIC_KEYS} line {ln.number}: key {ln.kid} is ignored: {_why(ln, trusted)}")
    return Chain(keys=trusted, root=root, ignored=tuple(ignored))


def _endorsed(ln: _Line, signer: Ed25519PublicKey) -> bool:
    try:
        signer.verify(base64.b64decode(ln.signature or "", validate=True), endorsement_message(f"{ln.kid} {ln.pub}"))
    except (InvalidSignature, ValueError):
        return False
    return True


def _why(ln: _Line, trusted: dict[str, Ed25519PublicKey]) -> str:
    if ln.signer is None:
        return ("it is not endorsed by a trusted key (only the first key is trusted on first use; add keys with "
                "`opsgate exception add-key`)")
    if ln.signer == ln.kid:
        return "it endorses itself"
    if ln.signer not in trusted:
        return f"its endorser {ln.signer} is not a trusted key"
    return f"its endorsement by {ln.signer} does not verify"


__all__ = ["ENDORSEMENT", "PIN_HINT", "Chain", "endorse", "endorsement_message", "parse_key_line", "read_chain"]
