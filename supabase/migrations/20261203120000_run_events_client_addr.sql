-- ops.run_events.client_addr: the address of the client a row's request came from (issue 12).
--
-- The socket peer, or, behind the proxies the gateway is configured to trust, the client they
-- forwarded (never a header from anyone else). NULL for rows not made by an HTTP request (stdio,
-- the CLI, lifecycle rows written in the background) and for rows written before this column.
-- `inet`, so on-call queries can ask by network: `where client_addr << '203.0.113.0/24'`.
--
-- Re-runnable. Existing grants and row-level security policies cover the new column (table-level
-- INSERT and SELECT for opsgate_gateway; SELECT for authenticated through the RLS policies).

alter table ops.run_events add column if not exists client_addr inet;

comment on column ops.run_events.client_addr is
  'Client address of the request (socket peer, or the client named by a trusted proxy); NULL when none.';

create index if not exists run_events_client_addr_idx on ops.run_events (client_addr, created_at)
  where client_addr is not null;
