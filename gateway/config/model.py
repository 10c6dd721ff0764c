"""The gateway's configuration: one frozen struct, one field per setting, declared once here.

Embedded defaults run anywhere. Every field is reachable from `opsgate.toml`, the environment
and the command line with no code beyond its declaration (gateway/config/loader.py walks the
struct); a field holding a filesystem path is declared `PathSetting` so that a relative value is
resolved against the configuration file's folder, never the working directory. No field holds a
secret (constitution rule 4): secrets live in the vault, and the loader refuses them.
The environment is read in the CLI only.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from otel.tracing import TracingConfig
from providers.omega.config import OmegaConfig

# A filesystem path: relative values are resolved against the folder of the configuration file
# that set them (against the working directory for flags and environment variables).
PathSetting = Annotated[str, msgspec.Meta(extra={"path": True})]


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    policies: PathSetting = "policies"
    # Deviation exception bundles (engine.exceptions); read with the policies on every reload.
    exceptions: PathSetting = "exceptions"
    state_dir: PathSetting = ".opsgate"  # embedded vault and stores live here
    # DNS-rebinding guard for /mcp: the Host and Origin headers a request may carry.
    allowed_hosts: tuple[str, ...] = ("127.0.0.1:*", "localhost:*", "[::1]:*")
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
    max_body_bytes: int = 1 << 20
    limiter: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    fail_open_buckets: tuple[str, ...] = ()  # buckets allowed through while Redis is unreachable
    # How long a rate-limit check may wait for Redis (queueing for a connection included) before the
    # call is refused RATE_LIMIT (limiter_error), fail closed. Raise it on a saturated host.
    redis_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 0.25
    auth_issuer: str = "opsgate-dev"  # Supabase: https://<project>.supabase.co/auth/v1
    jwks_url: str | None = None  # asymmetric Supabase projects
    # Refuse banned or deleted users by asking auth.users (cached briefly) on every call.
    auth_freshness: bool = False
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # Secrets (constitution rule 4): "embedded" at <state_dir>/vault, or Supabase Vault at database_url.
    vault: Literal["embedded", "supabase"] = "embedded"
    health_timeout_s: float = 5.0  # constitution rule 6; also each provider's own health budget
    # Provider name -> base URL of its vendor API, replacing the vendor's (a self-hosted or regional
    # endpoint, or a test's loopback imitation). Egress policy still decides whether it is reachable.
    provider_urls: dict[str, str] = {}
    # ops.run_events: "sqlite" at <state_dir>/events.db (embedded default) or "postgres" at database_url,
    # through a local durable outbox at <state_dir>/events-outbox.db (answers wait for it, not for Postgres).
    events: Literal["sqlite", "postgres"] = "sqlite"
    # What a released answer's row survives: "disk" (fsync'd: power loss) or "process" (the gateway
    # dying in any way, kill -9 included; not a power loss). See otel/events/journal.py.
    events_durability: Literal["disk", "process"] = "process"
    # Unshipped events the outbox may hold while Postgres is unreachable; past it, new calls are refused.
    events_outbox_max: int = 100_000
    # Bytes each intent log keeps allocated beyond its end (fallocate), so that on a full disk the audit
    # journal still takes records (a refused call's row among them) after the database can no longer
    # commit. 0: no reserve.
    events_log_reserve_bytes: Annotated[int, msgspec.Meta(ge=0)] = 256 << 10
    # Spans go to an OTLP collector only when tracing.otlp_endpoint is set; nothing leaves otherwise.
    tracing: TracingConfig = TracingConfig()
    # Argument paths masked in audit rows and spans, e.g. "args.token", "args.headers.*".
    sensitive_paths: tuple[str, ...] = ()
    # The Pulse Omega observer: embedded SQLite with demo data, or Postgres/Supabase (README "Pulse Omega").
    omega: OmegaConfig = OmegaConfig()
    # -- impact analysis --
    # The folder of candidate bundles `POST /v1/policy/diff` may compare with the active one: each
    # candidate is a direct child, named in the request, with nothing in it resolving outside this
    # folder. None: the route answers 404.
    policy_candidates: PathSetting | None = None
    # -- what an MCP client sees (issue 14) --
    # Tools per tools/list page; a longer listing continues by an opaque nextCursor (gateway/paging.py).
    tools_page_size: int = 100

    # -- the HTTP edge: public URL, trusted proxies, OAuth discovery (README "Serving behind a proxy") --
    # The gateway's public base URL, e.g. "https://mcp.insightpulseai.com" (no path): the MCP resource
    # is <public_url>/mcp; its host and origin are allowed without listing them in allowed_hosts/_origins.
    public_url: str | None = None
    # Peers (IPs or CIDRs) whose forwarded headers are believed; from any other peer they are ignored.
    trusted_proxies: tuple[str, ...] = ()
    # The headers those proxies write: "x-forwarded" (X-Forwarded-For/-Proto/-Host) or "forwarded" (RFC 7239).
    forwarded_header: Literal["x-forwarded", "forwarded"] = "x-forwarded"
    # The `aud` an access token must carry: Supabase's "authenticated", or the resource URI
    # (<public_url>/mcp) when an access-token hook issues it; nothing else is accepted.
    auth_audience: str = "authenticated"
    # The authorization server named in resource metadata (RFC 9728); default: auth_issuer when it is a URL.
    auth_server: str | None = None
    # Scopes listed in resource metadata and hinted in 401 challenges.
    auth_scopes: tuple[str, ...] = ()
    # Requests refused at the edge (authentication, Host, Origin) become one audit row per client and
    # reason per this many seconds, with a count.
    edge_refusal_interval_s: float = 60.0

    # -- operations: metrics, worker processes, cached health (gateway/metrics.py, gateway/workers.py) --
    # GET /metrics (Prometheus text): "token" (an ops_admin bearer token, or the vault's
    # opsgate_metrics_token as a static scrape credential), "open" (anyone who reaches the port), "off".
    metrics: Literal["off", "open", "token"] = "token"
    # Server processes sharing the listening socket and the state dir; more than 1 needs limiter = "redis".
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
    # Seconds one health probe of every provider answers GET /health for; probes run one at a time.
    health_cache_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0

    # -- the console (gateway/console, README "The console") --
    # Serve the web console for approvers, auditors and the security team at /console.
    console: bool = True
    # The console's OAuth client id at the authorization server (auth_server, else auth_issuer): a public
    # client (PKCE, no secret) whose redirect URI is <public_url>/console/oauth/callback. None: no
    # "sign in with" button; pasting an access token still works.
    console_oauth_client: str | None = None


__all__ = ["GatewayConfig", "PathSetting"]
