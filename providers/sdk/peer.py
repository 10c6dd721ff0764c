"""The calling client, as a provider relaying an upstream MCP server sees it.

An upstream server may ask its client things mid-call (sampling, elicitation, roots) and tell it
things (progress, log messages). The gateway gives a relaying provider the calling client as a
`Peer` in the call's context, and nothing more: no token, no session id, no way to address any
other client. A peer that cannot carry a request over the caller's protocol version and transport
says so at once (`PeerUnavailable`), so the upstream gets an error answer rather than waiting.
"""

from __future__ import annotations

from typing import Any, Protocol


class PeerUnavailable(Exception):
    """The calling client cannot be asked this (no back-channel for its protocol version and
    transport, or it did not declare the capability). The message says which and why."""


class Peer(Protocol):
    @property
    def protocol_version(self) -> str:
        """The protocol version the caller negotiated with the gateway."""
        ...

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """Relay a server-to-client request to the caller and return its result (raises
        PeerUnavailable, or the caller's JSON-RPC error as an exception with `.error`)."""
        ...

    async def notify(self, method: str, params: dict[str, Any] | None) -> bool:
        """Relay a notification about this call; False when it could not be delivered."""
        ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> bool:
        """Relay progress of this call to the caller's own progress token, if it gave one."""
        ...


__all__ = ["Peer", "PeerUnavailable"]
