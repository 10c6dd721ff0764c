"""The console's cookies, named and scoped by how the browser reached the gateway.

Invariants:
- Every console cookie is HttpOnly and, unless said otherwise, SameSite=Strict.
- Over TLS (directly, or as a trusted proxy says) every cookie is Secure and `__Host-` prefixed, so
  the browser takes it only from this exact origin over https, with Path=/ and no Domain: a sibling
  subdomain cannot set or shadow it. Over plain http (a loopback `make run`) the prefix is impossible,
  and the cookies are scoped to /console instead.
- A cookie is read under the name it would be written under for this request: an http cookie is
  never taken for an https request's.
"""

from __future__ import annotations

from typing import Any, Literal

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie

from gateway.edge import view_of

CONSOLE_PATH = "/console"


def over_tls(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    view = view_of(connection.scope)
    return (view.scheme if view is not None else connection.url.scheme) == "https"


def name_of(connection: ASGIConnection[Any, Any, Any, Any], base: str) -> str:
    return f"__Host-{base}" if over_tls(connection) else base


def read(connection: ASGIConnection[Any, Any, Any, Any], base: str) -> str | None:
    return connection.cookies.get(name_of(connection, base))


def cookie(connection: ASGIConnection[Any, Any, Any, Any], base: str, value: str, max_age: int,
           samesite: Literal["strict", "lax"] = "strict") -> Cookie:
    tls = over_tls(connection)
    return Cookie(key=name_of(connection, base), value=value, max_age=max_age, path="/" if tls else CONSOLE_PATH,
                  httponly=True, secure=tls, samesite=samesite)


def gone(connection: ASGIConnection[Any, Any, Any, Any], base: str) -> Cookie:
    return cookie(connection, base, "", 0)


__all__ = ["CONSOLE_PATH", "cookie", "gone", "name_of", "over_tls", "read"]
