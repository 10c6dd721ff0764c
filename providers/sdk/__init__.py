"""The provider SDK: what a provider may use, and all it may use (providers hold no policy)."""

from providers.sdk.base import ProviderBase, now_iso
from providers.sdk.egress import EgressClient, EgressRefused
from providers.sdk.health import HealthStatus, Status
from providers.sdk.resource import Resource, ResourceHandler
from providers.sdk.runtime import Runtime, Verdict, current_call
from providers.sdk.tool import CallContext, Handler, Kind, Refused, Tool, ToolError

__all__ = ["CallContext", "EgressClient", "EgressRefused", "Handler", "HealthStatus", "Kind", "ProviderBase",
           "Refused", "Resource", "ResourceHandler", "Runtime", "Status", "Tool", "ToolError", "Verdict",
           "current_call", "now_iso"]
