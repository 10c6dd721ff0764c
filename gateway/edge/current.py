"""The client address of the request being served, for the audit trail.

Invariant: the address is set from the request's own scope, around the work done for that
request only (`bound_client`), and read nowhere but where a row is built; outside a request it is
None. Stateful MCP sessions serve later requests on a task whose context was copied from the first
request, so the MCP handlers bind each request's own address again rather than inheriting one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_client: ContextVar[str | None] = ContextVar("opsgate_client_address", default=None)


def client_address() -> str | None:
    """The current request's client address (canonical IP text), or None."""
    return _client.get()


@contextlib.contextmanager
def bound_client(address: str | None) -> Iterator[None]:
    token = _client.set(address)
    try:
        yield
    finally:
        _client.reset(token)


__all__ = ["bound_client", "client_address"]
