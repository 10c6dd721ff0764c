"""Signing in to the console with the gateway's authorization server: OAuth 2.1 authorization code + PKCE.

    client = OAuthClient("https://<ref>.supabase.co/auth/v1", client_id="...")
    url = await client.authorize_url(state=..., challenge=..., redirect_uri=...)
    token = await client.exchange(code, verifier=..., redirect_uri=...)

Invariants:
- Endpoints come from the authorization server's own metadata (RFC 8414, at the well-known URL
  derived from its issuer), which must name that same issuer; nothing is taken from the browser
  but the code and the state.
- The console is a public client: no client secret exists anywhere; PKCE (S256) binds the code to
  the verifier kept server-side in the sign-in flow.
- The token obtained is not trusted for being obtained: the caller verifies it exactly as the API
  verifies any bearer token before a session is opened.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

TIMEOUT_S = 10.0


class OAuthError(Exception):
    """The authorization server could not be used or refused; the message is safe to show."""


class OAuthClient:
    def __init__(self, issuer: str, *, client_id: str, resource: str | None = None, scope: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.resource = resource
        self.scope = scope
        self._metadata: dict[str, Any] | None = None

    def metadata_url(self) -> str:
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path}"

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as http:
                    response = await http.get(self.metadata_url())
                    response.raise_for_status()
                    metadata = response.json()
            except (httpx.HTTPError, ValueError) as e:
                raise OAuthError(f"the authorization server's metadata could not be read ({type(e).__name__})") from e
            if not isinstance(metadata, dict) or metadata.get("issuer", "").rstrip("/") != self.issuer:
                raise OAuthError("the authorization server's metadata names another issuer")
            if "S256" not in metadata.get("code_challenge_methods_supported", ["S256"]):
                raise OAuthError("the authorization server does not support PKCE S256")
            self._metadata = metadata
        return self._metadata

    async def authorize_url(self, *, state: str, challenge: str, redirect_uri: str) -> str:
        endpoint = (await self.metadata()).get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise OAuthError("the authorization server names no authorization endpoint")
        query = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                 "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}
        if self.resource:
            query["resource"] = self.resource
        if self.scope:
            query["scope"] = self.scope
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)

    async def exchange(self, code: str, *, verifier: str, redirect_uri: str) -> str:
        endpoint = (await self.metadata()).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise OAuthError("the authorization server names no token endpoint")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": verifier}
        if self.resource:
            form["resource"] = self.resource
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as http:
                response = await http.post(endpoint, data=form, headers={"Accept": "application/json"})
            body = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise OAuthError(f"the token endpoint could not be reached ({type(e).__name__})") from e
        ok = 200 <= response.status_code < 300 and isinstance(body, dict)
        if not ok or not isinstance(body.get("access_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            raise OAuthError(f"the authorization server refused the code ({error or response.status_code})")
        return str(body["access_token"])


__all__ = ["OAuthClient", "OAuthError"]
