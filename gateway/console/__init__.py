"""The console: a web page for approvers, auditors and the security team, served at /console.

    console = Console(Sessions(MemoryStore()), demo=None, oauth=None)
    create_app(services, edge=edge, console=console)     # mounts console_router() and its templates

Server-rendered (Litestar's Jinja templating) with htmx for partial updates; no build step, no CDN:
the page's only script is htmx, vendored under static/. Every route calls the services the HTTP API
and the CLI call (gateway.exception_service, gateway.routes.policy.run_diff, the event store's
pages, the engine), so no rule is implemented twice. Modules: sessions (cookie, store, CSRF token),
guards (who may reach what), pages (frame, headers, errors), signin, oauth, trail, decision,
exceptions, policies, health; site assembles them.
"""

from gateway.console.oauth import OAuthClient
from gateway.console.sessions import Sessions
from gateway.console.site import Console, console_router

__all__ = ["Console", "OAuthClient", "Sessions", "console_router"]
