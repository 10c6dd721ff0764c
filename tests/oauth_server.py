"""A loopback OAuth 2.1 authorization server shaped like Supabase Auth's, for tests: real HTTP, an ES256
signing key, real signed access tokens.

    with AuthServer(role="ops_viewer") as auth:
        auth.issuer      # http://127.0.0.1:<port>/auth/v1 (what a Supabase project's issuer looks like)
        auth.jwks_url    # <issuer>/.well-known/jwks.json
        auth.mint(aud="authenticated")   # a token signed by the server's key, without the flow

Endpoints: RFC 8414 metadata at `/.well-known/oauth-authorization-server/auth/v1`, the JWKS, dynamic
client registration (RFC 7591), an authorization endpoint that approves at once (a signed-in user who
always consents) and redirects with a code, and a token endpoint that checks the code, the client,
the redirect URI and the PKCE verifier (S256) before issuing a token. The token's `aud` is the RFC
8707 `resource` the client asked for when `audience_from_resource` is set (as a project with an
access-token hook would issue it), else Supabase's "authenticated".
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from litestar import Litestar, Request, Response, get, post
from litestar.response import Redirect

from tests.harness import free_port, serving_app

USER_ID = "5d6e7f80-91a2-4b3c-8d4e-5f6a7b8c9d0e"


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    resource: str | None
    scope: str | None


@dataclass
class AuthServer:
    role: str | None = "ops_viewer"
    user_id: str = USER_ID
    audience_from_resource: bool = False
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    kid: str = "loopback-es256"
    port: int = field(default_factory=free_port)
    clients: dict[str, list[str]] = field(default_factory=dict)
    issued: list[dict[str, Any]] = field(default_factory=list)  # claims of every token issued
    requests: list[str] = field(default_factory=list)  # "METHOD /path" of every request served
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base + "/auth/v1"

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/.well-known/jwks.json"

    def mint(self, *, aud: str | list[str] = "authenticated", role: str | None = None, ttl_s: int = 3600) -> str:
        now = int(time.time())
        role = role if role is not None else self.role
        claims = {"iss": self.issuer, "sub": self.user_id, "aud": aud, "iat": now, "exp": now + ttl_s,
                  "role": "authenticated", "email": "oauth-user@example.com", "session_id": str(uuid.uuid4()),
                  "app_metadata": {"ops_role": role} if role else {}, "user_metadata": {}}
        self.issued.append(claims)
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def metadata(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": self.issuer + "/oauth/authorize",
                "token_endpoint": self.issuer + "/oauth/token", "jwks_uri": self.jwks_url,
                "registration_endpoint": self.issuer + "/oauth/clients/register",
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code"],
                "code_challenge_methods_supported": ["S256"], "token_endpoint_auth_methods_supported": ["none"],
                "scopes_supported": ["openid", "email", "profile"]}

    def jwks(self) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    # -- endpoints ------------------------------------------------------------------------------

    def register(self, body: dict[str, Any]) -> Response[dict[str, Any]]:
        uris = body.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            return Response({"error": "invalid_redirect_uri"}, status_code=400)
        client_id = secrets.token_urlsafe(12)
        self.clients[client_id] = [str(u) for u in uris]
        return Response({**body, "client_id": client_id, "client_id_issued_at": int(time.time()),
                         "token_endpoint_auth_method": "none"}, status_code=201)

    def authorize(self, q: dict[str, str]) -> Response[Any]:
        client, redirect = q.get("client_id", ""), q.get("redirect_uri", "")
        if redirect not in self.clients.get(client, []):
            return Response({"error": "invalid_request"}, status_code=400)
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return Response({"error": "invalid_request", "error_description": "PKCE S256 is required"},
                            status_code=400)
        code = secrets.token_urlsafe(24)
        self._grants[code] = _Grant(client, redirect, q["code_challenge"], q.get("resource"), q.get("scope"))
        return Redirect(redirect + "?" + urlencode({"code": code, "state": q.get("state", "")}), status_code=302)

    def token(self, form: dict[str, str]) -> Response[dict[str, Any]]:
        grant = self._grants.pop(form.get("code", ""), None)  # a code works once
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (grant is None or form.get("grant_type") != "authorization_code" or form.get("client_id") != grant.client_id
                or form.get("redirect_uri") != grant.redirect_uri or digest != grant.challenge):
            return Response({"error": "invalid_grant"}, status_code=400)
        aud = grant.resource if self.audience_from_resource and grant.resource else "authenticated"
        body: dict[str, Any] = {"access_token": self.mint(aud=aud), "token_type": "Bearer", "expires_in": 3600}
        if grant.scope:
            body["scope"] = grant.scope
        return Response(body)

    def app(self) -> Litestar:
        srv = self

        @get("/.well-known/oauth-authorization-server/auth/v1", sync_to_thread=False)
        def as_metadata(request: Request[Any, Any, Any]) -> dict[str, Any]:
            srv.requests.append(f"GET {request.url.path}")
            return srv.metadata()

        @get("/auth/v1/.well-known/jwks.json", sync_to_thread=False)
        def jwks(request: Request[Any, Any, Any]) -> dict[str, Any]:
            srv.requests.append(f"GET {request.url.path}")
            return srv.jwks()

        @post("/auth/v1/oauth/clients/register")
        async def register(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
            srv.requests.append(f"POST {request.url.path}")
            return srv.register(await request.json())

        @get("/auth/v1/oauth/authorize", sync_to_thread=False)
        def authorize(request: Request[Any, Any, Any]) -> Response[Any]:
            srv.requests.append(f"GET {request.url.path}")
            return srv.authorize(dict(request.query_params))

        @post("/auth/v1/oauth/token")
        async def token(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
            srv.requests.append(f"POST {request.url.path}")
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            return srv.token(form)

        return Litestar([as_metadata, jwks, register, authorize, token], debug=False)

    def __enter__(self) -> AuthServer:
        self._stack.enter_context(serving_app(self.app(), "authorization server", port=self.port))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


__all__ = ["USER_ID", "AuthServer"]
