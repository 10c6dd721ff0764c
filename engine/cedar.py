"""One call into Cedar, decoded straight into what the engine needs.

cedarpy's public `is_authorized` wraps its Rust binding in a copy of the request, a stdlib
`json.loads` of the answer and three wrapper objects: ~14 us a call on this machine, as much
as all the Python of `Engine.decide()` on a small bundle. So we call the binding that
`is_authorized` itself calls (`cedarpy._internal.is_authorized_batch`; cedarpy is pinned in
pyproject.toml) and decode its JSON answer with msgspec. Should an upgrade move that binding,
we fall back to the public API: the same answer, slower. tests/test_differential.py compares
the engine's decisions with the public API on the full policy set, so a drift in the binding's
answer cannot go unnoticed.
"""

from __future__ import annotations

from typing import Any

import cedarpy
import msgspec

try:
    from cedarpy import _internal

    _BINDING = getattr(_internal, "is_authorized_batch", None)
except ImportError:  # pragma: no cover - a cedarpy without the binding module
    _BINDING = None


class _Diagnostics(msgspec.Struct, frozen=True):
    reason: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


class _Answer(msgspec.Struct, frozen=True):
    decision: str
    diagnostics: _Diagnostics = _Diagnostics()


_DECODE = msgspec.json.Decoder(_Answer).decode

Answer = tuple[str, tuple[str, ...], tuple[str, ...]]  # decision, reasons (policy ids), errors


def _public(request: dict[str, Any], policies: cedarpy.PolicySet, entities: cedarpy.Entities,
            schema: cedarpy.Schema) -> Answer:
    r = cedarpy.is_authorized(request, policies, entities, schema)
    return r.decision.value, tuple(r.diagnostics.reasons), tuple(r.diagnostics.errors)


def authorize(request: dict[str, Any], policies: cedarpy.PolicySet, entities: cedarpy.Entities,
              schema: cedarpy.Schema) -> Answer:
    """Cedar's answer for one request. `request["context"]` must already be JSON text."""
    if _BINDING is None:
        return _public(request, policies, entities, schema)
    a = _DECODE(_BINDING([request], policies, entities._inner, schema, False)[0])
    return a.decision, a.diagnostics.reason, a.diagnostics.errors


__all__ = ["Answer", "authorize"]
