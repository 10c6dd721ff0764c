"""The configuration loader: which file, which source wins, where relative paths point, and what
is refused (with the key's path and the expected type, never the value).

Every test passes its own working directory and environment: the loader reads neither itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from msgspec import inspect as mi

from gateway.config import ConfigError, GatewayConfig, Override, load
from gateway.config import schema as config_schema
from gateway.config.loader import ROOT
from gateway.config.secrets import secret_name

# Secret-looking values the refusals must never repeat (fixtures, not secrets).
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."  # pragma: allowlist secret
       "eyJzdWIiOiIxMjM0NTY3ODkwIiwicm9sZSI6Im9wc19hZG1pbiJ9."  # pragma: allowlist secret
       "c2lnbmF0dXJlLXRoYXQtaXMtbm90LXJlYWw")
PASSWORD = "hunter2-Zq9"  # pragma: allowlist secret


def write(folder: Path, text: str, name: str = "opsgate.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def problems_of(**kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(**kw)
    return [str(p) for p in err.value.problems]


# -- precedence ----------------------------------------------------------------------------------


def test_each_source_wins_over_the_one_before(tmp_path: Path) -> None:
    write(tmp_path, 'port = 8100\nlimiter = "redis"\n[tracing]\notlp_endpoint = "http://collector:4318/v1/traces"\n')
    base = load(cwd=tmp_path)
    assert (base.config.port, base.sources["port"]) == (8100, "file")
    assert (base.config.host, base.sources["host"]) == ("127.0.0.1", "default")

    env = {"OPSGATE_PORT": "8200", "OPSGATE_TRACING__OTLP_TIMEOUT_S": "3"}
    with_env = load(cwd=tmp_path, env=env)
    assert (with_env.config.port, with_env.sources["port"]) == (8200, "env OPSGATE_PORT")
    # Tables merge key by key: the file's endpoint stays beside the environment's timeout.
    assert with_env.config.tracing.otlp_endpoint == "http://collector:4318/v1/traces"
    assert with_env.config.tracing.otlp_timeout_s == 3.0
    assert with_env.sources["tracing.otlp_timeout_s"] == "env OPSGATE_TRACING__OTLP_TIMEOUT_S"
    assert with_env.config.limiter == "redis"

    flags = [Override("port", 8300, "flag --port"), Override("limiter", "memory", "flag --set limiter", text=True)]
    with_flags = load(cwd=tmp_path, env=env, flags=flags)
    assert (with_flags.config.port, with_flags.sources["port"]) == (8300, "flag --port")
    assert (with_flags.config.limiter, with_flags.sources["limiter"]) == ("memory", "flag --set limiter")


def test_environment_values_are_read_by_the_keys_type(tmp_path: Path) -> None:
    loaded = load(cwd=tmp_path, env={"OPSGATE_AUTH_FRESHNESS": "true", "OPSGATE_ALLOWED_HOSTS": '["mcp.example.com"]',
                                     "OPSGATE_AUTH_ISSUER": "https://x.supabase.co/auth/v1",
                                     "OPSGATE_OMEGA": '{ backend = "postgres" }', "OPSGATE_UNRELATED": "x"})
    config = loaded.config
    assert config.auth_freshness is True and config.allowed_hosts == ("mcp.example.com",)
    assert config.auth_issuer == "https://x.supabase.co/auth/v1" and config.omega.backend == "postgres"
    assert loaded.ignored_env == ("OPSGATE_UNRELATED",)


def test_mapping_entries_merge_across_sources(tmp_path: Path) -> None:
    write(tmp_path, '[provider_urls]\nsentry = "https://sentry.internal.example"\n')
    socket = Override("provider_urls.socket", "https://socket.example", "flag --provider-url")
    loaded = load(cwd=tmp_path, flags=[socket])
    assert loaded.config.provider_urls == {"sentry": "https://sentry.internal.example",
                                           "socket": "https://socket.example"}
    assert loaded.sources["provider_urls.sentry"] == "file"
    assert loaded.sources["provider_urls.socket"] == "flag --provider-url"


def test_the_file_is_found_by_flag_then_environment_then_working_directory(tmp_path: Path) -> None:
    here = write(tmp_path / "here", "port = 1001\n")
    named = write(tmp_path / "named", "port = 1002\n")
    flagged = write(tmp_path / "flagged", "port = 1003\n")
    env = {"OPSGATE_CONFIG": str(named)}
    assert load(cwd=here.parent).config.port == 1001
    assert load(cwd=here.parent, env=env).config.port == 1002
    assert load(cwd=here.parent, env=env, config_file=str(flagged)).config.port == 1003
    assert load(cwd=tmp_path).file is None  # no ./opsgate.toml: built-in defaults
    assert problems_of(cwd=tmp_path, config_file="missing.toml") == [f"{tmp_path / 'missing.toml'}: no such file"]


# -- paths ---------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_files_folder_not_the_working_directory(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "etc" / "opsgate", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    path = write(home, 'policies = "bundle"\nstate_dir = "../state"\n')
    config = load(cwd=elsewhere, env={"OPSGATE_CONFIG": str(path)}).config
    assert config.policies == str(home / "bundle")
    assert Path(config.state_dir).resolve() == (tmp_path / "etc" / "state").resolve()
    assert config.exceptions == str(home / "exceptions")  # a default, beside the file
    assert config.omega.sqlite_path == str(Path(config.state_dir) / "omega.db")  # under state_dir, as documented


def test_flag_and_environment_paths_resolve_against_the_working_directory(tmp_path: Path) -> None:
    path = write(tmp_path / "conf", 'state_dir = "state"\n')
    loaded = load(cwd=tmp_path / "conf", env={"OPSGATE_POLICIES": "mine"},
                  flags=[Override("state_dir", "typed", "flag --state-dir")], config_file=str(path))
    assert loaded.config.policies == str(tmp_path / "conf" / "mine")
    cwd = tmp_path / "work"
    cwd.mkdir()
    loaded = load(cwd=cwd, env={"OPSGATE_POLICIES": "mine"}, flags=[Override("state_dir", "typed", "flag --state-dir")],
                  config_file=str(path))
    assert (loaded.config.policies, loaded.config.state_dir) == (str(cwd / "mine"), str(cwd / "typed"))
    assert load(cwd=cwd, flags=[Override("state_dir", "~/st", "flag --state-dir")]).config.state_dir == \
        str(Path("~/st").expanduser())


def test_without_a_file_defaults_are_relative_to_the_working_directory(tmp_path: Path) -> None:
    config = load(cwd=tmp_path).config
    assert (config.policies, config.state_dir) == (str(tmp_path / "policies"), str(tmp_path / ".opsgate"))


# -- refusals ------------------------------------------------------------------------------------


def test_unknown_keys_are_named_with_their_path_and_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, 'polices = "p"\n[tracing]\notlp_endpont = "http://c:4318"\n[omega]\nflavour = "x"\n')
    assert problems_of(cwd=tmp_path) == [
        f"{tmp_path / 'opsgate.toml'}: polices: unknown key; did you mean `policies`?",
        f"{tmp_path / 'opsgate.toml'}: tracing.otlp_endpont: unknown key; did you mean `tracing.otlp_endpoint`?",
        f"{tmp_path / 'opsgate.toml'}: omega.flavour: unknown key; `omega` takes: backend, database_url, "
        "sqlite_path, seed_demo, viewer"]


def test_wrong_types_name_the_nested_key_and_the_expected_type_in_words(tmp_path: Path) -> None:
    write(tmp_path, 'allowed_hosts = ["a", 3]\nlimiter = "memcached"\n[tracing]\notlp_timeout_s = "soon"\n'
                    '[omega]\nseed_demo = "yes"\n')
    found = [p.split(": ", 1)[1] for p in problems_of(cwd=tmp_path)]
    assert found == ["allowed_hosts[1]: expected a string, got an integer",
                     'limiter: expected one of "memory", "redis"',
                     "tracing.otlp_timeout_s: expected a number, got a string",
                     "omega.seed_demo: expected true or false, got a string"]
    assert "memcached" not in " ".join(found)


def test_environment_and_flag_values_are_checked_too(tmp_path: Path) -> None:
    found = problems_of(cwd=tmp_path, env={"OPSGATE_PORT": "eighty"},
                        flags=[Override("tracing.otlp_endpont", "x", "flag --set tracing.otlp_endpont", text=True),
                               Override("allowed_hosts", '"one"', "flag --set allowed_hosts", text=True)])
    assert found == ["env OPSGATE_PORT: port: expected an integer, got text that is not a TOML value",
                     "flag --set tracing.otlp_endpont: tracing.otlp_endpont: unknown key; "
                     "did you mean `tracing.otlp_endpoint`?",
                     "flag --set allowed_hosts: allowed_hosts: expected an array of strings, got a string"]


@pytest.mark.parametrize(("toml", "key", "hint"), [
    ('sentry_dsn = "https://abc@o1.ingest.sentry.io/2"', "sentry_dsn", "opsgate vault set"),
    (f'api_key = "{PASSWORD}"', "api_key", "opsgate vault set"),
    (f'[tracing.otlp_headers]\nAuthorization = "Bearer {PASSWORD}"', "tracing.otlp_headers.Authorization",
     "opsgate vault set"),
    (f'[tracing.otlp_headers]\nx-tenant = "Bearer {PASSWORD}"', "tracing.otlp_headers.x-tenant", "vault"),
    (f'database_url = "postgresql://opsgate_gw:{PASSWORD}@db.example:5432/postgres"', "database_url", "~/.pgpass"),
    (f'database_url = "postgresql://opsgate_gw@db.example/postgres?password={PASSWORD}"', "database_url",
     "~/.pgpass"),
    (f'redis_url = "redis://:{PASSWORD}@10.0.0.5:6379/0"', "redis_url", "opsgate vault set"),
    (f'[omega]\ndatabase_url = "host=db user=omega password={PASSWORD}"', "omega.database_url", "~/.pgpass"),
    (f'auth_issuer = "{JWT}"', "auth_issuer", "opsgate vault set"),
    (f'sensitive_paths = ["args.token", "{JWT}"]', "sensitive_paths[1]", "opsgate vault set"),
    ('[provider_urls]\nsentry = "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/2"',
     "provider_urls.sentry", "Sentry DSN"),
])
def test_secrets_are_refused_with_the_key_and_a_pointer_never_the_value(tmp_path: Path, toml: str, key: str,
                                                                         hint: str) -> None:
    write(tmp_path, toml + "\n")
    (problem,) = problems_of(cwd=tmp_path)
    where, got_key, message = problem.split(": ", 2)
    assert (where, got_key) == (str(tmp_path / "opsgate.toml"), key)
    assert "secret" in message or "password" in message or "JWT" in message or "token" in message
    assert hint in message
    for fragment in (PASSWORD, JWT, JWT[:20], "0123456789abcdef", "abc@"):
        assert fragment not in problem


def test_secrets_in_the_environment_or_on_the_command_line_are_refused(tmp_path: Path) -> None:
    found = problems_of(cwd=tmp_path,
                        env={"OPSGATE_DATABASE_URL": f"postgresql://u:{PASSWORD}@h/db",
                             "OPSGATE_SUPABASE_SERVICE_ROLE_KEY": PASSWORD},
                        flags=[Override("redis_url", f"redis://:{PASSWORD}@h:6379", "flag --redis-url"),
                               Override("tracing.otlp_headers", f'{{ authorization = "{PASSWORD}" }}',
                                        "flag --set tracing.otlp_headers", text=True)])
    assert [p.split(": ")[:2] for p in found] == [
        ["env OPSGATE_DATABASE_URL", "database_url"],
        ["env OPSGATE_SUPABASE_SERVICE_ROLE_KEY", "supabase_service_role_key"],
        ["flag --redis-url", "redis_url"], ["flag --set tracing.otlp_headers", "tracing.otlp_headers.authorization"]]
    assert PASSWORD not in "\n".join(found)


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path) -> None:
    write(tmp_path, f'port = "x"\npolices = "p"\ndatabase_url = "postgresql://u:{PASSWORD}@h/db"\n'
                    '[tracing]\notlp_timeout_s = true\n[omega]\nbackend = "mysql"\n')
    found = problems_of(cwd=tmp_path, env={"OPSGATE_HOST": "[1"})
    keys = [p.split(": ")[1] for p in found]
    assert sorted(keys) == sorted(["database_url", "port", "polices", "tracing.otlp_timeout_s", "omega.backend"])


def test_a_file_that_is_not_toml_says_where(tmp_path: Path) -> None:
    write(tmp_path, 'port = 80\nhost = "unterminated\n')
    (problem,) = problems_of(cwd=tmp_path)
    assert problem.startswith(f"{tmp_path / 'opsgate.toml'}: not valid TOML") and "line 2" in problem


# -- every field, now and later ------------------------------------------------------------------


def leaves() -> list[tuple[str, Any, mi.Type]]:
    """Every settable key with its default and type (struct tables descended)."""
    defaults = msgspec.to_builtins(GatewayConfig())
    found = []
    for key in config_schema.keys_of(ROOT):
        value: Any = defaults
        for segment in key.split("."):
            value = value[segment]
        found.append((key, value, config_schema.lookup(ROOT, key.split("."))))
    return found


def sample(value: Any, info: mi.Type) -> Any:
    """A TOML-writable value for the key: its default, or some text where the default is None."""
    inner = config_schema.bare(info)
    if value is None:
        return "sample" if config_schema.accepts_text(info) else None
    if value == {} and isinstance(inner, mi.DictType) and config_schema.accepts_text(inner.value_type):
        return {"sample": "sample"}
    return list(value) if isinstance(value, tuple) else value


def inline(value: Any) -> str:
    """A value as inline TOML (JSON's strings, numbers and arrays are TOML's; tables are written inline)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    return json.dumps(value)


