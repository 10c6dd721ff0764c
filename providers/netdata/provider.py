"""The Netdata provider: spaces, rooms, nodes, alerts and their history, metric queries and
alert silencing on Netdata Cloud, with a local Netdata Agent as a second, configurable target.

Secrets (vault only, rule 4): `netdata_token` (a Cloud API token) and, when the Agent is
bearer-protected, `netdata_agent_token`. Hosts (rule 5): Cloud at `base_url` and the Agent at
`agent_url`; Agent hosts are not under *.netdata.cloud, so the allowlist must name them
(e.g. `http://agent.lan:19999`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from providers.netdata.api import NetdataAPI
from providers.netdata.inputs import (
    AlertsHistoryInput,
    AlertsListInput,
    MetricsQueryInput,
    NodesListInput,
    RoomsListInput,
    SilenceCreateInput,
    SpacesListInput,
)
from providers.sdk import CallContext, HealthStatus, ProviderBase, Refused, Tool, ToolError, now_iso

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
HISTORY_PAGE = 500  # transitions asked for per request
MAX_PAGES = 100  # a guard against an upstream that pages forever


def unix(t: int, now: float) -> int:
    """Netdata's time convention: <= 0 is relative to now (seconds), > 0 absolute."""
    return int(now) + t if t <= 0 else t


