"""The vault contract on both backends: the embedded SQLite vault and Supabase Vault (over the
imitation of its interface in tests/vault_schema.sql, on the real Postgres).

The Supabase backend connects as login roles holding only what the README says they need: the
gateway's reader (SELECT on vault.decrypted_secrets) and the operator (plus EXECUTE on
vault.create_secret and vault.update_secret). A fresh database per module, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from providers.sdk.vault import (
    EmbeddedVault,
    SecretNotFound,
    SupabaseVault,
    Vault,
    VaultError,
    get_or_create,
)
from tests.vault_pg import PgVault, clear, pgvault_fixture  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio

VALUE = "sk_live_51Hx-this-is-the-secret-value"


@pytest.fixture(params=["embedded", "supabase"])
async def vault(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Vault]:
    v: Vault
    if request.param == "embedded":
        v = EmbeddedVault(tmp_path / "vault")
    else:
        pg: PgVault = request.getfixturevalue("pgvault")
        await clear(pg)
        v = SupabaseVault(pg.dsn(pg.operator))
    try:
        yield v
    finally:
        await v.close()


# -- the contract, on both backends -------------------------------------------------------------


async def test_set_get_list_and_versions(vault: Vault) -> None:
    first = await vault.set("socket_api_key", VALUE)
    assert (first.name, first.version) == ("socket_api_key", 1)
    assert await vault.get("socket_api_key") == VALUE
    second = await vault.set("socket_api_key", VALUE + "-rotated")
    assert second.version == 2
    assert await vault.get("socket_api_key") == VALUE + "-rotated"
    await vault.set("sentry_dsn", "https://abc123def456@o1.ingest.sentry.io/42")
    listed = await vault.list()
    assert [(s.name, s.version) for s in listed] == [("sentry_dsn", 1), ("socket_api_key", 2)]
    assert all(s.updated_at.endswith("+00:00") for s in listed)
    assert VALUE not in repr(listed)


async def test_values_round_trip_exactly(vault: Vault) -> None:
    for value in ("ünïcødé-🔑-value", "x" * 10_000, "with inner spaces and 'quotes'; drop table x; --"):
        await vault.set("netdata_token", value)
        assert await vault.get("netdata_token") == value


async def test_a_missing_secret_is_a_clear_error(vault: Vault) -> None:
    with pytest.raises(SecretNotFound, match=r"'netdata_token' is not in .*opsgate vault set netdata_token"):
        await vault.get("netdata_token")


async def test_names_and_values_are_checked_before_storing(vault: Vault) -> None:
    for bad in ("SOCKET_API_KEY", "socket", "socket-api-key", "socket__key", "_socket_key", "x" * 101 + "_k",
                "socket_key; drop table secrets"):
        with pytest.raises(VaultError, match="invalid secret name"):
            await vault.set(bad, VALUE)
        with pytest.raises(VaultError, match="invalid secret name"):
            await vault.get(bad)
    with pytest.raises(VaultError, match="shorter than 8") as short:
        await vault.set("socket_api_key", "abc1234")
    assert "abc1234" not in str(short.value)
    with pytest.raises(VaultError, match="whitespace") as spaced:
        await vault.set("socket_api_key", VALUE + "\n")
    assert VALUE not in str(spaced.value)
    assert await vault.list() == []


async def test_create_never_overwrites_and_get_or_create_agrees(vault: Vault) -> None:
    assert await vault.create("opsgate_dev_jwt_secret", VALUE) is True
    assert await vault.create("opsgate_dev_jwt_secret", "another-value-entirely") is False
    assert await vault.get("opsgate_dev_jwt_secret") == VALUE
    made = iter(f"generated-value-{i:04d}" for i in range(100))
    got = await asyncio.gather(*(get_or_create(vault, "echo_dev_key", lambda: next(made)) for _ in range(20)))
    assert len(set(got)) == 1
    assert [s.version for s in await vault.list() if s.name == "echo_dev_key"] == [1]


async def test_concurrent_rotations_each_get_their_own_version(vault: Vault) -> None:
    await vault.set("sentry_dsn", VALUE)
    infos = await asyncio.gather(*(vault.set("sentry_dsn", f"{VALUE}-{i}") for i in range(8)))
    assert sorted(i.version for i in infos) == list(range(2, 10))


# -- the embedded backend ---------------------------------------------------------------------


async def test_embedded_key_file_is_private_and_values_are_encrypted_at_rest(tmp_path: Path) -> None:
    v = EmbeddedVault(tmp_path / "vault")
    await v.set("socket_api_key", VALUE)
    await v.close()
    key = tmp_path / "vault" / "vault.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "vault").stat().st_mode & 0o777 == 0o700
    at_rest = b"".join(p.read_bytes() for p in (tmp_path / "vault").iterdir() if p.name != "vault.key")
    assert VALUE.encode() not in at_rest
    assert base64.b64encode(VALUE.encode())[:20] not in at_rest
    assert b"socket_api_key" in at_rest  # names are not secret; values are


async def test_embedded_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    await EmbeddedVault(tmp_path / "vault").close()
    os.chmod(tmp_path / "vault" / "vault.key", 0o644)
    with pytest.raises(VaultError, match="accessible to group/others"):
        EmbeddedVault(tmp_path / "vault")


async def test_embedded_wrong_key_or_moved_ciphertext_does_not_decrypt(tmp_path: Path) -> None:
    v = EmbeddedVault(tmp_path / "vault")
    await v.set("socket_api_key", VALUE)
    await v.set("sentry_dsn", "https://abc123def456@o1.ingest.sentry.io/42")
    await v.close()
    db = sqlite3.connect(tmp_path / "vault" / "vault.db")
    with db:  # an attacker with write access swaps ciphertexts between names
        db.execute("update secrets set (nonce, ciphertext) = (select nonce, ciphertext from secrets "
                   "where name = 'socket_api_key') where name = 'sentry_dsn'")
    db.close()
    v = EmbeddedVault(tmp_path / "vault")
    with pytest.raises(VaultError, match="does not decrypt") as moved:
        await v.get("sentry_dsn")
    assert VALUE not in str(moved.value)
    await v.close()
    (tmp_path / "vault" / "vault.key").write_bytes(os.urandom(32))
    v = EmbeddedVault(tmp_path / "vault")
    with pytest.raises(VaultError, match="does not decrypt"):
        await v.get("socket_api_key")
    await v.close()


async def test_embedded_key_is_created_once_by_concurrent_starters(tmp_path: Path) -> None:
    vaults = await asyncio.gather(*(asyncio.to_thread(EmbeddedVault, tmp_path / "vault") for _ in range(8)))
    await vaults[0].set("socket_api_key", VALUE)
    assert {await v.get("socket_api_key") for v in vaults} == {VALUE}
    for v in vaults:
        await v.close()
    assert [p.name for p in (tmp_path / "vault").iterdir() if p.name.startswith(".vault.key")] == []


# -- the Supabase backend ---------------------------------------------------------------------


async def test_supabase_stores_ciphertext_and_reads_through_the_view(pgvault: PgVault) -> None:
    v = SupabaseVault(pgvault.dsn(pgvault.operator))
    try:
        await v.set("socket_api_key", VALUE)
    finally:
        await v.close()
    conn = await asyncpg.connect(pgvault.dsn())
    try:
        row = await conn.fetchrow("select * from vault.secrets where name = 'socket_api_key'")
        view = await conn.fetchrow("select * from vault.decrypted_secrets where name = 'socket_api_key'")
        columns = [r["attname"] for r in await conn.fetch(
            "select attname from pg_attribute where attrelid = 'vault.decrypted_secrets'::regclass "
            "and attnum > 0 order by attnum")]
        # a ciphertext copied onto another row does not decrypt there (the row id is bound in)
        other = await conn.fetchval("select vault.create_secret('another-secret-value', 'echo_moved_key')")
        await conn.execute("update vault.secrets set secret = $1, nonce = $2 where id = $3",
                           row["secret"], row["nonce"], other)
        with pytest.raises(asyncpg.PostgresError):
            await conn.fetchval("select decrypted_secret from vault.decrypted_secrets where id = $1", other)
        await conn.execute("delete from vault.secrets where id = $1", other)
    finally:
        await conn.close()
    assert columns == ["id", "name", "description", "secret", "decrypted_secret", "key_id", "nonce",
                       "created_at", "updated_at"]
    assert VALUE not in row["secret"] and VALUE.encode() not in base64.b64decode(row["secret"])
    assert view["decrypted_secret"] == VALUE
    assert view["description"] == "(opsgate version 1)"


async def test_supabase_reader_role_cannot_write_and_the_error_holds_no_value(pgvault: PgVault) -> None:
    writer = SupabaseVault(pgvault.dsn(pgvault.operator))
    reader = SupabaseVault(pgvault.dsn(pgvault.reader))
    try:
        await writer.set("netdata_token", VALUE)
        assert await reader.get("netdata_token") == VALUE
        with pytest.raises(VaultError, match=r"storing 'netdata_token' failed: .*SQLSTATE 42501") as denied:
            await reader.set("netdata_token", VALUE + "-from-reader")
        assert VALUE not in str(denied.value)
        assert await reader.get("netdata_token") == VALUE
    finally:
        await writer.close()
        await reader.close()
    conn = await asyncpg.connect(pgvault.dsn(pgvault.reader))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select secret from vault.secrets")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select * from vault._root_key")
    finally:
        await conn.close()


async def test_supabase_keeps_an_operators_description_and_counts_versions_in_it(pgvault: PgVault) -> None:
    conn = await asyncpg.connect(pgvault.dsn())
    try:
        await conn.execute("delete from vault.secrets")
        # created in the dashboard, as Supabase's docs show it
        await conn.execute("select vault.create_secret('dashboard-made-value', 'sentry_dsn', 'EU project DSN')")
    finally:
        await conn.close()
    v = SupabaseVault(pgvault.dsn(pgvault.operator))
    try:
        assert [(s.name, s.version) for s in await v.list()] == [("sentry_dsn", 1)]
        info = await v.set("sentry_dsn", VALUE)
        assert info.version == 2
        info = await v.set("sentry_dsn", VALUE + "-3")
        assert info.version == 3
        assert await v.get("sentry_dsn") == VALUE + "-3"
    finally:
        await v.close()
    conn = await asyncpg.connect(pgvault.dsn())
    try:
        assert await conn.fetchval("select description from vault.secrets where name = 'sentry_dsn'") == \
            "EU project DSN (opsgate version 3)"
    finally:
        await conn.close()


async def test_supabase_unreachable_is_a_clear_error(pgvault: PgVault) -> None:
    v = SupabaseVault("postgresql://postgres@127.0.0.1:1/postgres", timeout_s=2)
    with pytest.raises(VaultError, match=r"reading 'socket_api_key' failed: database unreachable"):
        await v.get("socket_api_key")
    with pytest.raises(VaultError, match="unreachable") as e:
        await v.set("socket_api_key", VALUE)
    assert VALUE not in str(e.value)
    await v.close()


async def test_supabase_vault_is_usable_from_a_second_event_loop(pgvault: PgVault) -> None:
    """The gateway reads its signing key at start-up in one loop, then serves in another."""
    v = SupabaseVault(pgvault.dsn(pgvault.operator))
    await v.set("echo_token", VALUE)
    assert await asyncio.to_thread(lambda: asyncio.run(v.get("echo_token"))) == VALUE
    assert await v.get("echo_token") == VALUE
    await v.close()
