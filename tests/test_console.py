"""The console over plain HTTP, as an attacker would approach it: sessions, CSRF, headers, who sees what,
and the OAuth 2.1 + PKCE sign-in against a loopback authorization server (tests/oauth_server.py).
The browser's view of the same pages is tests/test_console_browser.py."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from litestar.stores.memory import MemoryStore

from gateway.console.guards import csrf_checked, flow_checked
from gateway.console.pages import CSP
from gateway.console.sessions import FLOW_COOKIE, SESSION_COOKIE, Sessions
from tests.console_env import ADMIN, CSRF, VIEWER, ConsoleGateway, console_gateway, csrf_of, signed_in
from tests.harness import free_port
from tests.oauth_server import AuthServer

TOKEN_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def cg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    with console_gateway(tmp_path_factory.mktemp("console"), trusted_proxies=("127.0.0.1",)) as running:
        running.calls("ops_viewer", "echo.ping", {"message": "viewer's"})
        running.calls("ops_admin", "echo.ping", {"message": "admin's"})
        yield running


def test_every_console_route_that_takes_a_body_checks_a_csrf_token() -> None:
    from litestar.handlers import HTTPRouteHandler

    from gateway.console.site import console_router

    def handlers(router: Any) -> Iterator[Any]:
        for route in router.routes:
            yield from (h for h in getattr(route, "route_handlers", ()) if isinstance(h, HTTPRouteHandler))

    posts = [h for h in handlers(console_router()) if h.http_methods - {"GET", "HEAD", "OPTIONS"}]
    assert len(posts) >= 5
    unchecked = [sorted(h.paths) for h in posts if not {csrf_checked, flow_checked} & set(h.guards or ())]
    assert unchecked == []


def test_every_answer_carries_the_strict_csp(cg: ConsoleGateway) -> None:
    anonymous = httpx.Client(base_url=cg.url, follow_redirects=False)
    admin = signed_in(cg, role="ops_admin")
    answers = [anonymous.get("/console/trail"), anonymous.get("/console/signin"),
               anonymous.post("/console/signin/token", data={"token": "x"}),  # refused: no flow token
               admin.get("/console/trail"), admin.get(f"/console/trail/{uuid.uuid4()}"),  # 404 page
               admin.get("/console/trail?caller=not-a-uuid")]  # 400 page
    assert [a.status_code for a in answers] == [303, 200, 403, 200, 404, 400]
    for a in answers:
        assert a.headers["content-security-policy"] == CSP
        assert a.headers["x-frame-options"] == "DENY" and a.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
    assert "<script>" not in answers[1].text.replace('<script src="/console/static/htmx.min.js"></script>', "")


def test_the_session_cookie_is_httponly_strict_and_dies_with_the_token(cg: ConsoleGateway) -> None:
    token = cg.gw.token("ops_viewer", ttl_s=600)
    client = httpx.Client(base_url=cg.url, follow_redirects=False)
    flow = CSRF.search(client.get("/console/signin").text)
    assert flow is not None
    r = client.post("/console/signin/token", data={"_csrf": flow[1], "token": token})
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert "httponly" in attrs and attrs["samesite"].lower() == "samesite=strict" and attrs["path"] == "Path=/console"
    assert "secure" not in attrs  # plain http here
    assert 0 < int(attrs["max-age"].split("=")[1]) <= 600  # no longer than the token lives
    assert token not in cookie and not TOKEN_LIKE.search(cookie)  # the cookie is an id, not the token


def test_behind_a_tls_proxy_the_cookies_are_secure_and_host_only(cg: ConsoleGateway) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"}  # from a trusted proxy
    page = httpx.get(cg.url + "/console/signin", headers=proxied)
    flow_cookie = next(c for c in page.headers.get_list("set-cookie") if c.startswith(f"__Host-{FLOW_COOKIE}="))
    assert "; Secure" in flow_cookie and "; Path=/;" in flow_cookie + ";"
    flow = CSRF.search(page.text)
    assert flow is not None
    # a browser sends Secure cookies over the TLS it spoke to the proxy; httpx here speaks http to us
    r = httpx.post(cg.url + "/console/signin/demo", data={"_csrf": flow[1], "role": "ops_viewer"},
                   headers={**proxied, "Cookie": flow_cookie.split(";")[0]})
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(f"__Host-{SESSION_COOKIE}="))
    assert "; Secure" in cookie and "; Path=/;" in cookie + ";" and "Domain" not in cookie
    # the plain-http name is not read for an https request: a cookie set over http cannot stand in
    plain = httpx.get(cg.url + "/console/trail", headers={**proxied, "Cookie": f"{SESSION_COOKIE}={_value(cookie)}"})
    assert plain.status_code == 303
    served = httpx.get(cg.url + "/console/trail", headers={**proxied, "Cookie": cookie.split(";")[0]})
    assert served.status_code == 200


def test_an_account_without_an_ops_role_is_not_signed_in(cg: ConsoleGateway) -> None:
    client = httpx.Client(base_url=cg.url, follow_redirects=False)
    flow = CSRF.search(client.get("/console/signin").text)
    assert flow is not None
    r = client.post("/console/signin/token", data={"_csrf": flow[1], "token": cg.gw.token(None)})
    assert r.status_code == 403 and "no ops role" in r.text and SESSION_COOKIE not in client.cookies


def _value(set_cookie: str) -> str:
    return set_cookie.split(";")[0].split("=", 1)[1]


@pytest.mark.parametrize("kind", ["forged", "expired", "foreign issuer"])
def test_a_token_the_api_refuses_opens_no_session(cg: ConsoleGateway, kind: str) -> None:
    claims = {"sub": ADMIN, "aud": "authenticated", "iss": cg.gw.issuer, "exp": int(time.time()) + 600,
              "app_metadata": {"ops_role": "ops_admin"}}
    if kind == "forged":
        token = jwt.encode(claims, b"k" * 32, algorithm="HS256")
    elif kind == "expired":
        token = jwt.encode({**claims, "exp": int(time.time()) - 3600}, cg.gw.secret, algorithm="HS256")
    else:
        token = jwt.encode({**claims, "iss": "https://evil.example/auth/v1"}, cg.gw.secret, algorithm="HS256")
    client = httpx.Client(base_url=cg.url, follow_redirects=False)
    flow = CSRF.search(client.get("/console/signin").text)
    assert flow is not None
    r = client.post("/console/signin/token", data={"_csrf": flow[1], "token": token})
    assert r.status_code == 401 and "that token was refused" in r.text
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/console/trail").status_code == 303


def test_sign_in_forms_need_their_flow_token(cg: ConsoleGateway) -> None:
    token = cg.gw.token("ops_admin")
    stranger = httpx.Client(base_url=cg.url, follow_redirects=False)
    assert stranger.post("/console/signin/token", data={"token": token}).status_code == 403
    other = httpx.Client(base_url=cg.url, follow_redirects=False)
    theirs = CSRF.search(other.get("/console/signin").text)
    assert theirs is not None
    stranger.get("/console/signin")  # a flow of its own, but the other browser's token (login CSRF)
    r = stranger.post("/console/signin/token", data={"_csrf": theirs[1], "token": token})
    assert r.status_code == 403 and SESSION_COOKIE not in stranger.cookies


def test_looking_at_the_sign_in_page_stores_nothing(cg: ConsoleGateway) -> None:
    """Anyone may load the sign-in page: its form token is a double-submit cookie, not a stored record,
    so a flood of visitors cannot fill the session store."""
    store = cg.app.state.console.sessions.store
    before = len(store._store)
    for _ in range(50):
        page = httpx.get(cg.url + "/console/signin")
        assert page.status_code == 200 and FLOW_COOKIE in page.cookies
    assert len(store._store) == before


def test_a_made_up_session_cookie_is_no_session(cg: ConsoleGateway) -> None:
    client = httpx.Client(base_url=cg.url, follow_redirects=False, cookies={SESSION_COOKIE: "A" * 43})
    r = client.get("/console/trail")
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"
    htmx = client.get("/console/trail/tail", headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/console/signin"


def test_state_changes_need_the_session_csrf_token(cg: ConsoleGateway) -> None:
    admin = signed_in(cg, role="ops_admin")
    other = signed_in(cg, role="ops_admin")
    for data, headers in (({}, {}), ({"_csrf": "forged"}, {}), ({"_csrf": csrf_of(other)}, {}),
                          ({}, {"X-CSRF-Token": csrf_of(other)})):
        r = admin.post("/console/signout", data=data, headers=headers)
        assert r.status_code == 403, (data, headers)
        assert admin.get("/console/trail").status_code == 200  # still signed in: nothing happened
    assert admin.post("/console/signout", headers={"X-CSRF-Token": csrf_of(admin)}).status_code == 303
    assert admin.get("/console/trail").status_code == 303


def test_refused_csrf_is_an_audit_row(cg: ConsoleGateway) -> None:
    admin = signed_in(cg, role="ops_admin")
    assert admin.post("/console/signout", data={"_csrf": "forged"}).status_code == 403

    async def rows() -> list[Any]:
        assert cg.gw.services.audit is not None
        return await cg.gw.services.audit.store.query(provider="opsgate", tool="console.csrf", limit=100)

    from tests.events_pg import run_sync

    found = run_sync(rows())
    assert found and found[-1].caller_id == ADMIN and found[-1].result["code"] == "CSRF"


def test_a_viewer_reads_only_their_own_rows_whatever_the_url_says(cg: ConsoleGateway) -> None:
    viewer = signed_in(cg, role="ops_viewer")
    admin = signed_in(cg, role="ops_admin")
    page = viewer.get(f"/console/trail?caller={ADMIN}")
    shown = set(re.findall(r'<td class="mono" title="([0-9a-f-]{36})">', page.text))
    assert shown == {VIEWER}
    admin_rows = re.findall(r'href="/console/trail/([0-9a-f-]{36})"', admin.get(f"/console/trail?caller={ADMIN}").text)
    assert admin_rows
    assert viewer.get(f"/console/trail/{admin_rows[0]}").status_code == 404  # not "forbidden": not theirs to know
    assert admin.get(f"/console/trail/{admin_rows[0]}").status_code == 200
    assert viewer.get("/console/exceptions/mcp-exception-netdata-5/approve").status_code == 403
    assert viewer.get("/console/policies/diff?candidate=viewers-comment").status_code == 403


def test_the_trail_filters_by_time_range_and_pages_by_cursor(cg: ConsoleGateway) -> None:
    admin = signed_in(cg, role="ops_admin")
    rows = re.compile(r'href="/console/trail/([0-9a-f-]{36})"')
    everything = rows.findall(admin.get("/console/trail").text)
    assert len(everything) >= 2
    assert rows.findall(admin.get("/console/trail?since=2999-01-01T00:00").text) == []
    assert rows.findall(admin.get("/console/trail?until=2000-01-01T00:00:00%2B00:00").text) == []
    assert admin.get("/console/trail?since=yesterday").status_code == 400
    assert admin.get("/console/trail?before=' or 1=1 --").status_code == 400  # a cursor is parsed, never SQL


def test_the_edge_checks_host_and_origin_on_the_console(cg: ConsoleGateway) -> None:
    admin = signed_in(cg, role="ops_admin")
    r = admin.post("/console/signout", headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf_of(admin)})
    assert r.status_code == 403 and "Origin" in r.text
    assert admin.get("/console/trail", headers={"Host": "evil.example"}).status_code == 421
    assert admin.get("/console/trail").status_code == 200  # the session survived both


def test_demo_users_only_under_demo_tokens(tmp_path: Path) -> None:
    with console_gateway(tmp_path, demo=False) as plain:
        client = httpx.Client(base_url=plain.url, follow_redirects=False)
        page = client.get("/console/signin")
        assert "data-role" not in page.text
        flow = CSRF.search(page.text)
        assert flow is not None
        r = client.post("/console/signin/demo", data={"_csrf": flow[1], "role": "ops_admin"})
        assert r.status_code == 404 and SESSION_COOKIE not in client.cookies


@pytest.mark.anyio
async def test_the_session_store_holds_no_usable_token_and_ends_at_exp() -> None:
    now = [1_000_000.0]
    store = MemoryStore()
    sessions = Sessions(store, clock=lambda: now[0])
    token = jwt.encode({"sub": "x"}, b"k" * 32, algorithm="HS256")  # any token-shaped text
    sid, lifetime = await sessions.open(token=token, user_id=ADMIN, role="ops_admin", exp=now[0] + 120, how="token")
    assert lifetime == 120
    raw = b"".join(v.data for v in store._store.values())
    assert token.encode() not in raw and sid.encode() not in raw
    assert not any(sid in k for k in store._store)
    found = await sessions.get(sid)
    assert found is not None and found[1] == token
    assert await sessions.get(sid[:-1] + ("A" if sid[-1] != "A" else "B")) is None
    now[0] += 121  # the token's exp has passed: so has the session
    assert await sessions.get(sid) is None


@pytest.mark.anyio
async def test_sessions_in_redis_are_shared_by_workers_and_hold_no_token(redis_url: str) -> None:
    from litestar.stores.redis import RedisStore

    namespace = f"opsgate-console-test-{uuid.uuid4().hex[:8]}"
    one, two = (Sessions(RedisStore.with_client(url=redis_url, namespace=namespace)) for _ in range(2))
    token = jwt.encode({"sub": "y"}, b"k" * 32, algorithm="HS256")
    sid, _ = await one.open(token=token, user_id=ADMIN, role="ops_admin", exp=time.time() + 60, how="token")
    found = await two.get(sid)  # another worker, the same store
    assert found is not None and found[1] == token
    import redis.asyncio as aioredis

    raw = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in raw.scan_iter(f"{namespace}*")]
        values = [await raw.get(k) for k in keys]
        assert keys and not any(sid.encode() in k for k in keys)
        assert not any(token.encode() in (v or b"") for v in values)
        await two.close(sid)  # signing out in one worker ends it in every worker
        assert await one.get(sid) is None
        for k in keys:
            await raw.delete(k)
    finally:
        await raw.aclose()


# -- OAuth 2.1 authorization code + PKCE --------------------------------------------------------------


@pytest.fixture(scope="module")
def oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleGateway, AuthServer]]:
    port = free_port()
    with AuthServer(role="ops_admin") as auth:
        client_id = "opsgate-console"
        auth.clients[client_id] = [f"http://127.0.0.1:{port}/console/oauth/callback"]
        with console_gateway(tmp_path_factory.mktemp("oauth"), demo=False, port=port, auth_issuer=auth.issuer,
                             jwks_url=auth.jwks_url, console_oauth_client=client_id) as running:
            yield running, auth


def _authorize(client: httpx.Client) -> tuple[str, dict[str, list[str]]]:
    start = client.get("/console/signin/oauth")
    assert start.status_code == 303, start.text
    location = start.headers["location"]
    return location, parse_qs(urlsplit(location).query)


def test_oauth_sign_in_with_pkce(oauth: tuple[ConsoleGateway, AuthServer]) -> None:
    cg, auth = oauth
    client = httpx.Client(base_url=cg.url, follow_redirects=False)
    assert "Sign in with Supabase" in client.get("/console/signin").text
    location, query = _authorize(client)
    assert location.startswith(auth.issuer + "/oauth/authorize")
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert "code_verifier" not in location  # the verifier stays on the server
    back = httpx.get(location, follow_redirects=False)
    assert back.status_code == 302
    done = client.get(back.headers["location"])
    assert done.status_code == 200 and 'http-equiv="refresh"' in done.text, done.text
    page = client.get("/console/trail")
    assert page.status_code == 200 and "ops_admin" in page.text and "oauth-user@example.com" in page.text


def test_oauth_callbacks_that_were_not_started_here_are_refused(oauth: tuple[ConsoleGateway, AuthServer]) -> None:
    cg, _ = oauth
    victim = httpx.Client(base_url=cg.url, follow_redirects=False)
    location, _ = _authorize(victim)
    back = httpx.get(location, follow_redirects=False)
    callback = urlsplit(back.headers["location"])
    code = parse_qs(callback.query)["code"][0]
    # an attacker's browser (no flow of its own) replaying the victim's callback
    attacker = httpx.Client(base_url=cg.url, follow_redirects=False)
    assert attacker.get(f"{callback.path}?{callback.query}").status_code == 400
    # the victim's flow with a state that is not its own
    r = victim.get(f"/console/oauth/callback?code={code}&state=forged")
    assert r.status_code == 400 and SESSION_COOKIE not in victim.cookies
    # a flow is good for one try: the real state after that is refused too
    assert victim.get(f"{callback.path}?{callback.query}").status_code == 400
    assert victim.get("/console/trail").status_code == 303


def test_oauth_code_replayed_in_a_new_flow_is_refused(oauth: tuple[ConsoleGateway, AuthServer]) -> None:
    cg, _ = oauth
    first = httpx.Client(base_url=cg.url, follow_redirects=False)
    location, _ = _authorize(first)
    code = parse_qs(urlsplit(httpx.get(location, follow_redirects=False).headers["location"]).query)["code"][0]
    assert first.get("/console/oauth/callback", params={"code": code, "state": parse_qs(urlsplit(location).query)
                                                         ["state"][0]}).status_code == 200
    second = httpx.Client(base_url=cg.url, follow_redirects=False)
    _, query = _authorize(second)
    r = second.get("/console/oauth/callback", params={"code": code, "state": query["state"][0]})
    assert r.status_code == 401 and "refused the code" in r.text  # codes work once; PKCE binds them too



# -- worker processes ---------------------------------------------------------------------------------


def test_a_console_session_works_on_every_worker_of_a_fleet(tmp_path: Path, redis_url: str) -> None:
    """`opsgate serve --workers 2 --demo-tokens`: the demo sign-in reaches the workers, and a session
    opened by one worker is honoured by the other (sessions live in Redis, like the limiter's counts)."""
    import shutil

    import redis

    from tests.conftest import POLICIES
    from tests.harness import serving_process

    shutil.copytree(POLICIES, tmp_path / "policies", ignore=shutil.ignore_patterns("tests"))
    port = free_port()
    argv = ["gateway.cli", "serve", "--workers", "2", "--port", str(port), "--policies", str(tmp_path / "policies"),
            "--state-dir", str(tmp_path / "state"), "--limiter", "redis", "--redis-url", redis_url, "--demo-tokens"]
    raw = redis.Redis.from_url(redis_url)
    before = set(raw.scan_iter("opsgate-console*"))
    with serving_process(argv, port, tmp_path / "fleet.log", "fleet", own_group=True, start_s=120) as fleet:
        client = httpx.Client(base_url=fleet.url, follow_redirects=False, timeout=30,
                              limits=httpx.Limits(max_keepalive_connections=0))  # a new connection each time
        flow = CSRF.search(client.get("/console/signin").text)
        assert flow is not None, fleet.log_tail()
        assert client.post("/console/signin/demo", data={"_csrf": flow[1], "role": "ops_viewer"}).status_code == 303
        opened = set(raw.scan_iter("opsgate-console*")) - before
        assert len(opened) == 1  # the session is in Redis, where every worker reads it
        statuses = [client.get("/console/trail").status_code for _ in range(20)]
        assert statuses == [200] * 20, fleet.log_tail()
        raw.delete(*opened)
    raw.close()


def test_a_row_decided_under_another_revision_says_so(tmp_path: Path) -> None:
    with console_gateway(tmp_path) as gw:
        gw.calls("ops_viewer", "echo.ping", {"message": "before the change"})
        admin = signed_in(gw, role="ops_admin")
        row = re.findall(r'href="/console/trail/([0-9a-f-]{36})"', admin.get("/console/trail?tool=echo.ping").text)[0]
        assert "not the active revision" not in admin.get(f"/console/trail/{row}").text
        (gw.root / "policies" / "later.cedar").write_text(
            '@id("later.nobody")\nforbid (principal == Ops::User::"nobody", action, resource);\n')
        ok, issues = gw.gw.services.reload_here()
        assert ok, issues
        page = admin.get(f"/console/trail/{row}").text
        assert "not the active revision" in page and "may not be what decided this call" in page


def test_the_monthly_review_is_a_page(cg: ConsoleGateway) -> None:
    viewer = signed_in(cg, role="ops_viewer")
    page = viewer.get("/console/exceptions/review")
    assert page.status_code == 200
    for section in ("Active", "Expiring within 14 days", "Expired (auto-revoked)", "Revoked", "Pending approval",
                    "Invalid"):
        assert section in page.text
