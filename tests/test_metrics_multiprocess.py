"""Metrics of several worker processes: what each worker copies into prometheus_client's multiprocess
files, added up as the supervisor's /metrics does (MultiProcessCollector), and what a dead worker leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

pytestmark = pytest.mark.integration

# One worker: its models' figures change between copies as `steps` say; it prints its pid.
WORKER = """
import json, os, sys
from collections import Counter
from lstmserve.server.engine.base import EngineStats
from lstmserve.server.transport.metrics import Metrics
from lstmserve.server.transport.observe import CallRecord

class Model:
    def __init__(self, name, version):
        self.name, self.version, self.figures = name, version, EngineStats()
    def stats(self):
        return self.figures

made, served = {}, []
metrics = Metrics(lambda: served, shared=True)
for step in json.loads(sys.argv[1]):
    served[:] = []
    for name, version, sizes, queued in step["models"]:
        model = made.setdefault((name, version), Model(name, version))
        model.figures.batch_rows = Counter({int(rows): n for rows, n in sizes.items()})
        model.figures.queued = queued
        served.append(model)
    metrics.started = step["started"]
    metrics.figures.publish()
metrics.observe_call(CallRecord("Predict", 0.0, "m", "1", "values", 1), "OK", 0.001)
print(os.getpid())
"""


def run_worker(directory, steps: list[dict]) -> int:
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(steps)], capture_output=True, text=True,
                          env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def collect(directory) -> dict:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() for sample in family.samples}


def m1(name: str, **labels) -> tuple:
    return name, tuple(sorted({"model": "m", "version": "1", **labels}.items()))


def test_workers_figures_add_up_and_a_dead_workers_live_figures_go(tmp_path):
    first = run_worker(tmp_path, [
        {"models": [["m", "1", {1: 3, 4: 2}, 2]], "started": 5},
        {"models": [["m", "1", {1: 4, 4: 2, 16: 1}, 2]], "started": 5},  # copies only what is new
    ])
    run_worker(tmp_path, [
        {"models": [["m", "1", {2: 5}, 1], ["n", "3", {}, 4]], "started": 1},
        {"models": [["m", "1", {2: 5}, 1]], "started": 1},  # n unloaded: its figures go to 0
    ])
    samples = collect(tmp_path)
    assert samples[m1("lstmserve_batch_rows_count")] == 12
    assert samples[m1("lstmserve_batch_rows_sum")] == 4 * 1 + 2 * 4 + 16 + 5 * 2
    assert [samples[m1("lstmserve_batch_rows_bucket", le=le)] for le in ("1.0", "2.0", "4.0", "16.0")] \
        == [4, 9, 11, 12]
    assert samples[m1("lstmserve_queue_depth")] == 3
    assert samples[("lstmserve_queue_depth", (("model", "n"), ("version", "3")))] == 0
    assert samples[("lstmserve_model_versions_loaded", (("model", "m"),))] == 1
    assert samples[("lstmserve_model_versions_loaded", (("model", "n"),))] == 0
    assert samples[("lstmserve_inflight_requests", ())] == 5 + 1
    predict = m1("lstmserve_requests_total", method="Predict", mode="values", code="OK")
    assert samples[predict] == 2

    mark_process_dead(first, str(tmp_path))  # what the supervisor does when a worker exits
    samples = collect(tmp_path)
    assert samples[m1("lstmserve_queue_depth")] == 1
    assert samples[("lstmserve_inflight_requests", ())] == 1
    assert samples[m1("lstmserve_batch_rows_count")] == 12  # what it ran stays counted
    assert samples[predict] == 2
