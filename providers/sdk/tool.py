"""How a provider declares its tools: a name, a kind, a versioned input Struct, a handler.

Providers hold no policy. The kind only says which group of the policy's vocabulary a tool
belongs to (read, scan, ...); what a kind allows is decided by the gateway's Cedar bundle.

A tool whose input is defined elsewhere as JSON Schema (an upstream MCP server's tool, pinned in
the policy bundle) declares it as `JsonSchemaInput`: its arguments are validated against that
schema, exactly as pinned, and handed to the handler as the dict the caller sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
import msgspec

Kind = Literal["read", "scan", "annotate", "tag", "create", "comment", "admin"]


class CallContext(msgspec.Struct, frozen=True):
    """What a tool handler learns about the call it serves (never the caller's token)."""

    caller_id: str
    tool: str
    decision_id: str
    role: str | None = None  # the caller's ops role, as the gateway authenticated it
    # The calling client (providers.sdk.peer.Peer) for a provider relaying an upstream MCP server's
    # requests and notifications; None where the transport has none (and for resource reads).
    peer: Any = None


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


class JsonSchemaInput:
    """A tool input given as a JSON Schema (the schema's own `$schema` dialect, 2020-12 by default).
    Its versioning is whatever pinned it (rule 9 for upstream tools is the pin, not a field)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)  # a schema that is not one refuses the tool, not every call
        self.schema = schema
        self._validator = cls(schema)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments themselves, or ValueError naming the first violation."""
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ValueError(f"{where}: {error.message}"[:500])
        return arguments


def parse_arguments(spec: type[msgspec.Struct] | JsonSchemaInput, arguments: dict[str, Any]) -> Any:
    """A tool's arguments as its handler takes them. Raises ValueError (msgspec.ValidationError
    is one) when they do not fit."""
    if isinstance(spec, JsonSchemaInput):
        return spec.validate(arguments)
    return msgspec.convert(arguments, spec)


@dataclass(frozen=True)
class Tool:
    """A tool of a provider. `name` is local (`scan.repo`); the gateway serves `<provider>.<name>`."""

    name: str
    kind: Kind
    input: type[msgspec.Struct] | JsonSchemaInput
    description: str
    handler: Handler
    # Shown in tools/list as given (an upstream MCP server's pinned definition); rarely set otherwise.
    title: str | None = None
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None


__all__ = ["CallContext", "Handler", "JsonSchemaInput", "Kind", "Refused", "Tool", "ToolError", "parse_arguments"]
