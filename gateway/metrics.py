"""Every metric the gateway exports is defined here, and fed from the one place that knows it.

    GET /metrics (gateway/routes/metrics.py) -> Metrics.scrape() -> Prometheus text

Invariants:
- Nothing is counted twice and nothing is counted here on a guess. The pipeline hands over each
  call's outcome once (`call`): its status, the engine's own decision latency (Decision.latency_us)
  and the limiter's refusals (its Outcomes). Gauges are not kept at all: they are read at scrape time
  from the parts that know (the limiter's and the event store's health, the outbox journal, the
  engine). The one exception is the policy bundle per worker process: a scrape is answered by one
  worker, which cannot read another's engine, so each worker publishes its bundle's state when it
  changes (`policy`), into gauges that drop out with their process.
- Labels are bounded by the gateway, never by a caller: tools and providers are the registry's (a
  name nobody serves counts as "unknown"), buckets the bundle's, statuses and decisions the
  pipeline's. No request can mint a new series.
- With worker processes (gateway/workers.py) the figures are the gateway's, not one worker's:
  prometheus_client's multiprocess mode keeps one file per process and kind in a directory the
  supervisor owns, and a scrape sums them. A dead worker's counts stay in the totals; its live
  gauges are dropped by the supervisor (`mark_process_dead`).
- A call's path pays a dict lookup and a few float additions (with workers, writes to an mmap).

Why prometheus-client and not OpenTelemetry metrics with a Prometheus reader: the OTel reader keeps
its aggregates in the memory of each process and has no cross-process aggregation (its docs list
"no multiprocessing" as a limitation), so with --workers a scrape would see one worker's figures.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

Access = Literal["open", "token"]
UNKNOWN = "unknown"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus reads; our names need nothing newer

# A governed call is ~2 ms here; upstream tools take up to the health budget and beyond.
CALL_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A decision is 10-150 us (memo hit to first sight at 10,000 policies); a reload's GIL wait is ~5 ms.
DECISION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class Scraped(Protocol):
    """What a scrape reads from the gateway: the parts that know their own state."""

    engine: Any

    async def limiter_health(self) -> dict[str, Any]: ...

    async def events_health(self) -> dict[str, Any]: ...

    async def outbox_backlog(self) -> int | None: ...


class _Families:
    """Metric families as a collector, for generate_latest."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class Metrics:
    """The gateway's metrics. `multiprocess_dir`: the directory of a worker fleet (the supervisor
    set prometheus_client up for it before this process started); None: this process only."""

    def __init__(self, *, access: Access = "token", multiprocess_dir: str | Path | None = None) -> None:
        self.access = access
        self.multiprocess_dir = Path(multiprocess_dir) if multiprocess_dir is not None else None
        if self.multiprocess_dir is not None and not prometheus_values.ValueClass._multiprocess:
            # prometheus_client picks its value store when first imported; too late to change here.
            raise RuntimeError("metrics for workers need prometheus_client's multiprocess mode, chosen before "
                               "it was imported (gateway/workers.py sets it up for its workers)")
        disable_created_metrics()  # no `_created` series: they double the output
        reg = None if self.multiprocess_dir is not None else CollectorRegistry(auto_describe=True)
        self._registry = reg
        self.calls = Counter("opsgate_tool_calls", "Tool calls and resource reads by outcome: decision allow|deny|"
                             "none, status as in the audit row's result.status.",
                             ("provider", "tool", "decision", "status"), registry=reg)
        self.call_seconds = Histogram("opsgate_tool_call_duration_seconds", "A governed call from its arrival in "
                                      "the pipeline to its audit row.", ("provider",), buckets=CALL_BUCKETS,
                                      registry=reg)
        self.decision_seconds = Histogram("opsgate_decision_duration_seconds", "The engine's decision for a call "
                                          "(Decision.latency_us).", buckets=DECISION_BUCKETS, registry=reg)
        self.refusals = Counter("opsgate_rate_limit_refusals", "Rate-tier refusals by bucket; reason `limit` (the "
                                "budget is spent) or `unavailable` (the limiter could not be asked).",
                                ("bucket", "reason"), registry=reg)
        self.reloads = Counter("opsgate_policy_reloads", "Bundle reloads by result (ok|refused), per worker "
                               "process: a SIGHUP to N workers is N reloads.", ("result",), registry=reg)
        # Per worker, published on change (see the module docstring); `live*` drop out with their process.
        self.bundle = Gauge("opsgate_policy_bundle_info", "1 for each bundle revision some worker has in force.",
                            ("revision",), multiprocess_mode="livemax", registry=reg)
        self.reload_ok = Gauge("opsgate_policy_last_reload_success", "0 if any worker's last reload was refused "
                               "(it kept its previous bundle), else 1.", multiprocess_mode="livemin", registry=reg)
        self._children: dict[tuple[str, ...], Any] = {}
        self._revision: str | None = None
        self._policy_lock = threading.Lock()  # reloads run in executor threads, scrapes on the loop

    # -- a call's outcome: the pipeline's one report -----------------------------------------------

    def call(self, provider: str, tool: str, decision: str, status: str, seconds: float,
             decision_us: float | None, refused: Sequence[tuple[str, bool]]) -> None:
        """One call's outcome. `refused`: (bucket, limiter unavailable) of each tier that refused it."""
        key = (provider, tool, decision, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.calls.labels(*key)
        child.inc()
        hist = self._children.get((provider,))
        if hist is None:
            hist = self._children[(provider,)] = self.call_seconds.labels(provider)
        hist.observe(seconds)
        if decision_us is not None:
            self.decision_seconds.observe(decision_us / 1e6)
        for bucket, unavailable in refused:
            self.refusals.labels(bucket, "unavailable" if unavailable else "limit").inc()

    # -- the policy bundle of this process ---------------------------------------------------------

    def policy(self, engine: Any, reloaded: bool | None = None) -> None:
        """Publish this process's bundle state; `reloaded`: the result of a reload just attempted."""
        if reloaded is not None:
            self.reloads.labels("ok" if reloaded else "refused").inc()
        with self._policy_lock:
            revision = engine.bundle.revision
            if revision != self._revision:
                if self._revision is not None:
                    if self.multiprocess_dir is None:
                        self.bundle.remove(self._revision)
                    else:  # series cannot be removed from the shared files: 0 says "no longer in force"
                        self.bundle.labels(self._revision).set(0)
                self.bundle.labels(revision).set(1)
                self._revision = revision
            self.reload_ok.set(0 if engine.last_error is not None else 1)

    # -- a scrape ----------------------------------------------------------------------------------

    async def scrape(self, gateway: Scraped) -> bytes:
        """The exposition: what is counted (every worker's, with workers), and gauges read now."""
        self.policy(gateway.engine)
        gauges = await self._read_gauges(gateway)
        if self.multiprocess_dir is not None:
            stored: Iterable[Metric] = MultiProcessCollector(None, str(self.multiprocess_dir)).collect()
        else:
            assert self._registry is not None
            stored = self._registry.collect()
        return generate_latest(_Families([*stored, *gauges]))  # type: ignore[arg-type]

    async def _read_gauges(self, gateway: Scraped) -> list[Metric]:
        limiter = await gateway.limiter_health()
        events = await gateway.events_health()
        backlog = await gateway.outbox_backlog()
        families = [
            _gauge("opsgate_rate_limiter_up", "1 while the rate limiter answers (a Redis ping; always 1 in memory).",
                   1 if limiter.get("ok") else 0, backend=str(limiter.get("backend", UNKNOWN))),
            _gauge("opsgate_event_store_up", "1 while the audit store takes events (ok, or degraded: journaling "
                   "while Postgres is away).", 1 if events.get("status") in ("ok", "degraded") else 0,
                   store=str(events.get("store", UNKNOWN))),
            _gauge("opsgate_event_store_degraded", "1 while the outbox cannot ship to Postgres (events wait in "
                   "the local journal).", 1 if events.get("status") == "degraded" else 0),
        ]
        if backlog is not None:
            families.append(_gauge("opsgate_events_outbox_backlog", "Events journaled locally and not yet shipped "
                                   "to Postgres (the whole journal, every worker's).", backlog))
        return families


def _gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


__all__ = ["CONTENT_TYPE", "UNKNOWN", "Access", "Metrics", "Scraped"]