def when_unix(value: Any) -> int | None:
    """A transition's time as unix seconds (Netdata sends numbers; an RFC 3339 string is read too)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None
    return None


def rfc3339(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Refused("INVALID_INPUT", f"{field} is not an RFC 3339 time: {text!r}") from None
    if value.tzinfo is None:
        raise Refused("INVALID_INPUT", f"{field} needs a time zone (e.g. 2026-11-21T18:00:00Z)")
    return value.astimezone(UTC)


def alert_from_cloud(a: dict[str, Any]) -> dict[str, Any]:
    return {"name": a.get("nm"), "context": a.get("ctx"), "instance": a.get("ch"), "status": a.get("st"),
            "value": a.get("v"), "units": a.get("units"), "since": a.get("t"), "node": a.get("ni", a.get("nd"))}


def alert_from_agent(a: dict[str, Any], hostname: str | None) -> dict[str, Any]:
    return {"name": a.get("name"), "context": a.get("context"), "instance": a.get("chart"),
            "status": a.get("status"), "value": a.get("value"), "units": a.get("units"),
            "since": a.get("last_status_change"), "node": hostname}


class NetdataProvider(ProviderBase):
    name = "netdata"

    def __init__(self, base_url: str = "https://app.netdata.cloud", agent_url: str | None = None, *,
                 timeout_s: float = 30.0, health_budget_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.agent_url = agent_url.rstrip("/") if agent_url else None
        self.timeout_s = timeout_s
        self.health_budget_s = health_budget_s  # rule 6: slower than this is "degraded"

    def tools(self) -> list[Tool]:
        return [
            Tool("spaces.list", "read", SpacesListInput, "The Netdata Cloud spaces the token can see.",
                 self._spaces_list),
            Tool("rooms.list", "read", RoomsListInput, "The rooms of a space.", self._rooms_list),
            Tool("nodes.list", "read", NodesListInput,
                 "The nodes of a room (state, version, labels, alert counts), or of the local Agent.",
                 self._nodes_list),
            Tool("alerts.list", "read", AlertsListInput,
                 "Current alert instances of a room or of the local Agent (raised ones by default).",
                 self._alerts_list),
            Tool("alerts.history", "read", AlertsHistoryInput,
                 "Alert transitions of a room in a time window, newest first, following pages up to `limit`.",
                 self._alerts_history),
            Tool("metrics.query", "read", MetricsQueryInput,
                 "Query metrics by context over a time window (Cloud room or local Agent).", self._metrics_query),
            Tool("silence.create", "annotate", SilenceCreateInput,
                 "Create a time-bounded alert silencing rule in a space, scoped to rooms, nodes or alerts.",
                 self._silence_create),
        ]

    # -- plumbing ---------------------------------------------------------------------------

    async def _secret(self, key: str, *, required: bool = True) -> str:
        try:
            return await self.get_vault_secret(key)
        except LookupError as e:
            if not required:
                return ""
            raise ToolError(f"netdata: {e}") from None
        except PermissionError as e:
            raise Refused("FORBIDDEN", str(e)) from None

    @contextlib.asynccontextmanager
    async def _cloud(self) -> AsyncIterator[NetdataAPI]:
        token = await self._secret("netdata_token")
        async with self.http(base_url=self.base_url, timeout=self.timeout_s,
                             headers={"Accept": "application/json"}) as client:
            name = "netdata_token"  # pragma: allowlist secret
            yield NetdataAPI(client, who="Netdata Cloud", secret_name=name, token=token,
                             auth_headers={"Authorization": f"Bearer {token}"})

    @contextlib.asynccontextmanager
    async def _agent(self) -> AsyncIterator[NetdataAPI]:
        if self.agent_url is None:
            raise Refused("INVALID_INPUT", "no Netdata Agent is configured (the provider's agent_url option); "
                                           "use target \"cloud\"")
        token = await self._secret("netdata_agent_token", required=False)
        # The vendor documents X-Netdata-Auth, the Agent's swagger Authorization: send both.
        auth = {"X-Netdata-Auth": f"Bearer {token}", "Authorization": f"Bearer {token}"} if token else {}
        async with self.http(base_url=self.agent_url, timeout=self.timeout_s,
                             headers={"Accept": "application/json"}) as client:
            name = "netdata_agent_token"  # pragma: allowlist secret
            yield NetdataAPI(client, who="the Netdata Agent", secret_name=name, token=token, auth_headers=auth)

    @staticmethod
    def _room(args: NodesListInput | AlertsListInput | MetricsQueryInput) -> str:
        if not args.space_id or not args.room_id:
            raise Refused("INVALID_INPUT", "target \"cloud\" needs space_id and room_id")
        return f"/spaces/{args.space_id}/rooms/{args.room_id}"

    # -- tools ------------------------------------------------------------------------------

    async def _spaces_list(self, ctx: CallContext, args: SpacesListInput) -> dict[str, Any]:
        async with self._cloud() as api:
            spaces = await api.json("GET", "/api/v2/spaces", "spaces.list")
        if not isinstance(spaces, list):
            raise ToolError("netdata: spaces.list: expected a list from Netdata Cloud")
        spaces = [{k: s.get(k) for k in ("id", "slug", "name", "permissions")} for s in spaces if isinstance(s, dict)]
        return {"spaces": spaces, "count": len(spaces)}

    async def _rooms_list(self, ctx: CallContext, args: RoomsListInput) -> dict[str, Any]:
        async with self._cloud() as api:
            rooms = await api.json("GET", f"/api/v2/spaces/{args.space_id}/rooms", f"rooms of space {args.space_id}")
        if not isinstance(rooms, list):
            raise ToolError(f"netdata: rooms of space {args.space_id}: expected a list from Netdata Cloud")
        return {"space_id": args.space_id, "rooms": rooms, "count": len(rooms)}

    async def _nodes_list(self, ctx: CallContext, args: NodesListInput) -> dict[str, Any]:
        if args.target == "agent":
            async with self._agent() as api:
                answer = await api.json("GET", "/api/v3/nodes", "nodes of the Agent")
        else:
            room = self._room(args)
            async with self._cloud() as api:
                answer = await api.json("POST", f"/api/v3{room}/nodes", f"nodes of room {args.room_id}", json={})
        nodes = answer.get("nodes", []) if isinstance(answer, dict) else []
        return {"target": args.target, "nodes": nodes, "count": len(nodes)}

    async def _alerts_list(self, ctx: CallContext, args: AlertsListInput) -> dict[str, Any]:
        if args.target == "agent":
            async with self._agent() as api:
                answer = await api.json("GET", "/api/v1/alarms", "alarms of the Agent", params={"active": ""})
            host = answer.get("hostname") if isinstance(answer, dict) else None
            raw = (answer.get("alarms") or {}) if isinstance(answer, dict) else {}
            alerts = [alert_from_agent(a, host) for a in raw.values() if isinstance(a, dict)]
        else:
            room = self._room(args)
            async with self._cloud() as api:
                answer = await api.json("POST", f"/api/v2{room}/alerts", f"alerts of room {args.room_id}",
                                        json={"options": ["instances", "values", "summary"]})
            raw_list = answer.get("alert_instances", []) if isinstance(answer, dict) else []
            alerts = [alert_from_cloud(a) for a in raw_list if isinstance(a, dict)]
        if args.status:
            alerts = [a for a in alerts if a["status"] in args.status]
        alerts.sort(key=lambda a: ({"CRITICAL": 0, "WARNING": 1}.get(a["status"] or "", 2), str(a["name"])))
        return {"target": args.target, "alerts": alerts[:args.limit], "count": min(len(alerts), args.limit),
                "truncated": len(alerts) > args.limit}

    async def _alerts_history(self, ctx: CallContext, args: AlertsHistoryInput) -> dict[str, Any]:
        now = time.time()
        after, before = unix(args.after, now), unix(args.before, now)
        if after >= before:
            raise Refused("INVALID_INPUT", "after must be earlier than before")
        path = f"/api/v2/spaces/{args.space_id}/rooms/{args.room_id}/alert_transitions"
        seen: set[Any] = set()
        out: list[dict[str, Any]] = []
        complete = False
        async with self._cloud() as api:
            for _ in range(MAX_PAGES):
                body: dict[str, Any] = {"after": after, "before": before,
                                        "limit": min(HISTORY_PAGE, args.limit - len(out))}
                if args.status:
                    body["status"] = args.status
                page = await api.json("POST", path, f"alert history of room {args.room_id}", json=body)
                items = page.get("transitions", []) if isinstance(page, dict) else []
                fresh = [t for t in items if isinstance(t, dict) and t.get("transition_id") not in seen]
                seen.update(t.get("transition_id") for t in fresh)
                out.extend(fresh)
                if len(items) < body["limit"]:  # a short page: the window is exhausted
                    complete = True
                    break
                # Newest first: the next page ends where this one's oldest transition was. No
                # new transitions or no usable times: stop, and say the answer is not complete.
                whens = [w for w in (when_unix(t.get("when")) for t in fresh) if w is not None]
                if len(out) >= args.limit or not whens:
                    break
                before = min(whens)
        return {"transitions": out[:args.limit], "count": min(len(out), args.limit), "after": after,
                "before": unix(args.before, now), "complete": complete}

    async def _metrics_query(self, ctx: CallContext, args: MetricsQueryInput) -> dict[str, Any]:
        if args.target == "agent":
            params = {"contexts": ",".join(args.contexts), "after": args.after, "before": args.before,
                      "points": args.points, "group_by": args.group_by, "aggregation": args.aggregation,
                      "format": "json2"}
            if args.nodes:
                params["nodes"] = ",".join(args.nodes)
            async with self._agent() as api:
                answer = await api.json("GET", "/api/v3/data", "metrics of the Agent", params=params)
        else:
            room = self._room(args)
            scope: dict[str, Any] = {"contexts": args.contexts}  # always scope by context (PROVIDER-APIS.md)
            if args.nodes:
                scope["nodes"] = args.nodes
            body = {"scope": scope,
                    "window": {"after": args.after, "before": args.before, "points": args.points},
                    "aggregations": {"metrics": [{"group_by": [args.group_by], "aggregation": args.aggregation}],
                                     "time": {"time_group": "average"}},
                    "format": "json2"}
            async with self._cloud() as api:
                answer = await api.json("POST", f"/api/v3{room}/data", f"metrics of room {args.room_id}", json=body)
        if not isinstance(answer, dict):
            raise ToolError("netdata: metrics.query: the answer is not a json2 object")
        view, result = answer.get("view") or {}, answer.get("result") or {}
        return {"target": args.target, "contexts": args.contexts, "units": view.get("units"),
                "dimensions": view.get("dimensions"), "labels": result.get("labels", []),
                "data": result.get("data", [])}

    async def _silence_create(self, ctx: CallContext, args: SilenceCreateInput) -> dict[str, Any]:
        if not (args.room_ids or args.node_ids or args.alert_names):
            # A rule with no scope silences the whole space: refuse rather than guess.
            raise Refused("INVALID_INPUT", "scope the silence with room_ids, node_ids or alert_names")
        start = rfc3339(args.starts_at, "starts_at") if args.starts_at else datetime.now(UTC)
        until = (rfc3339(args.lasts_until, "lasts_until") if args.lasts_until
                 else start + timedelta(minutes=args.duration_minutes))
        if until <= start:
            raise Refused("INVALID_INPUT", "lasts_until must be after starts_at")
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        body: dict[str, Any] = {"name": args.name, "starts_at": start.strftime(fmt), "lasts_until": until.strftime(fmt)}
        for field in ("room_ids", "node_ids", "alert_names", "severities"):
            if getattr(args, field):
                body[field] = getattr(args, field)
        async with self._cloud() as api:
            created = await api.json("POST", f"/api/v2/spaces/{args.space_id}/notifications/silencing/rule",
                                     f"silence in space {args.space_id}", ok=(200, 201), json=body)
        return {"space_id": args.space_id, "rule": body, "created": created}

    # -- health (rule 6) ----------------------------------------------------------------------

    async def probe(self) -> None:
        """Netdata Cloud's cheap authenticated call: `GET /api/v2/accounts/me`."""
        async with self._cloud() as api:
            me = await api.json("GET", "/api/v2/accounts/me", "health")
        if not isinstance(me, dict) or not me.get("id") or me.get("id") == ZERO_UUID:
            raise ToolError("netdata: health: Netdata Cloud does not recognise the token (anonymous account)")

    async def probe_agent(self) -> None:
        async with self._agent() as api:
            await api.json("GET", "/api/v1/info", "health of the Agent")

    async def health(self) -> HealthStatus:
        """Cloud down: down. Cloud fine but the Agent (when configured) failing: degraded.
        Either slower than the rule-6 budget: degraded."""
        start = time.perf_counter()

        def ms() -> int:
            return int((time.perf_counter() - start) * 1000)

        async def both() -> str | None:
            await self.probe()
            if self.agent_url is None:
                return None
            try:
                await self.probe_agent()
            except (ToolError, Refused) as e:
                return e.message
            return None

        try:
            agent_error = await asyncio.wait_for(both(), self.health_budget_s)
        except TimeoutError:
            return HealthStatus(self.name, "degraded", ms(), now_iso(),
                                f"Netdata did not answer within {self.health_budget_s:g}s (rule 6 budget)")
        except (ToolError, Refused) as e:
            return HealthStatus(self.name, "down", ms(), now_iso(), e.message)
        except Exception as e:  # a failed probe is a health answer, not a crash
            return HealthStatus(self.name, "down", ms(), now_iso(), f"{type(e).__name__}: {e}")
        if agent_error:
            return HealthStatus(self.name, "degraded", ms(), now_iso(), agent_error)
        return HealthStatus(self.name, "ok", ms(), now_iso())


__all__ = ["NetdataProvider"]