def test_every_field_is_reachable_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """Generic over GatewayConfig: a field added to the struct is covered with no change here."""
    settable = [(key, sample(value, info)) for key, value, info in leaves() if sample(value, info) is not None]
    table: dict[str, Any] = {}
    for key, value in settable:
        *parents, last = key.split(".")
        node = table
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (tmp_path / "opsgate.toml").write_text("".join(f"{k} = {inline(v)}\n" for k, v in table.items()))
    loaded = load(cwd=tmp_path)
    recorded = [
        *(key for key, value in settable if not isinstance(value, dict)),
        *(f"{key}.{k}" for key, value in settable if isinstance(value, dict) for k in value)]
    assert {loaded.sources[key] for key in recorded} == {"file"}, loaded.sources
    env = {"OPSGATE_" + key.upper().replace(".", "__"): str(value) for key, value in settable
           if isinstance(value, str)}
    via_env = load(cwd=tmp_path / "nowhere", env=env)
    assert {via_env.sources[k] for k, v in settable if isinstance(v, str)} == {f"env {n}" for n in env}


def test_no_configuration_key_looks_like_a_secret() -> None:
    """Rule 4: a field that holds a secret would be refused from every source; it must not exist."""
    assert [key for key, _, _ in leaves() if any(secret_name(s) for s in key.split("."))] == []
