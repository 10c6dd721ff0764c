"""The Netdata tools' inputs (constitution rule 9: each carries an explicit `version`).

`target` picks Netdata Cloud (default; needs `space_id` and `room_id`) or the local Agent
configured as the provider's `agent_url`. Times follow Netdata: an integer `after`/`before`
<= 0 is relative to now in seconds (-600: ten minutes ago), > 0 is a unix timestamp.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# Space, room and node ids are uuids (slugs work for spaces too); nothing that changes a path.
Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
OptId = Annotated[str, Meta(pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$")]
Target = Literal["cloud", "agent"]
AlertStatus = Literal["CRITICAL", "WARNING", "CLEAR"]
Context = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,200}$", description="a metric context, e.g. system.cpu")]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Literal["1.0"] = "1.0"


class SpacesListInput(Input):
    pass


class RoomsListInput(Input):
    space_id: Id


class NodesListInput(Input):
    target: Target = "cloud"
    space_id: OptId = ""
    room_id: OptId = ""


class AlertsListInput(Input):
    target: Target = "cloud"
    space_id: OptId = ""
    room_id: OptId = ""
    # Which instances to return (default: the raised ones); [] for all.
    status: list[AlertStatus] = msgspec.field(default_factory=lambda: ["CRITICAL", "WARNING"])
    limit: Annotated[int, Meta(ge=1, le=5000)] = 500


class AlertsHistoryInput(Input):
    space_id: Id
    room_id: Id
    after: int = -3600
    before: int = 0
    status: list[AlertStatus] = []  # the new status of a transition; [] for all
    limit: Annotated[int, Meta(ge=1, le=10000, description="most transitions, following pages as needed")] = 500


class MetricsQueryInput(Input, kw_only=True):
    target: Target = "cloud"
    space_id: OptId = ""
    room_id: OptId = ""
    contexts: Annotated[list[Context], Meta(min_length=1, max_length=20)]
    nodes: list[Id] = []  # node ids; [] for every node in scope
    after: int = -600
    before: int = 0
    points: Annotated[int, Meta(ge=1, le=1000)] = 60
    group_by: Literal["dimension", "node", "instance", "label"] = "dimension"
    aggregation: Literal["avg", "sum", "min", "max"] = "avg"


class SilenceCreateInput(Input):
    space_id: Id
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    room_ids: list[Id] = []
    node_ids: list[Id] = []
    alert_names: list[Annotated[str, Meta(min_length=1, max_length=200)]] = []
    severities: list[Literal["critical", "warning", "clear"]] = []
    # RFC 3339; "" starts now. A rule always ends: lasts_until, or duration_minutes from the start.
    starts_at: Annotated[str, Meta(max_length=40)] = ""
    lasts_until: Annotated[str, Meta(max_length=40)] = ""
    duration_minutes: Annotated[int, Meta(ge=1, le=43200)] = 60


__all__ = ["AlertsHistoryInput", "AlertsListInput", "MetricsQueryInput", "NodesListInput", "RoomsListInput",
           "SilenceCreateInput", "SpacesListInput"]
