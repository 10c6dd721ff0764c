"""The provider SDK: what a provider may use, and all it may use (providers hold no policy)."""

from providers.sdk.base import ProviderBase, now_iso
from providers.sdk.health import HealthStatus, Status
from providers.sdk.tool import CallContext, Handler, Kind, Tool, ToolError

__all__ = ["CallContext", "Handler", "HealthStatus", "Kind", "ProviderBase", "Status", "Tool", "ToolError",
           "now_iso"]
