-- The embedded (SQLite) twin of supabase/migrations/*_pulse_omega.sql: same tables, same
-- columns, so the same seed file and the same queries work on both. SQLite has no roles or
-- RLS: the provider's SQLite backend scopes user tables to the caller itself (providers/omega/db.py).
create table if not exists pulse_drafts (
  id text primary key, user_id text not null, status text not null, channel text not null, title text not null,
  confidence real, created_at text not null, updated_at text not null, content text, payload text);
create table if not exists pulse_goals (
  id text primary key, user_id text not null, title text not null, status text not null,
  priority integer not null default 3, progress real not null default 0, target_date text,
  created_at text not null, updated_at text not null, context_snapshot text);
create table if not exists pulse_signals (
  id text primary key, user_id text not null, source text not null, kind text not null, severity text not null,
  status text not null, strength real, created_at text not null, payload text);
create table if not exists pulse_sessions (
  id text primary key, user_id text not null, goal_id text, status text not null, trigger text not null,
  step_count integer not null default 0, outcome text, started_at text not null, ended_at text,
  created_at text not null, reasoning_steps text, context_snapshot text);
create table if not exists pulse_predictions (
  id text primary key, user_id text not null, session_id text, domain text not null,
  predicted_confidence real not null check (predicted_confidence between 0 and 1), actual_outcome integer,
  created_at text not null, resolved_at text, context_snapshot text);
create table if not exists pulse_improvements (
  id text primary key, user_id text not null, improvement_type text not null, target_component text not null,
  status text not null default 'proposed', expected_impact text, created_at text not null,
  proposed_change text, guardian_review text);
create table if not exists pulse_constraints (
  id text primary key, name text not null unique, kind text not null, severity text not null,
  description text not null, enforced integer not null default 1, created_at text not null, rule text);
create table if not exists pulse_autonomy_levels (
  id text primary key, level integer not null unique, name text not null, description text not null,
  min_confidence real not null, max_calibration_error real not null, created_at text not null, requirements text);
-- Proposals are never changed or removed through this database (on Postgres: no grant, no policy).
create trigger if not exists pulse_improvements_no_update before update on pulse_improvements
  begin select raise(abort, 'pulse_improvements rows are never changed by omega'); end;
create trigger if not exists pulse_improvements_no_delete before delete on pulse_improvements
  begin select raise(abort, 'pulse_improvements rows are never removed by omega'); end;
