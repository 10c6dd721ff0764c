"""Authentication on real tokens: minted with PyJWT and fresh keys, JWKS from a real loopback
server, freshness against the real Postgres. Every hostile token is refused with its own reason."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import (
    AuthConfig,
    Authenticator,
    AuthError,
    Caller,
    PostgresUserDirectory,
    StaticUserDirectory,
)
from gateway.auth.jwks import parse_jwks
from tests.jwks_server import JwksServer

pytestmark = pytest.mark.anyio

ISS = "https://abcdefghijklmnop.supabase.co/auth/v1"
SECRET = b"super-secret-jwt-token-with-at-least-32-characters-long"
UID = "7d9f4c1e-0000-4000-8000-000000000001"
SESSION = "5b1e2c3d-0000-4000-8000-0000000000aa"
T0 = 1_800_000_000.0
DROP = object()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Keys:
    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ec2 = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.evil = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def jwk(private: Any, kid: str) -> dict[str, Any]:
    pub = private.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return {**ECAlgorithm.to_jwk(pub, as_dict=True), "kid": kid, "alg": "ES256", "use": "sig",
                "key_ops": ["verify"]}
    return {**RSAAlgorithm.to_jwk(pub, as_dict=True), "kid": kid, "alg": "RS256", "use": "sig"}


def pem(private: Any) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS, "sub": UID, "aud": "authenticated", "exp": int(T0) + 3600, "iat": int(T0),
        "email": "ana@example.com", "phone": "", "role": "authenticated", "aal": "aal1",
        "session_id": SESSION, "is_anonymous": False,
        "app_metadata": {"provider": "email", "providers": ["email"], "ops_role": "ops_viewer"},
        "user_metadata": {"name": "Ana"},
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not DROP}


def hs(payload: dict[str, Any] | None = None, secret: bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(payload or claims(), secret, algorithm="HS256", headers=headers or None)


def es(key: Any, kid: str, payload: dict[str, Any] | None = None, **headers: Any) -> str:
    return jwt.encode(payload or claims(), key, algorithm="ES256", headers={"kid": kid, **headers})


def rs(key: Any, kid: str, payload: dict[str, Any] | None = None, **headers: Any) -> str:
    return jwt.encode(payload or claims(), key, algorithm="RS256", headers={"kid": kid, **headers})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: Any, payload: Any, signature: bytes = b"", hmac_key: bytes | None = None) -> str:
    """A token built by hand: JSON (or raw bytes) segments, then a given or HMAC-SHA256 signature."""
    seg = [b64(x if isinstance(x, bytes) else json.dumps(x).encode()) for x in (header, payload)]
    signing_input = f"{seg[0]}.{seg[1]}".encode()
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input, hashlib.sha256).digest()
    return f"{seg[0]}.{seg[1]}.{b64(signature)}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks_server(keys: Keys) -> Any:
    with JwksServer({"keys": [jwk(keys.ec, "ec-1"), jwk(keys.rsa, "rsa-1")]}) as srv:
        yield srv


@pytest.fixture
async def make_auth(anyio_backend: str, clock: Clock) -> AsyncIterator[Callable[..., Authenticator]]:
    made: list[Authenticator] = []

    def make(users: Any = None, **config: Any) -> Authenticator:
        cfg = {"issuer": ISS, "hs256_secret": SECRET, **config}
        made.append(Authenticator(AuthConfig(**cfg), users=users, clock=clock))
        return made[-1]

    yield make
    for auth in made:
        await auth.aclose()


async def refused(auth: Authenticator, header: str | None, reason: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await auth.authenticate(header)
    err = info.value
    assert (err.reason, err.code, str(err)) == (reason, "UNAUTHENTICATED", err.message)
    for part in (header or "").replace(" ", ".").split("."):
        if len(part) > 6:  # no piece of the token is ever echoed
            assert part not in err.message and part not in repr(err)
    return err


# -- valid tokens and roles ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ops_viewer", "ops_operator", "ops_admin"])
async def test_valid_token_gives_caller_with_role(make_auth: Any, role: str) -> None:
    token = hs(claims(app_metadata={"provider": "email", "ops_role": role}))
    caller = await make_auth().authenticate(bearer(token))
    assert caller == Caller(id=UID, role=role, email="ana@example.com", session_id=SESSION, claims_issuer=ISS)


async def test_role_only_in_user_metadata_is_ignored(make_auth: Any) -> None:
    token = hs(claims(app_metadata={"provider": "email"}, user_metadata={"ops_role": "ops_admin"}))
    assert (await make_auth().authenticate(bearer(token))).role is None


async def test_user_metadata_never_overrides_app_metadata(make_auth: Any) -> None:
    token = hs(claims(user_metadata={"ops_role": "ops_admin"}))
    assert (await make_auth().authenticate(bearer(token))).role == "ops_viewer"


async def test_missing_app_metadata_is_authenticated_without_role(make_auth: Any) -> None:
    token = hs(claims(app_metadata=DROP, email=DROP, session_id=DROP))
    caller = await make_auth().authenticate(bearer(token))
    assert (caller.id, caller.role, caller.email, caller.session_id) == (UID, None, None, None)


@pytest.mark.parametrize("role", ["root", "OPS_ADMIN", "ops_admin ", ["ops_admin"], {"r": 1}, 1, None])
async def test_unknown_role_is_none_not_a_failure(make_auth: Any, role: Any) -> None:
    token = hs(claims(app_metadata={"ops_role": role}))
    assert (await make_auth().authenticate(bearer(token))).role is None


async def test_uppercase_uuid_subject_is_normalised(make_auth: Any) -> None:
    assert (await make_auth().authenticate(bearer(hs(claims(sub=UID.upper()))))).id == UID


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(make_auth: Any, scheme: str) -> None:
    assert (await make_auth().authenticate(f"  {scheme}   {hs()}  ")).id == UID


# -- refused: header and format -----------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz",
                                    "Token abc.def.ghi", "JWT", "Bearerabc.def.ghi"])
async def test_missing_bearer_is_refused(make_auth: Any, header: str | None) -> None:
    await refused(make_auth(), header, "missing")


async def test_token_without_scheme_is_refused(make_auth: Any) -> None:
    await refused(make_auth(), hs(), "missing")


@pytest.mark.parametrize("token", [
    "abc", "abc.def", "a.b.c.d", "....", "é.é.é", "abc.def.ghi", "a b.c",
    b64(b"not json") + "." + b64(b"{}") + ".",
    b64(b"[1,2]") + "." + b64(b"{}") + ".",
    hs() + "=",
    "x" * 20_000 + ".a.b",
])
async def test_malformed_tokens_are_refused(make_auth: Any, token: str) -> None:
    await refused(make_auth(), bearer(token), "malformed")


@pytest.mark.parametrize("payload", [b"not json", b"[1]", *(json.dumps(claims(**bad)).encode() for bad in (
    {"exp": "soon"}, {"exp": True}, {"sub": 123}, {"app_metadata": "admin"}, {"exp": DROP}, {"sub": DROP}))])
async def test_well_signed_but_malformed_claims_are_refused(make_auth: Any, payload: bytes) -> None:
    token = craft({"alg": "HS256", "typ": "JWT"}, payload, hmac_key=SECRET)
    await refused(make_auth(), bearer(token), "malformed")


async def test_non_canonical_base64_is_refused(make_auth: Any) -> None:
    """The same signature spelled differently (unused low bits set) is not the same token."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    token = hs()
    assert alphabet.index(token[-1]) % 4 == 0  # 32-byte MAC: the last character has 2 unused bits
    await refused(make_auth(), bearer(token[:-1] + alphabet[alphabet.index(token[-1]) + 1]), "malformed")
    await refused(make_auth(), bearer("abcde.abcde.abcde"), "malformed")


