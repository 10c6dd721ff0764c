"""Value types of the decision engine: what goes in (Request) and what comes out (Decision).

All are frozen msgspec Structs so they can cross process and wire boundaries unchanged and
be written into audit events as they are.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

NAMESPACE = "Ops"

Mode = Literal["enforce", "dryrun"]


class Uid(msgspec.Struct, frozen=True, order=True):
    """A Cedar entity uid. `type` is the full type name, e.g. `Ops::User`."""

    type: str
    id: str

    @classmethod
    def of(cls, kind: str, id: str) -> Uid:
        """`Uid.of("User", "u1")` -> `Ops::User::"u1"`; a kind already namespaced is kept."""
        return cls(kind if "::" in kind else f"{NAMESPACE}::{kind}", id)

    @classmethod
    def parse(cls, text: str) -> Uid:
        """Parse `Ops::User::"alice"` (Cedar surface syntax)."""
        head, sep, rest = text.partition('::"')
        if not sep or not rest.endswith('"') or not head:
            raise ValueError(f"not an entity uid: {text!r} (expected Type::\"id\")")
        return cls(head, rest[:-1].replace('\\"', '"'))

    def as_cedar(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    def __str__(self) -> str:
        escaped = self.id.replace('"', '\\"')
        return f'{self.type}::"{escaped}"'


class Entity(msgspec.Struct, frozen=True):
    """A request-scoped entity (typically the calling user and its role)."""

    uid: Uid
    parents: tuple[Uid, ...] = ()
    attrs: dict[str, Any] = {}

    def as_cedar(self) -> dict[str, Any]:
        return {"uid": self.uid.as_cedar(), "attrs": self.attrs, "parents": [p.as_cedar() for p in self.parents]}


class Request(msgspec.Struct, frozen=True):
    """One authorization question. `action` is the action id, e.g. `socket.scan.repo`.

    `context` must not contain `now`: the engine injects the clock it is given.
    """

    principal: Uid
    action: str
    resource: Uid
    context: dict[str, Any] = {}
    entities: tuple[Entity, ...] = ()


class Tier(msgspec.Struct, frozen=True):
    """A rate tier that applies to a request: at most `limit` calls per `period_s` in `bucket`."""

    policy_id: str
    bucket: str
    limit: int
    period_s: int

    @property
    def spec(self) -> str:
        return f"{self.limit}/{self.period_s}s"


class Shadow(msgspec.Struct, frozen=True):
    """What the decision would have been with the dryrun policies enforced."""

    allowed: bool
    reasons: tuple[str, ...]


class Decision(msgspec.Struct, frozen=True):
    """The engine's answer. Everything an audit event needs, nothing it has to look up.

    `mode` is "dryrun" when dryrun policies would have changed the outcome; `shadow` then
    says how. `tiers` are the rate tiers that apply (empty: unlimited). `exceptions_applied`
    names the deviation exceptions among the determining policies.
    """

    decision_id: str
    allowed: bool
    reasons: tuple[str, ...]
    errors: tuple[str, ...]
    bundle_revision: str
    mode: Mode = "enforce"
    shadow: Shadow | None = None
    tiers: tuple[Tier, ...] = ()
    exceptions_applied: tuple[str, ...] = ()
    latency_us: float = 0.0


class Issue(msgspec.Struct, frozen=True):
    """One problem found in a bundle, located as precisely as we can."""

    file: str
    message: str
    policy_id: str | None = None

    def __str__(self) -> str:
        where = self.file + (f" [{self.policy_id}]" if self.policy_id else "")
        return f"{where}: {self.message}"


class BundleError(Exception):
    """A bundle was refused. `issues` lists every problem found, not just the first."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("policy bundle refused:\n" + "\n".join(f"  {i}" for i in self.issues))


__all__ = ["NAMESPACE", "BundleError", "Decision", "Entity", "Issue", "Mode", "Request", "Shadow", "Tier", "Uid"]
