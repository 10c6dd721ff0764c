"""Where a policy comes from: its file in the bundle and its text as written there.

    source = policy_source(bundle, "rbac.viewer.read")
    source.file, source.text, source.written   # False: rendered from the compiled form

Invariants:
- The text is cut from the bundle's own file, from the policy's first annotation to its closing
  `;`, by a scanner that knows Cedar's strings and `//` comments, its only kind (a `;` or `@id`
  inside either is not structure). Only a policy the file holds under exactly that `@id` is cut.
- Where no file holds it (exceptions compile to policies of their own), the text is Cedar's own
  rendering of the compiled policy and says so (`written` False): never a guess.
- Reads only files under the bundle root (the engine's one kind of I/O); never raises for a
  missing or unreadable file, it falls back to the rendering.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cedarpy

from engine.bundle import Bundle

_ID = re.compile(r'@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)')


@dataclass(frozen=True)
class PolicySource:
    id: str
    file: str  # as the bundle names it (relative to the bundle root), or where it was compiled from
    effect: str
    mode: str
    text: str
    written: bool  # True: the file's own text; False: Cedar's rendering of the compiled policy


def statements(text: str) -> list[str]:
    """The file's top-level statements, each up to and including its `;`, comments kept."""
    out: list[str] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':  # a string: skip to its closing quote, minding escapes
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
        elif c == ";":
            out.append(text[start:i + 1])
            start = i + 1
        i += 1
    return out


def _strip_comments(statement: str) -> str:
    """The statement without the comment lines and blank lines before it (those belong to the file)."""
    lines = statement.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("//")):
        lines.pop(0)
    return "\n".join(lines).strip()


@lru_cache(maxsize=64)
def _file_policies(path: str, mtime_ns: int) -> dict[str, str]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, str] = {}
    for statement in statements(text):
        body = _strip_comments(statement)
        m = _ID.search(body)
        if m is not None:
            found.setdefault(json.loads(f'"{m[1]}"'), body)
    return found


def _written(bundle: Bundle, file: str, policy_id: str) -> str | None:
    path = (bundle.root / file).resolve()
    if not path.is_relative_to(bundle.root.resolve()) or not path.is_file():
        return None
    return _file_policies(str(path), path.stat().st_mtime_ns).get(policy_id)


def _rendered(est: str, policy_id: str) -> str:
    try:
        text = cedarpy.policies_from_json_str(json.dumps({"staticPolicies": {policy_id: json.loads(est)},
                                                          "templates": {}, "templateLinks": []}))
    except (ValueError, TypeError):
        return est  # Cedar could not render it: its JSON form is still the exact policy
    return text.strip()


def policy_source(bundle: Bundle, policy_id: str) -> PolicySource | None:
    """The policy `policy_id` of `bundle`, or None when the bundle has no such policy."""
    record = bundle.by_id.get(policy_id)
    if record is None:
        return None
    text = _written(bundle, record.file, policy_id)
    return PolicySource(policy_id, record.file, record.effect, record.mode,
                        text if text is not None else _rendered(record.est, policy_id), text is not None)


__all__ = ["PolicySource", "policy_source", "statements"]
