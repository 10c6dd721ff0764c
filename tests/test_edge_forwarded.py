"""Issue 12: serving behind a proxy. The client address in every audit row is the real one: the socket
peer, or what the configured trusted proxies say, walked right to left; never a header from anyone
else.

The proof runs the gateway from a configuration file only (an opsgate.toml written here: a JWKS
issuer, the public URL https://mcp.insightpulseai.com, trusted proxy 127.0.0.1), reached through a
loopback reverse proxy that adds forwarded headers, for both header families. The call works and
its row carries the forwarded client; a client's own spoofed entry is ignored; from an untrusted
peer (127.0.0.3) the very same headers change nothing. The file is decoded straight into
GatewayConfig with msgspec's TOML decoder, as the configuration loader does; once `opsgate serve
--config` is in this branch the gateway can be started from it as a process.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.cli import build_parser
from gateway.cli.settings import resolve
from gateway.config import GatewayConfig
from gateway.config.loader import load
from gateway.edge import TrustedProxies
from gateway.serve import demo_user_id, mint_token, signing_key
from providers.echo import EchoProvider
from tests.conftest import POLICIES
from tests.harness import RunningGateway, free_port, running_gateway, serving_app, serving_process
from tests.oauth_server import USER_ID, AuthServer
from tests.reverse_proxy import ReverseProxy

pytestmark = pytest.mark.anyio

PUBLIC = "mcp.insightpulseai.com"
INTERNET_CLIENT = "203.0.113.7"
UNTRUSTED_PEER = "127.0.0.3"  # any 127/8 address is loopback on Linux; only 127.0.0.1 is trusted


# -- the derivation itself ----------------------------------------------------------------------------


def scope(peer: str | None, *headers: tuple[str, str], scheme: str = "http") -> dict[str, Any]:
    return {"type": "http", "scheme": scheme, "client": (peer, 5000) if peer else None,
            "headers": [(k.lower().encode(), v.encode()) for k, v in [("Host", "127.0.0.1:8080"), *headers]]}


XFF = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
RFC7239 = TrustedProxies(["127.0.0.1", "10.0.0.0/8"], "forwarded")


@pytest.mark.parametrize(("proxies", "request_scope", "client"), [
    # an untrusted peer: every forwarded header is ignored
    (XFF, scope("198.51.100.9", ("X-Forwarded-For", "203.0.113.7")), "198.51.100.9"),
    (RFC7239, scope("198.51.100.9", ("Forwarded", "for=203.0.113.7")), "198.51.100.9"),
    (TrustedProxies(), scope("127.0.0.1", ("X-Forwarded-For", "203.0.113.7")), "127.0.0.1"),
    # a trusted peer: the first untrusted address from the right
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "203.0.113.7")), "203.0.113.7"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "1.1.1.1, 203.0.113.7")), "203.0.113.7"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "1.1.1.1, 203.0.113.7, 10.1.2.3")), "203.0.113.7"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "203.0.113.7")), "203.0.113.7"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "10.0.0.1, 10.0.0.2")), "10.0.0.1"),  # all trusted: leftmost
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "203.0.113.7:51234")), "203.0.113.7"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "[2001:db9::7]:443")), "2001:db9::7"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "2001:DB9:0::7")), "2001:db9::7"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "::ffff:203.0.113.7")), "203.0.113.7"),
    # junk ends the walk at the proxy that forwarded it: never the junk itself
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "unknown")), "127.0.0.1"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "203.0.113.7, evil<script>, 10.0.0.9")), "10.0.0.9"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "fe80::1%eth0")), "127.0.0.1"),
    (XFF, scope("127.0.0.1", ("X-Forwarded-For", "")), "127.0.0.1"),
    # only the configured family is read: the other passes through proxies untouched
    (XFF, scope("127.0.0.1", ("Forwarded", "for=203.0.113.7")), "127.0.0.1"),
    (RFC7239, scope("127.0.0.1", ("X-Forwarded-For", "203.0.113.7")), "127.0.0.1"),
    (RFC7239, scope("127.0.0.1", ("Forwarded", 'for=1.1.1.1, for="[2001:db8::1]:80";proto=https')), "2001:db8::1"),
    (RFC7239, scope("127.0.0.1", ("Forwarded", "For=203.0.113.7;Proto=https, for=10.0.0.1")), "203.0.113.7"),
    (RFC7239, scope("127.0.0.1", ("Forwarded", "for=_hidden, for=10.0.0.1")), "10.0.0.1"),
    (RFC7239, scope("127.0.0.1", ("Forwarded", "for=unknown")), "127.0.0.1"),
    # no peer address (a unix socket)
    (XFF, scope(None, ("X-Forwarded-For", "203.0.113.7")), None),
])
def test_the_client_is_the_first_untrusted_hop_from_the_right(proxies: TrustedProxies, request_scope: dict[str, Any],
                                                              client: str | None) -> None:
    assert proxies.view(request_scope).address == client


def test_scheme_and_host_come_from_the_hop_that_named_the_client() -> None:
    view = XFF.view(scope("127.0.0.1", ("X-Forwarded-For", "9.9.9.9, 203.0.113.7"), ("X-Forwarded-Proto", "https"),
                          ("X-Forwarded-Host", PUBLIC)))
    assert (view.address, view.scheme, view.host, view.forwarded) == ("203.0.113.7", "https", PUBLIC, True)
    view = RFC7239.view(scope("127.0.0.1", ("Forwarded", f"for=203.0.113.7;proto=https;host={PUBLIC}")))
    assert (view.scheme, view.host) == ("https", PUBLIC)
    view = XFF.view(scope("198.51.100.9", ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example")))
    assert (view.scheme, view.host, view.forwarded) == ("http", "127.0.0.1:8080", False)
    view = XFF.view(scope("127.0.0.1", ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "gopher")))
    assert view.scheme == "http"


# -- the proof: a gateway from a config file, behind a loopback proxy ----------------------------------


@pytest.fixture(scope="module")
def auth() -> Iterator[AuthServer]:
    with AuthServer(role="ops_viewer") as server:
        yield server


def write_config(path: Path, auth: AuthServer, family: str) -> Path:
    state = path.parent / "state"
    path.write_text(f'''# opsgate.toml: a gateway behind a TLS-terminating proxy, tokens from a Supabase-style JWKS
policies = "{POLICIES}"
state_dir = "{state}"
auth_issuer = "{auth.issuer}"
jwks_url = "{auth.jwks_url}"
public_url = "https://{PUBLIC}"
trusted_proxies = ["127.0.0.1"]
forwarded_header = "{family}"
''')
    return path


@pytest.fixture(scope="module", params=["x-forwarded", "forwarded"])
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             auth: AuthServer) -> Iterator[tuple[RunningGateway, str, str]]:
    """(gateway, the proxy's URL, the header family), the gateway configured from its file only."""
    family = request.param
    path = write_config(tmp_path_factory.mktemp("deploy") / "opsgate.toml", auth, family)
    config = load(config_file=str(path)).config  # exactly what `opsgate serve --config <path>` runs with
    with running_gateway(config, providers=[EchoProvider()]) as gw, \
            serving_app(ReverseProxy(gw.url, family=family, client=INTERNET_CLIENT, public_host=PUBLIC)) as proxy:
        yield gw, proxy, family


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str, headers: dict[str, str] | None = None,
                     local_address: str | None = None) -> Any:
    transport = httpx2.AsyncHTTPTransport(local_address=local_address)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", **(headers or {})}, transport=transport,
                              timeout=30)
    async with http, Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
        yield client


