"""Replay's verdict against a fresh decision: for generated bundles (bench/policygen.py: realistic
and adversarial, with erroring policies and requests Cedar refuses) and thousands of generated
requests, each request is recorded as the gateway records it (decided by bundle A, kept with
`keep` through the real redactor, JSON in the payload) and replayed under bundle B. Whenever
replay gives a verdict, it must be exactly what B's engine decides on the ORIGINAL, unredacted
request; when it gives none, the audit trail must really have redacted something.

The redactor masks some arguments the generated policies read and some they do not, and scrubs a
"secret" inside strings, so all three paths are taken: replayed as is, replayed with redacted
values put back, refused. The mix is counted and asserted.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import msgspec
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not an installed package

from bench.policygen import NOW, generate, random_requests
from engine import Engine, load_bundle
from engine.impact import Asked, Replayer, keep, read_kept
from otel.redact import Redactor

# Read by some generated policies: repo, limit, purls, message, after. Read by none: fail, crash, full,
# ascending (Bools), status (a String in some tools, a Set in others), environment.
SENSITIVE = ("args.repo", "args.limit", "args.purls", "args.message", "args.after", "args.fail", "args.crash",
             "args.full", "args.ascending", "args.status", "args.environment")
SECRET = "acme/infra-secrets"  # pragma: allowlist secret (a `repo` value of the generator, scrubbed as one)


def _role(req: object) -> str | None:
    ents = getattr(req, "entities", ())
    parents = [p.id for e in ents for p in e.parents if p.type == "Ops::Role"]
    return parents[0] if parents else None


@pytest.mark.parametrize("n", [1000])
def test_replay_equals_a_fresh_decision_by_the_candidate(tmp_path: Path, n: int) -> None:
    recorded_gen = generate(tmp_path / "a", n, seed=7)
    candidate_gen = generate(tmp_path / "b", n, seed=8)
    recorder = Engine(load_bundle(recorded_gen.root))
    candidate = Engine(load_bundle(candidate_gen.root))
    replayer = Replayer(Engine(candidate.bundle))
    redactor = Redactor(lambda: (SECRET,), SENSITIVE)
    counts: collections.Counter[str] = collections.Counter()
    mismatches: list[str] = []
    for i, req in enumerate(random_requests(recorded_gen, 3000, seed=n)):
        recorded = recorder.decide(req, now=NOW)
        payload = msgspec.json.encode({"args": redactor.redact(req.context.get("args")),
                                       "_request": keep(Asked(req, NOW, _role(req)), redactor.redact)})
        kept = read_kept(payload)
        assert kept is not None
        verdict = replayer.replay(kept)
        fresh = candidate.decide(req, now=NOW)
        counts["flipped"] += fresh.allowed != recorded.allowed
        if verdict.decision is None:
            counts["not replayable"] += 1
            if not kept.redacted and not kept.truncated:
                mismatches.append(f"#{i} refused without a redaction: {verdict.reason}\n    {req}")
            continue
        counts["replayed with redactions put back" if kept.redacted else "replayed as is"] += 1
        got = (verdict.decision.allowed, frozenset(verdict.decision.reasons), len(verdict.decision.errors),
               verdict.decision.tiers)
        want = (fresh.allowed, frozenset(fresh.reasons), len(fresh.errors), fresh.tiers)
        if got != want:
            mismatches.append(f"#{i} {req}\n    replay: {got}\n    fresh:  {want}\n    redacted: {kept.redacted}")
    summary = dict(counts)
    print(summary)
    assert not mismatches, f"{len(mismatches)} disagreements ({summary}):\n" + "\n".join(mismatches[:10])
    for path in ("replayed as is", "replayed with redactions put back", "not replayable", "flipped"):
        assert counts[path] >= 30, f"{path!r} taken only {counts[path]} times: {summary}"
