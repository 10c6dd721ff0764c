"""The omega database as the provider knows it (tables, columns, column types) and the tools'
input Structs.

The column list is the database's shape, not policy: which of these columns a caller may read
or filter on, which tables are allowlisted and which need a userId is decided by the Cedar
policy (policies/omega.cedar). The provider uses this model only to refuse identifiers that do
not exist before any SQL is built, and to type values coming back.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# Column type -> how values are normalised on the way out: uuid, text, float, int, bool, ts, date, json.
TABLES: dict[str, dict[str, str]] = {
    "pulse_drafts": {"id": "uuid", "user_id": "uuid", "status": "text", "channel": "text", "title": "text",
                     "confidence": "float", "created_at": "ts", "updated_at": "ts", "content": "text",
                     "payload": "json"},
    "pulse_goals": {"id": "uuid", "user_id": "uuid", "title": "text", "status": "text", "priority": "int",
                    "progress": "float", "target_date": "date", "created_at": "ts", "updated_at": "ts",
                    "context_snapshot": "json"},
    "pulse_signals": {"id": "uuid", "user_id": "uuid", "source": "text", "kind": "text", "severity": "text",
                      "status": "text", "strength": "float", "created_at": "ts", "payload": "json"},
    "pulse_sessions": {"id": "uuid", "user_id": "uuid", "goal_id": "uuid", "status": "text", "trigger": "text",
                       "step_count": "int", "outcome": "text", "started_at": "ts", "ended_at": "ts",
                       "created_at": "ts", "reasoning_steps": "json", "context_snapshot": "json"},
    "pulse_predictions": {"id": "uuid", "user_id": "uuid", "session_id": "uuid", "domain": "text",
                          "predicted_confidence": "float", "actual_outcome": "bool", "created_at": "ts",
                          "resolved_at": "ts", "context_snapshot": "json"},
    "pulse_improvements": {"id": "uuid", "user_id": "uuid", "improvement_type": "text",
                           "target_component": "text", "status": "text", "expected_impact": "text",
                           "created_at": "ts", "proposed_change": "json", "guardian_review": "json"},
    "pulse_constraints": {"id": "uuid", "name": "text", "kind": "text", "severity": "text", "description": "text",
                          "enforced": "bool", "created_at": "ts", "rule": "json"},
    "pulse_autonomy_levels": {"id": "uuid", "level": "int", "name": "text", "description": "text",
                              "min_confidence": "float", "max_calibration_error": "float", "created_at": "ts",
                              "requirements": "json"},
}


def user_scoped(table: str) -> bool:
    """Tables with a user_id column are the ones row-level security scopes to their owner."""
    return "user_id" in TABLES.get(table, {})


Text = Annotated[str, msgspec.Meta(max_length=200)]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
FilterValue = str | int | float | bool | None


class QueryInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """omega_query: rows of an allowlisted table, at most 200, safe columns only."""

    table: Text
    version: Literal["1.0"] = "1.0"
    user_id: UserId | None = None
    # Omitted or "*": the table's safe columns. A list, or a comma-separated string, names them.
    select: str | list[Text] | None = None
    filters: dict[Text, FilterValue] = {}  # column -> value, equality (null: IS NULL)
    order_by: Text | None = None
    ascending: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50


class UserInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """omega_get_state, omega_health_report, omega_risk_report."""

    version: Literal["1.0"] = "1.0"
    user_id: UserId | None = None


class CalibrationInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    version: Literal["1.0"] = "1.0"
    user_id: UserId | None = None
    domain: Text | None = None
    bins: Annotated[int, msgspec.Meta(ge=2, le=20)] = 10


class ReasoningInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    session_id: UserId
    version: Literal["1.0"] = "1.0"
    user_id: UserId | None = None


class ProposalInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The only write. No status, reviewer or id can be sent: unknown fields are refused."""

    improvement_type: Text
    target_component: Text
    proposed_change: dict[str, Any]
    version: Literal["1.0"] = "1.0"
    user_id: UserId | None = None
    expected_impact: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class SimulateInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """omega_simulate_impact: local computation only, no database, no userId."""

    change_type: Text
    target_component: Text
    proposed_change: dict[str, Any]
    version: Literal["1.0"] = "1.0"
    current_values: dict[str, Any] = {}


__all__ = ["TABLES", "CalibrationInput", "ProposalInput", "QueryInput", "ReasoningInput", "SimulateInput",
           "UserInput", "user_scoped"]
