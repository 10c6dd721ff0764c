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
SpaceId = Annotated[Id, Meta(description="the Netdata Cloud space (spaces.list)")]
RoomId = Annotated[Id, Meta(description="the room in that space (rooms.list)")]
OptSpaceId = Annotated[OptId, Meta(description="the Netdata Cloud space (spaces.list); needed with target cloud")]
OptRoomId = Annotated[OptId, Meta(description="the room in that space (rooms.list); needed with target cloud")]
Target = Annotated[Literal["cloud", "agent"], Meta(
    description="cloud: Netdata Cloud (space_id and room_id); agent: the local Agent the gateway is configured with")]
# Netdata's time convention: <= 0 is seconds relative to now, > 0 a unix timestamp.
After = Annotated[int, Meta(description="window start: <= 0 is seconds before now (-600: ten minutes ago), > 0 a unix "
                                        "timestamp")]
Before = Annotated[int, Meta(description="window end, as `after`; 0: now")]
AlertStatus = Literal["CRITICAL", "WARNING", "CLEAR"]
Context = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,200}$", description="a metric context, e.g. system.cpu")]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Literal["1.0"] = "1.0"


class SpacesListInput(Input):
    pass


class RoomsListInput(Input):
    space_id: SpaceId


class NodesListInput(Input):
    target: Target = "cloud"
    space_id: OptSpaceId = ""
    room_id: OptRoomId = ""


class AlertsListInput(Input):
    target: Target = "cloud"
    space_id: OptSpaceId = ""
    room_id: OptRoomId = ""
    status: Annotated[list[AlertStatus], Meta(description="which instances to return (default: the raised ones); "
                                                          "[] for all")] = \
        msgspec.field(default_factory=lambda: ["CRITICAL", "WARNING"])
    limit: Annotated[int, Meta(ge=1, le=5000, description="most alert instances, worst first")] = 500


class AlertsHistoryInput(Input):
    space_id: SpaceId
    room_id: RoomId
    after: After = -3600
    before: Before = 0
    status: Annotated[list[AlertStatus], Meta(description="the new status of a transition; [] for all")] = []
    limit: Annotated[int, Meta(ge=1, le=10000, description="most transitions, following pages as needed")] = 500


class MetricsQueryInput(Input, kw_only=True):
    target: Target = "cloud"
    space_id: OptSpaceId = ""
    room_id: OptRoomId = ""
    contexts: Annotated[list[Context], Meta(min_length=1, max_length=20, description=(
        "metric contexts to query, e.g. [\"system.cpu\"] (1-20)"))]
    nodes: Annotated[list[Id], Meta(description="node ids (nodes.list); [] for every node in scope")] = []
    after: After = -600
    before: Before = 0
    points: Annotated[int, Meta(ge=1, le=1000, description="data points per series (1-1000)")] = 60
    group_by: Annotated[Literal["dimension", "node", "instance", "label"], Meta(
        description="what each returned series stands for")] = "dimension"
    aggregation: Annotated[Literal["avg", "sum", "min", "max"], Meta(
        description="how values are combined within a series and a point")] = "avg"


class SilenceCreateInput(Input):
    space_id: SpaceId
    name: Annotated[str, Meta(min_length=1, max_length=200, description="the silencing rule's name")]
    room_ids: Annotated[list[Id], Meta(description="rooms it silences (at least one of rooms, nodes, alerts)")] = []
    node_ids: Annotated[list[Id], Meta(description="nodes it silences")] = []
    alert_names: Annotated[list[Annotated[str, Meta(min_length=1, max_length=200)]], Meta(
        description="alert names it silences")] = []
    severities: Annotated[list[Literal["critical", "warning", "clear"]], Meta(
        description="only these severities; [] for all")] = []
    # A rule always ends: lasts_until, or duration_minutes from the start.
    starts_at: Annotated[str, Meta(max_length=40, description="RFC 3339 start; \"\": now")] = ""
    lasts_until: Annotated[str, Meta(max_length=40, description="RFC 3339 end; \"\": duration_minutes after the "
                                                                 "start")] = ""
    duration_minutes: Annotated[int, Meta(ge=1, le=43200, description="how long it lasts without lasts_until")] = 60


__all__ = ["AlertsHistoryInput", "AlertsListInput", "MetricsQueryInput", "NodesListInput", "RoomsListInput",
           "SilenceCreateInput", "SpacesListInput"]
