"""What the omega tools compute from rows: pure functions, no I/O (and the whole of
omega_simulate_impact, which by the spec touches no database).

Every output is advisory: "MCP observes. MCP proposes. Guardian + human decide."
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

Rows = list[dict[str, Any]]

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
OPEN_DRAFTS = ("pending_review", "draft")


def _today() -> date:
    return datetime.now(UTC).date()


def _overdue(goal: dict[str, Any], today: date) -> bool:
    target = goal.get("target_date")
    return (goal.get("status") not in ("completed", "cancelled") and target is not None
            and date.fromisoformat(str(target)[:10]) < today and (goal.get("progress") or 0) < 1)


def calibration(preds: Rows, bins: int = 10) -> dict[str, Any]:
    """Reliability of predicted confidence against actual outcomes: bins, ECE, MCE, Brier score."""
    resolved = [p for p in preds if p.get("actual_outcome") is not None]
    out: dict[str, Any] = {"predictions": len(preds), "resolved": len(resolved),
                           "unresolved": len(preds) - len(resolved)}
    if not resolved:
        return {**out, "bins": [], "ece": None, "mce": None, "brier": None, "bias": None,
                "assessment": "insufficient_data"}
    table = []
    ece = mce = 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        members = [p for p in resolved
                   if lo <= p["predicted_confidence"] < hi or (i == bins - 1 and p["predicted_confidence"] == 1)]
        if not members:
            continue
        conf = sum(p["predicted_confidence"] for p in members) / len(members)
        acc = sum(1 for p in members if p["actual_outcome"]) / len(members)
        gap = conf - acc
        ece += abs(gap) * len(members) / len(resolved)
        mce = max(mce, abs(gap))
        table.append({"range": [round(lo, 3), round(hi, 3)], "count": len(members), "mean_confidence": round(conf, 4),
                      "observed_rate": round(acc, 4), "gap": round(gap, 4)})
    brier = sum((p["predicted_confidence"] - (1.0 if p["actual_outcome"] else 0.0)) ** 2 for p in resolved)
    bias = (sum(p["predicted_confidence"] for p in resolved) - sum(1 for p in resolved if p["actual_outcome"])) \
        / len(resolved)
    assessment = ("well_calibrated" if ece <= 0.05 else "overconfident" if bias > 0.02
                  else "underconfident" if bias < -0.02 else "miscalibrated")
    return {**out, "bins": table, "ece": round(ece, 4), "mce": round(mce, 4), "brier": round(brier / len(resolved), 4),
            "bias": round(bias, 4), "assessment": assessment}


def autonomy_fit(cal: dict[str, Any], levels: Rows, mean_confidence: float | None) -> dict[str, Any]:
    """The highest autonomy level the calibration would support, as advice (MCP modifies nothing)."""
    fit = None
    if cal.get("ece") is not None and mean_confidence is not None:
        for lv in sorted(levels, key=lambda r: r["level"]):
            if cal["ece"] <= lv["max_calibration_error"] and mean_confidence >= lv["min_confidence"]:
                fit = lv
    return {"supported_level": None if fit is None else {"level": fit["level"], "name": fit["name"]},
            "advisory_only": True}


def state(drafts: Rows, goals: Rows, signals: Rows) -> dict[str, Any]:
    return {
        "drafts": {"by_status": dict(Counter(d["status"] for d in drafts)),
                   "open": [d for d in drafts if d["status"] in OPEN_DRAFTS][:20]},
        "goals": {"by_status": dict(Counter(g["status"] for g in goals)),
                  "active": [g for g in goals if g["status"] in ("active", "blocked")][:20]},
        "signals": {"by_severity": dict(Counter(s["severity"] for s in signals if s["status"] == "open")),
                    "open": [s for s in signals if s["status"] == "open"][:20]},
    }


def health(drafts: Rows, goals: Rows, signals: Rows, sessions: Rows, preds: Rows, improvements: Rows) -> dict[str, Any]:
    today = _today()
    cal = calibration(preds)
    failed = sum(1 for s in sessions if s["status"] == "failed")
    open_critical = sum(1 for s in signals if s["status"] == "open" and s["severity"] in ("high", "critical"))
    areas = {
        "drafting": {"pending_review": sum(1 for d in drafts if d["status"] == "pending_review"),
                     "total": len(drafts)},
        "goals": {"active": sum(1 for g in goals if g["status"] == "active"),
                  "blocked": sum(1 for g in goals if g["status"] == "blocked"),
                  "overdue": sum(1 for g in goals if _overdue(g, today))},
        "signals": {"open": sum(1 for s in signals if s["status"] == "open"), "open_high_or_critical": open_critical},
        "sessions": {"total": len(sessions), "failed": failed,
                     "failure_rate": round(failed / len(sessions), 4) if sessions else None},
        "calibration": {"ece": cal["ece"], "assessment": cal["assessment"], "resolved": cal["resolved"]},
        "improvements": {"by_status": dict(Counter(i["status"] for i in improvements))},
    }
    problems = []
    if open_critical:
        problems.append(f"{open_critical} open high/critical signals")
    if areas["goals"]["overdue"] or areas["goals"]["blocked"]:
        problems.append(f"{areas['goals']['overdue']} overdue and {areas['goals']['blocked']} blocked goals")
    if sessions and failed / len(sessions) > 0.2:
        problems.append(f"session failure rate {failed}/{len(sessions)}")
    if cal["ece"] is not None and cal["ece"] > 0.1:
        problems.append(f"calibration error {cal['ece']}")
    status = "healthy" if not problems else "attention" if len(problems) <= 2 else "degraded"
    return {"status": status, "problems": problems, "areas": areas}


def risks(signals: Rows, goals: Rows, sessions: Rows, drafts: Rows, preds: Rows, constraints: Rows) -> dict[str, Any]:
    today = _today()
    found: list[dict[str, Any]] = []
    for s in signals:
        if s["status"] == "open" and s["severity"] in ("high", "critical"):
            found.append({"category": "signal", "severity": s["severity"], "ref": s["id"],
                          "detail": f"open {s['severity']} {s['kind']} signal from {s['source']}",
                          "recommendation": "review the signal before any related action"})
    for g in goals:
        if _overdue(g, today) or g["status"] == "blocked":
            found.append({"category": "goal", "severity": "high" if g["status"] == "blocked" else "medium",
                          "ref": g["id"], "detail": f"goal {g['title']!r} is {g['status']} at {g['progress']:.0%}",
                          "recommendation": "re-plan or close the goal with its owner"})
    for s in sessions:
        if s["status"] == "failed" or s.get("outcome") == "constraint_violation":
            found.append({"category": "session", "severity": "high", "ref": s["id"],
                          "detail": f"session ended {s['status']} ({s.get('outcome') or 'no outcome'})",
                          "recommendation": "read its reasoning chain (omega_get_reasoning_chain)"})
    for d in drafts:
        if d["status"] == "pending_review" and (d.get("confidence") or 0) < 0.6:
            found.append({"category": "draft", "severity": "medium", "ref": d["id"],
                          "detail": f"draft {d['title']!r} awaits review at confidence {d['confidence']}",
                          "recommendation": "a human should review low-confidence drafts first"})
    cal = calibration(preds)
    if cal["assessment"] == "overconfident":
        found.append({"category": "calibration", "severity": "high", "ref": None,
                      "detail": f"confidence exceeds outcomes by {cal['bias']:+.2f} (ECE {cal['ece']})",
                      "recommendation": "do not raise autonomy; propose a stricter confidence threshold"})
    found.sort(key=lambda r: -SEVERITY_RANK.get(r["severity"], 0))
    top = max((SEVERITY_RANK[r["severity"]] for r in found), default=0)
    return {"overall": next((k for k, v in SEVERITY_RANK.items() if v == top), "none"), "count": len(found),
            "risks": found[:50],
            "guardian_constraints": [{"name": c["name"], "severity": c["severity"], "enforced": c["enforced"]}
                                     for c in constraints],
            "advisory_only": True}


COMPONENT_CRITICALITY = {"guardian": 1.0, "autonomy": 1.0, "constraints": 1.0, "executor": 0.9, "drafter": 0.5,
                         "scheduler": 0.4, "signals": 0.5, "memory": 0.6, "dashboard": 0.2}
CHANGE_WEIGHT = {"threshold_change": 0.6, "prompt_update": 0.4, "constraint_add": 0.3, "constraint_remove": 1.0,
                 "autonomy_change": 1.0, "model_change": 0.7, "config_change": 0.5}
# Keys that would touch what the MCP must never do (hard constraints of the spec).
HARD = ("autonomy", "bypass", "auto_apply", "send", "execute", "privilege")


def simulate(change_type: str, target: str, change: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A deterministic, local estimate of a change's impact. Touches no database."""
    criticality = COMPONENT_CRITICALITY.get(target.lower(), 0.5)
    weight = CHANGE_WEIGHT.get(change_type.lower(), 0.5)
    deltas = {}
    magnitude = 0.25
    for key, new in change.items():
        old = current.get(key)
        if isinstance(new, int | float) and isinstance(old, int | float) and not isinstance(new, bool):
            rel = abs(new - old) / abs(old) if old else 1.0
            deltas[key] = {"from": old, "to": new, "delta": round(new - old, 6), "relative": round(rel, 4)}
            magnitude = max(magnitude, min(rel, 1.0))
    touches_hard = sorted(k for k in change if any(h in k.lower() for h in HARD))
    score = round(min(1.0, criticality * weight * (0.5 + magnitude) + (0.4 if touches_hard else 0)), 4)
    level = "critical" if score >= 0.75 else "high" if score >= 0.5 else "medium" if score >= 0.25 else "low"
    notes = ["local estimate only: no data was read or changed",
             "any change goes through omega_propose_improvement, then Guardian and a human"]
    if touches_hard:
        notes.append(f"touches hard constraints ({', '.join(touches_hard)}): Guardian must refuse auto-application")
    return {"change_type": change_type, "target_component": target, "risk_score": score, "risk_level": level,
            "component_criticality": criticality, "deltas": deltas, "hard_constraints_touched": touches_hard,
            "requires_human_approval": True, "notes": notes}


__all__ = ["autonomy_fit", "calibration", "health", "risks", "simulate", "state"]
