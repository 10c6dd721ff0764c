"""The Socket.dev provider (see provider.py for its tools and options)."""

from providers.socket.provider import DEFAULT_BASE_URL, SocketProvider

__all__ = ["DEFAULT_BASE_URL", "SocketProvider"]
