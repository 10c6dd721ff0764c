"""Loopback imitations of Netdata Cloud (`/api/v2`, `/api/v3`, bearer tokens) and of a local
Netdata Agent (`/api/v1`, `/api/v3`, optional bearer), faithful to PROVIDER-APIS.md: error bodies
`{"errorCode", "errorMsgKey", "errorMessage", "details", "validationErrors"}`, `accounts/me`
answering the all-zero uuid for an unknown token, alert transitions windowed by after/before
with `after <= 0` refused, and `scope.contexts` required for data queries."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.upstreams.imitation import Imitation, Reply, Seen

ZERO = "00000000-0000-0000-0000-000000000000"
SPACE = "5e0b1a42-0000-4000-8000-000000000001"
ROOM = "7c1d2e3f-0000-4000-8000-000000000002"
NODES = [f"0a0b0c0d-0000-4000-8000-00000000010{i}" for i in range(3)]


def error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"errorCode": code, "errorMsgKey": code.removeprefix("Err").upper(),
                          "errorMessage": message, "details": {}, "validationErrors": {}})


NOT_FOUND = error(404, "ErrNotFound", "not found")


def data_answer(contexts: list[str], points: int, after: int, before: int) -> dict[str, Any]:
    now = int(time.time())
    start, end = (now + after if after <= 0 else after), (now + before if before <= 0 else before)
    step = max(1, (end - start) // max(points, 1))
    return {"view": {"units": "percentage", "dimensions": {"ids": ["user", "system"], "names": ["user", "system"]},
                     "contexts": contexts},
            "result": {"labels": ["time", "user", "system"],
                       "data": [[start + i * step, [1.5 + i, 0, 0], [0.5, 0, 0]] for i in range(points)]}}


class NetdataCloudImitation(Imitation):
    def __init__(self, *, tokens: dict[str, str], transitions: int = 1234) -> None:
        """`tokens` maps a token to its role in the space: "admin" or "viewer"."""
        super().__init__()
        self.tokens = tokens
        self.rate_limited = False
        self.silences: list[dict[str, Any]] = []
        now = int(time.time())
        self.transitions = [
            {"transition_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"t{i}")), "node_id": NODES[i % 3],
             "alert": "cpu_usage" if i % 2 else "disk_space_usage", "when": now - 10 - i * 10,
             "new": {"status": "CRITICAL" if i % 3 == 0 else "WARNING" if i % 3 == 1 else "CLEAR", "value": i},
             "old": {"status": "CLEAR", "value": 0}} for i in range(transitions)]

    def reset(self) -> None:
        super().reset()
        self.rate_limited = False
        self.silences.clear()

    def handle(self, req: Seen) -> Reply:
        auth = req.headers.get("authorization", "")
        role = self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if req.path == "/api/v2/accounts/me" and req.method == "GET":
            return Reply(200, {"id": str(uuid.uuid5(uuid.NAMESPACE_OID, auth)) if role else ZERO,
                               "name": "Ops Bot" if role else "", "email": "ops@example.com" if role else ""})
        if role is None:
            return error(401, "ErrUnauthorized", "unauthorized")
        if self.rate_limited:
            return Reply(429, {"errorCode": "ErrTooManyRequests", "errorMsgKey": "TOO_MANY_REQUESTS",
                               "errorMessage": "too many requests"}, {"Retry-After": "17"})
        if req.path == "/api/v2/spaces" and req.method == "GET":
            return Reply(200, [{"id": SPACE, "slug": "acme", "name": "Acme", "permissions": ["space:ReadAll"]}])
        prefix = f"/api/v2/spaces/{SPACE}"
        v3 = f"/api/v3/spaces/{SPACE}/rooms/{ROOM}"
        if req.path == f"{prefix}/rooms" and req.method == "GET":
            return Reply(200, [{"id": ROOM, "slug": "all-nodes", "name": "All nodes", "node_count": 3,
                                "member_count": 2}])
        if req.path == f"{v3}/nodes" and req.method == "POST":
            return Reply(200, {"nodes": [
                {"nd": nd, "mg": str(uuid.uuid5(uuid.NAMESPACE_OID, nd)), "nm": f"db-{i}",
                 "state": "reachable" if i else "stale", "v": "v2.1.0", "labels": {"env": "prod"},
                 "health": {"status": "running", "alerts": {"warning": i, "critical": 1 if i == 2 else 0}}}
                for i, nd in enumerate(NODES)]})
        if req.path == f"{prefix}/rooms/{ROOM}/alerts" and req.method == "POST":
            return Reply(200, {"alerts": [{"nm": "cpu_usage"}, {"nm": "disk_space_usage"}, {"nm": "ram_usage"}],
                               "alert_instances": [
                                   {"nm": "cpu_usage", "ctx": "system.cpu", "ch": "system.cpu", "st": "WARNING",
                                    "v": 87.5, "t": 1795000000, "units": "%", "ni": 0},
                                   {"nm": "disk_space_usage", "ctx": "disk.space", "ch": "disk_space./",
                                    "st": "CRITICAL", "v": 98.1, "t": 1795000100, "units": "%", "ni": 1},
                                   {"nm": "ram_usage", "ctx": "system.ram", "ch": "system.ram", "st": "CLEAR",
                                    "v": 40.0, "t": 1795000200, "units": "%", "ni": 2}],
                               "nodes": [{"ni": i, "nd": nd} for i, nd in enumerate(NODES)]})
        if req.path == f"{prefix}/rooms/{ROOM}/alert_transitions" and req.method == "POST":
            return self._transitions(req.json() or {})
        if req.path == f"{v3}/data" and req.method == "POST":
            body = req.json() or {}
            contexts = (body.get("scope") or {}).get("contexts")
            if not contexts:
                return error(400, "ErrBadRequest", "scope.contexts is required")
            window = body.get("window") or {}
            return Reply(200, data_answer(contexts, int(window.get("points", 60)), int(window.get("after", -600)),
                                          int(window.get("before", 0))))
        if req.path == f"{prefix}/notifications/silencing/rule" and req.method == "POST":
            if role != "admin":
                return error(403, "ErrForbidden", "not allowed to manage silencing rules in this space")
            body = req.json() or {}
            if not body.get("name"):
                return error(422, "ErrUnprocessableEntity", "name is required")
            rule = {"id": str(uuid.uuid4()), **body}
            self.silences.append(rule)
            return Reply(200, rule)
        return NOT_FOUND

    def _transitions(self, body: dict[str, Any]) -> Reply:
        after, before, limit = body.get("after", 0), body.get("before"), body.get("limit", 100)
        if not isinstance(after, int) or after <= 0:
            return error(400, "ErrBadRequest", "after must be a positive unix timestamp")
        statuses = set(body.get("status") or [])
        picked = [t for t in self.transitions
                  if after <= t["when"] and (before is None or t["when"] <= before)
                  and (not statuses or t["new"]["status"] in statuses)]
        return Reply(200, {"transitions": picked[:limit]})  # newest first


class NetdataAgentImitation(Imitation):
    def __init__(self, *, token: str | None = None, hostname: str = "db-agent") -> None:
        super().__init__()
        self.token = token
        self.hostname = hostname

    def handle(self, req: Seen) -> Reply:
        if self.token is not None:
            given = {req.headers.get("x-netdata-auth"), req.headers.get("authorization")}
            if f"Bearer {self.token}" not in given:
                return Reply(401, {"status": "error", "message": "bearer token required"})
        if req.path == "/api/v1/info":
            return Reply(200, {"version": "v2.1.0", "uid": str(uuid.uuid5(uuid.NAMESPACE_OID, self.hostname)),
                               "mirrored_hosts": [self.hostname], "alarms": {"normal": 40, "warning": 1,
                                                                              "critical": 0}})
        if req.path == "/api/v1/alarms":
            return Reply(200, {"hostname": self.hostname, "latest_alarm_log_unique_id": 1795000000,
                               "status": True, "now": int(time.time()), "alarms": {
                                   "disk_space_usage.disk_space._": {
                                       "id": 1, "name": "disk_space_usage", "chart": "disk_space._",
                                       "context": "disk.space", "status": "WARNING", "value": 91.2, "units": "%",
                                       "last_status_change": 1795000000}}})
        if req.path == "/api/v3/nodes":
            return Reply(200, {"nodes": [{"nd": NODES[0], "nm": self.hostname, "v": "v2.1.0",
                                          "labels": {"env": "prod"}}]})
        if req.path == "/api/v3/data":
            contexts = (req.q("contexts") or "").split(",")
            if not contexts[0]:
                return Reply(400, {"status": "error", "message": "contexts required"})
            return Reply(200, data_answer(contexts, int(req.q("points", "60") or 60), int(req.q("after", "-600") or 0),
                                          int(req.q("before", "0") or 0)))
        return Reply(404, {"status": "error", "message": "not found"})


__all__ = ["NODES", "ROOM", "SPACE", "ZERO", "NetdataAgentImitation", "NetdataCloudImitation"]
