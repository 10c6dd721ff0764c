"""The gateway's configuration: one small frozen struct, embedded defaults that run anywhere.

The environment is read in the CLI only (and never for secrets: those live in the vault).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from otel.tracing import TracingConfig
from providers.omega.config import OmegaConfig


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    policies: str = "policies"
    # Deviation exception bundles (engine.exceptions); read with the policies on every reload.
    exceptions: str = "exceptions"
    state_dir: str = ".opsgate"  # embedded vault and stores live here
    # DNS-rebinding guard for /mcp: the Host and Origin headers a request may carry.
    allowed_hosts: tuple[str, ...] = ("127.0.0.1:*", "localhost:*", "[::1]:*")
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
    max_body_bytes: int = 1 << 20
    limiter: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    fail_open_buckets: tuple[str, ...] = ()  # buckets allowed through while Redis is unreachable
    auth_issuer: str = "opsgate-dev"  # Supabase: https://<project>.supabase.co/auth/v1
    jwks_url: str | None = None  # asymmetric Supabase projects
    # Refuse banned or deleted users by asking auth.users (cached briefly) on every call.
    auth_freshness: bool = False
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # Secrets (constitution rule 4): "embedded" at <state_dir>/vault, or Supabase Vault at database_url.
    vault: Literal["embedded", "supabase"] = "embedded"
    health_timeout_s: float = 5.0  # constitution rule 6; also each provider's own health budget
    # Provider name -> upstream base URL, replacing the vendor's (a self-hosted or regional
    # endpoint, or a test's loopback imitation). Egress policy still decides whether it is reachable.
    upstreams: dict[str, str] = {}
    # ops.run_events: "sqlite" at <state_dir>/events.db (embedded default) or "postgres" at database_url,
    # through a local durable outbox at <state_dir>/events-outbox.db (answers wait for it, not for Postgres).
    events: Literal["sqlite", "postgres"] = "sqlite"
    # What a released answer's row survives: "disk" (fsync'd: power loss) or "process" (the gateway
    # dying in any way, kill -9 included; not a power loss). See otel/events/journal.py.
    events_durability: Literal["disk", "process"] = "process"
    # Unshipped events the outbox may hold while Postgres is unreachable; past it, new calls are refused.
    events_outbox_max: int = 100_000
    # Spans go to an OTLP collector only when tracing.otlp_endpoint is set; nothing leaves otherwise.
    tracing: TracingConfig = TracingConfig()
    # Argument paths masked in audit rows and spans, e.g. "args.token", "args.headers.*".
    sensitive_paths: tuple[str, ...] = ()
    # The Pulse Omega observer: embedded SQLite with demo data, or Postgres/Supabase (README "Pulse Omega").
    omega: OmegaConfig = OmegaConfig()

    # -- operations: metrics, worker processes, cached health (gateway/metrics.py, gateway/workers.py) --
    # GET /metrics (Prometheus text): "token" (an ops_admin bearer token, or the vault's
    # opsgate_metrics_token as a static scrape credential), "open" (anyone who reaches the port), "off".
    metrics: Literal["off", "open", "token"] = "token"
    # Server processes sharing the listening socket and the state dir; more than 1 needs limiter = "redis".
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
    # Seconds one health probe of every provider answers GET /health for; probes run one at a time.
    health_cache_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0


__all__ = ["GatewayConfig"]
