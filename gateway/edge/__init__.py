"""The gateway's HTTP edge: public URL, trusted proxies, Host/Origin checks, OAuth discovery, and
the audit of requests refused there.

    edge = Edge(AllowedHosts(hosts, origins), TrustedProxies(["10.0.0.0/8"]), ProtectedResource(...))
    Litestar(..., middleware=[DefineMiddleware(EdgeMiddleware, edge=edge, refusals=refusals)])

Modules: `hosts` (Host and Origin by parsed scheme/host/port), `forwarded` (the client behind
trusted proxies), `current` (the request's client address for audit rows), `resource` (RFC 9728
metadata and 401 challenges), `refusals` (aggregated audit rows of refused requests),
`middleware` (the ASGI middleware tying them together).
"""

from gateway.edge.current import bound_client, client_address
from gateway.edge.forwarded import ClientView, TrustedProxies
from gateway.edge.hosts import AllowedHosts, BadHost, parse_authority, parse_origin
from gateway.edge.middleware import VIEW_KEY, Edge, EdgeMiddleware, view_of
from gateway.edge.refusals import AUTH, REQUEST, Refusals
from gateway.edge.resource import METADATA_PATH, ProtectedResource, PublicUrl, authorization_server

__all__ = ["AUTH", "METADATA_PATH", "REQUEST", "VIEW_KEY", "AllowedHosts", "BadHost", "ClientView", "Edge",
           "EdgeMiddleware", "ProtectedResource", "PublicUrl", "Refusals", "TrustedProxies", "authorization_server",
           "bound_client", "client_address", "parse_authority", "parse_origin", "view_of"]
