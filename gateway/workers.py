"""N server processes on one listening socket, supervised: `opsgate serve --workers N`.

    sock = listen(host, port)
    directory = metrics_dir(state_dir)      # then PROMETHEUS_MULTIPROC_DIR=directory, in the CLI
    exit_code = supervise(sock, workers=N, target=build_server, argument=config, metrics_dir=directory)

`target(argument, WorkerEnv)` runs in each worker and returns the uvicorn.Server to run there; both
must be picklable (a module-level function, a config struct).

Invariants:
- The supervisor binds the socket once, before any worker exists; every worker accepts on it, so
  the gateway keeps one address and the kernel hands each connection to one worker.
- Workers are spawned, not forked: each is a fresh interpreter that builds its own services (vault,
  stores, engine, limiter) from `argument`. Nothing of the supervisor's threads, loops or
  connections is inherited. What they share lives where sharing is safe: the state dir (per-process
  intent logs under flock, SQLite in WAL), Redis, Postgres.
- Metrics are the fleet's: each worker writes prometheus_client's multiprocess files into a
  directory of this supervisor's own under `<state_dir>/metrics/`, emptied at start; a flock held
  while the supervisor lives marks it, so a later supervisor sweeps only the directories of
  supervisors that are gone, never a running one's. When a worker dies its counters stay in the
  totals and its live gauges are removed (`mark_process_dead`, as the library's docs say).
- A worker that dies after it served is replaced (at most MAX_RESTARTS within RESTART_WINDOW_S,
  else the gateway stops with exit 1); one that dies before it ever served stops the gateway with
  exit 1, since a start-up error is not cured by starting again.
- SIGHUP to the supervisor reaches every worker (each reloads its bundle); a worker still starting
  gets it as soon as it serves. A worker that reloads on an HTTP request sends SIGHUP to the
  supervisor (Services.reload_workers), so the others follow.
- SIGINT or SIGTERM: every worker gets SIGTERM and drains (uvicorn's graceful shutdown); any
  still running after STOP_GRACE_S is killed. Exit 0. A worker whose supervisor died without
  stopping it (kill -9) stops by itself within ORPHAN_CHECK_S.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

log = logging.getLogger("opsgate.workers")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 30.0
ORPHAN_CHECK_S = 0.5
STOPPING = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class WorkerEnv:
    """What a worker knows of its fleet."""

    index: int
    supervisor_pid: int
    metrics_dir: str


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The fleet's listening socket (port 0: an ephemeral one; read it from getsockname())."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


_held: list[int] = []  # the flock of this process's metrics directory, held until it exits


def metrics_dir(state_dir: str | Path) -> Path:
    """A new, empty directory for this supervisor's fleet, after sweeping those of dead supervisors."""
    root = Path(state_dir) / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    for lock in root.glob("*.lock"):
        fd = _try_lock(lock)
        if fd is not None:  # its supervisor is gone
            shutil.rmtree(root / lock.stem, ignore_errors=True)
            lock.unlink(missing_ok=True)
            os.close(fd)
    name = uuid.uuid4().hex
    # Locked under a name the sweep ignores, then renamed: nobody sees this lock free while we live.
    fd = _try_lock(root / f".new-{name}")
    assert fd is not None
    os.rename(root / f".new-{name}", root / f"{name}.lock")
    _held.append(fd)
    directory = root / name
    directory.mkdir()
    return directory


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _worker_main(target: Callable[[Any, WorkerEnv], Any], argument: Any, env: WorkerEnv, sock: socket.socket,
                 ready: Connection) -> None:
    """A worker: build the server, serve on the fleet's socket, say so once serving."""
    import asyncio

    server = target(argument, env)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            ready.send(os.getpid())
        while not task.done():  # a worker whose supervisor died (kill -9) must not serve on unsupervised
            if os.getppid() != env.supervisor_pid and not server.should_exit:
                log.error("worker %d: the supervisor (pid %d) is gone; stopping", env.index, env.supervisor_pid)
                server.should_exit = True
            await asyncio.wait({task}, timeout=ORPHAN_CHECK_S)
        await task

    try:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(serve())
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it drained for; the supervisor knows
        pass
    sys.exit(0 if server.started else 3)


@dataclass
class _Slot:
    process: Any  # multiprocessing.Process
    ready: Connection
    serving: bool = False
    reload_pending: bool = False


