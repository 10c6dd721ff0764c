"""`opsgate upstream pin|diff|check|list`: upstream MCP servers' pinned tool definitions.

- `pin NAME` connects to the upstream (through the same egress checks and vault reads as the
  gateway), lists its tools and writes `<bundle>/upstreams/NAME.pins.json` for review in a pull
  request. A tool already pinned whose input schema changed in a way rule 9 calls breaking is
  refused (serve it under a new name with `as:`, or file a rule-9 exception for `NAME.<tool>`).
  Tools without a kind in the declaration are listed with the kind their annotations suggest;
  the suggestion decides nothing.
- `diff NAME` shows how the live tools differ from their pins (exit 1 on any difference).
- `check [NAME]` says, per upstream, how it is reached, which isolation its child got (netns /
  proxy-env only / none, and why), what is served, and whether the live tools match the pins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser("upstream", help="upstream MCP servers: pin, diff, check their tools")
    sub = parser.add_subparsers(dest="upstream_command", required=True, metavar="SUBCOMMAND")
    for name, helptext, run in (("pin", "write NAME's tool definitions into the bundle", cmd_pin),
                                ("diff", "show how NAME's live tools differ from their pins", cmd_diff),
                                ("check", "isolation, served tools and drift of each upstream", cmd_check),
                                ("list", "declared upstreams and what each serves", cmd_list)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("name", nargs="?" if name in ("check", "list") else None)
        p.add_argument("--policies", default=None, help="policy bundle directory (default: policies)")
        p.add_argument("--state-dir", default=None, help="embedded vault and stores (default: .opsgate)")
        p.add_argument("--exceptions", default=None, help="deviation exceptions directory (default: exceptions)")
        p.add_argument("--format", choices=("text", "json"), default="text")
        p.set_defaults(run=run)


def _config(args: argparse.Namespace) -> Any:
    from gateway.config import GatewayConfig

    overrides = {k: v for k, v in {"policies": args.policies, "state_dir": args.state_dir,
                                   "exceptions": args.exceptions}.items() if v is not None}
    return GatewayConfig(**overrides)


def _with_upstreams(args: argparse.Namespace, work: Callable[[Any, dict[str, Any]], Awaitable[int]]) -> int:
    """Build the gateway's services (engine, vault, audit, every upstream adapter, bound), run
    `work(services, upstreams)` on a loop, and shut everything down again."""
    from engine.model import BundleError
    from gateway.serve import build_services

    config = _config(args)
    try:
        services, _ = build_services(config, providers=[])
    except BundleError as e:
        print(f"opsgate: the policy bundle is refused:\n{e}", file=sys.stderr)
        return 2
    upstreams = dict(services.registry.providers)
    if args.name and args.name not in upstreams:
        print(f"opsgate: no upstream {args.name!r} is declared in {config.policies}/upstreams/", file=sys.stderr)
        return 2

    async def main() -> int:
        if services.audit is not None:
            await services.audit.store.start()
        try:
            return await work(services, upstreams)
        finally:
            for provider in upstreams.values():
                await provider.stop()
            if services.audit is not None:
                await services.audit.store.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    from concurrent.futures import ThreadPoolExecutor  # called from async code (tests): a loop of its own

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def suggest_kind(definition: dict[str, Any]) -> str:
    """What the tool's own annotations suggest; a person decides (fail closed until they do)."""
    hints = definition.get("annotations") or {}
    if hints.get("readOnlyHint"):
        return "read (readOnlyHint)"
    if hints.get("destructiveHint"):
        return "create or comment at least (destructiveHint): decide with care"
    return "no hint: decide"