async def test_critical_header_extensions_are_refused(make_auth: Any) -> None:
    token = craft({"alg": "HS256", "crit": ["exp"], "exp": 1}, claims(), hmac_key=SECRET)
    await refused(make_auth(), bearer(token), "malformed")


@pytest.mark.parametrize("sub", ["alice", "", "7d9f4c1e000040008000000000000001", "{" + UID + "}",
                                 "urn:uuid:" + UID, UID[:-1] + "g", UID + "\n", " " + UID])
async def test_subject_must_be_a_uuid(make_auth: Any, sub: str) -> None:
    await refused(make_auth(), bearer(hs(claims(sub=sub))), "subject")


# -- refused: time, audience, issuer, signature -------------------------------------------------


async def test_expired_is_refused_but_leeway_is_honoured(make_auth: Any) -> None:
    auth = make_auth()
    await refused(auth, bearer(hs(claims(exp=int(T0) - 31))), "expired")
    assert (await auth.authenticate(bearer(hs(claims(exp=int(T0) - 10))))).id == UID


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_not_yet_valid_is_refused_but_leeway_is_honoured(make_auth: Any, claim: str) -> None:
    auth = make_auth()
    await refused(auth, bearer(hs(claims(**{claim: int(T0) + 120}))), "not_yet_valid")
    assert (await auth.authenticate(bearer(hs(claims(**{claim: int(T0) + 10}))))).id == UID


