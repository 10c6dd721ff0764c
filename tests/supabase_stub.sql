-- The slice of Supabase that supabase/migrations/ relies on, for a plain Postgres in tests.
-- Production Supabase already has all of this; never apply this file there.
--   auth.users (the columns we read), auth.uid() exactly as Supabase defines it,
--   roles anon and authenticated (NOLOGIN; PostgREST switches to them with SET LOCAL ROLE).

create schema if not exists auth;

create table if not exists auth.users (
  id uuid primary key,
  raw_app_meta_data jsonb,
  banned_until timestamptz,
  deleted_at timestamptz
);

create or replace function auth.uid() returns uuid
  language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

-- Roles are cluster-wide and other test modules create the same ones concurrently.
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated'] loop
    begin
      if not exists (select from pg_catalog.pg_roles where rolname = r) then
        execute format('create role %I nologin', r);
      end if;
    exception when duplicate_object or unique_violation then
      null;
    end;
  end loop;
end;
$$;

grant usage on schema auth to anon, authenticated;
