"""The Socket tools' inputs (constitution rule 9: each carries an explicit `version`).

A breaking change to any of these needs a new tool name (`scan.repo.v2`); the committed
snapshot (providers/schemas.snapshot.json) and tests/test_schema_versions.py hold the line.
Slugs, ids and paths are constrained here because they end up in upstream URL paths and
multipart field names: a `../` never reaches Socket.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

Slug = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="an organization or repo slug")]
Ref = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\s~^:?*\[\\]+$",
                          description="the branch scanned; Socket's default branch when absent")]
Commit = Annotated[str, Meta(pattern=r"^[0-9a-f]{7,40}$", description="the commit hash scanned")]
# A manifest's path inside the repository: relative, no `..` segment, no control characters.
ManifestPath = Annotated[str, Meta(pattern=r"^(?!/)(?!(?:.*/)?\.\.(?:/|$))[A-Za-z0-9._@+/ -]{1,300}$")]
Purl = Annotated[str, Meta(pattern=r"^pkg:[a-z][a-z0-9.+-]*/\S{1,500}$")]
ScanId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,100}$", description="the diff scan's id")]
Org = Annotated[Slug | UnsetType, Meta(description="the organization slug; absent: the token's only organization")]


class ScanRepoInput(msgspec.Struct, forbid_unknown_fields=True):
    """Start a full scan of `repo` at `ref` from the manifest files given (path -> content)."""

    manifests: Annotated[dict[ManifestPath, str], Meta(min_length=1, max_length=200, description=(
        "manifest and lock files, path in the repository -> content (package.json, requirements.txt, ...)"))]
    repo: Slug
    version: Literal["1.0"] = "1.0"
    ref: Ref | UnsetType = UNSET
    commit: Commit | UnsetType = UNSET
    pull_request: Annotated[int, Meta(ge=1, description="the pull request number the scan belongs to")] | UnsetType \
        = UNSET
    org: Org = UNSET


class FindingsListInput(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal["1.0"] = "1.0"
    severity: Annotated[Literal["low", "medium", "high", "critical"] | UnsetType, Meta(
        description="only alerts of this severity; absent: all")] = UNSET
    status: Annotated[Literal["open", "cleared"], Meta(description="open alerts, or cleared ones")] = "open"
    repo: Slug | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=1000, description="most alerts to return, following pages as needed")] = 100
    cursor: Annotated[str, Meta(min_length=1, max_length=1000, description=(
        "resume from the next_cursor of an earlier answer"))] | UnsetType = UNSET
    org: Org = UNSET


class PackageScoreInput(msgspec.Struct, forbid_unknown_fields=True):
    # Socket takes up to 1024 per request at 100 quota units; 100 keeps an answer readable.
    purls: Annotated[list[Purl], Meta(min_length=1, max_length=100, description=(
        "package URLs, e.g. pkg:npm/express@4.19.2 (1-100)"))]
    version: Literal["1.0"] = "1.0"
    org: Org = UNSET


class ReposListInput(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal["1.0"] = "1.0"
    limit: Annotated[int, Meta(ge=1, le=1000, description="most repositories to return, following pages")] = 100
    cursor: Annotated[str, Meta(pattern=r"^\d{1,6}:\d{1,3}:\d{1,3}$", description=(
        "resume from the next_cursor of an earlier answer"))] | UnsetType = UNSET
    org: Org = UNSET


class TriageAnnotateInput(msgspec.Struct, forbid_unknown_fields=True):
    alert_key: Annotated[str, Meta(min_length=1, max_length=200, description="the alert's key (from findings.list)")]
    state: Annotated[Literal["block", "ignore", "inherit", "monitor", "warn"], Meta(
        description="the triage state to give the alert")]
    version: Literal["1.0"] = "1.0"
    note: Annotated[str, Meta(max_length=2000, description="why, for the next reader")] | UnsetType = UNSET
    org: Org = UNSET


class PrCommentInput(msgspec.Struct, forbid_unknown_fields=True):
    diff_scan_id: ScanId
    version: Literal["1.0"] = "1.0"
    org: Org = UNSET


__all__ = ["FindingsListInput", "PackageScoreInput", "PrCommentInput", "ReposListInput", "ScanRepoInput",
           "TriageAnnotateInput"]