@pytest.mark.parametrize("aud", ["anon", "Authenticated", ["other"], [], DROP, None])
async def test_wrong_audience_is_refused(make_auth: Any, aud: Any) -> None:
    await refused(make_auth(), bearer(hs(claims(aud=aud))), "audience")


async def test_audience_list_containing_ours_is_accepted(make_auth: Any) -> None:
    assert (await make_auth().authenticate(bearer(hs(claims(aud=["x", "authenticated"]))))).id == UID


@pytest.mark.parametrize("iss", ["https://evil.supabase.co/auth/v1", ISS + "/", "supabase", DROP])
async def test_wrong_issuer_is_refused(make_auth: Any, iss: Any) -> None:
    await refused(make_auth(), bearer(hs(claims(iss=iss))), "issuer")


async def test_wrong_hs256_secret_is_refused(make_auth: Any) -> None:
    await refused(make_auth(), bearer(hs(secret=b"another-secret-of-at-least-32-bytes!!")), "signature")


async def test_tampered_payload_is_refused(make_auth: Any) -> None:
    head, _, sig = hs().split(".")
    forged = b64(json.dumps(claims(app_metadata={"ops_role": "ops_admin"})).encode())
    await refused(make_auth(), bearer(f"{head}.{forged}.{sig}"), "signature")


# -- refused: algorithm policy ------------------------------------------------------------------


@pytest.mark.parametrize("header", [{"alg": "none"}, {"alg": "None"}, {"alg": "NONE"}, {"alg": "nOnE"},
                                   {"alg": "none", "typ": "JWT"}, {"alg": ""}, {"alg": None}, {"typ": "JWT"},
                                   {"alg": ["HS256"]}])
async def test_alg_none_and_missing_alg_are_refused(make_auth: Any, header: dict[str, Any]) -> None:
    token = craft(header, claims(app_metadata={"ops_role": "ops_admin"}))
    await refused(make_auth(), bearer(token), "algorithm")
    signed = craft(header, claims(), hmac_key=SECRET)  # even carrying a valid HS256 signature
    await refused(make_auth(), bearer(signed), "algorithm")


@pytest.mark.parametrize("alg", ["HS384", "HS512", "ES384", "PS256", "EdDSA", "hs256"])
async def test_other_algorithms_are_refused(make_auth: Any, alg: str) -> None:
    await refused(make_auth(), bearer(craft({"alg": alg}, claims(), hmac_key=SECRET)), "algorithm")


async def test_hs256_refused_when_no_secret_is_configured(make_auth: Any, jwks_server: JwksServer) -> None:
    await refused(make_auth(hs256_secret=None, jwks_url=jwks_server.url), bearer(hs()), "algorithm")
    assert jwks_server.requests == 0


async def test_asymmetric_refused_when_no_jwks_is_configured(make_auth: Any, keys: Keys) -> None:
    await refused(make_auth(), bearer(es(keys.ec, "ec-1")), "algorithm")


