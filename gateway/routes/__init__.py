"""The gateway's HTTP routes besides /mcp, one module per concept; ROUTES is what create_app mounts."""

from __future__ import annotations

from gateway.routes.decision import ROUTES as DECISION_ROUTES
from gateway.routes.exceptions import ROUTES as EXCEPTION_ROUTES
from gateway.routes.health import ROUTES as HEALTH_ROUTES
from gateway.routes.metrics import ROUTES as METRICS_ROUTES
from gateway.routes.oauth import ROUTES as OAUTH_ROUTES
from gateway.routes.policy import ROUTES as POLICY_ROUTES

ROUTES = [*DECISION_ROUTES, *EXCEPTION_ROUTES, *HEALTH_ROUTES, *METRICS_ROUTES, *OAUTH_ROUTES, *POLICY_ROUTES]

__all__ = ["ROUTES"]