async def row_of(gw: RunningGateway, message: str) -> Any:
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(caller_id=USER_ID, tool="ping", limit=1000)
    found = [r for r in rows if r.payload and r.payload["args"].get("message") == message]
    assert len(found) == 1, found
    return found[0]


async def test_through_the_proxy_the_row_has_the_forwarded_client(deployed: tuple[RunningGateway, str, str],
                                                                  auth: AuthServer) -> None:
    gw, proxy, _ = deployed
    message = f"via proxy {uuid.uuid4()}"
    # The client's own claim is kept by the proxy in front of its entry, and never read.
    async with mcp_client(proxy, auth.mint(), {"X-Forwarded-For": "198.51.100.66",
                                               "Forwarded": "for=198.51.100.66"}) as client:
        result = await client.call_tool("echo.ping", {"message": message})
    assert not result.is_error
    assert (await row_of(gw, message)).client_addr == INTERNET_CLIENT


async def test_a_decision_api_row_has_the_forwarded_client_too(deployed: tuple[RunningGateway, str, str],
                                                                auth: AuthServer) -> None:
    gw, proxy, _ = deployed
    marker = f"User::{uuid.uuid4()}"
    query = {"input": {"principal": f'Ops::User::"{marker}"', "action": "echo.ping",
                       "resource": 'Ops::Provider::"echo"'}}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {auth.mint(role='ops_admin')}"}) as http:
        r = await http.post(proxy + "/v1/data/opsgate/authz", json=query)
    assert r.status_code == 200, r.text
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(provider="opsgate", tool="decide", limit=1000)
    mine = [row for row in rows if row.payload and marker in json.dumps(row.payload)]
    assert [row.client_addr for row in mine] == [INTERNET_CLIENT]