@pytest.mark.parametrize("which", ["ec", "rsa"])
@pytest.mark.parametrize("with_secret", [True, False])
async def test_public_key_as_hmac_secret_is_refused(make_auth: Any, keys: Keys, jwks_server: JwksServer,
                                                    which: str, with_secret: bool) -> None:
    """The classic confusion: HS256 'signed' with the server's public key PEM (or its JWK text)."""
    auth = make_auth(hs256_secret=SECRET if with_secret else None, jwks_url=jwks_server.url)
    private, kid = (keys.ec, "ec-1") if which == "ec" else (keys.rsa, "rsa-1")
    forged_claims = claims(app_metadata={"ops_role": "ops_admin"})
    for secret in (pem(private), json.dumps(jwk(private, kid)).encode()):
        token = craft({"alg": "HS256", "typ": "JWT", "kid": kid}, forged_claims, hmac_key=secret)
        await refused(auth, bearer(token), "signature" if with_secret else "algorithm")


async def test_symmetric_key_published_in_jwks_is_never_used(make_auth: Any, keys: Keys) -> None:
    leaked = b"a-symmetric-key-somebody-put-in-the-jwks!!"
    doc = {"keys": [jwk(keys.ec, "ec-1"), {"kty": "oct", "kid": "sym", "alg": "HS256", "k": b64(leaked)}]}
    with JwksServer(doc) as srv:
        token = craft({"alg": "HS256", "kid": "sym"}, claims(), hmac_key=leaked)
        await refused(make_auth(hs256_secret=None, jwks_url=srv.url), bearer(token), "algorithm")
        await refused(make_auth(jwks_url=srv.url), bearer(token), "signature")


async def test_token_alg_must_match_the_jwks_key(make_auth: Any, keys: Keys, jwks_server: JwksServer) -> None:
    auth = make_auth(hs256_secret=None, jwks_url=jwks_server.url)
    await refused(auth, bearer(rs(keys.rsa, "ec-1")), "algorithm")  # RS256 naming the EC key
    await refused(auth, bearer(es(keys.ec, "rsa-1")), "algorithm")  # ES256 naming the RSA key


async def test_jwks_token_without_kid_is_refused(make_auth: Any, keys: Keys, jwks_server: JwksServer) -> None:
    token = jwt.encode(claims(), keys.ec, algorithm="ES256")
    err = await refused(make_auth(jwks_url=jwks_server.url), bearer(token), "unknown_kid")
    assert err.message == "token has no key id"


# -- refused: keys named by the token -----------------------------------------------------------


async def test_jku_pointing_at_attacker_jwks_is_refused_and_never_fetched(make_auth: Any, keys: Keys,
                                                                          jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url)
    with JwksServer({"keys": [jwk(keys.evil, "evil")]}) as attacker:
        admin = claims(app_metadata={"ops_role": "ops_admin"})
        await refused(auth, bearer(es(keys.evil, "evil", admin, jku=attacker.url)), "key_source")
        await refused(auth, bearer(es(keys.evil, "ec-1", admin, jku=attacker.url)), "key_source")
        await refused(auth, bearer(es(keys.ec, "ec-1", jku=jwks_server.url)), "key_source")  # even our own
        assert attacker.requests == 0


@pytest.mark.parametrize("name", ["x5u", "jwk", "x5c"])
async def test_other_key_source_headers_are_refused(make_auth: Any, keys: Keys, jwks_server: JwksServer,
                                                    name: str) -> None:
    value = {"x5u": "https://evil.example/cert.pem", "jwk": jwk(keys.evil, "evil"), "x5c": ["MIIB"]}[name]
    token = es(keys.evil, "ec-1", claims(app_metadata={"ops_role": "ops_admin"}), **{name: value})
    await refused(make_auth(jwks_url=jwks_server.url), bearer(token), "key_source")


# -- JWKS: verification, caching, refetch limits, rotation --------------------------------------


