"""What looks like a secret in configuration, wherever it comes from (file, environment, flags).

Constitution rule 4: secrets live in the vault, never in a configuration file, an environment
variable of the gateway or a command line. A key whose name says it holds one (`password`,
`api_key`, `sentry_dsn`, `Authorization`, ...) or a string that carries one (a URL with a
password, a JWT, a bearer header, a private key, a vendor token) is refused.

Invariant: a refusal names the key and the reason, never the value nor any part of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

VAULT = "secrets go in the vault: `opsgate vault set <provider>_<what>` (README \"Secrets: the vault\")"
PGPASS = ("leave the password out of the URL (`postgresql://user@host/db`) and put it in ~/.pgpass "
          "(or the file PGPASSFILE names), which libpq and asyncpg read")

# Words that make a key name a secret's name, and words that do so before `key` (`api_key`).
_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "tokens",
                           "dsn", "credential", "credentials", "authorization", "cookie", "apikey",
                           "privatekey"})
_BEFORE_KEY = frozenset({"api", "private", "access", "secret", "signing", "encryption", "master", "service",
                         "role", "client", "auth"})
_POSTGRES = ("postgres", "postgresql")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_AUTH_HEADER = re.compile(r"(?i)^\s*(bearer|basic|token|apikey)\s+\S{8,}")
_CONNINFO_PASSWORD = re.compile(r"(?i)(^|\s)(ssl)?password\s*=")
_VENDOR_TOKEN = re.compile(r"(sntry[su]_|sktsec_|ghp_|gho_|ghs_|github_pat_|glpat-|xox[abprs]-|sk_live_|"
                           r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----)")
_KEYLIKE_USER = re.compile(r"[0-9a-fA-F]{32,}")


def words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def secret_name(name: str) -> bool:
    """Whether a key (or a variable's) name says it holds a secret."""
    ws = words(name)
    return bool(_SECRET_WORDS.intersection(ws)) or any(
        w == "key" and i > 0 and ws[i - 1] in _BEFORE_KEY for i, w in enumerate(ws))


def secret_in_text(text: str) -> str | None:
    """Why `text` looks like (or carries) a secret, or None. The reason never quotes the text."""
    if _JWT.search(text):
        return f"holds a JWT (a bearer token); tokens never go in configuration; {VAULT}"
    if _AUTH_HEADER.match(text):
        return f"holds an Authorization header value; {VAULT}"
    if _VENDOR_TOKEN.search(text):
        return f"holds what looks like an API token or private key; {VAULT}"
    if _CONNINFO_PASSWORD.search(text):
        return f"holds a `password=` setting; {PGPASS}"
    if "://" in text:
        return _secret_in_url(text)
    return None


def _secret_in_url(text: str) -> str | None:
    try:
        url = urlsplit(text.strip())
        password, user = url.password, url.username
    except ValueError:
        return None
    scheme = url.scheme.lower().split("+")[0]
    if password:
        hint = PGPASS if scheme in _POSTGRES else f"keep credentials out of URLs; {VAULT}"
        return f"carries a password in its URL; {hint}"
    if user and _KEYLIKE_USER.fullmatch(user):
        return f"carries a key in its URL's user part (a Sentry DSN?); {VAULT}"
    for name, _ in parse_qsl(url.query, keep_blank_values=True):
        if secret_name(name):
            hint = PGPASS if scheme in _POSTGRES else VAULT
            return f"carries a secret in its query (`{name}=`); {hint}"
    return None


def holds_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return any(holds_text(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_text(v) for v in value)
    return False


def scan(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every (key path, reason) in a decoded table where a secret is, or is named."""
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{key}.{k}" if key else k
            if secret_name(k) and holds_text(v):
                yield path, f"looks like a secret (its name); {VAULT}"
            else:
                yield from scan(v, path)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from scan(v, f"{key}[{i}]")
    elif isinstance(value, str):
        reason = secret_in_text(value)
        if reason:
            yield key, reason


__all__ = ["PGPASS", "VAULT", "scan", "secret_in_text", "secret_name"]
