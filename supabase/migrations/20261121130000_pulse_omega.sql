-- Pulse Omega: the tables the observer provider reads (issue 7), and the one it writes.
--
-- Every table has small "safe" columns and at least one large blob (payload, content,
-- reasoning_steps, context_snapshot, rule, requirements, proposed_change, guardian_review):
-- which columns the omega provider may read or filter on is Cedar policy (policies/omega.cedar,
-- Table entities in policies/entities.json), not this file.
--
-- Who may do what (the provider connects as a login role that is only a member of anon and
-- authenticated, like PostgREST's authenticator, and switches per request with SET LOCAL ROLE;
-- it has no service role and no BYPASSRLS):
--   authenticated  SELECT its own rows of every user-scoped table (user_id = auth.uid());
--                  SELECT the global tables; INSERT into pulse_improvements only a row of its
--                  own with status 'proposed' and the MCP guardian_review (the only write path).
--   anon           SELECT the global tables (pulse_constraints, pulse_autonomy_levels) only.
--   nobody here    UPDATE, DELETE: no grant, no policy.
--
-- Re-runnable: every statement is "if not exists" / "or replace" / drop-then-create.

create table if not exists public.pulse_drafts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  status text not null,
  channel text not null,
  title text not null,
  confidence double precision,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  content text,
  payload jsonb
);

create table if not exists public.pulse_goals (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  title text not null,
  status text not null,
  priority int not null default 3,
  progress double precision not null default 0,
  target_date date,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  context_snapshot jsonb
);

create table if not exists public.pulse_signals (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  source text not null,
  kind text not null,
  severity text not null,
  status text not null,
  strength double precision,
  created_at timestamptz not null default now(),
  payload jsonb
);

-- A reasoning session and its full trace (reasoning_steps: a JSON array of steps).
create table if not exists public.pulse_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  goal_id uuid,
  status text not null,
  trigger text not null,
  step_count int not null default 0,
  outcome text,
  started_at timestamptz not null default now(),
  ended_at timestamptz,
  created_at timestamptz not null default now(),
  reasoning_steps jsonb,
  context_snapshot jsonb
);

-- Calibration: what Omega predicted, how confident it was, and what actually happened
-- (actual_outcome null while unresolved).
create table if not exists public.pulse_predictions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  session_id uuid,
  domain text not null,
  predicted_confidence double precision not null check (predicted_confidence between 0 and 1),
  actual_outcome boolean,
  created_at timestamptz not null default now(),
  resolved_at timestamptz,
  context_snapshot jsonb
);

create table if not exists public.pulse_improvements (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  improvement_type text not null,
  target_component text not null,
  status text not null default 'proposed',
  expected_impact text,
  created_at timestamptz not null default now(),
  proposed_change jsonb,
  guardian_review jsonb
);

-- Global tables: the same for every user.
create table if not exists public.pulse_constraints (
  id uuid primary key default gen_random_uuid(),
  name text not null unique,
  kind text not null,
  severity text not null,
  description text not null,
  enforced boolean not null default true,
  created_at timestamptz not null default now(),
  rule jsonb
);

create table if not exists public.pulse_autonomy_levels (
  id uuid primary key default gen_random_uuid(),
  level int not null unique,
  name text not null,
  description text not null,
  min_confidence double precision not null,
  max_calibration_error double precision not null,
  created_at timestamptz not null default now(),
  requirements jsonb
);

create index if not exists pulse_drafts_user_idx on public.pulse_drafts (user_id, created_at);
create index if not exists pulse_goals_user_idx on public.pulse_goals (user_id, created_at);
create index if not exists pulse_signals_user_idx on public.pulse_signals (user_id, created_at);
create index if not exists pulse_sessions_user_idx on public.pulse_sessions (user_id, created_at);
create index if not exists pulse_predictions_user_idx on public.pulse_predictions (user_id, created_at);
create index if not exists pulse_improvements_user_idx on public.pulse_improvements (user_id, created_at);

-- Grants: nothing by default, then exactly the above.
revoke all on public.pulse_drafts, public.pulse_goals, public.pulse_signals, public.pulse_sessions,
  public.pulse_predictions, public.pulse_improvements, public.pulse_constraints, public.pulse_autonomy_levels
  from public, anon, authenticated;
grant usage on schema public to anon, authenticated;
grant select on public.pulse_drafts, public.pulse_goals, public.pulse_signals, public.pulse_sessions,
  public.pulse_predictions, public.pulse_improvements to authenticated;
grant select on public.pulse_constraints, public.pulse_autonomy_levels to anon, authenticated;
-- Column-level: a proposal cannot even name id or created_at.
grant insert (user_id, improvement_type, target_component, status, expected_impact, proposed_change,
  guardian_review) on public.pulse_improvements to authenticated;

-- Row-level security on every table; policies are permissive (OR-ed), a role with none sees nothing.
do $$
declare
  t text;
begin
  foreach t in array array['pulse_drafts', 'pulse_goals', 'pulse_signals', 'pulse_sessions',
                           'pulse_predictions', 'pulse_improvements'] loop
    execute format('alter table public.%I enable row level security', t);
    execute format('drop policy if exists %I on public.%I', t || '_select_own', t);
    -- `(select auth.uid())` is evaluated once per query, not per row.
    execute format('create policy %I on public.%I for select to authenticated using (user_id = (select auth.uid()))',
                   t || '_select_own', t);
  end loop;
  foreach t in array array['pulse_constraints', 'pulse_autonomy_levels'] loop
    execute format('alter table public.%I enable row level security', t);
    execute format('drop policy if exists %I on public.%I', t || '_select_all', t);
    execute format('create policy %I on public.%I for select to anon, authenticated using (true)',
                   t || '_select_all', t);
  end loop;
end;
$$;

-- The only write path (Pulse Omega spec): a proposal of one's own, status 'proposed', marked as
-- coming from an external LLM over MCP and needing a human. Never auto-applied.
drop policy if exists pulse_improvements_insert_proposal on public.pulse_improvements;
create policy pulse_improvements_insert_proposal on public.pulse_improvements
  for insert to authenticated with check (
    user_id = (select auth.uid())
    and status = 'proposed'
    and guardian_review = '{"proposed_by": "mcp_external_llm", "source": "mcp", "requires_human_approval": true}'::jsonb
  );
