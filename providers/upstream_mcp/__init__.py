"""Upstream MCP servers served as governed providers: one ProviderBase adapter, one instance per
server declared in the policy bundle (policies/upstreams/), its tools pinned there.
See provider.py for what it guarantees."""

from providers.upstream_mcp.provider import UpstreamProvider
from providers.upstream_mcp.spec import UpstreamSpec

__all__ = ["UpstreamProvider", "UpstreamSpec"]