async def test_es256_and_rs256_verified_from_one_jwks_fetch(make_auth: Any, keys: Keys,
                                                            jwks_server: JwksServer) -> None:
    auth = make_auth(hs256_secret=None, jwks_url=jwks_server.url)
    assert (await auth.authenticate(bearer(es(keys.ec, "ec-1")))).id == UID
    assert (await auth.authenticate(bearer(rs(keys.rsa, "rsa-1")))).role == "ops_viewer"
    assert jwks_server.requests == auth.jwks_fetches == 1


async def test_wrong_key_for_a_known_kid_is_refused(make_auth: Any, keys: Keys,
                                                     jwks_server: JwksServer) -> None:
    await refused(make_auth(jwks_url=jwks_server.url), bearer(es(keys.evil, "ec-1")), "signature")


async def test_unknown_kid_refetches_once_then_is_refused(make_auth: Any, keys: Keys, clock: Clock,
                                                          jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url, jwks_min_refetch_s=10)
    await auth.authenticate(bearer(es(keys.ec, "ec-1")))
    assert jwks_server.requests == 1
    await refused(auth, bearer(es(keys.evil, "nope-1")), "unknown_kid")
    assert jwks_server.requests == 2
    await refused(auth, bearer(es(keys.evil, "nope-2")), "unknown_kid")  # within 10 s: no refetch
    assert jwks_server.requests == 2
    clock.now += 10
    await refused(auth, bearer(es(keys.evil, "nope-3")), "unknown_kid")
    assert jwks_server.requests == 3


