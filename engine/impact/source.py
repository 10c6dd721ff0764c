"""Where a bundle to compare comes from: a folder, the working tree, or a git revision.

Invariants:
- A git revision is read with `git archive` into a directory the caller owns (policies/ and
  exceptions/ as they were at that commit); the working tree, the index and HEAD are never
  touched, so `opsgate policy diff main` is safe in a dirty checkout.
- A folder is either a policies directory (it holds `schema.cedarschema`; its exceptions are the
  sibling `exceptions/`, the repository layout, when there is one) or a directory holding
  `policies/` (and maybe `exceptions/`).
- Loading reads files only; a bundle that does not load raises BundleError as the gateway would.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from engine.bundle import Bundle, load_bundle
from engine.exceptions import scan
from engine.exceptions.spec import FOLDER


class SourceError(ValueError):
    """A BASE or HEAD that names neither a bundle folder nor a git revision."""


@dataclass(frozen=True)
class Source:
    label: str  # how reports name it: the revision as given (and its commit), a folder, "working tree"
    policies: Path
    exceptions: Path | None = None


@dataclass(frozen=True)
class ExceptionState:
    state: str  # "in force", or why not: pending, expired, revoked, invalid, "refused: ..."
    provider: str
    rule: str
    policy_ids: tuple[str, ...] = ()  # the policies it compiled to (in force only)


@dataclass(frozen=True)
class Loaded:
    """One side of a comparison: the bundle, and the state of every exception in its directory."""

    label: str
    bundle: Bundle
    exceptions: dict[str, ExceptionState] = field(default_factory=dict)


def folder(path: str | Path, label: str | None = None) -> Source:
    root = Path(path)
    if (root / "schema.cedarschema").is_file():
        sibling = root.parent / "exceptions"
        return Source(label or str(path), root, sibling if sibling.is_dir() else None)
    if (root / "policies").is_dir():
        ex = root / "exceptions"
        return Source(label or str(path), root / "policies", ex if ex.is_dir() else None)
    raise SourceError(f"{path}: not a bundle folder (no schema.cedarschema, no policies/)")


def working_tree(policies: str | Path, exceptions: str | Path | None) -> Source:
    ex = Path(exceptions) if exceptions is not None and Path(exceptions).is_dir() else None
    return Source("working tree", Path(policies), ex)


def _git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceError(f"git {args[0]}: {e}") from None
    if done.returncode != 0:
        raise SourceError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def git_revision(rev: str, *, policies: str | Path, exceptions: str | Path | None, into: Path) -> Source:
    """The bundle at git revision `rev` of the repository holding `policies`, extracted under `into`.
    `policies` and `exceptions` are paths in the working tree; the same paths are read at `rev`."""
    policies = Path(policies).resolve()
    start = policies if policies.is_dir() else policies.parent
    top = Path(_git(start, "rev-parse", "--show-toplevel").decode().strip())
    try:
        commit = _git(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}").decode()
    except SourceError:
        raise SourceError(f"{rev!r} is neither a bundle folder nor a revision of the git repository at {top}") \
            from None
    commit = commit.strip()
    wanted = [_inside(top, policies)]
    if exceptions is not None:
        wanted.append(_inside(top, Path(exceptions).resolve()))
    present = [p for p in wanted if _git(top, "ls-tree", "-d", "--name-only", commit, "--", p).strip()]
    if wanted[0] not in present:
        raise SourceError(f"{rev}: no {wanted[0]}/ at commit {commit[:12]}")
    target = into / commit[:12]
    archive = _git(top, "archive", "--format=tar", commit, "--", *present)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")  # no absolute paths, no links out of `target`
    ex = target / wanted[1] if len(wanted) > 1 and wanted[1] in present else None
    return Source(f"{rev} ({commit[:12]})", target / wanted[0], ex)


def _inside(top: Path, path: Path) -> str:
    try:
        return path.relative_to(top.resolve()).as_posix()
    except ValueError:
        raise SourceError(f"{path} is not inside the git repository at {top}") from None


def resolve(spec: str, *, policies: str | Path, exceptions: str | Path | None, into: Path) -> Source:
    """BASE or HEAD as given on the command line: a bundle folder if one is there, else a git revision."""
    if Path(spec).is_dir():
        return folder(spec)
    return git_revision(spec, policies=policies, exceptions=exceptions, into=into)


def load(source: Source, at: datetime) -> Loaded:
    """Load a side as the gateway would at `at` (exceptions in force then compiled in)."""
    bundle = load_bundle(source.policies, exceptions=source.exceptions, now=at)
    return Loaded(source.label, bundle, exception_states(bundle, source.exceptions, at))


def exception_states(bundle: Bundle, directory: str | Path | None, at: datetime) -> dict[str, ExceptionState]:
    """Every exception in `directory` and whether it is in force in `bundle` at `at` (else why not)."""
    compiled = bundle.exceptions
    in_force = set(compiled.status(at)["active"]) if compiled is not None else set()
    refused = dict(compiled.refused) if compiled is not None else {}
    out: dict[str, ExceptionState] = {}
    for record in scan(directory) if directory is not None else []:
        m = FOLDER.match(record.id)
        provider, rule = (m["provider"], m["rule"]) if m else ("?", "?")
        if record.id in in_force:
            ids = tuple(sorted(p.id for p in (*bundle.policies, *bundle.tiers)
                               if p.annotations.get("exception") == record.id))
            out[record.id] = ExceptionState("in force", provider, rule, ids)
        elif record.id in refused:
            out[record.id] = ExceptionState(f"refused: {refused[record.id]}", provider, rule)
        else:
            out[record.id] = ExceptionState(record.state(at), provider, rule)
    return out


__all__ = ["ExceptionState", "Loaded", "Source", "SourceError", "exception_states", "folder", "git_revision", "load",
           "resolve", "working_tree"]
