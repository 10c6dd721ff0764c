"""Issue 13 item 8: Host and Origin are decided by parsed scheme, host and port, for /mcp and /v1/*.

The mcp SDK's own guard compares by text prefix and so let `http://localhost:18200@evil.example` and
`http://localhost:evil` through on /mcp; the admin API had no check at all. Every hostile value here
goes over real HTTP to the real gateway (uvicorn, loopback) with a valid admin token, so the only
thing that can refuse it is the edge: 421 for a Host, 403 for an Origin. The friendly spellings of
the allowed hosts (case, a trailing dot, IPv6 in any notation, no Origin at all) still work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from gateway.edge import AllowedHosts
from gateway.serve import edge_of
from providers.echo import EchoProvider
from tests.conftest import POLICIES
from tests.harness import RunningGateway, running_gateway

pytestmark = pytest.mark.anyio

HOSTILE_ORIGINS = [
    "http://localhost:18200@evil.example",  # the issue's: userinfo before the real host
    "http://localhost:evil",  # the issue's: a port that is not a number
    "http://localhost.evil.com", "http://localhost.evil.com:8080", "http://127.0.0.1.evil.example:80",
    "http://evil.example", "http://evil.example:8080", "http://evillocalhost:8080",
    "http://127.0.0.1@evil.example", "http://localhost:8080@evil.example:80",
    "http://user:pw@localhost:8080",  # pragma: allowlist secret
    "http://localhost\\@evil.example", "http://localhost%2eevil.example", "http://localhost:8080/",
    "http://localhost:8080/path", "http://localhost:8080?q", "http://localhost:8080#f",
    "http://localhost:0", "http://localhost:65536", "http://localhost:-1", "http://localhost:+80",
    "http://localhost:80:80", "http://localhost:", "http://[::1]evil:8080", "http://[::1%25lo]:8080",
    "http://[::2]:8080", "http://::1:8080", "http://0x7f.1:8080", "http://127.1:8080",
    "https://localhost:8080",  # not listed: the default origins are plain http
    "null", "", "localhost:8080", "//localhost:8080", "file://localhost", "javascript://localhost:80",
    "http://localhost:8080, http://evil.example", "http://lоcalhost:8080".encode(),  # Cyrillic о, as UTF-8
]
FRIENDLY_ORIGINS = [
    "http://localhost:6274", "http://127.0.0.1:8080", "http://[::1]:3000", "http://LOCALHOST:8080",
    "http://localhost.:8080", "HTTP://localhost:8080", "http://[0:0:0:0:0:0:0:1]:80", "http://localhost",
    "http://[::ffff:127.0.0.1]:8080",
]
HOSTILE_HOSTS = [
    "evil.example", "evil.example:80", "localhost.evil.com:8080", "localhost:evil", "localhost:18200@evil.example",
    "127.0.0.1:8080@evil.example", "user@localhost:8080", "[::1]evil", "localhost:0", "localhost:99999",
    "localhost:8080/x", "127.0.0.1.nip.io:8080", "0x7f000001:8080", "[::1%lo]:8080", "localhost:8080,evil.example",
    "::1", "lоcalhost:8080".encode(),
]
FRIENDLY_HOSTS = ["localhost:8080", "127.0.0.1:1", "[::1]:8080", "LOCALHOST:8080", "localhost.:8080", "localhost"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path_factory.mktemp("state")),
                           trusted_proxies=("127.0.0.1",), edge_refusal_interval_s=0.2)
    with running_gateway(config, providers=[EchoProvider()]) as running:
        yield running


QUERY = {"input": {"principal": 'Ops::User::"u1"', "action": "echo.ping", "resource": 'Ops::Provider::"echo"'}}


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}}


async def attempt(gw: RunningGateway, surface: str, headers: dict[str, Any]) -> httpx.Response:
    """One request to `surface` with a valid ops_admin token and the given extra headers."""
    auth = {"Authorization": f"Bearer {gw.token('ops_admin')}"}
    async with httpx.AsyncClient(base_url=gw.url, headers=auth) as http:
        if surface == "/mcp":
            return await http.post("/mcp", json=INITIALIZE,
                                   headers={"Accept": "application/json, text/event-stream", **headers})
        if surface == "/v1/data":
            return await http.post("/v1/data/opsgate/authz", json=QUERY, headers=headers)
        return await http.get(surface, headers=headers)


SURFACES = ["/mcp", "/v1/data", "/v1/exceptions", "/v1/status", "/console/signin"]


@pytest.mark.parametrize("surface", SURFACES)
async def test_hostile_origins_are_refused_on_every_guarded_surface(gw: RunningGateway, surface: str) -> None:
    for origin in HOSTILE_ORIGINS:
        r = await attempt(gw, surface, {"Origin": origin})
        assert r.status_code == 403, (origin, r.status_code, r.text)
        assert "Origin" in r.json()["detail"]


@pytest.mark.parametrize("surface", SURFACES)
async def test_loopback_origins_in_any_spelling_and_no_origin_are_served(gw: RunningGateway, surface: str) -> None:
    for origin in [*FRIENDLY_ORIGINS, None]:
        r = await attempt(gw, surface, {"Origin": origin} if origin is not None else {})
        assert r.status_code == 200, (origin, r.status_code, r.text)


@pytest.mark.parametrize("surface", SURFACES)
async def test_hostile_hosts_are_refused_on_every_guarded_surface(gw: RunningGateway, surface: str) -> None:
    for host in HOSTILE_HOSTS:
        r = await attempt(gw, surface, {"Host": host})
        # 400: Litestar's router refuses a few (a path in the Host) before anything else runs.
        assert r.status_code in (421, 400), (host, r.status_code, r.text)


@pytest.mark.parametrize("surface", SURFACES)
async def test_loopback_hosts_in_any_spelling_are_served(gw: RunningGateway, surface: str) -> None:
    for host in FRIENDLY_HOSTS:
        r = await attempt(gw, surface, {"Host": host})
        assert r.status_code == 200, (host, r.status_code, r.text)


async def test_two_origin_headers_are_refused(gw: RunningGateway) -> None:
    auth = {"Authorization": f"Bearer {gw.token('ops_admin')}"}
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/v1/status", headers=[*auth.items(), ("Origin", "http://localhost:1"),
                                                  ("Origin", "http://evil.example")])
    assert r.status_code == 403


async def test_unguarded_surfaces_answer_any_host(gw: RunningGateway) -> None:
    """Health checks come from load balancers naming the gateway by address; they carry nothing to steal."""
    async with httpx.AsyncClient(base_url=gw.url) as http:
        assert (await http.get("/health/live", headers={"Host": "10.1.2.3:8080"})).status_code == 200


async def test_refused_hosts_and_origins_are_counted_for_the_audit_trail(gw: RunningGateway) -> None:
    client = "198.51.100.77"  # this test's own client, named by the (trusted) loopback peer
    for _ in range(3):
        await attempt(gw, "/v1/status", {"Origin": "http://localhost:18200@evil.example", "X-Forwarded-For": client})
    await attempt(gw, "/mcp", {"Host": "evil.example", "X-Forwarded-For": client})
    assert gw.services.audit is not None
    deadline = time.monotonic() + 60  # rows come with the next interval's flush: waited for, not timed
    while True:
        rows = [r for r in await gw.services.audit.store.query(provider="opsgate", tool="request.refused", limit=1000)
                if r.client_addr == client]
        counts: dict[str, int] = {}
        for args in (r.payload["args"] for r in rows if r.payload):
            counts[args["reason"]] = counts.get(args["reason"], 0) + args["count"]
        if counts == {"origin_not_allowed": 3, "host_not_allowed": 1} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert counts == {"origin_not_allowed": 3, "host_not_allowed": 1}


# -- the decision itself, and the configuration it comes from ---------------------------------------


def test_public_url_allows_its_own_host_and_https_origin_and_nothing_near_it() -> None:
    edge = edge_of(GatewayConfig(public_url="https://mcp.insightpulseai.com"))
    allowed = edge.allowed
    for host, scheme in [("mcp.insightpulseai.com", "https"), ("mcp.insightpulseai.com", "http"),
                         ("MCP.insightpulseai.com.", "https"), ("mcp.insightpulseai.com:443", "https"),
                         ("localhost:8080", "http")]:
        assert allowed.host_ok(host, scheme), host
    for host, scheme in [("mcp.insightpulseai.com:8443", "https"), ("mcp.insightpulseai.com:443", "http"),
                         ("evil-mcp.insightpulseai.com", "https"), ("mcp.insightpulseai.com.evil.com", "https"),
                         ("insightpulseai.com", "https"), ("x.mcp.insightpulseai.com", "https")]:
        assert not allowed.host_ok(host, scheme), host
    assert allowed.origin_ok("https://mcp.insightpulseai.com")
    assert allowed.origin_ok("https://mcp.insightpulseai.com:443")
    for origin in ["http://mcp.insightpulseai.com", "https://mcp.insightpulseai.com:8443",
                   "https://mcp.insightpulseai.com.evil.com", "https://mcp.insightpulseai.com@evil.com",
                   "https://evil.com#@mcp.insightpulseai.com"]:
        assert not allowed.origin_ok(origin), origin


def test_pattern_syntax_ports_and_wildcards() -> None:
    allowed = AllowedHosts(["*.example.com", "api.test:8443", "[2001:db8::1]:*", "10.0.0.5"],
                           ["https://*.example.com", "http://api.test:*"])
    assert allowed.host_ok("a.example.com", "https") and allowed.host_ok("a.b.example.com:443", "https")
    assert not allowed.host_ok("example.com", "https") and not allowed.host_ok("a.example.com:8443", "https")
    assert not allowed.host_ok("aexample.com", "https") and not allowed.host_ok("a.example.com.evil", "https")
    assert allowed.host_ok("api.test:8443", "http") and not allowed.host_ok("api.test", "https")
    assert allowed.host_ok("[2001:DB8:0::1]:9", "http") and not allowed.host_ok("[2001:db8::2]:9", "http")
    assert allowed.host_ok("10.0.0.5", "http") and allowed.host_ok("10.0.0.5:80", "http")
    assert not allowed.host_ok("10.0.0.5:8080", "http")
    assert allowed.origin_ok("https://x.example.com") and not allowed.origin_ok("http://x.example.com")
    assert allowed.origin_ok("http://api.test:1") and not allowed.origin_ok("https://api.test")


@pytest.mark.parametrize("bad", [
    {"allowed_hosts": ("localhost:evil",)}, {"allowed_hosts": ("user@localhost",)}, {"allowed_hosts": ("*.1.2.3.4",)},
    {"allowed_origins": ("localhost:8080",)}, {"allowed_origins": ("ftp://localhost",)},
    {"public_url": "https://mcp.example.com/gateway"}, {"public_url": "https://u@mcp.example.com"},
    {"public_url": "mcp.example.com"}, {"trusted_proxies": ("10.0.0.0/33",)}, {"auth_server": "ftp://auth"},
    {"auth_server": "http://auth.example.com"},
])
def test_a_setting_that_could_never_match_is_refused_at_start(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        edge_of(GatewayConfig(**bad))
