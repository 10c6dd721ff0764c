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
FilterValue = str | int | float | bool | None

# The spec requires userId for every user-scoped operation. It must be the caller's own id; the
# gateway names it in the refusal, so a model that left it out learns what to send.
USER_ID_HELP = ("Your own user id: the `sub` claim of the access token you call with (a caller reads and "
                "proposes only for itself).")
MISSING_USER_ID = {"code": "USER_ID_REQUIRED",
                   "message": "userId is required: send \"userId\": \"{caller_id}\", your own user id (the `sub` "
                              "of your access token)"}
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, description=USER_ID_HELP,
                                     extra={"if_missing": MISSING_USER_ID})]
QueryUserId = Annotated[Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None, msgspec.Meta(
    description=USER_ID_HELP + " Required for user-scoped tables (every table but the global pulse_constraints "
    "and pulse_autonomy_levels); without it those answer USER_ID_REQUIRED.")]


class QueryInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """omega_query: rows of an allowlisted table, at most 200, safe columns only."""

    table: Annotated[str, msgspec.Meta(max_length=200, description=(
        "An allowlisted table, e.g. pulse_drafts, pulse_goals, pulse_signals, pulse_sessions, "
        "pulse_predictions, pulse_improvements, pulse_constraints, pulse_autonomy_levels "
        "(omega://schema lists them)."))]
    version: Literal["1.0"] = "1.0"
    user_id: QueryUserId = None
    select: Annotated[str | list[Text] | None, msgspec.Meta(
        description="Columns to return: a list, or a comma-separated string. Omitted or \"*\": the table's "
                    "safe columns. Large blobs (payload, content, reasoning_steps, ...) are never returned.")] = None
    filters: Annotated[dict[Text, FilterValue], msgspec.Meta(
        description="Equality filters, column -> value (null matches IS NULL); safe columns only.")] = {}
    order_by: Annotated[Text | None, msgspec.Meta(description="A safe column to sort by.")] = None
    ascending: Annotated[bool, msgspec.Meta(description="Sort ascending (default: descending).")] = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=200, description="Most rows to return (1-200).")] = 50


class UserInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """omega_get_state, omega_health_report, omega_risk_report."""

    user_id: UserId
    version: Literal["1.0"] = "1.0"


class CalibrationInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    user_id: UserId
    version: Literal["1.0"] = "1.0"
    domain: Annotated[Text | None, msgspec.Meta(
        description="Only predictions of this domain (e.g. drafting, prioritization, timing, risk); "
                    "omitted: all.")] = None
    bins: Annotated[int, msgspec.Meta(ge=2, le=20, description="Reliability bins (2-20).")] = 10


class ReasoningInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    session_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100, description=(
        "The reasoning session's id (the `id` of a pulse_sessions row, e.g. from omega_query)."))]
    user_id: UserId
    version: Literal["1.0"] = "1.0"


class ProposalInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The only write. No status, reviewer or id can be sent: unknown fields are refused."""

    improvement_type: Annotated[str, msgspec.Meta(max_length=200, description=(
        "Kind of change, e.g. threshold_change, prompt_update, constraint_add, config_change."))]
    target_component: Annotated[str, msgspec.Meta(max_length=200, description=(
        "The component it changes, e.g. guardian, drafter, scheduler, signals."))]
    proposed_change: Annotated[dict[str, Any], msgspec.Meta(
        description="The change itself, as settings -> new values, e.g. {\"confidence_threshold\": 0.75}.")]
    user_id: UserId
    version: Literal["1.0"] = "1.0"
    expected_impact: Annotated[str, msgspec.Meta(max_length=2000, description=(
        "What the change should achieve, for the human reviewer."))] = ""


class SimulateInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """omega_simulate_impact: local computation only, no database, no userId."""

    change_type: Annotated[str, msgspec.Meta(max_length=200, description=(
        "Kind of change: threshold_change, prompt_update, constraint_add, constraint_remove, "
        "autonomy_change, model_change or config_change (others are weighed as medium)."))]
    target_component: Annotated[str, msgspec.Meta(max_length=200, description=(
        "The component it changes, e.g. guardian, autonomy, constraints, executor, drafter."))]
    proposed_change: Annotated[dict[str, Any], msgspec.Meta(
        description="Settings -> proposed values, e.g. {\"confidence_threshold\": 0.75}.")]
    version: Literal["1.0"] = "1.0"
    current_values: Annotated[dict[str, Any], msgspec.Meta(
        description="Settings -> current values, to size numeric changes against.")] = {}


__all__ = ["TABLES", "USER_ID_HELP", "CalibrationInput", "ProposalInput", "QueryInput", "ReasoningInput",
           "SimulateInput", "UserInput", "user_scoped"]
