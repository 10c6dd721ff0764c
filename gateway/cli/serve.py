"""`opsgate serve` and `opsgate stdio`: run the gateway over HTTP or over stdio.

Both run the same pipeline. Over stdio the caller is the holder of the token in
MCP_VIEWER_JWT (as in the Pulse Omega spec), verified again on every request so that an
expired token stops working mid-session; without it every call is refused UNAUTHENTICATED.

Both resolve their configuration as every command does (gateway/cli/settings.py: the file, then
OPSGATE_*, then flags). Desktop clients start `stdio` in a folder of their choosing, so with no
configuration file, no --policies/--state-dir and no ./policies there it refuses to start
(`homeless`) instead of creating a vault and stores in that folder.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.settings import add_config, configured, setting
from gateway.config import ENV_FILE, FILE_NAME, GatewayConfig, Loaded

if TYPE_CHECKING:
    import uvicorn

    from otel.redact import Redactor

log = logging.getLogger("opsgate")


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the gateway over HTTP (MCP at /mcp)")
    serve.add_argument("--demo-tokens", action="store_true",
                       help="print one demo token per role at start-up (default: off)")
    serve.set_defaults(run=run_serve)
    gateway_settings(serve, http=True)
    stdio = sub.add_parser("stdio", help="serve MCP over stdin/stdout; the caller is $MCP_VIEWER_JWT")
    stdio.set_defaults(run=run_stdio)
    gateway_settings(stdio, http=False)


def gateway_settings(p: argparse.ArgumentParser, *, http: bool) -> None:
    """The setting flags of `serve` (`http`), `stdio` and `config`; any other key is reachable with
    --set, OPSGATE_<KEY> or the file."""
    if http:
        setting(p, "--host", "host", "address to listen on")
        setting(p, "--port", "port", "port to listen on")
        setting(p, "--public-url", "public_url",
                "the gateway's public base URL, e.g. https://mcp.example.com (its host and origin are then allowed)",
                metavar="URL")
        setting(p, "--trusted-proxy", "trusted_proxies",
                "a reverse proxy (IP or CIDR) whose forwarded headers are believed (repeatable)", action="append",
                metavar="IP_OR_CIDR")
    setting(p, "--policies", "policies", "policy bundle directory", metavar="DIR")
    setting(p, "--exceptions", "exceptions", "deviation exceptions directory", metavar="DIR")
    setting(p, "--state-dir", "state_dir", "embedded vault, event store and journals", metavar="DIR")
    setting(p, "--limiter", "limiter", "rate-limit counters: this process's memory, or Redis shared by replicas")
    setting(p, "--redis-url", "redis_url", "Redis for --limiter redis")
    setting(p, "--vault", "vault", "secret store: embedded under --state-dir, or Supabase Vault at --database-url")
    setting(p, "--database-url", "database_url",
            "Postgres / Supabase for the vault, events and auth freshness (password in ~/.pgpass, never here)")
    setting(p, "--events", "events", "audit store: embedded SQLite, or Postgres at --database-url via a local outbox")
    setting(p, "--events-durability", "events_durability",
            "process: an answer waits for its outcome's journal line, which survives kill -9, not power loss; "
            "disk: answers wait for fsync")
    setting(p, "--events-outbox-max", "events_outbox_max",
            "unshipped events the Postgres outbox may hold before new calls are refused")
    setting(p, "--omega-backend", "omega.backend", "Pulse Omega database: embedded SQLite with demo data, or Postgres")
    setting(p, "--omega-database-url", "omega.database_url",
            "postgres: the authenticator login's URL (password in ~/.pgpass, never here)")
    setting(p, "--provider-url", "provider_urls",
            "a provider's API base URL instead of the vendor's (repeatable); the egress allowlist must permit it",
            pairs=True, metavar="PROVIDER=URL")
    setting(p, "--upstream", "provider_urls", "", pairs=True, replaced_by="--provider-url")
    if http:
        setting(p, "--workers", "workers", "server processes on one socket; more than 1 needs --limiter redis",
                metavar="N")
    add_config(p, set_option=True)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loaded = configured(args, "serve")
    config = loaded.config
    if config.workers != 1:  # before anything imports prometheus_client (gateway.serve does)
        from gateway.cli.workers import run_workers

        return run_workers(config, demo_tokens=args.demo_tokens)

    from gateway.serve import build_app

    app, services, secret = build_app(config, demo_tokens=args.demo_tokens)
    server = announcing_server(uvicorn_config(app, config, services.redactor))
    drift = services.registry.drift(services.engine.bundle.catalogue)
    if drift:
        log.warning("tools not in the policy catalogue (always denied): %s", ", ".join(drift))
    url = f"http://{config.host}:{config.port}"
    print(f"opsgate {url}/mcp  policy revision {services.engine.bundle.revision}", flush=True)
    print(f"configuration: {loaded.file or 'built-in defaults (no ' + FILE_NAME + ')'}", flush=True)
    if args.demo_tokens:
        print_demo_tokens(config, secret)
    server.run()
    return 0 if server.started else 3  # as uvicorn.run: it has logged why (say, the port is taken)


def announcing_server(settings: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, printing `ready <url>` once it accepts connections: after the app's
    lifespan has started (audit store open, exceptions loaded) and the socket listens."""
    import uvicorn

    class Announcing(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                print(f"ready http://{f'[{host}]' if ':' in host else host}:{port}/mcp", flush=True)

    return Announcing(settings)


def print_demo_tokens(config: GatewayConfig, secret: bytes) -> None:
    from gateway.serve import ROLES, demo_user_id, mint_token

    print("demo tokens (development signing key from the embedded vault; valid 12 h), each with its user id "
          "(the token's sub: what Omega tools take as userId):", flush=True)
    for role in ROLES:
        user_id = demo_user_id(role)
        token = mint_token(secret, issuer=config.auth_issuer, user_id=user_id, role=role)
        print(f"  {role:13} user {user_id}  {token}", flush=True)


def uvicorn_config(app: Any, config: GatewayConfig, redactor: Redactor) -> uvicorn.Config:
    """uvicorn's settings for `app`, with every log handler scrubbing secret values. uvicorn sets
    up its own loggers and handlers (not propagating to the root) when its Config is built, so the
    filter goes on after that: its own error lines, tracebacks included, are scrubbed too."""
    import uvicorn

    from otel.redact import install_log_filter

    # proxy_headers=False: uvicorn would otherwise rewrite the peer address from X-Forwarded-For
    # (from loopback peers by default) before the gateway sees it; gateway.edge walks the chain
    # itself, through the configured trusted_proxies only.
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", loop="uvloop",
                              http="httptools", proxy_headers=False)
    install_log_filter(redactor)
    return settings