async def test_flood_of_unknown_kids_is_coalesced_and_rate_limited(make_auth: Any, keys: Keys, clock: Clock,
                                                                   jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url, jwks_min_refetch_s=10)
    await auth.authenticate(bearer(es(keys.ec, "ec-1")))
    clock.now += 10
    jwks_server.delay_s = 0.2  # all 50 arrive while the one refetch is in flight
    tokens = [bearer(es(keys.evil, f"random-{i}")) for i in range(50)]
    results = await asyncio.gather(*(auth.authenticate(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, AuthError) and r.reason == "unknown_kid" for r in results)
    assert jwks_server.requests == 2
    jwks_server.delay_s = 0
    for second in range(60):  # a minute of floods: one fetch per 10 s at most
        clock.now += 1
        for t in tokens[:5]:
            await refused(auth, t, "unknown_kid")
        assert jwks_server.requests <= 2 + (second + 1) // 10
    assert jwks_server.requests == 8


async def test_known_kid_never_waits_for_an_unknown_kid_refetch(make_auth: Any, keys: Keys,
                                                                 jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url)
    await auth.authenticate(bearer(es(keys.ec, "ec-1")))
    jwks_server.held.clear()  # the refetch gets no answer until the known kid has been served
    stalled = asyncio.ensure_future(auth.authenticate(bearer(es(keys.evil, "random"))))
    while jwks_server.requests < 2:  # the refetch is in flight
        await asyncio.sleep(0.01)
    # 10 s only keeps a broken gateway from hanging the suite: the refetch cannot end before held.set().
    known = await asyncio.wait_for(auth.authenticate(bearer(es(keys.ec, "ec-1", claims(iat=int(T0) - 1)))), 10)
    assert known.id == UID and not stalled.done()
    jwks_server.held.set()
    with pytest.raises(AuthError, match="token signing key is unknown"):
        await stalled
    assert jwks_server.requests == 2


async def test_concurrent_first_requests_share_one_fetch(make_auth: Any, keys: Keys,
                                                         jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url)
    jwks_server.delay_s = 0.2
    tokens = [bearer(es(keys.ec, "ec-1", claims(iat=int(T0) - i))) for i in range(20)]
    callers = await asyncio.gather(*(auth.authenticate(t) for t in tokens))
    assert {c.id for c in callers} == {UID} and jwks_server.requests == 1


async def test_jwks_is_cached_then_refreshed_after_cache_s(make_auth: Any, keys: Keys, clock: Clock,
                                                           jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url, jwks_cache_s=600)
    for i in range(3):
        clock.now += 100
        await auth.authenticate(bearer(es(keys.ec, "ec-1", claims(iat=int(clock.now) - i))))
    assert jwks_server.requests == 1
    clock.now += 400  # first fetch was at +100: now 600 s old
    await auth.authenticate(bearer(es(keys.ec, "ec-1", claims(iat=int(T0) + 1))))
    assert jwks_server.requests == 2


async def test_rotation_new_kid_picked_up_old_kid_dropped_after_cache(
        make_auth: Any, keys: Keys, clock: Clock, jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url, jwks_cache_s=600, jwks_min_refetch_s=10)
    await auth.authenticate(bearer(es(keys.ec, "ec-1")))
    jwks_server.jwks = {"keys": [jwk(keys.ec2, "ec-2")]}  # rotate: ec-1 withdrawn, ec-2 published
    clock.now += 11
    assert (await auth.authenticate(bearer(es(keys.ec2, "ec-2")))).id == UID  # unknown kid -> refetch
    assert jwks_server.requests == 2
    await refused(auth, bearer(es(keys.ec, "ec-1", claims(iat=int(T0) + 1))), "unknown_kid")

    auth2 = make_auth(jwks_url=jwks_server.url, jwks_cache_s=600, jwks_min_refetch_s=10)
    jwks_server.jwks = {"keys": [jwk(keys.ec, "ec-1")]}
    await auth2.authenticate(bearer(es(keys.ec, "ec-1")))
    jwks_server.jwks = {"keys": [jwk(keys.ec2, "ec-2")]}
    clock.now += 100  # cache still fresh: the withdrawn key is still honoured
    await auth2.authenticate(bearer(es(keys.ec, "ec-1", claims(iat=int(T0) + 2))))
    clock.now += 500  # cache expired: refetched, ec-1 is gone
    await refused(auth2, bearer(es(keys.ec, "ec-1", claims(iat=int(T0) + 3))), "unknown_kid")


async def test_jwks_unreachable_fails_closed(make_auth: Any, keys: Keys, clock: Clock,
                                             jwks_server: JwksServer) -> None:
    jwks_server.status = 500
    auth = make_auth(jwks_url=jwks_server.url, jwks_min_refetch_s=10)
    await refused(auth, bearer(es(keys.ec, "ec-1")), "unavailable")
    await refused(auth, bearer(es(keys.ec, "ec-1", claims(iat=int(T0) - 1))), "unavailable")
    assert jwks_server.requests == 1
    jwks_server.status = 200
    clock.now += 10
    assert (await auth.authenticate(bearer(es(keys.ec, "ec-1")))).id == UID


async def test_failed_refresh_keeps_previous_keys(make_auth: Any, keys: Keys, clock: Clock,
                                                  jwks_server: JwksServer) -> None:
    auth = make_auth(jwks_url=jwks_server.url, jwks_cache_s=600)
    await auth.authenticate(bearer(es(keys.ec, "ec-1")))
    jwks_server.status = 503
    clock.now += 700
    assert (await auth.authenticate(bearer(es(keys.ec, "ec-1", claims(iat=int(T0) + 1))))).id == UID
    assert jwks_server.requests == 2


def test_jwks_loads_only_public_es256_and_rs256_keys(keys: Keys) -> None:
    good_ec, good_rsa = jwk(keys.ec, "ec"), jwk(keys.rsa, "rsa")
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    bad = [
        {"kty": "oct", "kid": "oct", "k": b64(b"k" * 32)},
        {**ECAlgorithm.to_jwk(keys.ec, as_dict=True), "kid": "private"},  # carries "d"
        {**jwk(small_rsa, "small")},
        {**ECAlgorithm.to_jwk(p384.public_key(), as_dict=True), "kid": "p384"},
        {**good_ec, "kid": "enc", "use": "enc"},
        {**good_ec, "kid": "mislabelled", "alg": "RS256"},
        {**good_ec, "kid": "sign-only", "key_ops": ["sign"]},
        {**good_ec, "kid": ""},
        {k: v for k, v in good_ec.items() if k != "kid"},
        {**good_ec, "kid": "broken", "x": "AAAA"},
        {**good_ec, "kid": "ec"},  # duplicate kid: the first wins
    ]
    loaded = parse_jwks(json.dumps({"keys": [good_ec, good_rsa, *bad]}).encode())
    assert {kid: k.alg for kid, k in loaded.items()} == {"ec": "ES256", "rsa": "RS256"}


@pytest.mark.parametrize("url", ["http://abcdefghijklmnop.supabase.co/auth/v1/.well-known/jwks.json",
                                 "ftp://127.0.0.1/jwks", "https:///jwks", "/jwks"])
def test_jwks_url_must_be_https_or_loopback(url: str) -> None:
    with pytest.raises(ValueError):
        Authenticator(AuthConfig(issuer=ISS, jwks_url=url))


# -- the verified-token cache -------------------------------------------------------------------


async def test_repeated_token_is_verified_once(make_auth: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make_auth()
    calls: list[int] = []
    original = auth._verify

    async def counting(*args: Any) -> Any:
        calls.append(1)
        return await original(*args)

    monkeypatch.setattr(auth, "_verify", counting)
    token = bearer(hs())
    for _ in range(5):
        await auth.authenticate(token)
    await auth.authenticate(token.replace("Bearer", "bearer"))
    assert len(calls) == 1


async def test_token_cache_never_outlives_exp(make_auth: Any, clock: Clock) -> None:
    auth = make_auth()
    token = bearer(hs(claims(exp=int(T0) + 20)))
    await auth.authenticate(token)
    clock.now += 51  # past exp + leeway, though within the 60 s cache window
    await refused(auth, token, "expired")


async def test_token_cache_is_bounded(make_auth: Any) -> None:
    auth = make_auth(token_cache_size=3)
    for i in range(10):
        await auth.authenticate(bearer(hs(claims(iat=int(T0) - i))))
    assert len(auth._tokens) == 3


# -- config and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"issuer": ISS},
    {"issuer": ISS, "hs256_secret": b"short"},
    {"issuer": "", "hs256_secret": SECRET},
    {"issuer": ISS, "hs256_secret": SECRET, "freshness": True},
])
def test_bad_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Authenticator(AuthConfig(**config))


