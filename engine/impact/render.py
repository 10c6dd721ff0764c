"""The impact reports as people read them: plain text for a terminal, markdown for a pull request.

Both renderings show every row of the report they are given and nothing else (the JSON form is
`msgspec.to_builtins` of the same report); grouping is by principal, then provider.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import groupby

import msgspec

from engine.impact.diff import PermissionDiff, Row, Side
from engine.impact.replay import ALLOW_TO_DENY, DENY_TO_ALLOW, Flip, ReplayReport

ARROW = {ALLOW_TO_DENY: "allow → deny", DENY_TO_ALLOW: "deny → allow"}
MARK = {"gains": "+", "loses": "-", "raised": "+", "lifted": "+", "lowered": "-", "added": "-", "changed": "~",
        "into force": "+", "out of force": "-"}


def _what(r: Row) -> str:
    if r.area == "tier":
        return f"limit [{r.bucket}] on {r.target}"
    if r.area == "tool":  # the gateway's own admin actions (opsgate.*) are actions, not tools
        return f"{'action' if r.provider == 'opsgate' else 'tool'} {r.target}"
    if r.area == "egress":
        return f"egress {r.target}"
    if r.area == "secret":
        return f"secret {r.target}"
    return f"exception {r.target}"


def _side(s: Side, area: str) -> str:
    ids = ", ".join(s.policy_ids) or "no policy"
    if area in ("tier", "exception"):  # the detail is the limit, or the exception's state
        return f"{s.detail} [{ids}]"
    return f"{'allow' if s.allowed else 'deny'} [{ids}]" + (f"; {s.detail}" if s.detail else "")


def _groups(rows: Iterable[Row]) -> Iterator[tuple[str, Iterator[tuple[str, list[Row]]]]]:
    for principal, by_principal in groupby(rows, key=lambda r: r.principal):
        yield principal, ((p, _merged(rs)) for p, rs in groupby(by_principal, key=lambda r: r.provider))


def _merged(rows: Iterable[Row]) -> list[Row]:
    """Rows that differ only in their target (one tier raised for every read tool of a provider, one
    forbid taking several tools) as one row naming every target: the JSON form keeps them apart."""
    out: list[Row] = []
    for _, same in groupby(rows, key=lambda r: (r.area, r.change, r.bucket, r.base, r.head)):
        group = list(same)
        out.append(msgspec.structs.replace(group[0], target=", ".join(r.target for r in group)))
    return out


def _summary(diff: PermissionDiff) -> str:
    kinds = Counter(r.change for r in diff.rows)
    widening = sum(r.widens for r in diff.rows)
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no differences"
    return f"{len(diff.rows)} change(s) ({parts}); widens access: {'yes' if diff.widens else 'no'} ({widening})"


def diff_text(diff: PermissionDiff) -> str:
    out = [f"Permission diff: {diff.base.label} [{diff.base.revision}] -> {diff.head.label} "
           f"[{diff.head.revision}] at {diff.at}",
           f"{diff.decisions} requests without arguments decided on each side; {_summary(diff)}"]
    for principal, providers in _groups(diff.rows):
        out.append("")
        out.append(principal)
        for provider, rows in providers:
            out.append(f"  {provider}")
            for r in rows:
                out.append(f"    {MARK.get(r.change, '~')} {r.change:<12} {_what(r)}")
                out.append(f"        base: {_side(r.base, r.area)}")
                out.append(f"        head: {_side(r.head, r.area)}")
    out += _arguments_text(diff)
    return "\n".join(out) + "\n"


def _arguments_text(diff: PermissionDiff) -> list[str]:
    if not diff.arguments:
        return []
    out = ["", "Decisions that depend on arguments (the no-argument rows above are not the whole story):"]
    for dep in diff.arguments:
        out.append(f"  {dep.action}: {dep.notice}")
        for p in dep.policies:
            out.append(f"    {p.policy_id} ({p.effect}, {p.status}): base {_paths(p.base)}; head {_paths(p.head)}")
    return out


def _paths(paths: tuple[str, ...] | None) -> str:
    return ", ".join(paths) if paths else "-"


def _md_side(s: Side, area: str) -> str:
    return _side(s, area).replace("|", "\\|")


def diff_markdown(diff: PermissionDiff) -> str:
    out = [f"### Policy impact: `{diff.base.label}` → `{diff.head.label}`", "",
           f"Bundles `{diff.base.revision}` → `{diff.head.revision}`, decided at {diff.at} "
           f"({diff.decisions} requests without arguments on each side). {_summary(diff)}."]
    if diff.widens:
        out += ["", "**This change widens access.**"]
    for principal, providers in _groups(diff.rows):
        out += ["", f"#### {principal}", "", "| | provider | what | base | head |", "|---|---|---|---|---|"]
        for provider, rows in providers:
            for r in rows:
                out.append(f"| {MARK.get(r.change, '~')} {r.change} | {provider} | {_what(r)} "
                           f"| {_md_side(r.base, r.area)} | {_md_side(r.head, r.area)} |")
    if diff.arguments:
        out += ["", "#### Decisions that depend on arguments", "",
                "For these actions the no-argument rows are not the whole story:", "",
                "| action | policy | effect | status | base reads | head reads |", "|---|---|---|---|---|---|"]
        for dep in diff.arguments:
            for p in dep.policies:
                out.append(f"| {dep.action} | `{p.policy_id}` | {p.effect} | {p.status} | {_paths(p.base)} "
                           f"| {_paths(p.head)} |")
    return "\n".join(out) + "\n"


# -- replay -------------------------------------------------------------------------------------

def _window(r: ReplayReport) -> str:
    took = f" in {r.seconds:.1f} s" if r.seconds is not None else ""
    return f"{r.since or 'the start'} to {r.until or 'now'}{took}"


def _totals(flips: list[Flip], field: str) -> str:
    c: Counter[str] = Counter()
    for f in flips:
        key = getattr(f, field)
        c[", ".join(key) or "(nothing permits it)" if isinstance(key, tuple) else key] += f.count
    return ", ".join(f"{k} {n}" for k, n in c.most_common())


def replay_text(r: ReplayReport) -> str:
    out = [f"Replay under bundle {r.bundle_revision}: {r.rows} audit rows from {_window(r)}",
           f"  {r.decisions} recorded decisions: {r.replayed} replayed ({r.unchanged} unchanged, "
           f"{r.allow_to_deny} allow → deny, {r.deny_to_allow} deny → allow), {r.not_replayable} not replayable",
           f"  {r.no_decision} rows recorded no decision"]
    for u in r.unreplayable:
        out.append(f"  not replayable ({u.reason}): {u.count}, e.g. {', '.join(u.examples)}")
    for direction in (DENY_TO_ALLOW, ALLOW_TO_DENY):
        flips = [f for f in r.flips if f.direction == direction]
        if not flips:
            continue
        out += ["", f"{ARROW[direction]}: {sum(f.count for f in flips)}",
                f"  by tool:   {_totals(flips, 'tool')}", f"  by role:   {_totals(flips, 'role')}",
                f"  by policy: {_totals(flips, 'policies')}"]
        for f in flips:
            out.append(f"  {f.count:>7}  {f.tool}  {f.role}  [{', '.join(f.policies) or 'nothing permits it'}]  "
                       f"e.g. {', '.join(f.examples)}")
    return "\n".join(out) + "\n"


def replay_markdown(r: ReplayReport) -> str:
    out = [f"### Replay under bundle `{r.bundle_revision}`", "",
           f"{r.rows} audit rows from {_window(r)}: {r.decisions} recorded decisions, {r.replayed} replayed "
           f"(**{r.allow_to_deny} allow → deny, {r.deny_to_allow} deny → allow**, {r.unchanged} unchanged), "
           f"{r.not_replayable} not replayable, {r.no_decision} without a decision."]
    if r.flips:
        out += ["", "| flip | tool | role | deciding policies | count | example events |", "|---|---|---|---|---:|---|"]
        for f in r.flips:
            out.append(f"| {ARROW[f.direction]} | {f.tool} | {f.role} | "
                       f"{', '.join(f'`{p}`' for p in f.policies) or 'nothing permits it'} | {f.count} | "
                       f"{', '.join(f'`{e}`' for e in f.examples)} |")
    if r.unreplayable:
        out += ["", "| not replayable because | count | example events |", "|---|---:|---|"]
        for u in r.unreplayable:
            out.append(f"| {u.reason} | {u.count} | {', '.join(f'`{e}`' for e in u.examples)} |")
    return "\n".join(out) + "\n"


__all__ = ["diff_markdown", "diff_text", "replay_markdown", "replay_text"]
