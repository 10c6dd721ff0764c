"""What the engine must be told about exceptions and cannot read from the bundle.

A file in the repository can be deleted or replaced by a commit, so two facts live elsewhere and
the gateway (the composition root) hands them in as data, as it hands in `now`:
- `revoked`: the exceptions the append-only audit trail records as revoked (`exception.revoked`
  rows). A revocation stays in force when its revocation.json is removed.
- `root`: the root of approvers.pub the gateway pinned in its vault on first sight; a file with
  another root trusts no key (engine.exceptions.approvers).
When the gateway cannot read them, `unavailable` says why and no exception grants anything: the
engine fails closed, never open. `Trust()` is the repository's view alone (CI, lint, tests).
"""

from __future__ import annotations

import msgspec


class Trust(msgspec.Struct, frozen=True, kw_only=True):
    revoked: frozenset[str] = frozenset()  # exception ids with an exception.revoked row
    root: str | None = None  # pinned `<key id> <base64 key>`; None: not pinned, the file's first key is the root
    unavailable: str | None = None  # why the gateway could not read the above: nothing is granted


REPOSITORY_ONLY = Trust()

__all__ = ["REPOSITORY_ONLY", "Trust"]