def cmd_pin(args: argparse.Namespace) -> int:
    from engine.upstreams import pins_of, render_pins
    from gateway.schema_versions import breaking_changes, rule9_waivers

    async def work(services: Any, upstreams: dict[str, Any]) -> int:
        provider = upstreams[args.name]
        live, server = await provider.live_definitions()
        waivers = rule9_waivers(services.engine.exceptions_dir or "exceptions")
        problems = []
        for name, pin in provider.pins.items():
            if name in live and name in provider.spec.served:
                full = f"{provider.name}.{provider.spec.served[name]}"
                problems += [f"{full}: {p}" for p in breaking_changes(
                    {full: {"input_schema": pin.input_schema}}, {full: {"input_schema": live[name].get(
                        "input_schema", {})}}, waivers)]
        if problems:
            for p in problems:
                print(f"breaking: {p}", file=sys.stderr)
            print("rule 9: serve the changed tool under a new name (`as:` in the declaration) or file a rule-9 "
                  "exception for it, then pin again", file=sys.stderr)
            return 1
        pins = pins_of(provider.name, list(live.values()), server=server,
                       pinned_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        path = Path(services.engine.bundle.root) / "upstreams" / f"{provider.name}.pins.json"
        path.write_text(render_pins(pins))
        print(f"{path}: pinned {len(pins.tools)} tools of {provider.name} ({server.get('name', '?')} "
              f"{server.get('version', '')}, protocol {server.get('protocol_version')})")
        unkinded = [t for t in sorted(live) if (provider.decl.tools.get(t) is None
                                                or provider.decl.tools[t].kind is None)]
        for tool in unkinded:
            print(f"  not served until the declaration gives it a kind: {tool}  (suggested: "
                  f"{suggest_kind(live[tool])})")
        print("review the pins in a pull request; the gateway serves them after a restart")
        return 0

    return _with_upstreams(args, work)


def cmd_diff(args: argparse.Namespace) -> int:
    from gateway.schema_versions import breaking_changes
    from providers.upstream_mcp.drift import compare

    async def work(services: Any, upstreams: dict[str, Any]) -> int:
        provider = upstreams[args.name]
        live, _ = await provider.live_definitions()
        changes = compare(provider.spec.pins, live)
        rows = []
        for c in changes:
            row: dict[str, Any] = {"tool": c.tool, "change": c.change, "diff": list(c.diff)}
            pin = provider.pins.get(c.tool)
            if c.change == "changed" and pin is not None and c.live is not None:
                old, new = pin.input_schema, c.live.get("input_schema", {})
                problems = breaking_changes({"t": {"input_schema": old}}, {"t": {"input_schema": new}})
                row["schema_change"] = "none" if old == new else ("breaking" if problems else "compatible")
                row["breaking"] = [p.removeprefix("t: ") for p in problems]
            rows.append(row)
        if args.format == "json":
            print(json.dumps({"upstream": provider.name, "changes": rows}, indent=1))
        elif not rows:
            print(f"{provider.name}: every pinned tool is listed exactly as pinned; nothing new")
        for row in rows if args.format == "text" else ():
            extra = f" (input schema: {row['schema_change']})" if "schema_change" in row else ""
            print(f"{provider.name}.{row['tool']}: {row['change']}{extra}")
            for line in row["diff"] + [f"breaking: {p}" for p in row.get("breaking", [])]:
                print(f"    {line}")
        return 1 if rows else 0

    return _with_upstreams(args, work)


def cmd_check(args: argparse.Namespace) -> int:
    async def work(services: Any, upstreams: dict[str, Any]) -> int:
        reports = []
        names = [args.name] if args.name else sorted(upstreams)
        for name in names:
            provider = upstreams[name]
            await provider.start()
            try:
                await provider.relist()
                reachable = None
            except Exception as e:  # the report says so
                from providers.upstream_mcp.pool import describe

                reachable = describe(e)
            report = provider.report()
            report["reachable"] = reachable or "yes"
            reports.append(report)
        if args.format == "json":
            print(json.dumps(reports, indent=1))
        for r in reports if args.format == "text" else ():
            print(f"{r['upstream']} ({r['transport']}): isolation {r['isolation']}"
                  + (f" - {r['why']}" if r["why"] else ""))
            print(f"  reachable: {r['reachable']}")
            print(f"  served: {', '.join(r['served']) or 'nothing'}")
            if r["unkinded"]:
                print(f"  pinned but without a kind (not served): {', '.join(r['unkinded'])}")
            for tool, why in r["drifted"].items():
                print(f"  not served, drifted: {tool}: {why}")
        bad = any(r["reachable"] != "yes" or r["drifted"] for r in reports)
        return 1 if bad else 0

    return _with_upstreams(args, work)


def cmd_list(args: argparse.Namespace) -> int:
    from engine.bundle import load_bundle

    bundle = load_bundle(_config(args).policies)
    for u in bundle.upstreams:
        if args.name and u.name != args.name:
            continue
        served = ", ".join(f"{u.name}.{v}" for v in u.served.values()) or "nothing"
        pinned = len(u.pins.tools) if u.pins is not None else 0
        print(f"{u.name} ({u.declaration.transport}): {pinned} pinned, serves {served}")
    return 0


__all__ = ["cmd_check", "cmd_diff", "cmd_list", "cmd_pin", "register"]