@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_public_key_pem_is_refused_as_hs256_secret(keys: Keys, which: str) -> None:
    with pytest.raises(ValueError):
        Authenticator(AuthConfig(issuer=ISS, hs256_secret=pem(getattr(keys, which))))


def test_secret_never_in_config_repr() -> None:
    assert SECRET.decode() not in repr(AuthConfig(issuer=ISS, hs256_secret=SECRET))


def test_error_messages_are_distinct() -> None:
    reasons = ["missing", "malformed", "algorithm", "key_source", "unknown_kid", "signature", "expired",
               "not_yet_valid", "audience", "issuer", "subject", "banned", "deleted", "unknown_user",
               "unavailable"]
    messages = {AuthError(r).message for r in reasons}  # type: ignore[arg-type]
    assert len(messages) == len(reasons)


# -- freshness ----------------------------------------------------------------------------------


async def test_freshness_directory_failure_fails_closed_and_is_not_cached(make_auth: Any) -> None:
    users = StaticUserDirectory({UID: "active"}, error=OSError("connection refused"))
    auth = make_auth(users=users, freshness=True)
    await refused(auth, bearer(hs()), "unavailable")
    users.error = None
    assert (await auth.authenticate(bearer(hs()))).id == UID


@pytest.mark.parametrize(("status", "reason"), [("banned", "banned"), ("deleted", "deleted"),
                                                ("unknown", "unknown_user")])
async def test_freshness_refuses_inactive_users(make_auth: Any, status: Any, reason: str) -> None:
    auth = make_auth(users=StaticUserDirectory({UID: status}), freshness=True)
    await refused(auth, bearer(hs()), reason)


async def test_freshness_off_never_asks_the_directory(make_auth: Any) -> None:
    users = StaticUserDirectory({UID: "banned"})
    assert (await make_auth(users=users).authenticate(bearer(hs()))).id == UID
    assert users.lookups == 0


