"""How a provider declares its tools: a name, a kind, a versioned input Struct, a handler.

Providers hold no policy. The kind only says which group of the policy's vocabulary a tool
belongs to (read, scan, ...); what a kind allows is decided by the gateway's Cedar bundle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

Kind = Literal["read", "scan", "annotate", "tag", "create", "comment", "admin"]


class CallContext(msgspec.Struct, frozen=True):
    """What a tool handler learns about the call it serves (never the caller's token)."""

    caller_id: str
    tool: str
    decision_id: str
    role: str | None = None  # the caller's ops role, as the gateway authenticated it


class ToolError(Exception):
    """A failure the caller should see as a tool error (bad upstream answer, not found, ...)."""

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class Refused(Exception):
    """A refusal the gateway reports with a stable code rather than as a tool error.

    `code` is one of the gateway's codes: FORBIDDEN (role, egress, secret), USER_ID_REQUIRED,
    TABLE_NOT_ALLOWED, COLUMN_NOT_ALLOWED, INVALID_INPUT, QUERY_FAILED. `data` must hold no secret.
    """

    def __init__(self, code: str, message: str, **data: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


Handler = Callable[[CallContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A tool of a provider. `name` is local (`scan.repo`); the gateway serves `<provider>.<name>`."""

    name: str
    kind: Kind
    input: type[msgspec.Struct]
    description: str
    handler: Handler


__all__ = ["CallContext", "Handler", "Kind", "Refused", "Tool", "ToolError"]
