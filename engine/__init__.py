"""opsgate's decision engine: Cedar bundles in, Decisions out. No network, no database.

    engine = Engine.from_dir("policies")
    d = engine.decide(Request(principal=Uid.of("User", "u1"), action="socket.scan.repo",
                              resource=Uid.of("Provider", "socket"),
                              entities=(Entity(Uid.of("User", "u1"), (Uid.of("Role", "ops_operator"),)),)))
    d.allowed, d.reasons, d.tiers
"""

from engine.bundle import Bundle, load_bundle
from engine.engine import Engine, utcnow
from engine.model import BundleError, Decision, Entity, Issue, Request, Shadow, Tier, Uid

__all__ = ["Bundle", "BundleError", "Decision", "Engine", "Entity", "Issue", "Request", "Shadow", "Tier", "Uid",
           "load_bundle", "utcnow"]
