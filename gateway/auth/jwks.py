"""The JWKS key source: a cached map kid -> (alg, public key), fetched from one configured URL.

Invariants:
- Only EC P-256 keys (ES256) and RSA keys of >= 2048 bits (RS256) are loaded. Symmetric (`oct`)
  keys, keys carrying private material, keys whose `alg`/`use`/`key_ops` say they are not for
  verifying with that algorithm, are skipped: a JWKS can never make HS256 verifiable.
- The document is refetched when older than `cache_s` (failed attempts retried at most once per
  `min_refetch_s`), and when asked for an unknown kid, at most once per `min_refetch_s`: a flood of
  random kids costs one request per `min_refetch_s`. Concurrent callers share one request.
- A failed refetch keeps the previous keys (fail static); with no keys at all, lookups fail closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from gateway.auth.model import AuthError

log = logging.getLogger("opsgate.auth")

MAX_JWKS_BYTES = 256 * 1024
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class _JwksDoc(msgspec.Struct):
    keys: list[dict[str, Any]]


class VerifyingKey(msgspec.Struct, frozen=True):
    alg: str  # "ES256" or "RS256"
    key: Any  # a cryptography public key object


def check_jwks_url(url: str) -> None:
    """https only; plain http is allowed for loopback (local Supabase, tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return
    raise ValueError("jwks_url must be https (or http on loopback)")


def load_jwk(jwk: dict[str, Any]) -> tuple[str, VerifyingKey] | None:
    """One JWK -> (kid, key), or None when it is not a usable public verification key."""
    kid, kty, alg = jwk.get("kid"), jwk.get("kty"), jwk.get("alg")
    if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if any(m in jwk for m in _PRIVATE_MEMBERS):
        return None
    try:
        if kty == "EC" and jwk.get("crv") == "P-256":
            expected, key = "ES256", ECAlgorithm.from_jwk(jwk)
        elif kty == "RSA":
            expected, key = "RS256", RSAAlgorithm.from_jwk(jwk)
            if key.key_size < 2048:
                return None
        else:
            return None
    except (PyJWTError, ValueError, TypeError):
        return None
    if alg is not None and alg != expected:
        return None
    return kid, VerifyingKey(expected, key)


def parse_jwks(body: bytes) -> dict[str, VerifyingKey]:
    doc = msgspec.json.decode(body, type=_JwksDoc)
    keys: dict[str, VerifyingKey] = {}
    for jwk in doc.keys:
        loaded = load_jwk(jwk)
        if loaded is None:
            log.warning("JWKS: skipped a key that is not an ES256/RS256 public verification key")
        elif loaded[0] in keys:
            log.warning("JWKS: duplicate kid %r, keeping the first", loaded[0][:64])
        else:
            keys[loaded[0]] = loaded[1]
    return keys


class JwksCache:
    """Looks up verification keys by kid. One instance per event loop."""

    def __init__(self, url: str, *, cache_s: float, min_refetch_s: float, clock: Callable[[], float],
                 http: httpx.AsyncClient | None = None, timeout_s: float = 5.0) -> None:
        check_jwks_url(url)
        self._owns_http = http is None
        self._url, self._cache_s, self._min_refetch_s, self._clock = url, cache_s, min_refetch_s, clock
        if http is None:
            http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._http = http
        self._keys: dict[str, VerifyingKey] = {}
        self._loaded_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._kid_refetched_at: float | None = None  # last fetch caused by an unknown kid
        self._attempts = 0
        self._inflight: asyncio.Future[None] | None = None

    @property
    def fetches(self) -> int:
        """How many times the JWKS document was requested."""
        return self._attempts

    async def key(self, kid: str, alg: str) -> VerifyingKey:
        """The key for `kid`, which must be meant for `alg`. Only a caller that needs a fetch (stale
        cache, unknown kid) waits for one; a known kid in a fresh cache never waits."""
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._cache_s:
            if self._allowed(self._attempted_at, now):
                self._start_fetch(now)
        elif kid in self._keys:
            return self._check(self._keys[kid], alg)
        elif self._allowed(self._kid_refetched_at, now):
            self._kid_refetched_at = now
            self._start_fetch(now)
        if self._inflight is not None:
            await asyncio.shield(self._inflight)  # a cancelled waiter must not cancel everyone's fetch
        found = self._keys.get(kid)
        if found is None:
            raise AuthError("unavailable" if self._loaded_at is None else "unknown_kid")
        return self._check(found, alg)

    @staticmethod
    def _check(found: VerifyingKey, alg: str) -> VerifyingKey:
        if found.alg != alg:
            raise AuthError("algorithm")
        return found

    def _allowed(self, last: float | None, now: float) -> bool:
        return last is None or now - last >= self._min_refetch_s

    def _start_fetch(self, now: float) -> None:
        if self._inflight is None:  # concurrent callers share the one request under way
            self._attempts += 1
            self._attempted_at = now
            self._inflight = asyncio.ensure_future(self._load())

    async def _load(self) -> None:
        try:
            self._keys, self._loaded_at = parse_jwks(await self._fetch()), self._clock()
        except Exception as exc:  # any failure keeps the previous keys; logged without the body
            log.warning("JWKS fetch from %s failed: %s", self._url, type(exc).__name__)
        finally:
            self._inflight = None

    async def _fetch(self) -> bytes:
        async with self._http.stream("GET", self._url, headers={"accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise ValueError(f"JWKS answered HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS document too large")
            return bytes(body)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


__all__ = ["JwksCache", "VerifyingKey", "check_jwks_url", "load_jwk", "parse_jwks"]
