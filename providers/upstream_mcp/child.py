"""How a stdio upstream's child process is started: its command line and its environment.

The child gets PATH, the secrets its declaration names (read from the vault at spawn, each as the
variable the declaration gives) and the egress proxy variables; nothing else of the gateway's
environment. The `mcp` SDK's stdio client adds a few variables of the parent's (HOME, USER, ...)
to whatever it is given, so the command runs under `env -u ...`, which removes them by name
before the server starts (names only: no value ever appears on a command line). Where the child
has a network namespace, `ip netns exec` runs it there.
"""

from __future__ import annotations

from pathlib import Path

from mcp import StdioServerParameters

from providers.upstream_mcp.spec import Declaration

# What the SDK's stdio client inherits from the parent besides PATH (mcp.client.stdio, POSIX).
INHERITED = ("HOME", "LOGNAME", "SHELL", "TERM", "USER")
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")


def parameters(decl: Declaration, secrets: dict[str, str], proxy_url: str | None,
               netns: str | None = None) -> StdioServerParameters:
    assert decl.command is not None
    env = dict(secrets)
    if proxy_url is not None:
        env.update({name: proxy_url for name in PROXY_VARS})
        env["NO_PROXY"] = env["no_proxy"] = ""
    argv = ["env", *(arg for name in INHERITED if name not in env for arg in ("-u", name)), "--",
            decl.command, *decl.args]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    return StdioServerParameters(command=argv[0], args=argv[1:], env=env,
                                 cwd=Path(decl.cwd) if decl.cwd else None)


__all__ = ["INHERITED", "PROXY_VARS", "parameters"]
