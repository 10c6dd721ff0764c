"""Redaction: vault secrets in any spelling, sensitive paths, credential-named keys, size caps, odd input,
log records; and a tool that uses a secret leaves it in no stored row, exported span or log line."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

import msgspec
import pytest
from mcp import Client, types
from mcp.server.lowlevel.server import Server
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.redact import MASK, SECRET_MARK, RedactingFilter, Redactor, secret_forms
from otel.tracing import TracingConfig, current_span_ids, enrich_call_span, http_span, setup_tracing

SECRET = "sk_live_9fQ2xW7pL0aZ"  # URL- and base64-unfriendly enough
ODD = 'p@ss/w0rd+x y&z"q'  # needs percent-encoding and JSON escaping


def redactor(*paths: str, secrets: tuple[str, ...] = (SECRET, ODD), **caps: int) -> Redactor:
    return Redactor(lambda: secrets, paths, **caps)


def leaks(value: Any, *secrets: str) -> list[str]:
    text = json.dumps(value, ensure_ascii=False)
    return [f for s in (secrets or (SECRET, ODD)) for f in secret_forms(s) if f in text]


# -- (a) secret values ----------------------------------------------------------------------


def test_a_secret_inside_a_longer_string_a_nested_list_and_a_key() -> None:
    value = {"msg": f"call with key={SECRET}; done", "deep": [[{"x": [f"<{SECRET}>"]}]],
             f"header-{SECRET}": "v", "same": SECRET}
    out = redactor().redact(value)
    assert out == {"msg": f"call with key={SECRET_MARK}; done", "deep": [[{"x": [f"<{SECRET_MARK}>"]}]],
                   f"header-{SECRET_MARK}": "v", "same": SECRET_MARK}


@pytest.mark.parametrize("prefix", ["", "a", "ab", "user:", "xyz:"])
def test_base64_at_every_alignment_and_both_alphabets(prefix: str) -> None:
    raw = f"{prefix}{SECRET}\xff-tail".encode()
    std, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    out = redactor().redact({"basic": f"Basic {std}", "url": url})
    assert SECRET_MARK in out["basic"] and SECRET_MARK in out["url"]
    assert not leaks(out)
    for encoded in (out["basic"].removeprefix("Basic "), out["url"]):  # what is left cannot spell it
        for piece in encoded.split(SECRET_MARK):
            assert SECRET not in base64.b64decode(piece + "===", altchars=b"-_")[:64].decode("latin-1")


def test_url_encoded_and_json_escaped_forms() -> None:
    for form in (quote(ODD, safe=""), quote(ODD, safe="").lower(), quote_plus(ODD), quote(ODD),
                 json.dumps(ODD)[1:-1]):
        assert form != ODD
        out = redactor().redact({"q": f"https://api.example.com/x?k={form}&z=1"})
        assert out == {"q": f"https://api.example.com/x?k={SECRET_MARK}&z=1"}, form


def test_short_secrets_are_ignored_and_secrets_can_change() -> None:
    current = ["tiny", SECRET]
    r = Redactor(lambda: current)
    assert r.redact(["tiny", SECRET]) == ["tiny", SECRET_MARK]
    current[:] = ["rotated-secret-value"]
    assert r.redact([SECRET, "x rotated-secret-value"]) == [SECRET, f"x {SECRET_MARK}"]


def test_a_failing_secret_source_keeps_the_last_secrets() -> None:
    calls = {"n": 0}

    def source() -> list[str]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("vault down")
        return [SECRET]

    r = Redactor(source)
    assert r.redact(SECRET) == SECRET_MARK
    assert r.redact(SECRET) == SECRET_MARK and r.secret_errors == 1


def test_overlapping_secrets_leave_nothing() -> None:
    inner, outer = "abcdefgh12", "XXabcdefgh12YY"
    out = Redactor(lambda: [inner, outer]).redact(f"{outer} {inner}")
    assert out == f"{SECRET_MARK} {SECRET_MARK}"


# -- (b) sensitive paths, (c) credential-named keys ------------------------------------------


def test_sensitive_paths_with_wildcards() -> None:
    r = redactor("args.token", "args.headers.*", "args.*.password", "args.items.*.pin", "**.card", "*.pwd")
    args = {"token": 7, "headers": {"Accept": "json", "trace": "t"}, "user": {"password": None, "name": "al"},
            "items": [{"pin": 1234, "n": 1}, {"pin": 5678}], "deep": {"a": {"b": {"card": "4111"}}},
            "Token2": "keep", "nested": {"token_count": 3}, "pwd": 1, "x": {"pwd": 2}}
    out = r.redact(args, root="args")
    assert out == {"token": MASK, "headers": {"Accept": MASK, "trace": MASK}, "user": {"password": MASK, "name": "al"},
                   "items": [{"pin": MASK, "n": 1}, {"pin": MASK}], "deep": {"a": {"b": {"card": MASK}}},
                   "Token2": MASK, "nested": {"token_count": MASK},  # these two: credential-named
                   "pwd": MASK, "x": {"pwd": 2}}  # `*` is one segment: "*.pwd" is args.pwd
    assert r.redact({"args": args})["args"]["headers"] == {"Accept": MASK, "trace": MASK}
    assert r.redact(args)["user"]["name"] == "al" and r.redact(args)["headers"]["Accept"] == "json"  # no root
    assert redactor("ARGS.Headers.ACCEPT").redact({"headers": {"accept": "x"}}, root="args") == {"headers": {
        "accept": MASK}}
    assert redactor("args").redact({"a": 1}, root="args") == MASK


@pytest.mark.parametrize("key", ["authorization", "Authorization", "X-Api-Key", "api_key", "apiKey", "APIKEY",
                                 "access_token", "client_secret", "PASSWORD", "db_password", "database_dsn", "DSN",
                                 "Cookie", "Set-Cookie", "privateKey", "aws_credentials"])
def test_credential_named_keys_at_any_depth(key: str) -> None:
    value = {key: "v", "a": [{"b": {key: {"nested": "v"}}}], "keep": {key: None, "flag": {key: True}}}
    assert redactor().redact(value) == {key: MASK, "a": [{"b": {key: MASK}}],
                                        "keep": {key: None, "flag": {key: True}}}


def test_ordinary_keys_are_kept() -> None:
    value = {"author": "x", "path": "/a", "tokenizer_name": "keep?", "description": "plain words"}
    out = redactor().redact(value)
    assert out["author"] == "x" and out["path"] == "/a" and out["description"] == "plain words"
    assert out["tokenizer_name"] == MASK  # a substring match errs on the side of masking


def test_tokens_in_text_are_masked() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    r = Redactor()
    assert r.redact_text(f"auth {jwt} ok") == "auth [REDACTED:jwt] ok"
    assert r.redact_text("Authorization: Bearer abc123def456ghi789") == f"Authorization: Bearer {MASK}"
    assert r.redact_text("the bearer of this letter, the bearer bond") == "the bearer of this letter, the bearer bond"
    assert r.redact({"note": f"tok={jwt}"}) == {"note": "tok=[REDACTED:jwt]"}


# -- (d) caps ---------------------------------------------------------------------------------


def test_long_strings_are_cut_with_a_marker() -> None:
    out = redactor(max_string=100).redact({"s": "a" * 12445, "k" * 150: 1})
    assert out["s"] == "a" * 100 + "…[truncated 12345 chars]"
    assert list(out)[1] == "k" * 100 + "…[truncated 50 chars]"


def test_a_secret_across_the_cut_leaves_no_prefix() -> None:
    text = "." * 95 + SECRET + "." * 100
    out = redactor(max_string=100).redact(text)
    assert out == "." * 95 + "[REDA…[truncated 115 chars]"


def test_a_large_tree_becomes_a_marker_with_a_redacted_preview() -> None:
    value = {"rows": [f"row {i} {SECRET}" for i in range(200)]}
    out = redactor(max_bytes=2048).redact(value)
    exact = len(json.dumps(redactor(max_bytes=10**9).redact(value), ensure_ascii=False, separators=(",", ":")))
    assert out["_truncated"] is True and out["bytes"] == exact and "lower_bound" not in out
    assert out["preview"].startswith('{"rows":["row 0 [REDACTED:secret]"') and len(out["preview"]) == 512
    assert not leaks(out)
    huge = redactor(max_bytes=2048).redact(list(range(10**6)))
    assert huge["_truncated"] and huge["lower_bound"] and huge["preview"].startswith("[0,1,2,")
    nested = redactor(max_bytes=2048).redact({"data": {"items": ["x" * 50] * 10**6}})
    assert nested["preview"].startswith('{"data":{"items":["xxx')


# -- odd input ---------------------------------------------------------------------------------


@dataclass
class Point:
    x: int
    label: str


class Struct(msgspec.Struct):
    name: str
    when: datetime


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


def test_odd_input_never_raises_and_gives_plain_json() -> None:
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    lst: list[Any] = [1]
    lst.append(lst)
    shared = {"k": "v"}
    value = {"bytes": b"\xffkey " + SECRET.encode(), "ba": bytearray(b"ab"), 1: "int", None: "none", False: "f",
             (1, 2): "tuple", 1.5: "f", "nan": math.nan, "inf": -math.inf, "big": 10**30, "huge": 7**20000,
             "set": {3, 1, 2}, "mixed": {1, "a", None}, "dc": Point(1, SECRET), "struct": Struct("s", datetime(
                 2026, 1, 1, tzinfo=UTC)), "bad": Unprintable(), "cyclic": cyclic, "lst": lst,
             "shared": [shared, shared], "tuple": (1, "a")}
    before = copy.deepcopy({k: v for k, v in value.items() if k not in ("cyclic", "lst", "bad")})
    out = redactor().redact(value)
    json.dumps(out, allow_nan=False)
    assert out["bytes"] == f"\\xffkey {SECRET_MARK}" and out["ba"] == "ab"
    assert [out[k] for k in ("1", "null", "false", "1.5")] == ["int", "none", "f", "f"]
    assert out["(1, 2)"] == "tuple"
    assert (out["nan"], out["inf"], out["big"]) == ("NaN", "-Infinity", str(10**30))
    assert out["huge"].startswith("[int of ")
    assert out["set"] == [1, 2, 3] and out["mixed"] == [None, 1, "a"]  # by type name, then text
    assert out["dc"] == {"x": 1, "label": SECRET_MARK}
    assert out["struct"] == {"name": "s", "when": "2026-01-01T00:00:00Z"}
    assert out["bad"] == "[unprintable Unprintable]"
    assert out["cyclic"] == {"name": "loop", "self": "[cycle]"} and out["lst"] == [1, "[cycle]"]
    assert out["shared"] == [{"k": "v"}, {"k": "v"}] and out["tuple"] == [1, "a"]
    assert {k: v for k, v in value.items() if k not in ("cyclic", "lst", "bad")} == before  # not mutated
    assert redactor().redact(value) == out  # deterministic


def test_colliding_keys_are_both_kept() -> None:
    assert redactor().redact({1: "a", "1": "b"}) == {"1": "a", "1#2": "b"}


def test_very_deep_nesting() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"d": [deep]}
    out = redactor().redact(deep)
    text = json.dumps(out)
    assert "[too deep]" in text and "leaf" not in text


def test_scalars_at_the_root() -> None:
    r = redactor()
    assert [r.redact(v) for v in (None, True, 3, 2.5, SECRET, b"x")] == [None, True, 3, 2.5, SECRET_MARK, "x"]


# -- logging ------------------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(who)s"))
    handler.addFilter(RedactingFilter(redactor()))
    logger = logging.getLogger("opsgate.test.redact")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_the_log_filter_scrubs_args_exceptions_and_extras(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("calling with %s and %r", SECRET, {"k": ODD}, extra={"who": f"key {SECRET}"})
    try:
        raise RuntimeError(f"upstream refused key {quote(ODD, safe='')}")
    except RuntimeError:
        logger.exception("tool failed", extra={"who": "-"})
    logger.warning("bad format %d", SECRET, extra={"who": "-"})  # a format error still gets scrubbed
    text = stream.getvalue()
    assert not [f for s in (SECRET, ODD) for f in secret_forms(s) if f in text], text
    assert "calling with [REDACTED:secret]" in text and "key [REDACTED:secret]" in text
    assert "RuntimeError: upstream refused key [REDACTED:secret]" in text and "Traceback" in text


def test_opsgate_serve_scrubs_uvicorns_own_log_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    # uvicorn gives its loggers handlers of their own that do not propagate to the root, and sets
    # them up when its Config is built: `opsgate serve` must filter those handlers as well.
    from gateway.cli.serve import uvicorn_config
    from gateway.config import GatewayConfig

    def handlers() -> list[logging.Handler]:
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        return [h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers]

    before = {id(h): list(h.filters) for h in handlers()}
    logging.getLogger().addHandler(root := logging.StreamHandler(io.StringIO()))
    try:
        uvicorn_config(lambda *_: None, GatewayConfig(), redactor())
        try:
            raise ConnectionError(f"upstream https://api.example.com/?key={quote_plus(ODD)} refused {SECRET}")
        except ConnectionError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        logging.getLogger("uvicorn.access").warning('%s - "GET /?t=%s HTTP/1.1" 200', "127.0.0.1", SECRET)
        text = capsys.readouterr()
    finally:
        logging.getLogger().removeHandler(root)
        for handler in handlers():  # as it was: later tests install filters of their own
            handler.filters[:] = before.get(id(handler), [])
    out = text.out + text.err
    assert "Exception in ASGI application" in out and "ConnectionError: upstream" in out and "GET /?t=" in out
    assert not [f for s in (SECRET, ODD) for f in secret_forms(s) if f in out], out
    assert any(isinstance(f, RedactingFilter) for f in root.filters)


# -- end to end: a tool that uses a vault secret ------------------------------------------------------


def test_a_tool_using_a_secret_leaves_it_in_no_row_span_or_log() -> None:
    import anyio

    vault = {"upstream_token": SECRET}
    handed_out: set[str] = set()

    def vault_get(name: str) -> str:  # the gateway's vault wrapper: remembers what it handed out
        value = vault[name]
        handed_out.add(value)
        return value

    r = Redactor(lambda: handed_out, ["args.headers.*"])
    spans = InMemorySpanExporter()
    provider = setup_tracing(TracingConfig(), exporters=[spans], scrubber=r)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(r))
    logger = logging.getLogger("opsgate.test.e2e")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    rows: list[dict[str, Any]] = []

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="vendor.items", input_schema={"type": "object"})])

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        token = vault_get("upstream_token")
        args = params.arguments or {}
        with http_span("GET", f"https://api.example.com/bot{token}/items?key={token}") as h:
            h.response(401)
        logger.debug("upstream answered 401 for token %s", token)
        result = {"echo": args, "used": token, "auth_header": f"Bearer {token}",
                  "blob": base64.b64encode(f"user:{token}".encode()).decode()}
        enrich_call_span(caller_id="u", role="viewer", tool=params.name, decision=True,
                         error_type=f"upstream said {token}")
        trace_id, span_id = current_span_ids()
        rows.append({"payload": r.redact(args, root="args"), "result": r.redact(result, root="result"),
                     "trace_id": trace_id, "span_id": span_id})
        return types.CallToolResult(content=[types.TextContent(type="text", text="done")])

    server = Server("t", on_list_tools=on_list_tools, on_call_tool=on_call_tool)

    async def main() -> None:
        async with Client(server) as client:
            await client.call_tool("vendor.items", {"q": f"find {SECRET}", "headers": {"X-Trace": "t"}})

    try:
        anyio.run(main)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()

    exported = [(s.name, dict(s.attributes or {}), [(e.name, dict(e.attributes or {})) for e in s.events],
                 s.status.description) for s in spans.get_finished_spans()]
    assert rows and exported and stream.getvalue()
    haystack = json.dumps(rows) + repr(exported) + stream.getvalue()
    assert not leaks(haystack, SECRET)
    assert rows[0]["payload"] == {"q": f"find {SECRET_MARK}", "headers": {"X-Trace": MASK}}
    assert rows[0]["result"]["auth_header"] == "Bearer [REDACTED]" or SECRET_MARK in rows[0]["result"]["auth_header"]
    assert rows[0]["trace_id"] is not None
    client_span = next(s for s in exported if s[0] == "GET")
    assert client_span[1]["url.full"] == f"https://api.example.com/bot{SECRET_MARK}/items?key=REDACTED"
