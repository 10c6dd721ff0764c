-- An imitation of Supabase Vault (supabase_vault 0.3.x) for a plain Postgres in tests: the
-- extension itself is not installable here. Never apply this file to Supabase.
--
-- The public interface is the extension's, name for name and column for column:
--   table vault.secrets (id, name, description, secret, key_id, nonce, created_at, updated_at),
--     `secret` holding the base64 ciphertext, unique `name` where not null;
--   view  vault.decrypted_secrets = the same columns plus decrypted_secret, in the same order;
--   vault.create_secret(new_secret text, new_name text = null, new_description text = '',
--                       new_key_id uuid = null) returns uuid;
--   vault.update_secret(secret_id uuid, new_secret text = null, new_name text = null,
--                       new_description text = null, new_key_id uuid = null) returns void.
-- Both functions are SECURITY DEFINER with EXECUTE revoked from PUBLIC, as on Supabase.
--
-- Only the cryptography differs. Supabase encrypts with libsodium's deterministic AEAD under a
-- root key kept outside the database, the row id as associated data. Here pgcrypto's OpenPGP
-- symmetric encryption (integrity-protected) stands in, with a per-row key derived from a root
-- key in a table nobody else may read, the row id and the row's nonce: a ciphertext copied onto
-- another row does not decrypt there. As on Supabase, whoever may select the view needs
-- EXECUTE on the private decrypt function too (functions in a view run as the caller).

create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;
create schema if not exists vault;
revoke all on schema vault from public;

create table if not exists vault._root_key (
  only_one boolean primary key default true check (only_one),
  key bytea not null default extensions.gen_random_bytes(32)
);
insert into vault._root_key default values on conflict do nothing;
revoke all on vault._root_key from public;

create or replace function vault._crypto_aead_det_noncegen() returns bytea
  language sql volatile
as $$ select extensions.gen_random_bytes(16) $$;

create table if not exists vault.secrets (
  id uuid primary key default gen_random_uuid(),
  name text,
  description text not null default '',
  secret text not null,
  key_id uuid,
  nonce bytea default vault._crypto_aead_det_noncegen(),
  created_at timestamptz not null default current_timestamp,
  updated_at timestamptz not null default current_timestamp
);
comment on table vault.secrets is 'Table with encrypted `secret` column for storing sensitive information on disk.';
create unique index if not exists secrets_name_idx on vault.secrets using btree (name) where name is not null;
revoke all on vault.secrets from public;

create or replace function vault._row_key(additional bytea, nonce bytea) returns text
  language sql stable security definer set search_path = ''
as $$
  select encode(extensions.hmac(additional || nonce, k.key, 'sha256'), 'hex') from vault._root_key k
$$;

create or replace function vault._crypto_aead_det_encrypt(message bytea, additional bytea, nonce bytea) returns bytea
  language sql volatile security definer set search_path = ''
as $$
  select extensions.pgp_sym_encrypt_bytea(message, vault._row_key(additional, nonce), 'cipher-algo=aes256, s2k-mode=1')
$$;

create or replace function vault._crypto_aead_det_decrypt(message bytea, additional bytea, nonce bytea) returns bytea
  language sql stable security definer set search_path = ''
as $$
  select extensions.pgp_sym_decrypt_bytea(message, vault._row_key(additional, nonce))
$$;

create or replace view vault.decrypted_secrets as
select s.id,
  s.name,
  s.description,
  s.secret,
  convert_from(
    vault._crypto_aead_det_decrypt(decode(s.secret, 'base64'), convert_to(s.id::text, 'utf8'), s.nonce),
    'utf8') as decrypted_secret,
  s.key_id,
  s.nonce,
  s.created_at,
  s.updated_at
from vault.secrets s;
revoke all on vault.decrypted_secrets from public;

create or replace function vault.create_secret(
  new_secret text,
  new_name text = null,
  new_description text = '',
  new_key_id uuid = null  -- unused, as on Supabase
) returns uuid
  language plpgsql security definer set search_path = ''
as $$
declare
  rec record;
begin
  insert into vault.secrets (secret, name, description)
  values ('', new_name, coalesce(new_description, ''))
  returning * into rec;
  update vault.secrets s
  set secret = encode(vault._crypto_aead_det_encrypt(convert_to(new_secret, 'utf8'),
                                                     convert_to(s.id::text, 'utf8'), s.nonce), 'base64')
  where s.id = rec.id;
  return rec.id;
end
$$;

create or replace function vault.update_secret(
  secret_id uuid,
  new_secret text = null,
  new_name text = null,
  new_description text = null,
  new_key_id uuid = null  -- unused, as on Supabase
) returns void
  language plpgsql security definer set search_path = ''
as $$
begin
  update vault.secrets s
  set secret = case when new_secret is null then s.secret
                    else encode(vault._crypto_aead_det_encrypt(convert_to(new_secret, 'utf8'),
                                                               convert_to(s.id::text, 'utf8'), s.nonce), 'base64')
               end,
      name = coalesce(new_name, s.name),
      description = coalesce(new_description, s.description),
      updated_at = now()
  where s.id = secret_id;
end
$$;

revoke execute on all functions in schema vault from public;