def run_stdio(args: argparse.Namespace) -> int:
    from mcp.server.stdio import stdio_server

    from gateway.errors import Code, GatewayError
    from gateway.mcp_app import build_server
    from gateway.serve import build_services
    from otel.redact import install_log_filter

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    loaded = configured(args, "stdio")
    refusal = homeless(loaded, Path.cwd())
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    config = loaded.config
    services, _ = build_services(config)
    install_log_filter(services.redactor)  # after basicConfig: scrubs secret values from every log line
    token = os.environ.get("MCP_VIEWER_JWT")  # the caller's identity, not a secret of ours
    if not token:
        log.warning("MCP_VIEWER_JWT is not set: every call will be refused UNAUTHENTICATED")

    async def caller_of(ctx: Any) -> Any:
        if not token:
            raise GatewayError(Code.UNAUTHENTICATED, "set MCP_VIEWER_JWT to a Supabase access token").to_mcp()
        try:
            return await services.authenticate(f"Bearer {token}")
        except GatewayError as e:
            raise e.to_mcp() from None

    server = build_server(services.pipeline, caller_of, version="stdio")

    async def main() -> None:
        from gateway.exception_trust import exceptions_ready

        await exceptions_ready(services)  # exceptions load once the audit trail can vouch for them
        await services.start_providers()  # upstream MCP servers: children, sessions, re-listing
        try:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
        finally:
            await services.stop_providers()

    asyncio.run(main())
    return 0


STDIO_SNIPPET = """{
  "mcpServers": {
    "opsgate": {
      "command": "/path/to/opsgate/.venv/bin/opsgate",
      "args": ["stdio", "--config", "/path/to/opsgate.toml"],
      "env": {"MCP_VIEWER_JWT": "<your access token>"}
    }
  }
}"""


def homeless(loaded: Loaded, cwd: Path) -> str | None:
    """Why `opsgate stdio` must not start here, or None. Desktop clients launch it in a folder of
    their choosing: with no configuration file, no --policies/--state-dir and no bundle in that
    folder, starting would create a vault and stores in a random place (and find no policies)."""
    implicit = [k for k in ("policies", "state_dir") if loaded.sources.get(k) == "default"]
    if loaded.file is not None or not implicit or (cwd / "policies").is_dir():
        return None
    return (f"opsgate stdio: no configuration file (--config, ${ENV_FILE}, ./{FILE_NAME}), no "
            f"{' or '.join('--' + k.replace('_', '-') for k in implicit)}, and no ./policies in {cwd}.\n"
            "MCP clients start `opsgate stdio` in a folder of their choosing: say where the gateway lives with "
            "--config /path/to/opsgate.toml (or --policies DIR --state-dir DIR). In an MCP client's configuration "
            "(Claude Desktop: claude_desktop_config.json):\n" + STDIO_SNIPPET + "\nNothing was created.")


__all__ = ["STDIO_SNIPPET", "gateway_settings", "homeless", "register"]
