"""Opaque cursors for a caller's `tools/list` pages.

Invariant: a cursor resumes only the listing it was cut from: the same caller (user id and
role) under the same policy bundle revision. Any other cursor (another caller's, one cut before a
reload, one altered or made up) is refused with INVALID_INPUT, JSON-RPC -32602, which is what the
MCP spec names for an invalid cursor; it is never silently restarted or answered from another
listing. A cursor grants nothing: every page is cut from the listing policy gives the caller who
presents it, so a forged one could at most page through what that caller may see anyway. The
binding is for correctness, not secrecy, so it needs no key and any gateway replica resumes a
cursor another one cut.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from gateway.errors import Code, GatewayError

VERSION = "1"
MAX_CURSOR_CHARS = 256  # ours are ~40; anything longer is not one of ours


def _binding(caller_id: str, role: str | None, revision: str, offset: int) -> str:
    digest = hashlib.sha256(f"{caller_id}\0{role or ''}\0{revision}\0{offset}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode()


def make_cursor(caller_id: str, role: str | None, revision: str, offset: int) -> str:
    raw = f"{VERSION}:{offset}:{_binding(caller_id, role, revision, offset)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_offset(cursor: str, caller_id: str, role: str | None, revision: str) -> int:
    """Where `cursor` resumes this caller's listing; GatewayError INVALID_INPUT if it cannot."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, offset_text, binding = raw.split(":")
        offset = int(offset_text)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise GatewayError(Code.INVALID_INPUT, "invalid cursor: send back a nextCursor exactly as it was "
                           "received, or list again without one") from None
    if (version != VERSION or offset < 1
            or not hmac.compare_digest(binding, _binding(caller_id, role, revision, offset))):
        raise GatewayError(Code.INVALID_INPUT, "this cursor does not resume your current tool listing (it "
                           "belongs to another caller, or the policy was reloaded since): list again without one")
    return offset


__all__ = ["cursor_offset", "make_cursor"]
