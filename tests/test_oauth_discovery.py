"""MCP authorization discovery end to end: the gateway as an OAuth 2.1 protected resource.

A loopback authorization server shaped like Supabase Auth (tests/oauth_server.py: RFC 8414 metadata,
an ES256 JWKS, dynamic client registration, an auto-approving /authorize with PKCE, a token endpoint
issuing real signed tokens) and the real gateway configured with that issuer's JWKS. The mcp SDK's
own OAuth client starts without a token, gets 401 with `resource_metadata`, follows it to the
authorization server, registers, authorizes, obtains a token and calls a tool: what MCP Inspector,
Claude or ChatGPT do against the gateway.

Also: RFC 9728 metadata at both well-known locations; every 401 (MCP and HTTP API) carries the
challenge, with `error="invalid_token"` only when a token was presented (RFC 6750 3.1); the accepted
audience is configurable, and set to the resource URI it accepts nothing else (both ways).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from gateway.config import GatewayConfig
from providers.echo import EchoProvider
from tests.conftest import POLICIES
from tests.harness import RunningGateway, code_of, free_port, running_gateway
from tests.oauth_server import USER_ID, AuthServer

pytestmark = pytest.mark.anyio

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


@pytest.fixture(scope="module")
def auth() -> Iterator[AuthServer]:
    with AuthServer(role="ops_viewer", audience_from_resource=True) as server:
        yield server


@contextlib.contextmanager
def gateway(tmp: Any, auth: AuthServer, *, resource_audience: bool) -> Iterator[RunningGateway]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp), auth_issuer=auth.issuer, jwks_url=auth.jwks_url,
                           public_url=base, auth_audience=base + "/mcp" if resource_audience else "authenticated")
    with running_gateway(config, providers=[EchoProvider()], port=port) as running:
        yield running


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, auth: AuthServer) -> Iterator[RunningGateway]:
    """Tokens must name this gateway's resource URI (an access-token hook issues them so)."""
    with gateway(tmp_path_factory.mktemp("state"), auth, resource_audience=True) as running:
        yield running


@pytest.fixture(scope="module")
def gw_supabase(tmp_path_factory: pytest.TempPathFactory, auth: AuthServer) -> Iterator[RunningGateway]:
    """The default audience: Supabase's "authenticated"."""
    with gateway(tmp_path_factory.mktemp("state"), auth, resource_audience=False) as running:
        yield running


def metadata_url(gw: RunningGateway) -> str:
    return gw.url + "/.well-known/oauth-protected-resource/mcp"


