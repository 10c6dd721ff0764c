"""Authentication: Supabase access tokens verified locally, the caller's role from app_metadata.

    auth = Authenticator(AuthConfig(issuer="https://<ref>.supabase.co/auth/v1",
                                    hs256_secret=secret_from_vault))
    caller = await auth.authenticate(request.headers.get("authorization"))  # or AuthError
    caller.id, caller.role  # uuid str, "ops_viewer" | "ops_operator" | "ops_admin" | None
"""

from gateway.auth.authenticator import Authenticator
from gateway.auth.model import ROLES, AuthConfig, AuthError, Caller, Reason
from gateway.auth.users import (
    LazyPostgresUserDirectory,
    PostgresUserDirectory,
    StaticUserDirectory,
    UserDirectory,
    UserStatus,
)

__all__ = ["ROLES", "AuthConfig", "AuthError", "Authenticator", "Caller", "LazyPostgresUserDirectory",
           "PostgresUserDirectory", "Reason",
           "StaticUserDirectory", "UserDirectory", "UserStatus"]
