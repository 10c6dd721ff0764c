"""`opsgate serve --workers N` (or `workers = N`): the supervising process's side of the command.

The supervisor (gateway/workers.py) binds the socket and runs N workers; each builds its own
gateway with `worker_server`. This is where the environment is touched, once, before any worker
starts: prometheus_client takes its multiprocess mode from PROMETHEUS_MULTIPROC_DIR when first
imported, and the workers inherit it. Nothing else reads it; the metrics get the directory as an
argument.

Refused: workers > 1 with limiter = "memory". The embedded limiter keeps its budgets in one
process's memory, so N workers would admit N times every limit; Redis keeps one budget for all
(gateway/ratelimit/redis.py), and a home-made shared-memory limiter would be a second exactness
argument to prove for what Redis already does.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from typing import Any

from gateway.cli.serve import print_demo_tokens, uvicorn_config
from gateway.config import GatewayConfig
from gateway.workers import WorkerEnv, listen, metrics_dir, supervise

log = logging.getLogger("opsgate")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def refusal(config: GatewayConfig) -> str | None:
    """Why `config` cannot run as a fleet of workers, if it cannot."""
    if config.workers < 1:
        return f"workers must be at least 1, got {config.workers}"
    if config.workers > 1 and config.limiter != "redis":
        return (f'workers = {config.workers} needs limiter = "redis" (--limiter redis --redis-url ...): the memory '
                "limiter counts in one process, so every worker would admit the whole limit again")
    return None


def run_workers(config: GatewayConfig, *, demo_tokens: bool) -> int:
    problem = refusal(config)
    if problem is not None:
        print(f"opsgate: {problem}", file=sys.stderr)
        return 2
    if "prometheus_client" in sys.modules:  # it would have chosen single-process mode already
        raise RuntimeError("prometheus_client was imported before the worker fleet set it up")
    directory = metrics_dir(config.state_dir)
    os.environ[MULTIPROC_ENV] = str(directory)
    from gateway.serve import signing_key

    secret = signing_key(config)  # generated here once, not raced by N workers on a fresh state dir
    try:
        sock = listen(config.host, config.port)
    except OSError as e:
        print(f"opsgate: cannot listen on {config.host}:{config.port}: {e}", file=sys.stderr)
        return 3
    port = sock.getsockname()[1]
    print(f"opsgate http://{config.host}:{port}/mcp  {config.workers} workers", flush=True)
    if demo_tokens:
        print_demo_tokens(config, secret)
    host = f"[{config.host}]" if ":" in config.host else config.host
    announced: list[bool] = []

    def ready() -> None:  # once, when every worker first accepts connections (as `serve` prints it)
        if not announced:
            announced.append(True)
            print(f"ready http://{host}:{port}/mcp", flush=True)

    target = functools.partial(worker_server, demo_tokens=demo_tokens)  # a partial of a module function pickles
    return supervise(sock, workers=config.workers, target=target, argument=config, metrics_dir=directory,
                     on_serving=ready)


def worker_server(config: GatewayConfig, env: WorkerEnv, *, demo_tokens: bool = False) -> Any:
    """In a worker: its own gateway, as `opsgate serve` builds it, on the fleet's metrics."""
    import uvicorn

    from gateway.serve import build_app

    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s %(name)s [worker {env.index}]: %(message)s")
    app, services, _ = build_app(config, metrics_dir=env.metrics_dir, demo_tokens=demo_tokens)
    services.reload_workers = functools.partial(os.kill, env.supervisor_pid, signal.SIGHUP)
    drift = services.registry.drift(services.engine.bundle.catalogue)
    if drift and env.index == 0:
        log.warning("tools not in the policy catalogue (always denied): %s", ", ".join(drift))
    return uvicorn.Server(uvicorn_config(app, config, services.redactor))


__all__ = ["refusal", "run_workers", "worker_server"]
