"""Every error a caller can get from the gateway: one stable string code, one JSON-RPC number.

The codes are the Pulse Omega spec's table plus the gateway's own. A client should branch on
`error.data.code` (the string); the number only keeps JSON-RPC clients that look at numbers
apart from each other. Messages never contain a token, a secret or a stack trace.

Who an error is for decides how it travels. What the model behind a client can correct (its
arguments, the table or columns it asked for, a query that failed) is answered by a tool call as
a result with `isError: true` (MODEL_CODES; the 2025-11-25 spec's SEP-1303), because many
clients raise JSON-RPC errors as exceptions the model never reads. What only the client can
handle (authentication, an unknown tool, a denial, a rate limit, the audit store, a crash) stays
a JSON-RPC error. Both carry the same stable code.

    GatewayError
      code: UNAUTHENTICATED | FORBIDDEN | RATE_LIMIT | INVALID_INPUT | INTERNAL_ERROR
          | EVENT_STORE_UNAVAILABLE | USER_ID_REQUIRED | TABLE_NOT_ALLOWED
          | COLUMN_NOT_ALLOWED | QUERY_FAILED
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from mcp.shared.exceptions import MCPError


class Code(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMIT = "RATE_LIMIT"
    INVALID_INPUT = "INVALID_INPUT"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    EVENT_STORE_UNAVAILABLE = "EVENT_STORE_UNAVAILABLE"
    USER_ID_REQUIRED = "USER_ID_REQUIRED"
    TABLE_NOT_ALLOWED = "TABLE_NOT_ALLOWED"
    COLUMN_NOT_ALLOWED = "COLUMN_NOT_ALLOWED"
    QUERY_FAILED = "QUERY_FAILED"


JSONRPC_CODES: dict[Code, int] = {
    Code.UNAUTHENTICATED: -32001,
    Code.FORBIDDEN: -32003,
    Code.USER_ID_REQUIRED: -32011,
    Code.TABLE_NOT_ALLOWED: -32012,
    Code.COLUMN_NOT_ALLOWED: -32013,
    Code.RATE_LIMIT: -32029,
    Code.QUERY_FAILED: -32040,
    Code.EVENT_STORE_UNAVAILABLE: -32050,
    Code.INVALID_INPUT: -32602,  # JSON-RPC "Invalid params"
    Code.INTERNAL_ERROR: -32603,  # JSON-RPC "Internal error"
}

# Answered as tool results with isError by tools/call (never for an unknown tool: no tool ran).
MODEL_CODES: frozenset[Code] = frozenset({Code.INVALID_INPUT, Code.USER_ID_REQUIRED, Code.TABLE_NOT_ALLOWED,
                                          Code.COLUMN_NOT_ALLOWED, Code.QUERY_FAILED})

HTTP_STATUS: dict[Code, int] = {
    Code.UNAUTHENTICATED: 401, Code.FORBIDDEN: 403, Code.RATE_LIMIT: 429, Code.INVALID_INPUT: 400,
    Code.USER_ID_REQUIRED: 400, Code.TABLE_NOT_ALLOWED: 403, Code.COLUMN_NOT_ALLOWED: 403,
    Code.QUERY_FAILED: 502, Code.EVENT_STORE_UNAVAILABLE: 503, Code.INTERNAL_ERROR: 500,
}


class GatewayError(Exception):
    """A refusal or failure with a stable code; `data` carries decision id, policy ids, retry-after."""

    def __init__(self, code: Code, message: str, **data: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = {k: v for k, v in data.items() if v is not None}

    @property
    def payload(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, **self.data}

    def to_mcp(self) -> MCPError:
        return MCPError(JSONRPC_CODES[self.code], f"{self.code}: {self.message}", self.payload)

    def to_jsonrpc(self, request_id: Any = None) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request_id,
                "error": {"code": JSONRPC_CODES[self.code], "message": f"{self.code}: {self.message}",
                          "data": self.payload}}


__all__ = ["HTTP_STATUS", "JSONRPC_CODES", "MODEL_CODES", "Code", "GatewayError"]