def challenge_params(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params = {}
    for part in rest.split(", "):
        key, _, value = part.partition("=")
        params[key] = value.strip('"')
    return params


# -- metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
async def test_protected_resource_metadata_names_the_resource_and_its_authorization_server(
        gw: RunningGateway, auth: AuthServer, path: str) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get(path, headers={"Origin": "https://claude.ai"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["resource"] == gw.url + "/mcp"
    assert doc["authorization_servers"] == [auth.issuer]
    assert doc["bearer_methods_supported"] == ["header"]
    assert r.headers["access-control-allow-origin"] == "*"  # browser clients read it cross-origin


# -- challenges -------------------------------------------------------------------------------------


async def test_a_401_without_a_token_points_at_the_metadata_and_claims_no_error(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        mcp = await http.post("/mcp", json=LIST, headers=MCP_HEADERS)
        api = await http.post("/v1/data/opsgate/authz", json={"input": {}})
        exceptions = await http.get("/v1/exceptions")
        reload = await http.post("/v1/policy/reload")
    for r in (mcp, api, exceptions, reload):
        assert r.status_code == 401, r.text
        params = challenge_params(r.headers["www-authenticate"])
        assert params == {"resource_metadata": metadata_url(gw)}, r.headers["www-authenticate"]


@pytest.mark.parametrize(("token", "reason"), [
    ("not-a-jwt", "malformed"), ("expired", "expired"), ("wrong-audience", "audience"),
])
async def test_a_401_for_a_refused_token_says_invalid_token(gw: RunningGateway, auth: AuthServer, token: str,
                                                           reason: str) -> None:
    bearer = {"not-a-jwt": "not-a-jwt", "expired": auth.mint(aud=gw.url + "/mcp", ttl_s=-3600),
              "wrong-audience": auth.mint(aud="authenticated")}[token]
    headers = {"Authorization": f"Bearer {bearer}"}
    async with httpx.AsyncClient(base_url=gw.url, headers=headers) as http:
        mcp = await http.post("/mcp", json=LIST, headers=MCP_HEADERS)
        api = await http.post("/v1/data/opsgate/authz", json={"input": {}})
    for r in (mcp, api):
        assert r.status_code == 401
        params = challenge_params(r.headers["www-authenticate"])
        assert params["resource_metadata"] == metadata_url(gw)
        assert params["error"] == "invalid_token"
        assert bearer not in r.headers["www-authenticate"] and bearer not in r.text
    assert mcp.json()["error"]["data"]["reason"] == reason


# -- audience -------------------------------------------------------------------------------------


async def test_with_the_resource_uri_as_audience_only_tokens_for_it_are_accepted(gw: RunningGateway,
                                                                                  auth: AuthServer) -> None:
    async with gw.client(auth.mint(aud=gw.url + "/mcp")) as c:
        assert not (await c.call_tool("echo.ping", {"message": "mine"})).is_error
    async with gw.client(auth.mint(aud=[gw.url + "/mcp", "authenticated"])) as c:
        assert not (await c.call_tool("echo.ping", {"message": "both"})).is_error
    for aud in ("authenticated", "http://127.0.0.1:1/mcp", gw.url, gw.url + "/mcp/"):
        with pytest.raises(BaseException) as refused:
            async with gw.client(auth.mint(aud=aud)) as c:
                await c.call_tool("echo.ping", {"message": "foreign"})
        assert code_of(refused.value) == "UNAUTHENTICATED", aud


async def test_with_the_default_audience_supabase_tokens_are_accepted_and_resource_tokens_are_not(
        gw_supabase: RunningGateway, auth: AuthServer) -> None:
    async with gw_supabase.client(auth.mint(aud="authenticated")) as c:
        assert not (await c.call_tool("echo.ping", {"message": "supabase"})).is_error
    with pytest.raises(BaseException) as refused:
        async with gw_supabase.client(auth.mint(aud=gw_supabase.url + "/mcp")) as c:
            await c.call_tool("echo.ping", {"message": "resource"})
    assert code_of(refused.value) == "UNAUTHENTICATED"


# -- the discovery flow, as a standard client runs it -----------------------------------------------


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class UserAgent:
    """The browser of a signed-in user: opens the authorization URL and hands back the redirect."""

    def __init__(self) -> None:
        self.redirect: dict[str, list[str]] = {}

    async def open(self, url: str) -> None:
        async with httpx.AsyncClient() as browser:
            r = await browser.get(url)
        assert r.status_code == 302, r.text
        self.redirect = parse_qs(urlsplit(r.headers["location"]).query)

    async def callback(self) -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=self.redirect["code"][0], state=self.redirect["state"][0])


@contextlib.asynccontextmanager
async def oauth_client(gw: RunningGateway, seen: list[httpx2.Response]) -> AsyncIterator[Client]:
    agent = UserAgent()
    provider = OAuthClientProvider(
        server_url=gw.url + "/mcp",
        client_metadata=OAuthClientMetadata(client_name="opsgate discovery test",
                                            redirect_uris=["http://127.0.0.1:9/callback"],  # type: ignore[list-item]
                                            grant_types=["authorization_code"], token_endpoint_auth_method="none"),
        storage=MemoryStorage(), redirect_handler=agent.open, callback_handler=agent.callback)

    async def keep(response: httpx2.Response) -> None:
        seen.append(response)

    http = httpx2.AsyncClient(auth=provider, event_hooks={"response": [keep]}, timeout=30)
    async with http, Client(streamable_http_client(gw.url + "/mcp", http_client=http)) as client:
        yield client


async def test_a_standard_client_discovers_authorizes_and_calls_a_tool(gw: RunningGateway, auth: AuthServer) -> None:
    seen: list[httpx2.Response] = []
    async with oauth_client(gw, seen) as client:
        result = await client.call_tool("echo.ping", {"message": "discovered"})
    assert not result.is_error and result.structured_content["message"] == "discovered"

    first = seen[0]
    assert str(first.request.url) == gw.url + "/mcp" and first.status_code == 401
    assert challenge_params(first.headers["www-authenticate"]) == {"resource_metadata": metadata_url(gw)}
    urls = [str(r.request.url) for r in seen]
    assert urls[1] == metadata_url(gw)  # followed the challenge, not a guess
    assert auth.issuer.replace("/auth/v1", "/.well-known/oauth-authorization-server/auth/v1") in urls
    assert auth.issuer + "/oauth/clients/register" in urls and auth.issuer + "/oauth/token" in urls
    # The token names this gateway's resource (RFC 8707), which is the only audience it accepts.
    assert auth.issued[-1]["aud"] == gw.url + "/mcp"
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(caller_id=USER_ID, tool="ping", limit=100)
    assert [r.payload["args"]["message"] for r in rows if r.payload].count("discovered") == 1
