"""A real third-party MCP server, `@modelcontextprotocol/server-everything` (node), behind the real
gateway over both transports: pinned, served under policy, its images, structured content,
progress, sampling and elicitation relayed to a 2025-11-25 caller, and its stdio child kept to a
minimal environment."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import types

from gateway.config import GatewayConfig
from providers.echo import EchoProvider
from tests.harness import RunningGateway, code_of, free_port, running_gateway
from tests.node_tools import EVERYTHING, NODE, require_node_tools
from tests.upstream_env import Legacy, bundle, pin

pytestmark = pytest.mark.anyio
TOOLS = {"echo": "read", "get-sum": "read", "get-tiny-image": "read", "get-structured-content": "read",
         "trigger-long-running-operation": "read", "trigger-sampling-request": "read",
         "trigger-elicitation-request": "read", "get-env": "read", "gzip-file-as-resource": "create"}


@contextlib.contextmanager
def everything_over_http() -> Iterator[str]:
    """server-everything's streamable HTTP transport on a free loopback port (it binds every interface;
    only loopback is ever addressed)."""
    port = free_port()
    proc = subprocess.Popen([str(NODE), str(EVERYTHING), "streamableHttp"], env={"PATH": os.environ["PATH"],
                            "PORT": str(port)}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url + "/mcp", timeout=1)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server-everything did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def declaration(transport: str, url: str | None) -> dict[str, Any]:
    tools = {t: {"kind": k} for t, k in TOOLS.items()}
    timeouts = {"connect_s": 30, "call_s": 30, "list_s": 30}
    relayed = {"resources": {"kind": "read"}, "prompts": {"kind": "read"}}
    if transport == "http":
        return {"transport": "http", "url": url + "/mcp", "tools": tools, "timeouts": timeouts, **relayed}
    return {"transport": "stdio", "command": str(NODE), "args": [str(EVERYTHING), "stdio"], "tools": tools,
            "timeouts": timeouts, **relayed}


@pytest.fixture(scope="module", params=["stdio", "http"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    require_node_tools()
    tmp = tmp_path_factory.mktemp(f"everything-{request.param}")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(everything_over_http()) if request.param == "http" else None
        policies = bundle(tmp, "everything", declaration(request.param, url), allow=[url] if url else [])
        assert pin(policies, tmp / "state", "everything") == 0
        yield stack.enter_context(running_gateway(GatewayConfig(policies=str(policies), state_dir=str(tmp / "state")),
                                                  providers=[EchoProvider()]))


def pins_of(gw: RunningGateway) -> dict[str, Any]:
    path = Path(gw.services.engine.bundle.root) / "upstreams" / "everything.pins.json"
    return {t["name"]: t for t in json.loads(path.read_text())["tools"]}


def caller(gw: RunningGateway, role: str = "ops_viewer", **callbacks: Any) -> Any:
    """A 2025-11-25 client of the gateway, its GET stream open (so server-to-client requests and
    notifications can reach it)."""
    return Legacy(gw, role, **callbacks)


async def test_its_tools_are_listed_as_pinned_and_called_through_the_gateway(gw: RunningGateway) -> None:
    async with caller(gw) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
        echoed = await c.call_tool("everything.echo", {"message": "hi"})
        summed = await c.call_tool("everything.get-sum", {"a": 2, "b": 3})
    assert listed["everything.echo"].description == pins_of(gw)["echo"]["description"]
    assert "everything.gzip-file-as-resource" not in listed  # kind create: not for a viewer
    assert "everything.get-annotated-message" not in listed  # pinned, no kind: not served
    assert echoed.content[0].text == "Echo: hi"
    assert "is 5" in summed.content[0].text


async def test_images_and_structured_content_pass_through(gw: RunningGateway) -> None:
    async with caller(gw) as c:
        image = await c.call_tool("everything.get-tiny-image", {})
        structured = await c.call_tool("everything.get-structured-content", {"location": "New York"})
    assert any(block.type == "image" and block.mime_type == "image/png" for block in image.content)
    assert not structured.is_error and structured.structured_content is not None


async def test_progress_sampling_and_elicitation_reach_the_caller(gw: RunningGateway) -> None:
    progress: list[float] = []
    asked: list[str] = []
    three = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)
        if len(progress) == 3:
            three.set()

    async def sample(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append("sampling")
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="forty-two"),
                                         model="relay-test")

    async def elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append("elicitation")
        return types.ElicitResult(action="decline")

    async with caller(gw, sampling_callback=sample, elicitation_callback=elicit) as c:
        long = await c.call_tool("everything.trigger-long-running-operation", {"duration": 0.3, "steps": 3},
                                 progress_callback=on_progress)
        with anyio.fail_after(30):  # progress rides the session's GET stream beside the answer
            await three.wait()
        sampled = await c.call_tool("everything.trigger-sampling-request", {"prompt": "the answer?"})
        elicited = await c.call_tool("everything.trigger-elicitation-request", {})
    assert not long.is_error and len(progress) == 3
    assert "forty-two" in sampled.content[0].text
    assert "declined" in elicited.content[0].text
    assert asked == ["sampling", "elicitation"]


async def test_a_denied_caller_is_refused_before_the_upstream(gw: RunningGateway) -> None:
    try:
        async with caller(gw) as c:
            await c.call_tool("everything.gzip-file-as-resource", {"name": "x", "data": "data:text/plain,hi"})
        raise AssertionError("a viewer called a create tool")
    except AssertionError:
        raise
    except BaseException as e:
        assert code_of(e) == "FORBIDDEN"


@pytest.mark.parametrize("gw", ["stdio"], indirect=True)  # an http upstream's environment is not ours to give
async def test_the_stdio_child_sees_only_path_and_the_proxy(gw: RunningGateway) -> None:
    assert gw.services.registry.providers["everything"].decl.transport == "stdio"
    async with caller(gw) as c:
        env = json.loads((await c.call_tool("everything.get-env", {})).content[0].text)
    assert set(env) <= {"PATH", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy"}, env
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:")


async def test_its_resources_and_prompts_are_relayed(gw: RunningGateway) -> None:
    async with caller(gw) as c:
        resources = (await c.list_resources()).resources
        prompts = [p.name for p in (await c.list_prompts()).prompts]
        text = next(r for r in resources if (r.mime_type or "").startswith("text/"))
        read = await c.read_resource(str(text.uri))
    assert resources and prompts and all(p.startswith("everything.") for p in prompts)
    assert read.contents and str(read.contents[0].uri) == str(text.uri)
