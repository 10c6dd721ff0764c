"""The gateway as an OAuth 2.1 protected resource (MCP authorization; RFC 9728, RFC 6750, RFC 8707).

Invariants:
- The resource is `<base>/mcp`, where `<base>` is the configured `public_url`; without one (a
  local `make run`), the Host the client named on its own connection, and only once that Host
  passed the allowed-hosts check. Never a forwarded Host: a header cannot redirect a client's
  OAuth flow to another resource.
- Metadata is served only when an authorization server is known (`auth_server`, or an
  `auth_issuer` that is an http(s) URL): metadata naming no server would send clients nowhere.
- A challenge says `error="invalid_token"` only when a token was presented and refused (RFC 6750
  3.1); its description is one of the authenticator's fixed phrases, never the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from gateway.edge.hosts import DEFAULT_PORT, Authority, BadHost, parse_authority

RESOURCE_PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _netloc(authority: Authority, scheme: str) -> str:
    host = f"[{authority.host}]" if ":" in authority.host else authority.host
    port = authority.effective_port(scheme)
    return host if port == DEFAULT_PORT[scheme] else f"{host}:{port}"


class PublicUrl:
    """`public_url` checked and canonical: `scheme://host[:port]`, nothing else."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORT or parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ValueError(f"public_url must be http(s)://host[:port] with no path, got {url!r}")
        try:
            self.authority = parse_authority(parts.netloc)
        except BadHost as e:
            raise ValueError(f"public_url {url!r}: {e}") from None
        self.scheme = parts.scheme
        self.base = f"{self.scheme}://{_netloc(self.authority, self.scheme)}"

    def host_pattern(self) -> str:
        """The allowed_hosts entry this URL implies (a Host without a port is the default port)."""
        host = f"[{self.authority.host}]" if ":" in self.authority.host else self.authority.host
        return host if self.authority.port is None else f"{host}:{self.authority.port}"

    def origin_pattern(self) -> str:
        return self.base


def authorization_server(explicit: str | None, issuer: str) -> str | None:
    """The authorization server to name: `explicit`, else the token issuer when it is a URL.
    https, or http on loopback (a local Supabase, tests)."""
    url = explicit if explicit is not None else issuer
    parts = urlsplit(url)
    usable = (parts.hostname is not None and not parts.username and not parts.query and not parts.fragment
              and (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)))
    if not usable and explicit is not None:
        raise ValueError(f"auth_server must be an https URL (http only on loopback), got {explicit!r}")
    return url.rstrip("/") if usable else None


class ProtectedResource:
    """What the gateway tells OAuth clients about itself."""

    def __init__(self, public_url: PublicUrl | None, authorization_server: str | None,
                 scopes: Sequence[str] = ()) -> None:
        self.public_url = public_url
        self.authorization_server = authorization_server
        self.scopes = tuple(scopes)

    def base_url(self, scheme: str, host: str | None, host_allowed: bool) -> str | None:
        """`<base>` for a request that reached us over `scheme` naming `host` in its own Host
        header (see the module docstring); None when it cannot be told."""
        if self.public_url is not None:
            return self.public_url.base
        if host is None or not host_allowed or scheme not in DEFAULT_PORT:
            return None
        try:
            return f"{scheme}://{_netloc(parse_authority(host), scheme)}"
        except BadHost:
            return None

    def metadata_url(self, base: str) -> str:
        return base + METADATA_PATH + RESOURCE_PATH

    def metadata(self, base: str) -> dict[str, Any] | None:
        """The RFC 9728 document, or None when no authorization server is known."""
        if self.authorization_server is None:
            return None
        doc: dict[str, Any] = {"resource": base + RESOURCE_PATH,
                               "authorization_servers": [self.authorization_server],
                               "bearer_methods_supported": ["header"], "resource_name": "opsgate"}
        if self.scopes:
            doc["scopes_supported"] = list(self.scopes)
        return doc

    def challenge(self, base: str | None, *, presented: bool, description: str | None = None) -> str:
        """A `WWW-Authenticate` value for a 401."""
        params = []
        if base is not None and self.authorization_server is not None:
            params.append(f'resource_metadata="{self.metadata_url(base)}"')
        if presented:
            params.append('error="invalid_token"')
            if description:
                safe = "".join(c for c in description if c.isprintable() and c not in '"\\')
                params.append(f'error_description="{safe}"')
        if self.scopes:
            params.append(f'scope="{" ".join(self.scopes)}"')
        return "Bearer " + ", ".join(params) if params else "Bearer"


__all__ = ["METADATA_PATH", "RESOURCE_PATH", "ProtectedResource", "PublicUrl", "authorization_server"]
