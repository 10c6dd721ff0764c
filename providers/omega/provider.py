"""The Pulse Omega observer provider: read-only observability of Omega Prime's tables, one
write path (proposals), and a local impact simulator. "MCP observes. MCP proposes. Guardian +
human decide."

Every database read asks the policy first (`query` on the Table, providers/omega/access.py) and
then runs as the caller under row-level security (providers/omega/db.py). Every answer is the
spec's envelope (`_canon` + result); every error carries it too (`error_data`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from providers.omega import analysis
from providers.omega.access import Access
from providers.omega.config import OmegaConfig
from providers.omega.db import Database, PostgresDatabase, QueryError, SqliteDatabase, Viewer, Where
from providers.omega.envelope import error, ok
from providers.omega.model import (
    TABLES,
    CalibrationInput,
    ProposalInput,
    QueryInput,
    ReasoningInput,
    SimulateInput,
    UserInput,
    user_scoped,
)
from providers.sdk import CallContext, ProviderBase, Refused, Resource, Tool

log = logging.getLogger("opsgate.omega")

# The columns each purpose-built tool reads (all within the tables' safe columns as shipped).
DRAFT = ["id", "status", "channel", "title", "confidence", "created_at"]
GOAL = ["id", "title", "status", "priority", "progress", "target_date", "updated_at"]
SIGNAL = ["id", "source", "kind", "severity", "status", "strength", "created_at"]
SESSION = ["id", "goal_id", "status", "trigger", "step_count", "outcome", "started_at", "ended_at"]
PREDICTION = ["id", "session_id", "domain", "predicted_confidence", "actual_outcome", "created_at"]
IMPROVEMENT = ["id", "improvement_type", "target_component", "status", "created_at"]
CONSTRAINT = ["id", "name", "kind", "severity", "description", "enforced"]
LEVEL = ["id", "level", "name", "description", "min_confidence", "max_calibration_error"]
MAX_ROWS = 200
GUARDIAN_REVIEW = {"proposed_by": "mcp_external_llm", "source": "mcp", "requires_human_approval": True}


class OmegaProvider(ProviderBase):
    name = "omega"

    def __init__(self, config: OmegaConfig | None = None, *, state_dir: str | Path = ".opsgate",
                 database: Database | None = None) -> None:
        self.config = config or OmegaConfig()
        if database is not None:
            self.db = database
        elif self.config.backend == "postgres":
            self.db = PostgresDatabase(self.config.database_url)
        else:
            path = Path(self.config.sqlite_path)
            self.db = SqliteDatabase(path if path.is_absolute() else Path(state_dir) / path,
                                     seed=self.config.seed_demo)
        if self.config.viewer == "anon":
            log.warning("omega: no viewer identity (viewer = anon): every query runs as the anon role, so "
                        "row-level security hides all user-scoped rows and queries may return empty results")

    # -- declarations ---------------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        return [
            Tool("query", "read", QueryInput, "omega_query: rows of an allowlisted table (at most 200, safe "
                 "columns only; userId required for user-scoped tables).", self._query),
            Tool("get_state", "read", UserInput, "omega_get_state: current drafts, goals and signals of a user.",
                 self._get_state),
            Tool("health_report", "read", UserInput, "omega_health_report: system health summary for a user.",
                 self._health_report),
            Tool("risk_report", "read", UserInput, "omega_risk_report: risk analysis and recommendations.",
                 self._risk_report),
            Tool("analyze_calibration", "read", CalibrationInput, "omega_analyze_calibration: predicted "
                 "confidence against actual outcomes (reliability bins, ECE, Brier).", self._calibration),
            Tool("get_reasoning_chain", "read", ReasoningInput, "omega_get_reasoning_chain: the full reasoning "
                 "trace of one session.", self._reasoning_chain),
            Tool("propose_improvement", "annotate", ProposalInput, "omega_propose_improvement: submit an "
                 "improvement for human review (status proposed, never auto-applied).", self._propose),
            Tool("simulate_impact", "read", SimulateInput, "omega_simulate_impact: estimate a change's impact "
                 "(local computation only, no database).", self._simulate),
        ]

    def resources(self) -> list[Resource]:
        return [
            Resource("omega://schema", "schema", "Database schema (static snapshot).", "application/json",
                     self._schema_resource),
            Resource("omega://constraints", "constraints", "Guardian constraints (global).", "application/json",
                     self._constraints_resource),
            Resource("omega://autonomy-levels", "autonomy-levels", "Autonomy level definitions (global).",
                     "application/json", self._levels_resource),
        ]

    def error_data(self, code: str, message: str) -> dict[str, Any]:
        return error(code, message)

    async def probe(self) -> None:
        try:
            await self.db.ping()
        except QueryError as e:
            raise RuntimeError(f"omega database unreachable: {e}") from None

    # -- plumbing -------------------------------------------------------------------------------

    def _viewer(self, call: CallContext) -> Viewer:
        """PostgREST's role and claims for this caller, built from the identity the gateway verified."""
        if self.config.viewer == "anon" or not _is_uuid(call.caller_id):
            return Viewer("anon", {"role": "anon"})
        return Viewer("authenticated", {"sub": call.caller_id, "role": "authenticated", "aud": "authenticated",
                                        "app_metadata": {"ops_role": call.role} if call.role else {}})

    async def _read(self, call: CallContext, table: str, columns: list[str], user_id: str | None, *,
                    where: Where | None = None, order_by: str | None = "created_at", ascending: bool = False,
                    limit: int = MAX_ROWS, extra_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Ask the policy, then read as the caller. `extra_columns` are asked separately (a blob a
        purpose-built tool is allowed to show)."""
        access = Access(self.runtime, self.name, call)
        where = where or []
        filters = [c for c, _ in where] + ([order_by] if order_by else [])
        access.require_query(table, columns, filters, user_id)
        if extra_columns:
            access.require_query(table, list(extra_columns), filters, user_id)
        return await self._fetch(call, table, [*columns, *extra_columns], user_id, where, order_by, ascending,
                                 limit)

    async def _fetch(self, call: CallContext, table: str, columns: list[str], user_id: str | None, where: Where,
                     order_by: str | None, ascending: bool, limit: int) -> list[dict[str, Any]]:
        if user_scoped(table) and user_id is not None:
            where = [*where, ("user_id", user_id)]
        try:
            return await self.db.fetch(self._viewer(call), table, columns, where, order_by, ascending,
                                       min(limit, MAX_ROWS))
        except QueryError as e:
            log.warning("omega query on %s failed: %s", table, e)
            raise Refused("QUERY_FAILED", f"the database query on {table} failed") from None

    # -- tools ----------------------------------------------------------------------------------

    async def _query(self, call: CallContext, args: QueryInput) -> dict[str, Any]:
        access = Access(self.runtime, self.name, call)
        table = args.table
        select = _select(args.select)
        columns = (access.readable_columns(table, list(TABLES.get(table, {})), args.user_id)
                   if select is None else select)
        filters = [*args.filters, *([args.order_by] if args.order_by else [])]
        access.require_query(table, columns, filters, args.user_id)
        if not columns:
            raise Refused("COLUMN_NOT_ALLOWED", f"no column of {table} may be read")
        if table not in TABLES or any(c not in TABLES[table] for c in (*columns, *filters)):
            # The policy allowed a name the database does not have: a policy/database mismatch.
            raise Refused("QUERY_FAILED", f"{table} does not have every column asked for")
        rows = await self._fetch(call, table, columns, args.user_id, list(args.filters.items()), args.order_by,
                                 args.ascending, args.limit)
        return ok({"table": table, "columns": columns, "rows": rows, "count": len(rows), "limit": args.limit})

    async def _get_state(self, call: CallContext, args: UserInput) -> dict[str, Any]:
        u = args.user_id
        drafts = await self._read(call, "pulse_drafts", DRAFT, u)
        goals = await self._read(call, "pulse_goals", GOAL, u)
        signals = await self._read(call, "pulse_signals", SIGNAL, u)
        return ok({"user_id": u, **analysis.state(drafts, goals, signals)})

    async def _health_report(self, call: CallContext, args: UserInput) -> dict[str, Any]:
        u = args.user_id
        rows = [await self._read(call, t, cols, u) for t, cols in (
            ("pulse_drafts", DRAFT), ("pulse_goals", GOAL), ("pulse_signals", SIGNAL), ("pulse_sessions", SESSION),
            ("pulse_predictions", PREDICTION), ("pulse_improvements", IMPROVEMENT))]
        return ok({"user_id": u, **analysis.health(*rows)})

    async def _risk_report(self, call: CallContext, args: UserInput) -> dict[str, Any]:
        u = args.user_id
        signals = await self._read(call, "pulse_signals", SIGNAL, u)
        goals = await self._read(call, "pulse_goals", GOAL, u)
        sessions = await self._read(call, "pulse_sessions", SESSION, u)
        drafts = await self._read(call, "pulse_drafts", DRAFT, u)
        preds = await self._read(call, "pulse_predictions", PREDICTION, u)
        constraints = await self._read(call, "pulse_constraints", CONSTRAINT, u, order_by="name", ascending=True)
        return ok({"user_id": u, **analysis.risks(signals, goals, sessions, drafts, preds, constraints)})

    async def _calibration(self, call: CallContext, args: CalibrationInput) -> dict[str, Any]:
        u = args.user_id
        where: Where = [("domain", args.domain)] if args.domain is not None else []
        preds = await self._read(call, "pulse_predictions", PREDICTION, u, where=where)
        levels = await self._read(call, "pulse_autonomy_levels", LEVEL, u, order_by="level", ascending=True)
        cal = analysis.calibration(preds, args.bins)
        domains = sorted({p["domain"] for p in preds})
        per_domain = {d: {k: v for k, v in analysis.calibration([p for p in preds if p["domain"] == d], args.bins)
                          .items() if k != "bins"} for d in domains}
        resolved = [p["predicted_confidence"] for p in preds if p["actual_outcome"] is not None]
        mean = sum(resolved) / len(resolved) if resolved else None
        return ok({"user_id": u, "domain": args.domain, **cal, "by_domain": per_domain,
                   "autonomy": analysis.autonomy_fit(cal, levels, mean)})

    async def _reasoning_chain(self, call: CallContext, args: ReasoningInput) -> dict[str, Any]:
        u = args.user_id
        rows = await self._read(call, "pulse_sessions", SESSION, u, where=[("id", args.session_id)],
                                order_by=None, limit=1, extra_columns=["reasoning_steps"])
        if not rows:
            raise Refused("INVALID_INPUT", "sessionId does not name a session of this user")
        session = rows[0]
        steps = session.pop("reasoning_steps") or []
        preds = await self._read(call, "pulse_predictions", PREDICTION, u, where=[("session_id", args.session_id)])
        return ok({"user_id": u, "session": session, "steps": steps, "step_count": len(steps),
                   "predictions": preds})

    async def _propose(self, call: CallContext, args: ProposalInput) -> dict[str, Any]:
        Access(self.runtime, self.name, call).require_propose("pulse_improvements", args.user_id)
        row = {"user_id": args.user_id, "improvement_type": args.improvement_type,
               "target_component": args.target_component, "status": "proposed",
               "expected_impact": args.expected_impact, "proposed_change": args.proposed_change,
               "guardian_review": dict(GUARDIAN_REVIEW)}
        try:
            stored = await self.db.insert_proposal(self._viewer(call), row)
        except QueryError as e:
            log.warning("omega proposal insert failed: %s", e)
            raise Refused("QUERY_FAILED", "the proposal could not be stored") from None
        return ok({"proposal": stored, "note": "queued for Guardian and human review; never auto-applied"})

    async def _simulate(self, call: CallContext, args: SimulateInput) -> dict[str, Any]:
        return ok(analysis.simulate(args.change_type, args.target_component, args.proposed_change,
                                    args.current_values))

    # -- resources ------------------------------------------------------------------------------

    async def _schema_resource(self, call: CallContext) -> str:
        tables = {t: {"scope": "user" if user_scoped(t) else "global", "columns": cols} for t, cols in TABLES.items()}
        return json.dumps(ok({"tables": tables, "note": "which columns are readable (safeColumns) is policy: "
                                                         "see omega_query's COLUMN_NOT_ALLOWED"}))

    async def _constraints_resource(self, call: CallContext) -> str:
        rows = await self._read(call, "pulse_constraints", CONSTRAINT, None, order_by="name", ascending=True)
        return json.dumps(ok({"constraints": rows}))

    async def _levels_resource(self, call: CallContext) -> str:
        rows = await self._read(call, "pulse_autonomy_levels", LEVEL, None, order_by="level", ascending=True)
        return json.dumps(ok({"autonomy_levels": rows}))


def _select(select: str | list[str] | None) -> list[str] | None:
    if select is None or select == "*" or select == ["*"]:
        return None
    cols = [c.strip() for c in select.split(",")] if isinstance(select, str) else list(select)
    if not cols or any(not c for c in cols):
        raise Refused("INVALID_INPUT", "select must be \"*\", a list of columns or a comma-separated string")
    return cols


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


__all__ = ["OmegaProvider"]
