"""Building a running gateway from a GatewayConfig: vault, auth, limiter, engine, providers.

With the embedded defaults (`make run`) everything lives under `state_dir`: the embedded vault
holds a generated development signing key, and one demo token per role is printed so a person
can call the gateway at once. The key never leaves the vault except into the authenticator.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import jwt
import msgspec
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore

from engine import Engine
from gateway.app import VERSION, create_app
from gateway.audit import Audit
from gateway.auth import AuthConfig, Authenticator, AuthError, LazyPostgresUserDirectory
from gateway.config import GatewayConfig
from gateway.console import Console, OAuthClient, Sessions
from gateway.edge import (
    AUTH,
    AllowedHosts,
    Edge,
    ProtectedResource,
    PublicUrl,
    Refusals,
    TrustedProxies,
    authorization_server,
    client_address,
)
from gateway.errors import Code, GatewayError
from gateway.exception_trust import TrustSource
from gateway.metrics import Metrics
from gateway.pipeline import Caller
from gateway.ratelimit import MemoryLimiter, RedisLimiter
from gateway.registry import Registry
from gateway.runtime import GatewayRuntime, ProviderDoor
from gateway.services import Services
from otel.events import EventStore, OutboxEventStore, PostgresEventStore, SqliteEventStore
from otel.redact import Redactor
from otel.tracing import current_span_ids, setup_tracing
from providers.echo import EchoProvider
from providers.netdata import NetdataProvider
from providers.omega import OmegaProvider
from providers.sdk.vault import Vault, get_or_create, open_vault
from providers.sentry import SentryProvider
from providers.socket import DEFAULT_BASE_URL as SOCKET_URL
from providers.socket import SocketProvider
from providers.upstream_mcp import UpstreamProvider

T = TypeVar("T")
DEV_SECRET = "opsgate_dev_jwt_secret"
ROLES = ("ops_viewer", "ops_operator", "ops_admin")


def demo_user_id(role: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"opsgate-demo:{role}"))


def mint_token(secret: bytes, *, issuer: str, user_id: str, role: str | None, ttl_s: int = 12 * 3600,
               extra: dict[str, Any] | None = None) -> str:
    """A Supabase-shaped HS256 access token (development and tests)."""
    now = int(time.time())
    claims = {"iss": issuer, "sub": user_id, "aud": "authenticated", "iat": now, "exp": now + ttl_s,
              "role": "authenticated", "app_metadata": {"ops_role": role} if role else {},
              "user_metadata": {}, "session_id": str(uuid.uuid4()), **(extra or {})}
    return jwt.encode(claims, secret, algorithm="HS256")


def default_providers(config: GatewayConfig | None = None) -> list[Any]:
    """The providers a gateway serves, pointed at `config.provider_urls` where it overrides a vendor."""
    config = config or GatewayConfig()
    up = config.provider_urls
    budget = config.health_timeout_s
    return [EchoProvider(),
            OmegaProvider(config.omega, state_dir=config.state_dir),
            SocketProvider(base_url=up.get("socket", SOCKET_URL), health_budget_s=budget),
            SentryProvider(up.get("sentry", "https://sentry.io"), health_budget_s=budget),
            NetdataProvider(up.get("netdata", "https://app.netdata.cloud"), agent_url=up.get("netdata_agent"),
                            health_budget_s=budget)]


def upstream_providers(engine: Engine, config: GatewayConfig, taken: set[str]) -> list[UpstreamProvider]:
    """One adapter per upstream MCP server the bundle declares (policies/upstreams/), handed its
    declaration and pins as plain data."""
    from gateway.schema_versions import breaking_changes
    from providers.sdk.netns import Isolation

    # The mcp client's HTTP library logs every request at INFO: a line per upstream call otherwise.
    logging.getLogger("httpx2").setLevel(logging.WARNING)

    def breaking(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        return breaking_changes({"tool": {"input_schema": old}}, {"tool": {"input_schema": new}})

    return [UpstreamProvider(msgspec.to_builtins(u), breaking=breaking, health_budget_s=config.health_timeout_s,
                             isolate=Isolation.for_upstream(u.name) if u.declaration.transport == "stdio"
                             and u.declaration.isolation == "netns" else None)
            for u in engine.bundle.upstreams if u.name not in taken]


def _blocking(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run async start-up work to completion from synchronous code, in a private event loop on
    its own thread (so it works whether or not the caller is inside a running loop)."""
    with ThreadPoolExecutor(1, thread_name_prefix="opsgate-startup") as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


def open_configured_vault(config: GatewayConfig) -> Vault:
    return open_vault(config.vault, state_dir=config.state_dir, database_url=config.database_url)


def signing_key(config: GatewayConfig) -> bytes:
    """The development HS256 signing key, generated into the configured vault on first start."""

    async def read() -> str:
        vault = open_configured_vault(config)
        try:
            return await get_or_create(vault, DEV_SECRET, lambda: secrets.token_urlsafe(48))
        finally:
            await vault.close()

    return _blocking(read).encode()


def make_authenticator(config: GatewayConfig, secret: bytes | None = None) -> tuple[Authenticator, bytes]:
    """The gateway's token verifier (and the HS256 key it uses), for the gateway and for CLI
    commands that must verify a token exactly as the gateway does (`opsgate exception approve`)."""
    secret = secret if secret is not None else signing_key(config)
    users = LazyPostgresUserDirectory(config.database_url) if config.auth_freshness else None
    return Authenticator(AuthConfig(issuer=config.auth_issuer, audience=config.auth_audience, hs256_secret=secret,
                                    jwks_url=config.jwks_url, freshness=config.auth_freshness), users=users), secret


