"""Policy impact analysis: what a policy change will do, before it ships.

    from engine.impact import folder, load, permission_diff, diff_text
    diff = permission_diff(load(folder("old/policies"), at), load(folder("policies"), at), at)
    print(diff_text(diff)); diff.widens

    from engine.impact import Replayer
    replayer = Replayer(Engine(candidate_bundle))
    replayer.feed(rows)            # audit rows (otel.events RawEvent), batch after batch
    replayer.report()              # flips allow->deny / deny->allow by tool, role, policy

Pure functions over two bundles (the permission diff) or over a bundle and recorded requests
(replay); the CLI (`opsgate policy diff|replay`) and the admin route (`POST /v1/policy/diff`) only
call them. The gateway keeps what replay needs in each audit row (`keep`, under `_request`).
"""

from engine.impact.arguments import ArgDependence, ArgPolicy, argument_dependence, argument_paths
from engine.impact.diff import GATEWAY_ACTIONS, PermissionDiff, Revision, Row, Side, permission_diff
from engine.impact.recorded import REQUEST_KEY, Asked, Kept, Redaction, Unreadable, keep, read_kept
from engine.impact.render import diff_markdown, diff_text, replay_markdown, replay_text
from engine.impact.replay import (
    ALLOW_TO_DENY,
    BEFORE_REQUESTS,
    DENY_TO_ALLOW,
    Flip,
    Replayer,
    ReplayReport,
    StoredRow,
    Unreplayable,
    Verdict,
)
from engine.impact.source import (
    ExceptionState,
    Loaded,
    Source,
    SourceError,
    exception_states,
    folder,
    load,
    resolve,
    working_tree,
)

__all__ = ["ALLOW_TO_DENY", "BEFORE_REQUESTS", "DENY_TO_ALLOW", "GATEWAY_ACTIONS", "REQUEST_KEY", "ArgDependence",
           "ArgPolicy", "Asked", "ExceptionState", "Flip", "Kept", "Loaded", "PermissionDiff", "Redaction",
           "ReplayReport", "Replayer", "Revision", "Row", "Side", "Source", "SourceError", "StoredRow",
           "Unreadable", "Unreplayable", "Verdict", "argument_dependence", "argument_paths", "diff_markdown",
           "diff_text", "exception_states", "folder", "keep", "load", "permission_diff", "read_kept",
           "replay_markdown", "replay_text", "resolve", "working_tree"]