@pytest.fixture
async def pg_users(anyio_backend: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A throwaway schema whose `users` table has the columns of Supabase's `auth.users` we read."""
    try:
        pool = await asyncpg.create_pool(host="127.0.0.1", port=5432, user="postgres", database="test",
                                         min_size=1, max_size=2, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres at 127.0.0.1:5432 is required in CI: {exc!r}")
        pytest.skip(f"Postgres at 127.0.0.1:5432 unreachable: {exc!r}")
    schema = f"opsgate_auth_test_{uuid.uuid4().hex[:12]}"
    await pool.execute(f"""
        create schema {schema};
        create table {schema}.users (id uuid primary key, banned_until timestamptz, deleted_at timestamptz,
                                     raw_app_meta_data jsonb not null default '{{}}'::jsonb);
    """)
    try:
        yield pool, f"{schema}.users"
    finally:
        await pool.execute(f"drop schema {schema} cascade")
        await pool.close()


def user_id() -> str:
    return str(uuid.uuid4())


async def test_postgres_freshness(make_auth: Any, pg_users: tuple[asyncpg.Pool, str]) -> None:
    pool, table = pg_users
    active, banned, was_banned, deleted, both, gone = (user_id() for _ in range(6))
    await pool.executemany(f"insert into {table} (id, banned_until, deleted_at) "
                           "values ($1, $2::text::timestamptz, $3::text::timestamptz)", [
        (active, None, None), (banned, "infinity", None), (was_banned, "2020-01-01T00:00:00Z", None),
        (deleted, None, "2026-01-01T00:00:00Z"), (both, "infinity", "2026-01-01T00:00:00Z")])
    auth = make_auth(users=PostgresUserDirectory(pool, table=table), freshness=True)
    assert (await auth.authenticate(bearer(hs(claims(sub=active))))).id == active
    assert (await auth.authenticate(bearer(hs(claims(sub=was_banned))))).id == was_banned
    await refused(auth, bearer(hs(claims(sub=banned))), "banned")
    await refused(auth, bearer(hs(claims(sub=deleted))), "deleted")
    await refused(auth, bearer(hs(claims(sub=both))), "deleted")
    await refused(auth, bearer(hs(claims(sub=gone))), "unknown_user")


async def test_postgres_freshness_cache_window(make_auth: Any, clock: Clock,
                                               pg_users: tuple[asyncpg.Pool, str]) -> None:
    pool, table = pg_users
    uid = user_id()
    await pool.execute(f"insert into {table} (id) values ($1)", uid)
    auth = make_auth(users=PostgresUserDirectory(pool, table=table), freshness=True, freshness_cache_s=30)
    token = bearer(hs(claims(sub=uid)))
    await auth.authenticate(token)
    await pool.execute(f"update {table} set banned_until = now() + interval '1 day' where id = $1", uid)
    clock.now += 29  # within the cache window: the earlier answer stands
    assert (await auth.authenticate(token)).id == uid
    clock.now += 2  # expired: the ban is seen, even for a token still in the token cache
    await refused(auth, token, "banned")
    await pool.execute(f"update {table} set banned_until = null where id = $1", uid)
    clock.now += 31
    assert (await auth.authenticate(token)).id == uid


async def test_postgres_directory_reads_auth_users_shape(pg_users: tuple[asyncpg.Pool, str]) -> None:
    pool, table = pg_users
    uid = user_id()
    await pool.execute(f"insert into {table} (id, banned_until) values ($1, now() - interval '1 s')", uid)
    directory = PostgresUserDirectory(pool, table=table)
    assert await directory.status(uid) == "active"
    assert await directory.status(user_id()) == "unknown"


@pytest.mark.parametrize("table", ["users; drop table x", 'auth."users"', "a.b.c", "Auth.Users", ""])
def test_postgres_directory_refuses_odd_table_names(table: str) -> None:
    with pytest.raises(ValueError):
        PostgresUserDirectory(None, table=table)  # type: ignore[arg-type]