def edge_of(config: GatewayConfig) -> Edge:
    """The HTTP edge's settings: allowed hosts and origins (plus the public URL's own), trusted
    proxies, and what OAuth clients are told. Raises ValueError naming a bad setting."""
    public = PublicUrl(config.public_url) if config.public_url else None
    hosts = [*config.allowed_hosts, *([public.host_pattern()] if public else [])]
    origins = [*config.allowed_origins, *([public.origin_pattern()] if public else [])]
    return Edge(AllowedHosts(hosts, origins), TrustedProxies(config.trusted_proxies, config.forwarded_header),
                ProtectedResource(public, authorization_server(config.auth_server, config.auth_issuer),
                                  config.auth_scopes))


def build_services(config: GatewayConfig, *, providers: list[Any] | None = None,
                   metrics_dir: str | Path | None = None) -> tuple[Services, bytes]:
    """`metrics_dir`: set by a worker process (gateway/workers.py): its fleet's shared metrics."""
    authenticator, secret = make_authenticator(config)
    vault = open_configured_vault(config)  # the serving loop's own (a Supabase pool binds to its loop)

    async def authenticate(header: str | None) -> Caller:
        try:
            return await authenticator.authenticate(header)
        except AuthError as e:
            refusals.note(AUTH, e.reason, client_address())  # counted; never the token
            raise GatewayError(Code.UNAUTHENTICATED, e.message, reason=e.reason) from None

    limiter: Any
    if config.limiter == "redis":
        limiter = RedisLimiter(config.redis_url, fail_open_buckets=frozenset(config.fail_open_buckets),
                               timeout_s=config.redis_timeout_s)
    else:
        limiter = MemoryLimiter()
    store: EventStore
    if config.events == "postgres":
        store = OutboxEventStore(Path(config.state_dir) / "events-outbox.db", PostgresEventStore(config.database_url),
                                 durability=config.events_durability, max_pending=config.events_outbox_max,
                                 log_reserve_bytes=config.events_log_reserve_bytes)
    else:
        store = SqliteEventStore(Path(config.state_dir) / "events.db", durability=config.events_durability,
                                 log_reserve_bytes=config.events_log_reserve_bytes)
    # Exceptions load only with what the audit trail and the vault vouch for (held back until start).
    trust = TrustSource(config.exceptions, store, vault)
    engine = Engine.from_dir(config.policies, exceptions=config.exceptions, exception_trust=trust)
    runtime = GatewayRuntime(engine, vault=vault)
    # Secret values the redactor removes wherever they appear: the signing key and every value
    # the vault has handed a provider.
    redactor = Redactor(lambda: (secret.decode(), *runtime.revealed), config.sensitive_paths)
    audit = Audit(store, redact=redactor.redact, span_ids=current_span_ids, client_addr=client_address)
    refusals = Refusals(audit, interval_s=config.edge_refusal_interval_s)
    runtime.audit = audit
    served = list(providers if providers is not None else default_providers(config))
    served += upstream_providers(engine, config, {getattr(p, "name", None) for p in served})
    registry = Registry(served, runtime=ProviderDoor(runtime))
    metrics = None if config.metrics == "off" else Metrics(access=config.metrics, multiprocess_dir=metrics_dir)
    return Services(engine, registry, limiter, authenticate, audit, redactor=redactor, vault=vault,
                    exception_trust=trust, refusals=refusals,
                    policy_candidates=config.policy_candidates,
                    tools_page_size=config.tools_page_size, metrics=metrics), secret


def console_of(config: GatewayConfig, secret: bytes, *, demo: bool) -> Console | None:
    """The web console's parts: sessions in this process's memory, or in Redis when the limiter is
    (worker processes share it); demo sign-in only under --demo-tokens; OAuth with a client id."""
    if not config.console:
        return None
    store: Any = MemoryStore()
    if config.limiter == "redis":
        store = RedisStore.with_client(url=config.redis_url, namespace="opsgate-console")
    server = authorization_server(config.auth_server, config.auth_issuer)
    oauth = None
    if config.console_oauth_client and server:
        resource = config.auth_audience if config.auth_audience != "authenticated" else None
        oauth = OAuthClient(server, client_id=config.console_oauth_client, resource=resource)

    def minted(role: str) -> str:
        return mint_token(secret, issuer=config.auth_issuer, user_id=demo_user_id(role), role=role)

    return Console(Sessions(store), demo=minted if demo else None, oauth=oauth)


def build_app(config: GatewayConfig, *, providers: list[Any] | None = None,
              metrics_dir: str | Path | None = None, demo_tokens: bool = False) -> tuple[Any, Services, bytes]:
    """`demo_tokens`: `opsgate serve --demo-tokens`; the console then offers the demo users."""
    services, secret = build_services(config, providers=providers, metrics_dir=metrics_dir)
    provider = setup_tracing(msgspec.structs.replace(config.tracing, service_version=VERSION),
                             scrubber=services.redactor)
    app = create_app(services, edge=edge_of(config), max_body_bytes=config.max_body_bytes,
                     health_timeout_s=config.health_timeout_s, health_cache_s=config.health_cache_s,
                     tracer_provider=provider, console=console_of(config, secret, demo=demo_tokens))
    return app, services, secret


__all__ = ["build_app", "build_services", "console_of", "default_providers", "demo_user_id", "edge_of",
           "make_authenticator", "mint_token", "open_configured_vault", "signing_key", "upstream_providers"]
