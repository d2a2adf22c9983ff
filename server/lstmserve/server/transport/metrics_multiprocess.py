"""Metrics of `serve --processes N`: each worker writes prometheus_client's multiprocess files, and the
supervisor's /metrics adds them up (FleetMetrics).

Per-model figures: in one process they are read from the engines when Prometheus scrapes (metrics.py's
collector). Custom collectors and Gauge.set_function do not cross processes, so here a thread of the
worker's copies them into multiprocess metrics every second instead: in-flight calls and queue depth as
sums over the live workers, versions loaded as the fewest any live worker serves, and batch sizes as
histogram observations of the batches each engine ran since the last copy. A version's series stays (at
0) once it is unloaded: the multiprocess files cannot remove a label set. The supervisor drops a dead
worker's live gauges; its counters stay in the totals.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as CounterMetric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from lstmserve.server.transport.metrics import BATCH_BUCKETS, BATCH_ROWS, INFLIGHT, QUEUED, VERSIONS

log = logging.getLogger(__name__)

PUBLISH_S = 1.0  # Prometheus scrapes every 10-60 s; a second's lag is nothing beside that
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class SharedFigures:
    """Copies one worker's in-flight count and its engines' figures into multiprocess metrics."""

    def __init__(self, metrics, models: Callable[[], Iterable]) -> None:
        if not os.environ.get(MULTIPROC_DIR):
            raise RuntimeError(f"a worker's metrics need {MULTIPROC_DIR} (set by the supervisor)")
        self._metrics, self._models = metrics, models
        registry = metrics.registry
        self.inflight = Gauge(*INFLIGHT, multiprocess_mode="livesum", registry=registry)
        self.versions = Gauge(*VERSIONS, ["model"], multiprocess_mode="livemin", registry=registry)
        self.queued = Gauge(*QUEUED, ["model", "version"], multiprocess_mode="livesum", registry=registry)
        self.batches = Histogram(*BATCH_ROWS, ["model", "version"], buckets=BATCH_BUCKETS, registry=registry)
        self._counted: dict[int, tuple[object, Counter]] = {}  # id(model) -> (model, batch sizes copied)
        self._names: set[str] = set()
        self._versions: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._run, name="metrics-publisher", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def publish(self) -> None:
        """Copy the figures now (the thread does so every PUBLISH_S); any thread."""
        with self._lock:
            self._publish()

    def _publish(self) -> None:
        self.inflight.set(self._metrics.started - self._metrics.finished)
        models = list(self._models())
        names: Counter = Counter(model.name for model in models)
        for name in self._names | set(names):
            self.versions.labels(name).set(names.get(name, 0))
        self._names |= set(names)
        served = set()
        for model in models:
            served.add(self._publish_model(model))
        for gone in self._versions - served:  # unloaded: nothing waits for it any more
            self.queued.labels(*gone).set(0)
        self._versions = served
        alive = {id(model) for model in models}
        self._counted = {key: value for key, value in self._counted.items() if key in alive}

    def _publish_model(self, model) -> tuple[str, str]:
        stats = model.stats()
        labels = (model.name, model.version)
        self.queued.labels(*labels).set(stats.queued)
        _, counted = self._counted.setdefault(id(model), (model, Counter()))
        new = stats.batch_rows - counted
        if new:
            histogram = self.batches.labels(*labels)
            for rows, batches in new.items():
                for _ in range(batches):  # the histogram takes one observation at a time
                    histogram.observe(rows)
            counted.update(new)
        return labels

    def _run(self) -> None:
        while not self._stop.wait(PUBLISH_S):
            try:
                self.publish()
            except Exception:  # noqa: BLE001 (a figure missed this second is copied the next)
                log.exception("could not copy the metrics of this worker")


class FleetMetrics:
    """The fleet's /metrics: what the workers write to a fresh multiprocess directory, added up at each
    scrape, and the supervisor's own restarts and ready workers."""

    def __init__(self, host: str, port: int) -> None:
        self.directory = tempfile.mkdtemp(prefix="lstmserve-metrics-")
        self._server = None
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)
        self._restarts = CounterMetric("lstmserve_worker_restarts", "Worker processes restarted after dying",
                                       registry=registry)
        self._ready = Gauge("lstmserve_workers_ready", "Worker processes with every model given at start "
                            "loaded", registry=registry)
        try:
            self._server, _ = start_http_server(port, addr=host.strip("[]"), registry=registry)
        except OSError as error:
            self.close()
            raise OSError(f"cannot serve metrics on {host}:{port} ({error.strerror}); --metrics-port 0 "
                          "turns them off") from None
        logging.getLogger("lstmserve.supervisor").info("metrics of every worker at http://%s:%d/metrics",
                                                       host, self._server.server_port)

    def worker_exited(self, pid: int) -> None:
        mark_process_dead(pid, self.directory)  # its live gauges go; its counts stay in the totals

    def restarted(self) -> None:
        self._restarts.inc()

    def ready(self, count: int) -> None:
        self._ready.set(count)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)
