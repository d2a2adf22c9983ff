"""Prometheus metrics with prometheus_client: what calls, models and engines did, served over HTTP.

Per-call figures are counted as calls finish; per-model figures (batch sizes, queue depth, versions) are
read from the registry and each engine's EngineStats when Prometheus scrapes, so the model's own thread
never touches a metric. Labels carry the method, model name, version, mode and status code, nothing of a
request's contents. A worker of `serve --processes N` (`shared`) writes prometheus_client's multiprocess
files instead, which its supervisor serves; metrics_multiprocess.py copies the per-model figures there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# From 100 us (the seed model's whole call) to 10 s (a deadline's order).
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Per-model figures: the same names and help in one process (read at scrape time) and in several.
INFLIGHT = ("lstmserve_inflight_requests", "Calls being handled now")
VERSIONS = ("lstmserve_model_versions_loaded", "Versions of each model being served")
QUEUED = ("lstmserve_queue_depth", "Requests waiting for each model version's engine")
BATCH_ROWS = ("lstmserve_batch_rows", "Rows per model call (batches run)")


class Metrics:
    """Every lstmserve metric in one registry of its own (several servers in one process stay apart).

    `shared`: this process is one worker of several, its figures written to PROMETHEUS_MULTIPROC_DIR for
    the supervisor to serve (the registry itself is then never served).
    """

    def __init__(self, models: Callable[[], Iterable] = lambda: (),
                 sessions: Callable[[], dict[str, int]] = dict, shared: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lstmserve_requests", "Calls answered, by method, model, version, mode and "
                                "status code", ["method", "model", "version", "mode", "code"],
                                registry=self.registry)
        self.latency = Histogram("lstmserve_request_duration_seconds", "Time from a call's arrival to its "
                                 "answer", ["method", "model"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        # Counted as plain integers on the event loop (every handler runs there) and read at scrape
        # time: a Gauge's inc and dec take a lock each, 3 us a call for a figure read every few seconds.
        self.started = self.finished = 0
        if not shared:
            inflight = Gauge(*INFLIGHT, registry=self.registry)
            inflight.set_function(lambda: self.started - self.finished)
        self.rejected = Counter("lstmserve_rejected", "Calls refused before any model work, by reason "
                                "(overload, inflight_bytes, draining, undecodable, auth)", ["reason"],
                                registry=self.registry)
        self.load_seconds = Histogram("lstmserve_model_load_duration_seconds", "Time to read, build, compile "
                                      "and warm a model version", ["model"], buckets=LOAD_BUCKETS,
                                      registry=self.registry)
        self.load_failures = Counter("lstmserve_model_load_failures", "Model versions that failed to load",
                                     ["model"], registry=self.registry)
        if shared:
            from lstmserve.server.transport.metrics_multiprocess import SharedFigures
            self.figures = SharedFigures(self, models)
            self.figures.start()
        else:
            self.registry.register(_EngineCollector(models, sessions))
        self._lock = threading.Lock()
        self._children: dict[tuple, tuple] = {}

    def observe_call(self, record, code: str, seconds: float) -> None:
        key = (record.method, record.model, record.version, record.mode, code)
        children = self._children.get(key)
        if children is None:  # label lookups cost more than the increments: each pair is made once
            with self._lock:
                children = (self.requests.labels(*key), self.latency.labels(record.method, record.model))
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if code == "RESOURCE_EXHAUSTED":
            self.rejected.labels("overload").inc()

    def count_auth_rejection(self, method: str, reason: str) -> None:
        self.rejected.labels("auth").inc()

    def count_admission_refusal(self, method: str, reason: str) -> None:
        """A call refused before any handler ran (transport.admission): the requests counter never
        sees it, so its reason is counted here."""
        self.rejected.labels(reason).inc()

    def observe_load(self, model: str, seconds: float) -> None:
        self.load_seconds.labels(model).observe(seconds)

    def count_load_failure(self, model: str) -> None:
        self.load_failures.labels(model).inc()

    def serve(self, host: str, port: int) -> int:
        """Answer GET /metrics on host:port from a thread of prometheus_client's; the port bound."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port


class _EngineCollector(Collector):
    """Per-model figures read at scrape time: versions loaded, queue depth, batch sizes run, sessions."""

    def __init__(self, models: Callable[[], Iterable], sessions: Callable[[], dict[str, int]]) -> None:
        self._models = models
        self._sessions = sessions

    def describe(self):
        return []  # figures appear with the models; nothing to declare up front

    def collect(self):
        versions = GaugeMetricFamily(*VERSIONS, labels=["model"])
        queued = GaugeMetricFamily(*QUEUED, labels=["model", "version"])
        batches = HistogramMetricFamily(*BATCH_ROWS, labels=["model", "version"])
        counted: dict[str, int] = {}
        for model in self._models():
            counted[model.name] = counted.get(model.name, 0) + 1
            stats = model.stats()
            labels = [model.name, model.version]
            queued.add_metric(labels, stats.queued)
            batches.add_metric(labels, _cumulative(stats.batch_rows), sum_value=stats.rows)
        for name, count in counted.items():
            versions.add_metric([name], count)
        open_sessions = GaugeMetricFamily("lstmserve_sessions_open", "Streaming sessions open per model",
                                          labels=["model"])
        for name, count in sorted(self._sessions().items()):
            open_sessions.add_metric([name], count)
        return [versions, queued, batches, open_sessions]


def _cumulative(batch_rows) -> list[tuple[str, float]]:
    """Exact batch sizes -> Prometheus's cumulative buckets, +Inf last."""
    buckets = [(floatToGoString(bound), float(sum(n for rows, n in batch_rows.items() if rows <= bound)))
               for bound in BATCH_BUCKETS]
    return buckets + [("+Inf", float(sum(batch_rows.values())))]
