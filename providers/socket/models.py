"""Socket's answers as typed Structs (field names as Socket spells them; see PROVIDER-APIS.md).

Unknown fields are ignored so that Socket adding one never breaks us; a missing required
field or a wrong type is an upstream shape error the caller is told about.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Organization(msgspec.Struct):
    id: str
    slug: str
    name: str | None = None
    plan: str | None = None


class Organizations(msgspec.Struct):
    organizations: dict[str, Organization] = {}


class Repo(msgspec.Struct):
    id: str
    slug: str
    name: str | None = None
    default_branch: str | None = None
    head_full_scan_id: str | None = None
    visibility: str | None = None
    archived: bool = False
    html_url: str | None = None
    updated_at: str | None = None


class ReposPage(msgspec.Struct):
    results: list[Repo] = []
    nextPage: int | None = None


class Vulnerability(msgspec.Struct):
    cveId: str | None = None
    ghsaIds: list[str] = []
    cvssScore: float | None = None
    epssScore: float | None = None
    isKev: bool | None = None


class Named(msgspec.Struct):
    slug: str | None = None
    name: str | None = None


class ArtifactRef(msgspec.Struct):
    type: str | None = None
    name: str | None = None
    version: str | None = None


class Location(msgspec.Struct):
    repository: Named | None = None
    branch: Named | None = None
    artifact: ArtifactRef | None = None


class OrgAlert(msgspec.Struct):
    id: str
    key: str
    type: str
    severity: str
    status: str
    title: str | None = None
    category: str | None = None
    createdAt: str | None = None
    clearedAt: str | None = None
    dashboardUrl: str | None = None
    vulnerability: Vulnerability | None = None
    locations: list[Location] = []


class AlertsPage(msgspec.Struct):
    items: list[OrgAlert] = []
    endCursor: str | None = None


class Score(msgspec.Struct):
    overall: float | None = None
    supplyChain: float | None = None
    vulnerability: float | None = None
    quality: float | None = None
    maintenance: float | None = None
    license: float | None = None


class ArtifactAlert(msgspec.Struct):
    key: str
    type: str
    severity: str | None = None  # "low|middle|high|critical" on artifacts
    category: str | None = None
    file: str | None = None
    action: str | None = None
    fix: Any = None


class Artifact(msgspec.Struct):
    type: str
    name: str
    version: str | None = None
    id: str | None = None
    inputPurl: str | None = None
    direct: bool | None = None
    dev: bool | None = None
    score: Score | None = None
    alerts: list[ArtifactAlert] = []


class FullScan(msgspec.Struct):
    id: str
    scan_state: str | None = None
    organization_slug: str | None = None
    repository_slug: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    html_report_url: str | None = None
    api_url: str | None = None
    unmatchedFiles: list[str] = []


class Gfm(msgspec.Struct):
    overview: str = ""
    alerts: str = ""


class DiffScanGfm(msgspec.Struct):
    gfm: Gfm


class DiffScan(msgspec.Struct):
    diff_scan: DiffScanGfm


class Quota(msgspec.Struct):
    quota: int
    maxQuota: int | None = None
    nextWindowRefresh: Any = None


__all__ = ["AlertsPage", "Artifact", "DiffScan", "FullScan", "OrgAlert", "Organizations", "Quota", "Repo",
           "ReposPage"]
