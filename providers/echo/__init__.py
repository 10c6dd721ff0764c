"""A no-op provider for tests and benchmarks of the gateway: one tool of every kind.

Each tool answers with what it is given. `ping` can also be asked to fail as a tool error
(`fail`) or to raise unexpectedly (`crash`), so the gateway's error paths can be driven
end to end without any upstream.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from providers.sdk import CallContext, ProviderBase, Tool, ToolError

Message = Annotated[str, Meta(description="Text to answer with.")]


class PingInput(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal["1.0"] = "1.0"
    message: Message = ""
    fail: Annotated[bool, Meta(description="Answer with a tool error instead (tests the error path).")] = False
    crash: Annotated[bool, Meta(description="Raise unexpectedly instead (tests the gateway's INTERNAL_ERROR).")] = \
        False


class EchoInput(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal["1.0"] = "1.0"
    message: Message = ""


class EchoProvider(ProviderBase):
    name = "echo"

    def tools(self) -> list[Tool]:
        kinds = ("scan", "annotate", "tag", "comment", "create")
        return [
            Tool("ping", "read", PingInput, "Answer with the message given (a no-op read tool).", self._ping),
            *(Tool(kind, kind, EchoInput, f"Answer with the message given (a no-op {kind} tool).", self._echo)
              for kind in kinds),
        ]

    async def _ping(self, ctx: CallContext, args: PingInput) -> dict[str, str]:
        if args.crash:
            raise RuntimeError("echo asked to crash")
        if args.fail:
            raise ToolError("echo asked to fail", retry_after_s=7)
        return {"message": args.message}

    async def _echo(self, ctx: CallContext, args: EchoInput) -> dict[str, str]:
        return {"message": args.message, "tool": ctx.tool}


__all__ = ["EchoProvider"]
