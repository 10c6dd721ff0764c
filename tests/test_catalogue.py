"""The policy bundle's tool catalogue and the providers the gateway serves must agree: a tool
whose kind or input schema differs from policies/tools.json would be decided on a stale model.

The comparison is of what a decision depends on (engine.catalogue.decision_shape: the schema
without titles and descriptions), not of text a library version may reformat. On a real change,
regenerate with `opsgate policy catalogue --write` and review the diff."""

from __future__ import annotations

from engine import load_bundle
from engine.catalogue import decision_shape
from gateway.registry import RegistrationError, Registry
from gateway.serve import default_providers
from providers.sdk import ProviderBase
from tests.conftest import POLICIES


def test_every_served_tool_is_in_the_catalogue_with_the_same_kind_and_schema() -> None:
    catalogue = load_bundle(POLICIES).catalogue
    registry = Registry(default_providers())
    assert registry.drift(catalogue) == []
    for served in registry.tools:
        entry = catalogue.get(served.name)
        assert entry is not None
        assert (entry.kind, decision_shape(entry.input_schema)) == (served.tool.kind,
                                                                    decision_shape(served.input_schema)), (
            f"{served.name} differs from policies/tools.json: run `opsgate policy catalogue --write`")


def test_a_changed_constraint_is_drift_and_a_reworded_description_is_not() -> None:
    schema = {"title": "Args", "description": "Old\n    words.", "type": "object",
              "properties": {"limit": {"type": "integer", "maximum": 200, "description": "rows"}}}
    reworded = {**schema, "description": "Old\nwords.", "properties": {"limit": {**schema["properties"]["limit"],
                                                                                "description": "at most 200 rows"}}}
    narrowed = {**schema, "properties": {"limit": {"type": "integer", "maximum": 100, "description": "rows"}}}
    assert decision_shape(reworded) == decision_shape(schema)
    assert decision_shape(narrowed) != decision_shape(schema)
    # a property that happens to be called "description" is a constraint, not an annotation
    named = {"type": "object", "properties": {"description": {"type": "string"}}}
    assert decision_shape(named) == named


def test_every_provider_gets_a_health_tool() -> None:
    assert {t.name for t in Registry(default_providers()).tools} >= {f"{p.name}.health" for p in default_providers()}


def test_only_provider_base_subclasses_register() -> None:
    class Rogue:
        name = "rogue"

        def tools(self) -> list[object]:
            return []

    try:
        Registry([Rogue()])
    except RegistrationError as e:
        assert "rule 10" in str(e)
    else:
        raise AssertionError("a provider outside the SDK was registered")

    class NoVersion(ProviderBase):
        name = "noversion"

        def tools(self) -> list[object]:
            import msgspec

            from providers.sdk import Tool

            class Args(msgspec.Struct):
                x: int = 0

            async def handler(ctx: object, args: Args) -> None:
                return None

            return [Tool("do", "read", Args, "no version field", handler)]

    try:
        Registry([NoVersion()])
    except RegistrationError as e:
        assert "version" in str(e) and "rule 9" in str(e)
    else:
        raise AssertionError("a tool without a version field was registered")