@dataclass
class _Supervisor:
    sock: socket.socket
    workers: int
    target: Callable[[Any, WorkerEnv], Any]
    argument: Any
    metrics_dir: Path
    on_serving: Callable[[], None] | None = None
    slots: dict[int, _Slot] = field(default_factory=dict)
    deaths: deque[float] = field(default_factory=deque)
    stopping: bool = False

    def __post_init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        from prometheus_client import Counter  # after the CLI chose multiprocess mode

        self.restarts = Counter("opsgate_worker_restarts", "Worker processes replaced after they died.",
                                registry=None)

    def start(self, index: int) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        env = WorkerEnv(index, os.getpid(), str(self.metrics_dir))
        process = self.ctx.Process(target=_worker_main, name=f"opsgate-worker-{index}",
                                   args=(self.target, self.argument, env, self.sock, writer))
        process.start()
        writer.close()
        self.slots[index] = _Slot(process, reader)
        log.info("worker %d started (pid %d)", index, process.pid)

    def run(self) -> int:
        wakeup_r, wakeup_w = socket.socketpair()
        wakeup_r.setblocking(False)
        wakeup_w.setblocking(False)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGHUP, *STOPPING)}
        old_fd = signal.set_wakeup_fd(wakeup_w.fileno())
        try:
            for i in range(self.workers):
                self.start(i)
            while True:
                waiting: dict[Any, tuple[str, int]] = {wakeup_r: ("signal", -1)}
                for i, slot in self.slots.items():
                    waiting[slot.process.sentinel] = ("exit", i)
                    if not slot.serving:
                        waiting[slot.ready] = ("ready", i)
                for obj in wait(list(waiting)):
                    kind, i = waiting[obj]
                    if kind == "signal":
                        code = self._signals(wakeup_r)
                    elif kind == "ready":
                        code = self._ready(i)
                    else:
                        code = self._exited(i)
                    if code is not None:
                        return code
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wakeup_r.close()
            wakeup_w.close()

    def _signals(self, wakeup: socket.socket) -> int | None:
        with contextlib.suppress(BlockingIOError):
            for signum in wakeup.recv(64):
                if signum in STOPPING:
                    log.info("stopping %d workers (%s)", len(self.slots), signal.Signals(signum).name)
                    return self.stop(0)
                if signum == signal.SIGHUP:
                    for slot in self.slots.values():
                        if slot.serving:
                            os.kill(slot.process.pid, signal.SIGHUP)
                        else:  # its handler is not installed yet: SIGHUP would end it
                            slot.reload_pending = True
        return None

    def _ready(self, index: int) -> int | None:
        slot = self.slots[index]
        try:
            slot.ready.recv()
        except EOFError:  # it died before serving
            slot.process.join()
            return self._exited(index)
        slot.serving = True
        if slot.reload_pending:
            slot.reload_pending = False
            os.kill(slot.process.pid, signal.SIGHUP)
        if len(self.slots) == self.workers and all(s.serving for s in self.slots.values()):
            log.info("%d workers serving", self.workers)
            if self.on_serving is not None:
                self.on_serving()
        return None

    def _exited(self, index: int) -> int | None:
        from prometheus_client.multiprocess import mark_process_dead

        slot = self.slots.pop(index)
        slot.process.join()
        slot.ready.close()
        pid, code = slot.process.pid, slot.process.exitcode
        mark_process_dead(pid, str(self.metrics_dir))
        if self.stopping:
            return None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        if not slot.serving:
            log.error("worker %d (pid %d) ended with %s before it served; stopping the gateway", index, pid, how)
            return self.stop(1)
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESTART_WINDOW_S:
            self.deaths.popleft()
        if len(self.deaths) > MAX_RESTARTS:
            log.error("worker %d (pid %d) ended with %s: more than %d deaths in %g s; stopping the gateway",
                      index, pid, how, MAX_RESTARTS, RESTART_WINDOW_S)
            return self.stop(1)
        log.warning("worker %d (pid %d) ended with %s; starting a new one", index, pid, how)
        self.restarts.inc()
        self.start(index)
        return None

    def stop(self, code: int) -> int:
        self.stopping = True
        for slot in self.slots.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for slot in self.slots.values():
            slot.process.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots.values():
            if slot.process.is_alive():
                log.warning("worker pid %d did not stop within %g s; killing it", slot.process.pid, STOP_GRACE_S)
                slot.process.kill()
                slot.process.join()
        self.slots.clear()
        return code


def supervise(sock: socket.socket, *, workers: int, target: Callable[[Any, WorkerEnv], Any], argument: Any,
              metrics_dir: Path, on_serving: Callable[[], None] | None = None) -> int:
    """Run `workers` processes of `target(argument, env)` on `sock` until stopped; the exit code.
    `on_serving` is called (in this process) whenever every worker is serving again."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return _Supervisor(sock, workers, target, argument, metrics_dir, on_serving).run()


__all__ = ["MAX_RESTARTS", "RESTART_WINDOW_S", "STOP_GRACE_S", "WorkerEnv", "listen", "metrics_dir", "supervise"]
