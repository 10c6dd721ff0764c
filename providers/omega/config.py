"""The omega provider's configuration (the `omega` section of the gateway's config)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


class OmegaConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # "sqlite": the embedded database at `sqlite_path` (relative paths are under the gateway's
    # state_dir), created and seeded with the demo data on first use. "postgres": the Supabase
    # database at `database_url`, whose login role must be a member of anon and authenticated
    # only (like PostgREST's authenticator): no privileged role, nothing that skips RLS.
    backend: Literal["sqlite", "postgres"] = "sqlite"
    database_url: str = "postgresql://omega_authenticator@127.0.0.1:5432/postgres"
    # A path: the gateway's config loader joins a relative one onto the state_dir (the marker says so).
    sqlite_path: Annotated[str, msgspec.Meta(extra={"path": "state_dir"})] = "omega.db"
    seed_demo: bool = True  # sqlite only: load supabase/seed/omega_demo.sql into an empty database
    # Whose rows the database shows: "caller" runs each request as `authenticated` with the
    # verified caller's claims (RLS as under Supabase); "anon" runs every request as `anon`
    # (the spec's no-viewer-token fallback: user-scoped reads come back empty; warned at start-up).
    viewer: Literal["caller", "anon"] = "caller"


__all__ = ["OmegaConfig"]