async def test_from_an_untrusted_peer_the_same_headers_change_nothing(deployed: tuple[RunningGateway, str, str],
                                                                      auth: AuthServer) -> None:
    gw, _, _ = deployed
    message = f"direct {uuid.uuid4()}"
    spoofed = {"X-Forwarded-For": INTERNET_CLIENT, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
               "Forwarded": f"for={INTERNET_CLIENT};host=evil.example;proto=https"}
    async with mcp_client(gw.url, auth.mint(), spoofed, local_address=UNTRUSTED_PEER) as client:
        assert not (await client.call_tool("echo.ping", {"message": message})).is_error
    assert (await row_of(gw, message)).client_addr == UNTRUSTED_PEER


async def test_the_public_host_is_served_through_the_proxy_and_a_foreign_one_is_not(
        deployed: tuple[RunningGateway, str, str], auth: AuthServer) -> None:
    gw, _, family = deployed
    foreign = ReverseProxy(gw.url, family=family, client=INTERNET_CLIENT, public_host="evil.example")
    with serving_app(foreign) as evil_proxy:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {auth.mint()}"}) as http:
            r = await http.get(evil_proxy + "/v1/exceptions")
    assert r.status_code == 421


async def test_metadata_and_challenges_name_the_public_url_whatever_the_request_says(
        deployed: tuple[RunningGateway, str, str]) -> None:
    gw, proxy, _ = deployed
    async with httpx.AsyncClient() as http:
        direct = await http.get(gw.url + "/.well-known/oauth-protected-resource/mcp",
                                headers={"Host": "attacker.example", "X-Forwarded-Host": "attacker.example"})
        proxied = await http.get(proxy + "/.well-known/oauth-protected-resource")
        refused = await http.post(proxy + "/v1/data/opsgate/authz", json={"input": {}})
    for r in (direct, proxied):
        assert r.status_code == 200 and r.json()["resource"] == f"https://{PUBLIC}/mcp"
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == (
        f'Bearer resource_metadata="https://{PUBLIC}/.well-known/oauth-protected-resource/mcp"')


# -- `opsgate serve` itself --------------------------------------------------------------------------


def test_serve_flags_set_the_public_url_and_trusted_proxies() -> None:
    args = build_parser().parse_args(["serve", "--public-url", f"https://{PUBLIC}", "--trusted-proxy", "10.0.0.0/8",
                                      "--trusted-proxy", "127.0.0.1"])
    config = resolve(args).config
    assert (config.public_url, config.trusted_proxies) == (f"https://{PUBLIC}", ("10.0.0.0/8", "127.0.0.1"))
    assert resolve(build_parser().parse_args(["serve"])).config.trusted_proxies == ()


async def test_opsgate_serve_records_the_socket_peer_not_a_loopback_clients_header(tmp_path: Path) -> None:
    """uvicorn believes X-Forwarded-For from loopback peers by default; the gateway's process must not
    let it, or any local client could write any address into the audit trail."""
    state, port = tmp_path / "state", free_port()
    secret = signing_key(GatewayConfig(state_dir=str(state)))
    token = mint_token(secret, issuer=GatewayConfig().auth_issuer, user_id=demo_user_id("ops_viewer"),
                       role="ops_viewer")
    message = f"spoofing {uuid.uuid4()}"
    argv = ["gateway.cli", "serve", "--port", str(port), "--policies", str(POLICIES), "--state-dir", str(state)]
    with serving_process(argv, port, tmp_path / "serve.log", "gateway") as gw:
        async with mcp_client(gw.url, token, {"X-Forwarded-For": INTERNET_CLIENT,
                                              "Forwarded": f"for={INTERNET_CLIENT}"}) as client:
            assert not (await client.call_tool("echo.ping", {"message": message})).is_error
    with sqlite3.connect(state / "events.db") as conn:  # the process has stopped: its rows are committed
        rows = conn.execute("select payload, client_addr from run_events where tool = 'ping'").fetchall()
    assert [c for p, c in rows if json.loads(p)["args"]["message"] == message] == ["127.0.0.1"]
