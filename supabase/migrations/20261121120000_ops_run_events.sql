-- ops.run_events: one row per provider operation (constitution rule 3, issue 4).
--
-- Columns: exactly the seed's eight (id .. created_at, unchanged), then the decision record
-- (decision, policy_ids, bundle_revision, exception_ids, trace_id, span_id).
-- Payload and result arrive already redacted and size-capped by the gateway.
--
-- Who may do what:
--   opsgate_gateway  INSERT and SELECT only (no UPDATE/DELETE/TRUNCATE privilege). NOLOGIN: the
--                    gateway connects as a LOGIN role that is a member of it, e.g.
--                      create role opsgate_gw login password '...' in role opsgate_gateway;
--                    RLS: sees every row through its own permissive policy, scoped to this table.
--                    We deliberately do not use BYPASSRLS, a cluster-wide attribute over every
--                    table that only a superuser can grant.
--   authenticated    SELECT its own rows (caller_id = auth.uid()); a JWT whose
--                    app_metadata.ops_role is 'ops_admin' SELECTs every row. No writes.
--   anon             nothing: no USAGE on schema ops, no grant, no policy.
--   everyone         UPDATE, DELETE and TRUNCATE raise in a statement trigger, even for the owner;
--                    only a superuser who disables the trigger can rewrite history. Deleting an
--                    auth.users row that has events fails (FK, NO ACTION; the trigger also forbids
--                    the UPDATE that ON DELETE SET NULL would need): soft-delete users instead.
--
-- Re-runnable: every statement is "if not exists" / "or replace" / drop-then-create.

create schema if not exists ops;

create table if not exists ops.run_events (
  id uuid primary key,
  provider text not null,
  tool text not null,
  caller_id uuid references auth.users,
  payload jsonb,
  result jsonb,
  duration_ms int,
  created_at timestamptz default now(),
  decision text not null,
  policy_ids text[] not null default '{}',
  bundle_revision text,
  exception_ids text[] not null default '{}',
  trace_id text check (trace_id ~ '^[0-9a-f]{32}$'),
  span_id text check (span_id ~ '^[0-9a-f]{16}$')
);

comment on table ops.run_events is
  'Append-only audit trail: one row per MCP tool call through opsgate (constitution rule 3).';

-- Audit queries: time range and keyset paging; per caller; per provider/tool; denials and
-- errors (partial: most rows are allows); one trace.
create index if not exists run_events_created_at_idx on ops.run_events (created_at, id);
create index if not exists run_events_caller_idx on ops.run_events (caller_id, created_at);
create index if not exists run_events_provider_tool_idx on ops.run_events (provider, tool, created_at);
create index if not exists run_events_denials_idx on ops.run_events (decision, created_at)
  where decision <> 'allow';
create index if not exists run_events_trace_idx on ops.run_events (trace_id) where trace_id is not null;

-- Append-only. Statement-level, so it fires even when no row matches (a DELETE with a
-- false WHERE still fails) and on INSERT .. ON CONFLICT DO UPDATE.
create or replace function ops.run_events_append_only() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  raise exception 'ops.run_events is append-only: % is not allowed', tg_op
    using errcode = 'insufficient_privilege',
          hint = 'audit events are never changed or removed';
end;
$$;

drop trigger if exists run_events_append_only on ops.run_events;
create trigger run_events_append_only
  before update or delete on ops.run_events
  for each statement execute function ops.run_events_append_only();

drop trigger if exists run_events_no_truncate on ops.run_events;
create trigger run_events_no_truncate
  before truncate on ops.run_events
  for each statement execute function ops.run_events_append_only();

-- The gateway's role. Roles are cluster-wide: create it once, tolerate a concurrent creator.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'opsgate_gateway') then
    create role opsgate_gateway nologin;
  end if;
exception when duplicate_object or unique_violation then
  null;
end;
$$;

revoke all on ops.run_events from public, anon, authenticated, opsgate_gateway;
grant usage on schema ops to opsgate_gateway, authenticated;
grant insert, select on ops.run_events to opsgate_gateway;
grant select on ops.run_events to authenticated;

-- Row-level security. Policies are permissive (OR-ed); a role with no policy sees no rows.
alter table ops.run_events enable row level security;

drop policy if exists run_events_gateway_insert on ops.run_events;
create policy run_events_gateway_insert on ops.run_events
  for insert to opsgate_gateway with check (true);

-- The gateway reads everything: the outbox's idempotency check and `opsgate events` CLI.
drop policy if exists run_events_gateway_select on ops.run_events;
create policy run_events_gateway_select on ops.run_events
  for select to opsgate_gateway using (true);

-- A signed-in user sees their own calls. `(select auth.uid())` is evaluated once per query.
drop policy if exists run_events_select_own on ops.run_events;
create policy run_events_select_own on ops.run_events
  for select to authenticated using (caller_id = (select auth.uid()));

-- ops_admin sees everyone's. The claim comes from the verified JWT PostgREST puts in
-- request.jwt.claims (app_metadata is server-set; user_metadata is user-editable and never
-- used). nullif: the setting reads '' after a transaction that set it locally has ended.
-- A demotion takes effect when the user's token is refreshed.
drop policy if exists run_events_select_ops_admin on ops.run_events;
create policy run_events_select_ops_admin on ops.run_events
  for select to authenticated using (
    (select nullif(current_setting('request.jwt.claims', true), '')::jsonb -> 'app_metadata' ->> 'ops_role')
      = 'ops_admin'
  );
