"""OAuth 2.0 Protected Resource Metadata (RFC 9728), as MCP authorization clients discover it.

    GET /.well-known/oauth-protected-resource/mcp   the metadata of the resource <base>/mcp
    GET /.well-known/oauth-protected-resource       the same document (clients that try the root)

The gateway has one protected resource, `<base>/mcp`, whose URI is the token audience when
`auth_audience` is set to it; the decision API under /v1 accepts the same tokens. Both locations
therefore answer the one document. Public, unauthenticated, readable from any origin (browser
clients fetch it cross-origin before they hold a token); 404 when no authorization server is
configured, since metadata naming none would lead clients nowhere.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.edge import METADATA_PATH, Edge


def _metadata(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    edge: Edge = request.app.state.edge
    base = edge.base_url(request.scope)
    doc = edge.resource.metadata(base) if base is not None else None
    if doc is None:
        why = ("no authorization server is configured (auth_server, or an auth_issuer that is a URL)"
               if edge.resource.authorization_server is None else "set public_url: this Host is not one we serve")
        return Response({"status_code": 404, "detail": f"no protected resource metadata: {why}"}, status_code=404)
    return Response(doc, headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=300"})


@get(METADATA_PATH + "/mcp", sync_to_thread=False)
def resource_metadata_mcp(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    return _metadata(request)


@get(METADATA_PATH, sync_to_thread=False)
def resource_metadata(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    return _metadata(request)


ROUTES = [resource_metadata_mcp, resource_metadata]
__all__ = ["ROUTES"]
