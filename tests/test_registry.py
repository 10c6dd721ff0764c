"""Registration (constitution rules 9 and 10): what the gateway refuses to serve, and why."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import msgspec
import pytest

from gateway.registry import RegistrationError, Registry
from providers.echo import EchoInput, EchoProvider
from providers.sdk import CallContext, ProviderBase, Tool


async def handler(ctx: CallContext, args: Any) -> dict[str, str]:
    return {}


class StrVersion(msgspec.Struct):
    version: str = "1.0"


class WithTools(ProviderBase):
    name = "acme"

    def __init__(self, *tools: Tool) -> None:
        self._tools = list(tools)

    def tools(self) -> list[Tool]:
        return self._tools


GOOD = Tool("thing.get", "read", EchoInput, "Get a thing.", handler)


def refused(provider: object) -> str:
    registry = Registry([EchoProvider()])
    with pytest.raises(RegistrationError) as e:
        registry.register(provider)
    assert [t.name for t in registry.tools if t.name.startswith("acme")] == []  # nothing half-registered
    return str(e.value)


def test_a_well_formed_provider_registers_with_a_health_tool() -> None:
    names = {t.name for t in Registry([WithTools(GOOD, replace(GOOD, name="thing.get.v2"))]).tools}
    assert names == {"acme.thing.get", "acme.thing.get.v2", "acme.health"}


@pytest.mark.parametrize(("tool", "message"), [
    (replace(GOOD, kind="delete"), "kind 'delete' is not one of read, scan, annotate, tag, create, comment"),
    (replace(GOOD, name="Thing Get"), "tool names are lowercase dotted words"),
    (replace(GOOD, description=" "), "needs a description"),
    (replace(GOOD, handler=lambda ctx, args: {}), "must be an async function"),
    (replace(GOOD, input=dict), "must be a msgspec.Struct class"),
    (replace(GOOD, input=StrVersion), "`version` must be a Literal"),
    (replace(GOOD, kind="admin"), "admin is reserved for the gateway's own actions"),
    ("not a tool", "must return providers.sdk.Tool objects"),
])
def test_malformed_tools_are_refused(tool: Any, message: str) -> None:
    assert message in refused(WithTools(GOOD, tool))


def test_duplicate_tool_names_are_refused() -> None:
    assert "acme.thing.get: declared twice" in refused(WithTools(GOOD, replace(GOOD, description="again")))


def test_a_provider_replacing_an_sdk_door_is_refused() -> None:
    class EnvReader(WithTools):
        async def get_vault_secret(self, key: str) -> str:
            import os

            return os.environ.get(key.upper(), "")

    class OwnClient(WithTools):
        def http(self, **kwargs: Any) -> Any:
            import httpx

            return httpx.AsyncClient(**kwargs)

    assert "overrides the SDK's get_vault_secret" in refused(EnvReader(GOOD))
    assert "overrides the SDK's http" in refused(OwnClient(GOOD))


def test_bad_provider_names_and_duplicates_are_refused() -> None:
    class Dotted(WithTools):
        name = "ac.me"

    assert "lowercase without dots" in refused(Dotted(GOOD))

    class Echo2(WithTools):
        name = "echo"

    assert "already registered" in refused(Echo2(GOOD))


def test_a_provider_whose_tools_fail_is_refused() -> None:
    class Broken(WithTools):
        def tools(self) -> list[Tool]:
            raise RuntimeError("config missing")

    assert "tools() failed: RuntimeError: config missing" in refused(Broken())


def test_version_may_list_several_versions() -> None:
    class Multi(msgspec.Struct):
        version: Literal["1.0", "2.0"] = "2.0"

    assert "acme.multi" in {t.name for t in Registry([WithTools(replace(GOOD, name="multi", input=Multi))]).tools}
