"""Supabase access tokens -> Caller, verified locally on every tool call.

Invariants:
- HS256 is verified only with the configured project secret; ES256/RS256 only with a key from the
  configured JWKS whose type and `alg` match the token's `alg`. Nothing else: no `none`, no key
  named by the token (`jku`, `x5u`, `jwk`, `x5c`), no public key used as an HMAC secret.
- `exp` and `sub` are required; `nbf` and `iat` are checked when present; `aud` must contain the
  configured audience and `iss` must equal the configured issuer; `sub` must be a UUID.
- The role comes from `app_metadata.ops_role` only (`user_metadata` is user-editable); an unknown
  or missing role gives `role=None`, not a failure.
- A verified token is remembered by its exact string for min(token_cache_s, remaining lifetime),
  so a repeated token costs a dict lookup; the cache never outlives `exp`.
- With freshness on, every call (cached token or not) also asks the UserDirectory, whose answers are
  cached per user for `freshness_cache_s`; a directory failure refuses the call.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from jwt.algorithms import Algorithm, ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from gateway.auth.jwks import JwksCache
from gateway.auth.model import ROLES, AuthConfig, AuthError, Caller, Reason
from gateway.auth.ttl import TtlCache
from gateway.auth.users import UserDirectory, UserStatus

log = logging.getLogger("opsgate.auth")

MAX_TOKEN_CHARS = 16 * 1024
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_KEY_SOURCE_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c"})
_STATUS_REASON: dict[str, Reason] = {"banned": "banned", "deleted": "deleted"}
# PyJWT's signature primitives, chosen by us: the key decides the algorithm, the header must agree.
_ALGORITHMS: dict[str, Algorithm] = {"HS256": HMACAlgorithm(HMACAlgorithm.SHA256),
                                     "ES256": ECAlgorithm(ECAlgorithm.SHA256),
                                     "RS256": RSAAlgorithm(RSAAlgorithm.SHA256)}


class _Claims(msgspec.Struct):
    """The claims we read; everything else in the token (user_metadata included) is ignored."""

    exp: int | float | None = None
    sub: str | None = None
    iss: str | None = None
    aud: str | list[str] | None = None
    nbf: int | float | None = None
    iat: int | float | None = None
    email: str | None = None
    session_id: str | None = None
    app_metadata: dict[str, Any] | None = None


class Authenticator:
    """Verifies `Authorization: Bearer <jwt>`. One instance per event loop; share it across requests.

    `users` is required when `config.freshness` is on. `http` (for the JWKS) is created when not
    given and then closed by `aclose()`. `clock` returns Unix seconds.
    """

    def __init__(self, config: AuthConfig, *, users: UserDirectory | None = None,
                 http: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time) -> None:
        _check_config(config, users)
        self._config, self._clock = config, clock
        self._secret = config.hs256_secret
        self._users = users if config.freshness else None
        self._algs = frozenset(
            (["HS256"] if config.hs256_secret else []) + (["ES256", "RS256"] if config.jwks_url else []))
        self._jwks = None if config.jwks_url is None else JwksCache(
            config.jwks_url, cache_s=config.jwks_cache_s, min_refetch_s=config.jwks_min_refetch_s,
            clock=clock, http=http)
        self._tokens: TtlCache[str, Caller] = TtlCache(config.token_cache_size)
        self._statuses: TtlCache[str, UserStatus] = TtlCache(config.token_cache_size)

    @property
    def jwks_fetches(self) -> int:
        """How many times the JWKS document was requested (0 without a JWKS)."""
        return 0 if self._jwks is None else self._jwks.fetches

    async def authenticate(self, authorization_header: str | None) -> Caller:
        """The Caller for this header, or AuthError (code UNAUTHENTICATED)."""
        token = _bearer_token(authorization_header)
        now = self._clock()
        caller = self._tokens.get(token, now)
        if caller is None:
            caller, deadline = await self._verify(token, now)
            self._tokens.put(token, caller, deadline)
        if self._users is not None:
            await self._check_fresh(caller.id, now)
        return caller

    async def _verify(self, token: str, now: float) -> tuple[Caller, float]:
        if len(token) > MAX_TOKEN_CHARS or not _COMPACT_JWS.fullmatch(token):
            raise AuthError("malformed")
        head_b64, payload_b64, sig_b64 = token.split(".")
        try:
            header = msgspec.json.decode(_b64decode(head_b64))
        except (ValueError, msgspec.DecodeError):
            raise AuthError("malformed") from None
        if not isinstance(header, dict):
            raise AuthError("malformed")
        if not _KEY_SOURCE_HEADERS.isdisjoint(header):
            raise AuthError("key_source")
        if "crit" in header:
            raise AuthError("malformed", "token uses unsupported critical header parameters")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algs:
            raise AuthError("algorithm")
        try:
            signature = _b64decode(sig_b64)
        except ValueError:
            raise AuthError("malformed") from None
        key = await self._key(alg, header.get("kid"))
        signing_input = token[: len(head_b64) + 1 + len(payload_b64)].encode("ascii")
        if not _ALGORITHMS[alg].verify(signing_input, key, signature):
            raise AuthError("signature")
        try:  # the payload is parsed only once its signature is known good
            claims = msgspec.json.decode(_b64decode(payload_b64), type=_Claims)
        except (ValueError, msgspec.DecodeError):
            raise AuthError("malformed") from None
        return self._caller(claims, now)

    async def _key(self, alg: str, kid: object) -> Any:
        if alg == "HS256":
            return self._secret  # never a JWKS key: that is the algorithm-confusion door
        if not isinstance(kid, str) or not kid:
            raise AuthError("unknown_kid", "token has no key id")
        assert self._jwks is not None  # alg is in self._algs only when a JWKS is configured
        return (await self._jwks.key(kid, alg)).key

    def _caller(self, c: _Claims, now: float) -> tuple[Caller, float]:
        leeway = self._config.leeway_s
        if c.exp is None:
            raise AuthError("malformed", "token is missing the 'exp' claim")
        if c.exp <= now - leeway:
            raise AuthError("expired")
        if (c.nbf is not None and c.nbf > now + leeway) or (c.iat is not None and c.iat > now + leeway):
            raise AuthError("not_yet_valid")
        if c.iss != self._config.issuer:
            raise AuthError("issuer")
        aud = self._config.audience
        if not (c.aud == aud or (isinstance(c.aud, list) and aud in c.aud)):
            raise AuthError("audience")
        if c.sub is None:
            raise AuthError("malformed", "token is missing the 'sub' claim")
        if not _UUID.fullmatch(c.sub):
            raise AuthError("subject")
        role = (c.app_metadata or {}).get("ops_role")
        caller = Caller(id=c.sub.lower(), role=role if isinstance(role, str) and role in ROLES else None,
                        email=c.email or None, session_id=c.session_id or None, claims_issuer=c.iss)
        return caller, min(float(c.exp), now + self._config.token_cache_s)

    async def _check_fresh(self, user_id: str, now: float) -> None:
        assert self._users is not None
        status = self._statuses.get(user_id, now)
        if status is None:
            try:
                status = await self._users.status(user_id)
            except Exception as exc:  # any directory failure: refuse, do not cache
                log.warning("user directory lookup failed: %s", type(exc).__name__)
                raise AuthError("unavailable") from None
            self._statuses.put(user_id, status, now + self._config.freshness_cache_s)
        if status != "active":
            raise AuthError(_STATUS_REASON.get(status, "unknown_user"))

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def __aenter__(self) -> Authenticator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _b64decode(segment: str) -> bytes:
    """Strict base64url without padding (the alphabet is already checked): non-canonical encodings,
    which would let one token be spelled several ways, are refused."""
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("non-canonical base64url")
    return raw


def _bearer_token(header: str | None) -> str:
    scheme, _, rest = (header or "").strip().partition(" ")
    token = rest.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing")
    return token


def _check_config(config: AuthConfig, users: UserDirectory | None) -> None:
    if config.hs256_secret is None and config.jwks_url is None:
        raise ValueError("AuthConfig needs hs256_secret, jwks_url, or both")
    if config.hs256_secret is not None:
        if len(config.hs256_secret) < 32:
            raise ValueError("hs256_secret must be at least 32 bytes (RFC 7518 3.2)")
        try:
            HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(config.hs256_secret)
        except PyJWTError:
            raise ValueError("hs256_secret looks like an asymmetric key, not an HMAC secret") from None
    if config.freshness and users is None:
        raise ValueError("AuthConfig.freshness needs a UserDirectory")
    if not config.issuer:
        raise ValueError("AuthConfig.issuer is required")


__all__ = ["MAX_TOKEN_CHARS", "Authenticator"]
