"""Egress (constitution rule 5), end to end: a provider reaches loopback imitations of upstream
APIs through the real gateway with `self.http()`, and every bypass class in REFERENCE.md is
refused — userinfo, suffix confusion, trailing dot and case, IDN look-alikes, IP literals in
every notation, names resolving to loopback, redirects to a disallowed host, other schemes and
ports — each refusal an `echo.egress` run event with nothing secret in it.

The allowlist in the test bundle lets `echo` reach `http://127.0.0.1:<allowed server>` only;
a hand-written Cedar policy also lets it reach the *name* `localhost` on both servers (the YAML
allowlist takes only dotted names), so the connected-address check is what stands between
`localhost:<other server>` and a loopback connection.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from engine.allowlist import canonical_name
from gateway.config import GatewayConfig
from otel.events.model import RunEvent
from providers.echo import EchoProvider, PingInput
from providers.sdk import CallContext, EgressClient, EgressRefused
from providers.sdk.hostnames import HostRejected, address_class, canonical_host, inet_aton, parse_target
from tests.conftest import POLICIES
from tests.harness import RunningGateway, code_of, running_gateway

pytestmark = pytest.mark.anyio

SECRET_QUERY = "q-s3cr3t-in-the-query"  # pragma: allowlist secret
SECRET_PASSWORD = "pw-s3cr3t-in-userinfo"  # pragma: allowlist secret
SECRET_HEADER = "h-s3cr3t-in-a-header"  # pragma: allowlist secret
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


# -- the canonicaliser, over hostile inputs ---------------------------------------------------

CANONICAL = [
    ("HTTPS://API.Socket.DEV./v0", ("https", "api.socket.dev", 443)),          # case, one trailing dot
    ("https://api.socket.dev:443/", ("https", "api.socket.dev", 443)),
    ("https://api.socket.dev.evil.com/", ("https", "api.socket.dev.evil.com", 443)),  # suffix: a different host
    ("https://api.socket.dev#@evil.com", ("https", "api.socket.dev", 443)),     # '@' after '#' is no userinfo
    ("https://api.socket.dev?@evil.com", ("https", "api.socket.dev", 443)),
    ("https://аpi.socket.dev/", ("https", "xn--pi-6kc.socket.dev", 443)),      # Cyrillic а: a look-alike
    ("https://faß.de/", ("https", "xn--fa-hia.de", 443)),                      # IDNA 2008, as the client sends it
    ("https://api.socket.dev。evil.com/", ("https", "api.socket.dev.evil.com", 443)),  # ideographic full stop
    ("http://2130706433/", ("http", "127.0.0.1", 80)),                         # decimal
    ("http://0x7f000001/", ("http", "127.0.0.1", 80)),                         # hex
    ("http://017700000001/", ("http", "127.0.0.1", 80)),                       # octal
    ("http://0x7f.1/", ("http", "127.0.0.1", 80)),                             # mixed, short
    ("http://0177.1/", ("http", "127.0.0.1", 80)),
    ("http://127.1/", ("http", "127.0.0.1", 80)),
    ("http://127.0.0.1./", ("http", "127.0.0.1", 80)),
    ("http://0/", ("http", "0.0.0.0", 80)),
    ("http://[::1]:8080/", ("http", "::1", 8080)),
    ("http://[0:0:0:0:0:0:0:1]/", ("http", "::1", 80)),
    ("http://[::ffff:127.0.0.1]/", ("http", "127.0.0.1", 80)),                # IPv4-mapped IPv6
    ("http://[::ffff:7f00:1]/", ("http", "127.0.0.1", 80)),
    ("http://[::ffff:a9fe:a9fe]/", ("http", "169.254.169.254", 80)),
]

REFUSED = [
    "https://api.socket.dev@evil.com/",           # userinfo
    "https://api.socket.dev:443@evil.com/",
    f"https://user:{SECRET_PASSWORD}@api.socket.dev/",
    "https://evil.com\\@api.socket.dev/",         # backslash: parsers disagree
    "https://evil.com\\api.socket.dev/",
    "https://%61pi.socket.dev/",                  # percent-encoded host
    "https://api.socket.dev%2eevil.com/",
    "https://api.socket.dev%00.evil.com/",
    "https://ａｐｉ.socket.dev/",                  # fullwidth: not valid IDNA 2008
    "https://a\u200b.socket.dev/",                # zero-width space
    "http://[fe80::1%25eth0]/",                   # IPv6 zone id
    "http://[fe80::1%eth0]/",
    "http://0177.0.0.1/",                         # octal dotted quad (httpx refuses it; so do we)
    "http://1.2.3.4.5/",                          # numeric but not an address
    "http://0x/",
    "http://08.1/",
    "http://4294967296/",                         # 2**32
    "http://256.1.1.1.1/",
    "https://api.socket.dev../",                  # empty labels
    "https://.api.socket.dev/",
    "https://api_socket.dev/",
    "ftp://api.socket.dev/",                      # schemes
    "file:///etc/passwd",
    "gopher://api.socket.dev/",
    "//api.socket.dev/x",
    "https:api.socket.dev",
    " https://api.socket.dev/",
    "https://api.socket.dev:0/",                  # ports
    "https://api.socket.dev:99999/",
]


@pytest.mark.parametrize(("url", "expected"), CANONICAL)
def test_hosts_are_decided_in_one_canonical_spelling(url: str, expected: tuple[str, str, int]) -> None:
    t = parse_target(url)
    assert (t.scheme, t.host, t.port) == expected


@pytest.mark.parametrize("url", REFUSED)
def test_ambiguous_or_unreachable_urls_are_refused_before_any_decision(url: str) -> None:
    with pytest.raises(HostRejected) as e:
        parse_target(url)
    assert SECRET_PASSWORD not in e.value.reason


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("::ffff:169.254.169.254", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "private"),
    ("2002:7f00:1::", "special-purpose IPv6"), ("64:ff9b::7f00:1", "special-purpose IPv6"),
    ("fec0::1", "special-purpose IPv6"), ("::7f00:1", "special-purpose IPv6"),
    ("8.8.8.8", "public"), ("2606:4700::1111", "public"),
])
def test_address_classes(address: str, kind: str) -> None:
    import ipaddress

    assert address_class(ipaddress.ip_address(address)) == kind


def test_inet_aton_reads_what_resolvers_read() -> None:
    assert str(inet_aton(["10", "1"])) == "10.0.0.1"
    assert str(inet_aton(["0xa", "0", "0x1"])) == "10.0.0.1"
    assert str(inet_aton(["3232235777"])) == "192.168.1.1"
    assert inet_aton(["1", "2", "3", "256"]) is None
    assert inet_aton(["09"]) is None


def test_the_allowlist_and_the_client_spell_names_alike() -> None:
    """engine.allowlist canonicalises the entries, the SDK the requests: they must agree."""
    data = yaml.safe_load((POLICIES / "provider-allowlist.yaml").read_text())
    names = [e.removeprefix("*.") for entries in data.values() for e in entries]
    names += ["API.Socket.DEV.", "Sentry.IO", "xn--pi-6kc.socket.dev"]
    for name in names:
        assert canonical_host(name) == (canonical_name(name), False), name
    # Names outside ASCII: an entry must name the host the client really connects to. Under
    # IDNA 2003 "straße.de" was "strasse.de", a different host from httpx's "xn--strae-oqa.de".
    for name in ["straße.de", "Faß.example", "ς.gr", "Bücher.Example.", "xn--strae-oqa.de"]:
        client = httpx.URL(f"https://{name}/").raw_host.decode()
        assert canonical_host(client) == (canonical_name(name), False), (name, client)
    assert canonical_name("straße.de") != canonical_name("strasse.de")
    assert canonical_name("☃.net") is None and canonical_name("a\u200db.com") is None  # not valid IDNA 2008


def test_the_client_has_no_way_around_the_checks() -> None:
    p = EchoProvider()
    for kw in ({"transport": httpx.AsyncHTTPTransport()}, {"mounts": {}}, {"proxy": "http://127.0.0.1:1"},
               {"trust_env": True}):
        with pytest.raises(TypeError):
            EgressClient(p, **kw)
    assert isinstance(p.http(base_url="https://api.socket.dev", headers={"X": "y"}), EgressClient)


async def test_an_unbound_provider_reaches_nothing() -> None:
    async with EchoProvider().http() as http:
        with pytest.raises(PermissionError):
            await http.get("https://api.socket.dev/")


# -- loopback upstreams and the gateway ---------------------------------------------------------


class Upstream:
    """A loopback HTTP server that answers, redirects on request, and remembers every hit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: list[dict[str, str | None]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                upstream.hits.append({"path": parts.path, "host": self.headers.get("Host"),
                                      "authorization": self.headers.get("Authorization")})
                to = parse_qs(parts.query).get("to")
                if parts.path == "/redirect" and to:
                    self.send_response(302)
                    self.send_header("Location", to[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = f"hello from {upstream.name}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Fetcher(EchoProvider):
    """`echo.ping` whose message is a JSON request to make with `self.http()` (or, with
    `"validate": true`, to check with `validate_hostname` only)."""

    async def _ping(self, ctx: CallContext, args: PingInput) -> dict[str, str]:
        spec = json.loads(args.message)
        if spec.get("validate"):
            self.validate_hostname(spec["url"])
            return {"validated": "yes"}
        if spec.get("proxy_env"):  # what a hostile environment would set; undone below
            for var in PROXY_VARS:
                os.environ[var] = spec["proxy_env"]
        try:
            return await self._fetch(spec)
        finally:
            for var in PROXY_VARS:
                os.environ.pop(var, None)

    async def _fetch(self, spec: dict[str, Any]) -> dict[str, str]:
        async with self.http(follow_redirects=spec.get("follow", False), headers=spec.get("headers") or {},
                             timeout=10) as http:
            try:
                r = await http.get(spec["url"])
            except EgressRefused as e:
                if not spec.get("catch"):
                    raise
                return {"refused": e.code, "message": e.message}
        return {"status": str(r.status_code), "body": r.text, "hops": str(len(r.history))}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    a, b = Upstream("allowed"), Upstream("forbidden")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]) -> Iterator[RunningGateway]:
    a, b = upstreams
    root = tmp_path_factory.mktemp("egress")
    bundle = root / "policies"
    shutil.copytree(POLICIES, bundle, ignore=shutil.ignore_patterns("tests"))
    allowlist = yaml.safe_load((bundle / "provider-allowlist.yaml").read_text())
    allowlist["echo"] = [f"http://127.0.0.1:{a.port}", "api.example.com"]
    (bundle / "provider-allowlist.yaml").write_text(yaml.safe_dump(allowlist))
    (bundle / "egress-localhost.cedar").write_text("".join(
        f'@id("egress:echo:localhost:{port}")\n'
        f'permit (principal == Ops::Provider::"echo", action == Ops::Action::"egress",'
        f' resource == Ops::Host::"localhost")\n'
        f'when {{ context.scheme == "http" && context.port == {port} }};\n'
        for port in (a.port, b.port)))
    config = GatewayConfig(policies=str(bundle), state_dir=str(root / "state"))
    with running_gateway(config, providers=[Fetcher()]) as running:
        yield running


async def fetch(gw: RunningGateway, url: str, **spec: Any) -> Any:
    """The tool's answer, or the gateway's error code."""
    try:
        async with gw.client(gw.token("ops_admin")) as c:
            r = await c.call_tool("echo.ping", {"message": json.dumps({"url": url, **spec})})
        return r.structured_content
    except BaseException as e:
        return code_of(e)


async def egress_events(gw: RunningGateway) -> list[RunEvent]:
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(limit=10_000)
    return [r for r in rows if r.provider == "echo" and r.tool == "egress"]


async def last_refusal(gw: RunningGateway, before: int) -> dict[str, Any]:
    rows = await egress_events(gw)
    assert len(rows) == before + 1, "exactly one refusal event per refused request"
    rows.sort(key=lambda r: (r.created_at, r.id))
    row = rows[-1]
    assert row.result is not None and row.result["status"] == "refused"
    assert row.payload is not None
    return {**row.payload["args"], "result": row.result}


async def test_an_allowlisted_host_is_reached(gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    assert await fetch(gw, a.url + "/ok") == {"status": "200", "body": "hello from allowed", "hops": "0"}


@pytest.mark.parametrize("spelling", [
    "http://2130706433:{a}/ok", "http://0x7f.1:{a}/ok", "http://127.1:{a}/ok", "http://017700000001:{a}/ok",
    "HTTP://127.0.0.1.:{a}/ok", "http://[::ffff:127.0.0.1]:{a}/ok",
])
async def test_other_notations_of_an_allowlisted_address_are_that_address(
        gw: RunningGateway, upstreams: tuple[Upstream, Upstream], spelling: str) -> None:
    a, _ = upstreams
    answer = await fetch(gw, spelling.format(a=a.port))
    assert answer["body"] == "hello from allowed"


@pytest.mark.parametrize("spelling", [
    "http://127.0.0.1:{b}/x", "http://2130706433:{b}/x", "http://0x7f000001:{b}/x", "http://0x7f.1:{b}/x",
    "http://127.1:{b}/x", "http://0177.1:{b}/x", "http://127.0.0.1.:{b}/x", "http://[::ffff:127.0.0.1]:{b}/x",
    "http://[::1]:{b}/x", "http://0:{b}/x",
    "http://127.0.0.1:{a}@127.0.0.1:{b}/x",          # userinfo naming the allowed host
    "http://127.0.0.1:{b}\\@127.0.0.1:{a}/x",         # backslash: host read as {a}; refused  # pragma: allowlist secret
    "https://127.0.0.1:{a}/x",                        # allowlisted as http only
    "http://127.0.0.1.evil.test:{a}/x",
    "https://api.example.com.evil.test/x",            # suffix confusion
    "https://evilapi.example.com/x",
    "https://аpi.example.com/x",                      # IDN look-alike
    "http://api.example.com/x",                       # allowlisted for https only
    "https://api.example.com:8443/x",                 # odd port
    "https://api.socket.dev/x",                       # another provider's host (rule 7)
    "ftp://127.0.0.1:{a}/x",                          # another scheme
    "HTTP://LocalHost.:{b}/x",                        # case and trailing dot of a name resolving to loopback
    "http://localhost.evil.test:{a}/x",           # a name merely starting with an allowed one
])
async def test_bypass_spellings_are_refused_and_never_connect(
        gw: RunningGateway, upstreams: tuple[Upstream, Upstream], spelling: str) -> None:
    a, b = upstreams
    hits = len(b.hits)
    before = len(await egress_events(gw))
    assert await fetch(gw, spelling.format(a=a.port, b=b.port)) == "FORBIDDEN"
    assert len(b.hits) == hits
    event = await last_refusal(gw, before)
    assert event["provider"] == "echo" and event["reason"]


async def test_a_name_resolving_to_loopback_is_refused_unless_the_address_is_allowed(
        gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    # The policy permits the *name* localhost on both ports, but only 127.0.0.1:<a> as an address.
    before = len(await egress_events(gw))
    assert await fetch(gw, f"http://localhost:{b.port}/x") == "FORBIDDEN"
    assert not any(h["path"] == "/x" for h in b.hits)
    event = await last_refusal(gw, before)
    assert event["canonical_host"] == "localhost"
    assert event["address"] in ("127.0.0.1", "::1") and event["address_class"] == "loopback"
    # Name and address both allowed: it connects (to the checked address), Host stays the name.
    answer = await fetch(gw, f"http://LocalHost.:{a.port}/named")
    assert answer["body"] == "hello from allowed"
    assert a.hits[-1]["path"] == "/named" and a.hits[-1]["host"] == f"LocalHost.:{a.port}".lower()


async def test_every_redirect_hop_is_decided(gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    # allowed -> allowed is followed
    answer = await fetch(gw, f"{a.url}/redirect?to={a.url}/landed", follow=True)
    assert answer == {"status": "200", "body": "hello from allowed", "hops": "1"}
    # allowed -> disallowed is refused at the hop, before the disallowed server sees anything
    for target in (f"{b.url}/stolen", f"http://2130706433:{b.port}/stolen", f"http://localhost:{b.port}/stolen",
                   "https://api.socket.dev/stolen"):
        hits = len(b.hits)
        before = len(await egress_events(gw))
        assert await fetch(gw, f"{a.url}/redirect?to={target}", follow=True,
                           headers={"Authorization": f"Bearer {SECRET_HEADER}"}) == "FORBIDDEN"
        assert len(b.hits) == hits
        event = await last_refusal(gw, before)
        assert event["hop"] == 1 and event["redirected_from"] == f"{a.url}/redirect"


async def test_credentials_do_not_follow_a_redirect_to_another_origin(
        gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    auth = {"Authorization": f"Bearer {SECRET_HEADER}"}
    await fetch(gw, f"{a.url}/redirect?to={a.url}/same", follow=True, headers=auth)
    assert a.hits[-1]["path"] == "/same" and a.hits[-1]["authorization"] == f"Bearer {SECRET_HEADER}"
    # localhost:<a> is allowed too (name and address), but it is another origin.
    answer = await fetch(gw, f"{a.url}/redirect?to=http://localhost:{a.port}/other", follow=True, headers=auth)
    assert answer["hops"] == "1"
    assert a.hits[-1]["path"] == "/other" and a.hits[-1]["authorization"] is None


async def test_refusal_events_carry_no_secrets(gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    _, b = upstreams
    before = len(await egress_events(gw))
    assert await fetch(gw, f"{b.url}/p?token={SECRET_QUERY}#frag",
                       headers={"Authorization": f"Bearer {SECRET_HEADER}"}) == "FORBIDDEN"
    event = await last_refusal(gw, before)
    assert event["url"] == f"{b.url}/p" and event["hop"] == 0
    assert event["canonical_host"] == "127.0.0.1" and event["port"] == b.port and event["scheme"] == "http"
    assert event["result"]["decision_id"]
    assert await fetch(gw, f"http://user:{SECRET_PASSWORD}@127.0.0.1:{b.port}/") == "FORBIDDEN"
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(limit=10_000)
    # The refusal rows, and the answers (errors) of the calls: the test's own arguments carry the
    # secrets by construction, so the call rows' payloads are not what is checked here.
    text = repr(await egress_events(gw)) + repr([r.result for r in rows])
    for secret in (SECRET_QUERY, SECRET_PASSWORD, SECRET_HEADER):
        assert secret not in text


async def test_no_domain_fronting(gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    hits = len(a.hits)
    assert await fetch(gw, f"{a.url}/front", headers={"Host": f"127.0.0.1:{b.port}"}) == "FORBIDDEN"
    assert await fetch(gw, f"{a.url}/front", headers={"Host": "internal.example"}) == "FORBIDDEN"
    assert len(a.hits) == hits


async def test_proxy_settings_in_the_environment_are_ignored(
        gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    hits = len(b.hits)
    assert (await fetch(gw, a.url + "/direct", proxy_env=b.url))["body"] == "hello from allowed"
    assert len(b.hits) == hits


async def test_the_gateway_itself_is_not_reachable(gw: RunningGateway) -> None:
    """Rule 7: a provider gets no client for the gateway (or other providers behind it)."""
    assert await fetch(gw, gw.url + "/mcp") == "FORBIDDEN"
    assert await fetch(gw, gw.url.replace("127.0.0.1", "localhost") + "/v1/status") == "FORBIDDEN"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{a}/ok", "http://2130706433:{a}/ok", "http://[::ffff:127.0.0.1]:{a}/ok",
    "http://127.0.0.1:{b}/ok", "http://127.0.0.1:{a}@127.0.0.1:{b}/", "https://127.0.0.1:{a}/",
    "https://api.example.com.evil.test/",
    "http://127.0.0.1:{b}\\@127.0.0.1:{a}/",  # pragma: allowlist secret
    "http://[fe80::1%25eth0]:{a}/",
])
async def test_validate_hostname_agrees_with_the_client(
        gw: RunningGateway, upstreams: tuple[Upstream, Upstream], url: str) -> None:
    """The constitution's validateHostname export decides exactly as the client does."""
    a, b = upstreams
    url = url.format(a=a.port, b=b.port)
    validated = await fetch(gw, url, validate=True)
    fetched = await fetch(gw, url)
    assert (validated == "FORBIDDEN") == (fetched == "FORBIDDEN"), (validated, fetched)


async def test_refusals_raise_egress_refused_inside_the_provider(
        gw: RunningGateway, upstreams: tuple[Upstream, Upstream]) -> None:
    _, b = upstreams
    answer = await fetch(gw, b.url, catch=True)
    assert answer["refused"] == "FORBIDDEN" and answer["message"].startswith("echo may not reach 127.0.0.1")
