"""A network namespace for a provider's child process, whose only way out is the egress proxy.

Where the host allows it (Linux, root, iproute2), the child of a stdio upstream runs under
`ip netns exec <ns>` in a namespace of its own that has nothing but `lo`: no route, no other
interface. The gateway opens one listening socket *inside* that namespace (a thread enters it with
setns(2), binds 127.0.0.1, and comes back) and serves the egress proxy on it from its own
namespace. So inside, `127.0.0.1:<port>` is the proxy and every other address is unreachable,
while the proxy's own connections leave from the gateway's namespace after the `egress` decision.

Where it is not allowed, `open()` raises IsolationUnavailable with the reason, and the caller
falls back to the proxy variables alone (and says so: `opsgate upstream check`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import sys

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"


class IsolationUnavailable(Exception):
    """This host cannot give the child a namespace of its own; the message says why."""


class Isolation:
    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False

    @classmethod
    def for_upstream(cls, upstream: str) -> Isolation:
        # The creating process's id is in the name, so a later gateway can tell a namespace that a
        # killed one left behind (its process is gone) from one a live gateway is using.
        return cls(f"opsgate-{upstream[:24]}-{os.getpid()}-{secrets.token_hex(4)}")

    def describe(self) -> str:
        return f"network namespace {self.name}: loopback only, where the egress proxy listens"

    async def open(self) -> socket.socket:
        """Create the namespace and return a listening socket inside it (non-blocking)."""
        if not sys.platform.startswith("linux"):
            raise IsolationUnavailable("network namespaces need Linux")
        if os.geteuid() != 0:
            raise IsolationUnavailable("creating a network namespace needs root (CAP_SYS_ADMIN)")
        if shutil.which("ip") is None:
            raise IsolationUnavailable("iproute2's `ip` is not installed")
        await asyncio.to_thread(remove_orphans)
        await _ip("netns", "add", self.name)
        self.created = True
        await _ip("-n", self.name, "link", "set", "lo", "up")
        return await asyncio.to_thread(self._listen_inside)

    def _listen_inside(self) -> socket.socket:
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"{NETNS_DIR}/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise IsolationUnavailable(f"setns failed: {os.strerror(ctypes.get_errno())}")
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                sock.listen(64)
                sock.setblocking(False)
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:  # this thread must never serve anything else from there
                    os._exit(70)
        finally:
            os.close(own)
            os.close(target)
        return sock

    async def close(self) -> None:
        if self.created:
            self.created = False
            with contextlib.suppress(IsolationUnavailable):
                await _ip("netns", "delete", self.name)


def remove_orphans() -> list[str]:
    """Delete the namespaces of gateways that died without cleaning up (`kill -9`); returns their names."""
    removed = []
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    for name in names:
        parts = name.split("-")
        if parts[0] != "opsgate" or len(parts) < 4 or not parts[-2].isdigit():
            continue
        try:
            os.kill(int(parts[-2]), 0)
            continue  # its gateway is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False).returncode == 0:
            removed.append(name)
    return removed


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", *args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise IsolationUnavailable(f"`ip {' '.join(args)}` failed: {err.decode(errors='replace').strip()[:200]}")


__all__ = ["Isolation", "IsolationUnavailable", "remove_orphans"]
