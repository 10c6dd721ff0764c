"""Asking the gateway's policy about omega's tables (the `query` and `propose` actions).

The provider holds no allowlist, safe-column list or userId rule: it asks, and turns a refusal
into the spec's code by what the refusing policies' ids say (policies/omega.cedar):
"table-not-allowed" -> TABLE_NOT_ALLOWED, "user-id-required" -> USER_ID_REQUIRED,
"column-not-allowed" -> COLUMN_NOT_ALLOWED, in that precedence; anything else is FORBIDDEN.
So the security team can add, say, a forbid `omega.column-not-allowed.pii` without touching Python.
"""

from __future__ import annotations

from typing import Any

from providers.sdk import CallContext, Refused, Runtime, Verdict

CODES = (("table-not-allowed", "TABLE_NOT_ALLOWED"), ("user-id-required", "USER_ID_REQUIRED"),
         ("column-not-allowed", "COLUMN_NOT_ALLOWED"))
# Each says what to do instead: the model reading it can correct its call.
MESSAGES = {
    "TABLE_NOT_ALLOWED": "table {table!r} is not in the allowlist (omega://schema lists the tables)",
    "USER_ID_REQUIRED": "userId is required for {table}: send \"userId\": \"{caller_id}\", your own user id (the "
                        "`sub` of your access token)",
    "COLUMN_NOT_ALLOWED": "a requested, filtered or sorted column of {table} is not in its safeColumns (omit "
                          "`select` to get exactly the safe ones)",
    "FORBIDDEN": "{what} on {table} is not allowed for this caller",
}


def code_for(verdict: Verdict) -> str:
    for marker, code in CODES:
        if any(marker in r for r in verdict.reasons):
            return code
    return "FORBIDDEN"


class Access:
    """The policy questions one omega call asks, on behalf of `call`'s caller."""

    def __init__(self, runtime: Runtime, provider: str, call: CallContext) -> None:
        self.runtime = runtime
        self.provider = provider
        self.call = call

    def _owner(self, user_id: str | None) -> dict[str, Any]:
        return {"owner": {"__entity": {"type": "Ops::User", "id": user_id}}} if user_id is not None else {}

    def ask_query(self, table: str, columns: list[str], filters: list[str], user_id: str | None) -> Verdict:
        context = {"tool": self.call.tool, "columns": sorted(set(columns)), "filters": sorted(set(filters)),
                   **self._owner(user_id)}
        return self.runtime.authorize(self.provider, "query", ("Table", table), context, self.call)

    def require_query(self, table: str, columns: list[str], filters: list[str], user_id: str | None) -> None:
        self._require(self.ask_query(table, columns, filters, user_id), table, "reading")

    def require_propose(self, table: str, user_id: str | None) -> None:
        context = {"tool": self.call.tool, **self._owner(user_id)}
        self._require(self.runtime.authorize(self.provider, "propose", ("Table", table), context, self.call),
                      table, "proposing")

    def readable_columns(self, table: str, candidates: list[str], user_id: str | None) -> list[str]:
        """The default select: each candidate column asked on its own, so the policy alone says
        which are safe (the safe-column list itself is never read by the provider)."""
        return [c for c in candidates if self.ask_query(table, [c], [], user_id).allowed]

    def _require(self, v: Verdict, table: str, what: str) -> None:
        if v.allowed:
            return
        code = code_for(v)
        raise Refused(code, MESSAGES[code].format(table=table, what=what, caller_id=self.call.caller_id),
                      refused_by=v.decision_id, policy_ids=list(v.reasons))


__all__ = ["Access", "code_for"]
