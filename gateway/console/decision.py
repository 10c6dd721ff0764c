"""Why one call was decided as it was: an audit row, explained from the row and the active bundle.

Invariants:
- What the row recorded (decision, deciding policy ids, dryrun shadow, exceptions applied, bundle
  revision, trace, duration, result, the request as decided, redacted as stored) is shown as
  recorded; nothing is recomputed into it.
- What the row cannot hold comes from the active bundle and says so: each policy's file and text,
  and the rate tiers, from deciding the stored request again now. When the row's bundle revision
  is not the active one, the page says the text shown may not be what decided it.
- Pure: the row and the engine in, a plain dict for the template out.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine import Engine
from engine.impact import REQUEST_KEY, Unreadable, read_kept
from engine.policy_source import policy_source
from otel.events import RunEvent


def _policies(engine: Engine, ids: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for pid in ids:
        source = policy_source(engine.bundle, pid)
        out.append({"id": pid, "found": source is not None, "file": source.file if source else None,
                    "effect": source.effect if source else None, "mode": source.mode if source else None,
                    "text": source.text if source else None, "written": source.written if source else False})
    return out


def _again(engine: Engine, event: RunEvent) -> dict[str, Any] | None:
    """The stored request decided again now under the active bundle (tiers, outcome), or why not."""
    payload = event.payload or {}
    if REQUEST_KEY not in payload:
        return None
    try:
        kept = read_kept(msgspec.json.encode({REQUEST_KEY: payload[REQUEST_KEY]}))
    except Unreadable as e:
        return {"error": str(e)}
    if kept is None:
        return None
    if kept.truncated or kept.redacted:
        note = "the stored request was redacted, so this re-decision may differ from the recorded one"
    else:
        note = None
    try:
        d = engine.decide(kept.request(), now=kept.now)
    except Exception as e:  # the page explains; it must not fail on a row the bundle cannot decide now
        return {"error": f"{type(e).__name__}: {e}"}
    return {"allowed": d.allowed, "reasons": list(d.reasons), "revision": d.bundle_revision, "note": note,
            "tiers": [{"policy_id": t.policy_id, "bucket": t.bucket, "limit": t.limit, "period_s": t.period_s}
                      for t in d.tiers]}


def explain(engine: Engine, event: RunEvent) -> dict[str, Any]:
    payload = dict(event.payload or {})
    kept = payload.pop(REQUEST_KEY, None)
    result = dict(event.result or {})
    dryrun = result.pop("dryrun", None)
    active = engine.bundle.revision
    return {
        "event": event, "args": payload.get("args"), "asked": kept, "result": result,
        "row_status": (event.result or {}).get("status"),
        "role": kept.get("role") if isinstance(kept, dict) else None,
        "policies": _policies(engine, event.policy_ids),
        "dryrun": None if not isinstance(dryrun, dict) else {
            "allowed": dryrun.get("allowed"), "policies": _policies(engine, list(dryrun.get("policy_ids") or []))},
        "active_revision": active,
        "stale": event.bundle_revision is not None and event.bundle_revision != active,
        "again": _again(engine, event),
        "bucket": {k: result[k] for k in ("bucket", "retry_after_s", "limiter_error") if k in result} or None,
    }


__all__ = ["explain"]
