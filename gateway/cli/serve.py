"""`opsgate serve` and `opsgate stdio`: run the gateway over HTTP or over stdio.

Both run the same pipeline. Over stdio the caller is the holder of the token in
MCP_VIEWER_JWT (as in the Pulse Omega spec), verified again on every request so that an
expired token stops working mid-session; without it every call is refused UNAUTHENTICATED.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from gateway.config import GatewayConfig
from providers.omega import OmegaConfig

if TYPE_CHECKING:
    import uvicorn

    from otel.redact import Redactor

log = logging.getLogger("opsgate")


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the gateway over HTTP (MCP at /mcp)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--policies", default=None, help="policy bundle directory (default: policies)")
    serve.add_argument("--state-dir", default=None, help="embedded vault and stores (default: .opsgate)")
    serve.add_argument("--exceptions", default=None, help="deviation exceptions directory (default: exceptions)")
    serve.add_argument("--limiter", choices=("memory", "redis"), default=None)
    serve.add_argument("--redis-url", default=None)
    serve.add_argument("--events", choices=("sqlite", "postgres"), default=None,
                       help="audit store: embedded SQLite (default) or Postgres at --database-url via a local outbox")
    serve.add_argument("--events-durability", choices=("disk", "process"), default=None,
                       help="process (default): an answer waits for its outcome's journal line, which survives "
                            "kill -9, not power loss; disk: answers wait for fsync")
    serve.add_argument("--events-outbox-max", type=int, default=None,
                       help="unshipped events the Postgres outbox may hold before new calls are refused")
    serve.add_argument("--demo-tokens", action="store_true", help="print one demo token per role")
    serve.add_argument("--omega-backend", choices=("sqlite", "postgres"), default=None,
                       help="Pulse Omega database (default: embedded sqlite with demo data)")
    serve.add_argument("--omega-database-url", default=None,
                       help="postgres: the authenticator login's URL (password in ~/.pgpass, never here)")
    serve.add_argument("--upstream", action="append", default=[], metavar="PROVIDER=URL",
                       help="a provider's upstream base URL instead of the vendor's (repeatable); "
                            "the egress allowlist must permit it")
    serve.set_defaults(run=run_serve)
    stdio = sub.add_parser("stdio", help="serve MCP over stdin/stdout; the caller is $MCP_VIEWER_JWT")
    stdio.add_argument("--policies", default=None)
    stdio.add_argument("--state-dir", default=None)
    stdio.add_argument("--upstream", action="append", default=[], metavar="PROVIDER=URL")
    stdio.set_defaults(run=run_stdio)
    for p in (serve, stdio):
        p.add_argument("--vault", choices=("embedded", "supabase"), default=None,
                       help="secret store: embedded under --state-dir (default) or Supabase Vault at --database-url")
        p.add_argument("--database-url", default=None, help="Postgres / Supabase (vault, events, auth freshness)")


def config_from(args: argparse.Namespace) -> GatewayConfig:
    overrides = {k: v for k, v in {
        "host": getattr(args, "host", None), "port": getattr(args, "port", None), "policies": args.policies,
        "state_dir": args.state_dir, "exceptions": getattr(args, "exceptions", None),
        "limiter": getattr(args, "limiter", None),
        "redis_url": getattr(args, "redis_url", None), "vault": getattr(args, "vault", None),
        "events": getattr(args, "events", None), "database_url": getattr(args, "database_url", None),
        "events_durability": getattr(args, "events_durability", None),
        "events_outbox_max": getattr(args, "events_outbox_max", None)}.items() if v is not None}
    omega = {k: v for k, v in {"backend": getattr(args, "omega_backend", None),
                               "database_url": getattr(args, "omega_database_url", None)}.items() if v is not None}
    if omega:
        overrides["omega"] = OmegaConfig(**omega)
    upstreams = {}
    for item in getattr(args, "upstream", None) or ():
        provider, sep, url = item.partition("=")
        if not sep or not provider or not url.startswith(("https://", "http://")):
            raise SystemExit(f"opsgate: --upstream wants PROVIDER=URL, got {item!r}")
        upstreams[provider] = url
    if upstreams:
        overrides["upstreams"] = upstreams
    return GatewayConfig(**overrides)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.serve import ROLES, build_app, demo_user_id, mint_token

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from(args)
    app, services, secret = build_app(config)
    server = uvicorn.Server(uvicorn_config(app, config, services.redactor))
    drift = services.registry.drift(services.engine.bundle.catalogue)
    if drift:
        log.warning("tools not in the policy catalogue (always denied): %s", ", ".join(drift))
    url = f"http://{config.host}:{config.port}"
    print(f"opsgate {url}/mcp  policy revision {services.engine.bundle.revision}", flush=True)
    if args.demo_tokens:
        print("demo tokens (development signing key from the embedded vault; valid 12 h):", flush=True)
        for role in ROLES:
            token = mint_token(secret, issuer=config.auth_issuer, user_id=demo_user_id(role), role=role)
            print(f"  {role:13} {token}", flush=True)
    server.run()
    return 0 if server.started else 3  # as uvicorn.run: it has logged why (say, the port is taken)


def uvicorn_config(app: Any, config: GatewayConfig, redactor: Redactor) -> uvicorn.Config:
    """uvicorn's settings for `app`, with every log handler scrubbing secret values. uvicorn sets
    up its own loggers and handlers (not propagating to the root) when its Config is built, so the
    filter goes on after that: its own error lines, tracebacks included, are scrubbed too."""
    import uvicorn

    from otel.redact import install_log_filter

    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", loop="uvloop",
                              http="httptools")
    install_log_filter(redactor)
    return settings


def run_stdio(args: argparse.Namespace) -> int:
    from mcp.server.stdio import stdio_server

    from gateway.errors import Code, GatewayError
    from gateway.mcp_app import build_server
    from gateway.serve import build_services
    from otel.redact import install_log_filter

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = config_from(args)
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
        await services.start_providers()  # upstream MCP servers: children, sessions, re-listing
        try:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
        finally:
            await services.stop_providers()

    asyncio.run(main())
    return 0


__all__ = ["register"]
