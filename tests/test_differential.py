"""The index's invariant, checked against Cedar itself: deciding on a slice gives exactly what
the full policy set gives (engine/index.py).

For generated bundles of 1,000 and 10,000 policies (bench/policygen.py: realistic and
adversarial, with policies that error at run time) and thousands of random requests each,
`Engine.decide()` must agree with a reference built here, independently of the engine's
internals: ONE PolicySet of every enforce-mode policy, raw `cedarpy.is_authorized`, entities
and context built here from the bundle's data, and the engine's documented fail-closed rule
applied here (engine/engine.py module docstring):

- NoDecision denies;
- a forbid whose condition errors counts as satisfied: deny, its id among the reasons;
- an error that cannot be attributed to a policy denies too;
- an erroring permit grants nothing (Cedar's own behaviour).

The outcome mix is counted and asserted, so the test cannot pass on requests that never
reach the interesting paths.
"""

from __future__ import annotations

import collections
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not an installed package

import cedarpy

from bench.policygen import NOW, GeneratedBundle, generate, random_requests
from engine import Bundle, Engine, Request, load_bundle
from engine.allowlist import host_entities
from engine.catalogue import project

# NOW as Cedar's datetime extension value, written out here rather than taken from the engine.
NOW_CEDAR = {"__extn": {"fn": "datetime", "arg": NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z")}}
# How Cedar reports a policy's evaluation error. Anything else (a refused request) names no policy
# we may attribute it to, whatever policy-like text it quotes from the request.
ATTRIBUTED = re.compile(r"error while evaluating policy `([^`]*)`: ")
ALLOW = cedarpy.Decision.Allow


class Expected:
    """What the reference says about one request, and why (for the outcome counts)."""

    def __init__(self, result: cedarpy.AuthzResult, effect: dict[str, str]) -> None:
        self.decision = result.decision
        cedar_reasons = set(result.diagnostics.reasons)
        self.errors = frozenset(result.diagnostics.errors)
        allowed = result.decision == ALLOW
        failing: set[str] = set()
        self.permit_errors = 0
        self.unattributed = 0
        for err in self.errors:
            m = ATTRIBUTED.match(err)
            if m is None:
                allowed = False
                self.unattributed += 1
            elif effect.get(m[1]) == "permit":
                self.permit_errors += 1
            else:  # a forbid (or an id we do not know): counts as satisfied
                allowed = False
                failing.add(m[1])
        # A deny's reasons are the forbids that hold; an erroring forbid holds. Cedar's reasons
        # for an Allow are permits, which no longer determine anything once a forbid holds.
        reasons = cedar_reasons
        if failing:
            reasons = (cedar_reasons if result.decision != ALLOW else set()) | failing
        self.allowed = allowed
        self.reasons = frozenset(reasons)
        self.failing_forbids = frozenset(failing)
        self.satisfied_forbids = frozenset(r for r in cedar_reasons if effect.get(r) == "forbid")


class Reference:
    """Raw Cedar on the full sets of a bundle."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.effect = {p.id: p.effect for p in (*bundle.policies, *bundle.tiers)}
        # Built straight from the policy records, not through the engine's slicers or caches:
        # enforced authorization policies; those plus the dryrun ones; the tier policies.
        sets = bundle.reference_sets()
        self.full, self.everything, self.tiers = sets["enforce"], sets["everything"], sets["tiers"]
        assert len(self.full) == sum(p.mode == "enforce" for p in bundle.policies)
        assert len(self.everything) == len(bundle.policies) and len(self.tiers) == len(bundle.tiers)
        self._entities: dict[str, Any] = {}

    def entities(self, req: Request) -> Any:
        extra = [e.as_cedar() for e in req.entities]
        if req.resource.type == "Ops::Host" and not any(e.uid == req.resource for e in req.entities):
            extra += host_entities(req.resource.id)
        key = json.dumps(extra, sort_keys=True)
        ents = self._entities.get(key)
        if ents is None:  # a ValueError here means the generator made invalid entities: fail loudly
            ents = cedarpy.Entities.from_json_str(json.dumps([*self.bundle.static_entities, *extra]),
                                                  self.bundle.schema)
            self._entities[key] = ents
        return ents

    def request(self, req: Request) -> dict[str, Any]:
        context = dict(req.context)
        if "args" in context and req.action in self.bundle.args_types:
            context["args"] = project(context["args"], self.bundle.args_types[req.action])
        context["now"] = NOW_CEDAR
        return {"principal": {"type": req.principal.type, "id": req.principal.id},
                "action": {"type": "Ops::Action", "id": req.action},
                "resource": {"type": req.resource.type, "id": req.resource.id}, "context": context}

    def decide(self, req: Request, policies: Any) -> Expected:
        result = cedarpy.is_authorized(self.request(req), policies, self.entities(req), self.bundle.schema)
        return Expected(result, self.effect)


@pytest.fixture(scope="module", params=[1000, 10000], ids=lambda n: f"{n}-policies")
def generated(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[GeneratedBundle, Bundle]:
    gen = generate(tmp_path_factory.mktemp(f"bundle{request.param}"), request.param, seed=20261115)
    return gen, load_bundle(gen.root)


def test_slice_equals_full_set(generated: tuple[GeneratedBundle, Bundle]) -> None:
    gen, bundle = generated
    n = gen.n
    started = time.perf_counter()
    engine = Engine(bundle)
    ref = Reference(bundle)
    requests = random_requests(gen, 2000, seed=n)
    counts: collections.Counter[str] = collections.Counter()
    mismatches: list[str] = []
    # The shadow (dryrun) reference costs a second full-set evaluation: every request at 1,000
    # policies, every 5th at 10,000 keeps the file within its time budget.
    shadow_every = 1 if n <= 1000 else 5
    for i, req in enumerate(requests):
        d = engine.decide(req, now=NOW)
        exp = ref.decide(req, ref.full)
        got = (d.allowed, frozenset(d.reasons), frozenset(e for e in d.errors if not e.startswith("rate tier: ")))
        want = (exp.allowed, exp.reasons, exp.errors)
        # Rate tiers apply to allowed requests only; a tier error denies (engine docstring).
        want_tiers: tuple[str, ...] = ()
        want_tier_errors: frozenset[str] = frozenset()
        if exp.allowed:
            tiers = ref.decide(req, ref.tiers)
            if tiers.errors:
                want = (False, exp.reasons, exp.errors)
                want_tier_errors = frozenset(f"rate tier: {e}" for e in tiers.errors)
            elif tiers.allowed:
                want_tiers = tuple(sorted(tiers.reasons))
        if got != want:
            mismatches.append(f"#{i} {req}\n    decide:    {got}\n    reference: {want}")
        if frozenset(e for e in d.errors if e.startswith("rate tier: ")) != want_tier_errors:
            mismatches.append(f"#{i} {req}\n    tier errors differ: {d.errors} vs {want_tier_errors}")
        if tuple(t.policy_id for t in d.tiers) != want_tiers:
            mismatches.append(f"#{i} {req}\n    tiers: {d.tiers} vs {want_tiers}")
        if bundle.dryrun_ids and i % shadow_every == 0:
            sv = ref.decide(req, ref.everything)
            want_shadow = (sv.allowed, sv.reasons) if sv.allowed != exp.allowed else None
            got_shadow = (d.shadow.allowed, frozenset(d.shadow.reasons)) if d.shadow else None
            counts["shadow checked"] += 1
            counts["shadow differs"] += want_shadow is not None
            if got_shadow != want_shadow:
                mismatches.append(f"#{i} {req}\n    shadow: {got_shadow} vs {want_shadow}")
        counts["allow"] += exp.allowed
        counts["deny: forbid holds"] += bool(exp.satisfied_forbids)
        counts["deny: erroring forbid"] += bool(exp.failing_forbids)
        counts["erroring permit"] += exp.permit_errors > 0
        counts["NoDecision"] += exp.decision == cedarpy.Decision.NoDecision
        counts["unattributed error"] += exp.unattributed > 0
        counts["default deny"] += not exp.allowed and not exp.reasons and not exp.errors
        counts["tiers applied"] += bool(want_tiers)
        counts["uid with quote/backslash"] += '"' in req.principal.id or "\\" in req.principal.id
        counts["refused, quoting a policy id"] += any(not ATTRIBUTED.match(e) and "policy `" in e for e in exp.errors)
    # The slices must really be slices, or agreeing with the full set proves nothing.
    sizes = [len(bundle.enforce.slice(k)[0]) for k in bundle.enforce.hot_keys(len(requests))]
    mean_slice = sum(sizes) / len(sizes)
    summary = (f"{n} policies ({len(bundle.enforce)} enforce, {len(bundle.dryrun_ids)} dryrun), "
               f"{len(requests)} requests in {time.perf_counter() - started:.1f} s; distinct slices {len(sizes)}, "
               f"mean size {mean_slice:.0f}, max {max(sizes)}; outcomes {dict(counts)}")
    print(summary)
    assert not mismatches, f"{len(mismatches)} disagreements ({summary}):\n" + "\n".join(mismatches[:10])
    assert mean_slice < len(bundle.enforce) / 4, summary
    floor = len(requests) // 100  # every path taken by at least 1% of the requests
    for outcome in ("allow", "deny: forbid holds", "deny: erroring forbid", "erroring permit", "NoDecision",
                    "default deny", "tiers applied"):
        assert counts[outcome] >= floor, f"{outcome!r} exercised only {counts[outcome]} times: {summary}"
    assert counts["shadow differs"] >= counts["shadow checked"] // 100, summary
    # The traps behind two bugs this test found (see engine/engine.py: _ERRORED, _resolve).
    assert counts["uid with quote/backslash"] >= floor, summary
    assert counts["refused, quoting a policy id"] >= 5, summary
