"""A real gateway process for the crash and outage tests: `opsgate serve`'s app (uvicorn, uvloop)
with an echo provider whose `ping` notes each start in a file and, for messages starting with
"slow", takes a while, so a SIGKILL finds tools mid-run; one whose message starts with "hold"
runs until the test lets it go (`release`).

    python -m tests.events_gateway --port P --policies DIR --state-dir DIR --started FILE
        [--events postgres --database-url URL] [--durability disk|process]

The started-file is written with O_APPEND before the tool does anything: it survives a SIGKILL,
so a test knows which calls began.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import uvicorn

from gateway.config import GatewayConfig
from gateway.serve import build_app
from providers.echo import EchoProvider, PingInput
from providers.sdk import CallContext


def release(started: Path, message: str) -> None:
    """Let the held call `message` (see SlowEcho) finish."""
    started.with_name(f"{started.name}.go-{message}").touch()


class SlowEcho(EchoProvider):
    def __init__(self, started: str) -> None:
        self._started = Path(started)
        self._fd = os.open(started, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def _ping(self, ctx: CallContext, args: PingInput) -> dict[str, str]:
        os.write(self._fd, (args.message + "\n").encode())
        if args.message.startswith("slow"):
            await asyncio.sleep(0.5)
        elif args.message.startswith("hold"):
            go = self._started.with_name(f"{self._started.name}.go-{args.message}")
            while not go.exists():
                await asyncio.sleep(0.01)
        return await super()._ping(ctx, args)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--policies", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--started", required=True)
    p.add_argument("--events", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--database-url", default=GatewayConfig().database_url)
    p.add_argument("--durability", choices=("disk", "process"), default="process")
    # No reserve by default: the full-disk tests of item 9 need the log's writes cut short by the disk.
    p.add_argument("--log-reserve", type=int, default=0)
    a = p.parse_args()
    config = GatewayConfig(port=a.port, policies=a.policies, state_dir=a.state_dir, events=a.events,
                           database_url=a.database_url, events_durability=a.durability,
                           events_log_reserve_bytes=a.log_reserve)
    app, _, _ = build_app(config, providers=[SlowEcho(a.started)])
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
