"""Value types of authentication: the config that goes in, the Caller that comes out, the one error.

Invariants:
- A Caller carries only what the gateway needs; nothing else leaks from the token.
- An AuthError never contains the token or any part of it: its message is one of a fixed set
  of phrases (plus, at most, the name of a missing claim).
- An unknown or missing role is not an authentication failure: `Caller.role` is None and
  policy later grants nothing.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

ROLES: frozenset[str] = frozenset({"ops_viewer", "ops_operator", "ops_admin"})

Reason = Literal[
    "missing",  # no `Authorization: Bearer <jwt>` header
    "malformed",  # not a JWS compact token, bad JSON, wrong claim types, missing claims
    "algorithm",  # alg not accepted (none, HS384, HS256 without a secret, alg/key mismatch)
    "key_source",  # jku / x5u / jwk / x5c headers: keys come only from our config
    "unknown_kid",  # kid not in the JWKS, even after a refetch
    "signature",  # signature does not verify
    "expired",
    "not_yet_valid",
    "audience",
    "issuer",
    "subject",  # sub is not a UUID
    "banned",
    "deleted",
    "unknown_user",  # no such row in auth.users
    "unavailable",  # JWKS or user directory could not be reached: fail closed
]

_MESSAGES: dict[Reason, str] = {
    "missing": "missing bearer token",
    "malformed": "malformed token",
    "algorithm": "unsupported token algorithm",
    "key_source": "token names an untrusted key source",
    "unknown_kid": "token signing key is unknown",
    "signature": "invalid token signature",
    "expired": "token has expired",
    "not_yet_valid": "token is not yet valid",
    "audience": "token audience is not accepted",
    "issuer": "token issuer is not accepted",
    "subject": "token subject is not a valid user id",
    "banned": "user is banned",
    "deleted": "user has been deleted",
    "unknown_user": "user does not exist",
    "unavailable": "authentication is temporarily unavailable",
}


class AuthError(Exception):
    """The caller could not be authenticated. `code` is stable; `reason` says why, `message` is safe
    to show to the caller and to log."""

    code: ClassVar[str] = "UNAUTHENTICATED"

    def __init__(self, reason: Reason, message: str | None = None) -> None:
        self.reason: Reason = reason
        self.message: str = message or _MESSAGES[reason]
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.message!r})"


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How to verify Supabase access tokens.

    `hs256_secret` is the project's JWT secret as bytes (read from the vault by the caller, never
    from the environment); `jwks_url` is `<project>/auth/v1/.well-known/jwks.json`. At least one is
    required. HS256 is accepted only when a secret is given; ES256/RS256 only when a JWKS is.
    """

    issuer: str
    audience: str = "authenticated"
    hs256_secret: bytes | None = None
    jwks_url: str | None = None
    jwks_cache_s: float = 600.0
    jwks_min_refetch_s: float = 10.0  # an unknown kid refetches the JWKS at most this often
    leeway_s: int = 30
    freshness: bool = False  # check auth.users (banned / deleted) through a UserDirectory
    freshness_cache_s: float = 30.0
    token_cache_s: float = 60.0  # a verified token is remembered for min(this, its remaining life)
    token_cache_size: int = 10_000

    def __repr__(self) -> str:  # the secret must not reach logs
        secret = "<set>" if self.hs256_secret else None
        return f"AuthConfig(issuer={self.issuer!r}, jwks_url={self.jwks_url!r}, hs256_secret={secret})"


class Caller(msgspec.Struct, frozen=True):
    """An authenticated caller. `id` is the Supabase user id (lower-case UUID); `role` is one of
    ROLES or None."""

    id: str
    role: str | None
    email: str | None
    session_id: str | None
    claims_issuer: str


__all__ = ["ROLES", "AuthConfig", "AuthError", "Caller", "Reason"]
