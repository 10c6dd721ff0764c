"""Console sessions: a browser holds a random session id in a cookie; the server holds the rest.

Invariants:
- The cookie carries only the session id: 256 random bits, HttpOnly, SameSite=Strict, Secure and
  `__Host-` when the console is served over TLS (gateway/console/cookies.py), and a lifetime no longer
  than the access token's.
  It is never logged and never stored: the store's key is its SHA-256.
- The store holds the access token encrypted under a key derived from the session id, so the store
  alone (a Redis dump, a memory image of another worker) yields no token. Every request decrypts it
  and has it verified again exactly as the API verifies a bearer token (signature, expiry, issuer,
  audience, and user freshness when configured): a session dies no later than its token's `exp`.
- Each session has its own CSRF token (a synchronizer token); every state change must present it.
- The sign-in forms (before there is a session) carry a double-submit token: a random value in a
  cookie of its own and in the form, compared; nothing is stored for a visitor who only looks.
- An OAuth sign-in has a short-lived record under its own cookie: the `state` and the PKCE verifier,
  good for one callback. Expired records of the in-memory store are swept (at most once a minute), so
  abandoned sign-ins cannot pile up.
- Sign-out deletes the record: the cookie is worthless from then on, in every worker sharing the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore

SESSION_COOKIE = "opsgate_console"
FLOW_COOKIE = "opsgate_console_signin"  # the sign-in forms' double-submit token
OAUTH_COOKIE = "opsgate_console_oauth"  # an OAuth sign-in's record id
FLOW_TTL_S = 600
MAX_SESSION_S = 12 * 3600  # never longer than this, even for a longer-lived token


class SessionRecord(msgspec.Struct, frozen=True):
    user_id: str
    role: str | None
    token: bytes  # the access token, AES-GCM encrypted under a key derived from the session id
    nonce: bytes
    csrf: str
    expires_at: float  # Unix seconds: the token's exp, or sooner
    how: str  # "demo", "token" or "oauth": how the user signed in


class Flow(msgspec.Struct, frozen=True):
    """An OAuth sign-in in progress."""

    state: str  # what the authorization server must hand back
    verifier: str  # the PKCE code_verifier
    redirect_uri: str
    expires_at: float


@dataclass(frozen=True)
class Opened:
    """A session as a request sees it: its id (to sign out) and record."""

    sid: str
    record: SessionRecord


def _key(kind: str, sid: str) -> str:
    return f"{kind}:{hashlib.sha256(sid.encode()).hexdigest()}"


def _cipher(sid: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"opsgate-console-token\x00" + sid.encode()).digest())


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens (CSRF, OAuth state)."""
    return hmac.compare_digest(a.encode(), b.encode())


class Sessions:
    """Sessions and sign-in flows in a Litestar store (memory in one process, Redis across workers)."""

    SWEEP_S = 60.0

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._swept = clock()

    async def _sweep(self) -> None:
        """Drop expired records from a store that keeps them until read (Litestar's MemoryStore)."""
        if isinstance(self.store, MemoryStore) and self._clock() - self._swept >= self.SWEEP_S:
            self._swept = self._clock()
            await self.store.delete_expired()

    async def open(self, *, token: str, user_id: str, role: str | None, exp: float, how: str) -> tuple[str, float]:
        """A new session for a verified token; returns (session id, its lifetime in seconds)."""
        now = self._clock()
        expires_at = min(exp, now + MAX_SESSION_S)
        lifetime = expires_at - now
        if lifetime <= 1:
            raise ValueError("the token expires too soon to sign in with")
        await self._sweep()
        sid = secrets.token_urlsafe(32)
        nonce = os.urandom(12)
        record = SessionRecord(user_id=user_id, role=role, token=_cipher(sid).encrypt(nonce, token.encode(), None),
                               nonce=nonce, csrf=secrets.token_urlsafe(32), expires_at=expires_at, how=how)
        await self.store.set(_key("s", sid), msgspec.msgpack.encode(record), expires_in=int(lifetime) + 1)
        return sid, lifetime

    async def get(self, sid: str | None) -> tuple[Opened, str] | None:
        """The live session `sid` names and its decrypted access token, or None."""
        if not sid or len(sid) > 100:
            return None
        raw = await self.store.get(_key("s", sid))
        if raw is None:
            return None
        try:
            record = msgspec.msgpack.decode(raw, type=SessionRecord)
            token = _cipher(sid).decrypt(record.nonce, record.token, None).decode()
        except Exception:  # a record that does not decrypt under this id is no session of its
            return None
        if record.expires_at <= self._clock():
            await self.store.delete(_key("s", sid))
            return None
        return Opened(sid, record), token

    async def close(self, sid: str) -> None:
        await self.store.delete(_key("s", sid))

    async def aclose(self) -> None:
        """Release the store's connections (a Redis client), at the app's shutdown."""
        closing = getattr(self.store, "__aexit__", None)
        if closing is not None:
            await closing(None, None, None)

    async def start_flow(self, *, state: str, verifier: str, redirect_uri: str) -> str:
        await self._sweep()
        fid = secrets.token_urlsafe(32)
        flow = Flow(state=state, verifier=verifier, redirect_uri=redirect_uri, expires_at=self._clock() + FLOW_TTL_S)
        await self.store.set(_key("f", fid), msgspec.msgpack.encode(flow), expires_in=FLOW_TTL_S)
        return fid

    async def flow(self, fid: str | None) -> Flow | None:
        if not fid or len(fid) > 100:
            return None
        raw = await self.store.get(_key("f", fid))
        if raw is None:
            return None
        try:
            flow = msgspec.msgpack.decode(raw, type=Flow)
        except msgspec.DecodeError:
            return None
        return flow if flow.expires_at > self._clock() else None

    async def end_flow(self, fid: str) -> None:
        await self.store.delete(_key("f", fid))


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def token_expiry(token: str) -> float:
    """The `exp` of a token the authenticator has already verified (its signature covered this)."""
    payload = token.split(".")[1]
    claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


__all__ = ["FLOW_COOKIE", "OAUTH_COOKIE", "SESSION_COOKIE", "Flow", "Opened", "SessionRecord",
           "Sessions", "pkce_pair", "same", "token_expiry"]
