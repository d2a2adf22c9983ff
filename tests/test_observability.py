"""What an operator sees: Prometheus metrics scraped over HTTP, and the JSON access log."""

from __future__ import annotations

import json
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lstmserve.client import Client, LstmserveError
from lstmserve.server.transport.metrics import Metrics
from lstmserve.server.transport.observe import AccessLog, CallRecord, Observer

pytestmark = pytest.mark.integration

# A value no log field could hold by accident: the access log must never carry tensor contents.
MARKER = 7.654321
GOOD = np.full((5, 1, 1), MARKER, np.float32)


@pytest.fixture
def observed(start_server, loaded_seed, loaded_classifier, tmp_path):
    """A server with metrics on an HTTP port of its own and an access log in a file."""
    made = {}

    def observer_for(registry):
        made["metrics"] = Metrics(registry.loaded, lambda: {"seed": 2})
        made["port"] = made["metrics"].serve("127.0.0.1", 0)
        return Observer(made["metrics"], AccessLog(str(tmp_path / "access.jsonl")))

    server = start_server(loaded_seed, loaded_classifier, observer_for=observer_for)
    return server, made["port"], tmp_path / "access.jsonl"


def scrape(port: int) -> dict:
    """Every sample of /metrics, parsed by prometheus_client's own parser: {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def calls(server) -> dict[str, int]:
    """A known mix: 3 OK predictions, 2 bad inputs, 1 unknown model, 1 metadata call."""
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        for _ in range(3):
            client.predict(GOOD, model="seed")
        for bad in (np.zeros((2, 1, 3), np.float32), np.zeros((0, 1, 1), np.float32)):
            with pytest.raises(LstmserveError):
                client.predict(bad, model="seed")
        with pytest.raises(LstmserveError):
            client.predict(GOOD, model="nope")
        client.metadata("classifier")
    return {"OK": 3, "INVALID_ARGUMENT": 2, "NOT_FOUND": 1}


def test_request_counts_and_latency_histogram_equal_the_calls_made(observed):
    server, port, _ = observed
    made = calls(server)
    samples = scrape(port)
    predicts = {labels: value for (name, labels), value in samples.items()
                if name == "lstmserve_requests_total" and ("method", "Predict") in labels}
    by_code = {}
    for labels, value in predicts.items():
        code = dict(labels)["code"]
        by_code[code] = by_code.get(code, 0) + value
    assert by_code == made
    ok = dict(next(labels for labels, value in predicts.items() if dict(labels)["code"] == "OK"))
    assert (ok["model"], ok["version"], ok["mode"]) == ("seed", "1", "values")
    latency_count = sum(value for (name, labels), value in samples.items()
                        if name == "lstmserve_request_duration_seconds_count"
                        and ("method", "Predict") in labels)
    assert latency_count == sum(made.values())
    meta = [value for (name, labels), value in samples.items()
            if name == "lstmserve_requests_total" and ("method", "GetModelMetadata") in labels]
    assert meta == [1.0]
    assert samples[("lstmserve_inflight_requests", ())] == 0


def test_models_engines_and_batches_are_scraped(observed):
    server, port, _ = observed
    seed = (("model", "seed"), ("version", "1"))
    few = (("le", "4.0"), *seed)
    before = scrape(port)  # the session's seed model has run batches for other tests already
    calls(server)
    after = scrape(port)
    assert after[("lstmserve_model_versions_loaded", (("model", "seed"),))] == 1
    assert after[("lstmserve_queue_depth", seed)] == 0
    assert after[("lstmserve_sessions_open", (("model", "seed"),))] == 2
    grew = {name: after[(name, labels)] - before[(name, labels)] for name, labels in [
        ("lstmserve_batch_rows_count", seed), ("lstmserve_batch_rows_sum", seed),
        ("lstmserve_batch_rows_bucket", few)]}
    # Three batches of 5 rows each, none of them 4 rows or fewer.
    assert grew == {"lstmserve_batch_rows_count": 3, "lstmserve_batch_rows_sum": 15,
                    "lstmserve_batch_rows_bucket": 0}


def test_access_log_has_one_json_line_per_call_without_tensor_contents(observed):
    server, _, path = observed
    made = calls(server)
    server.stop(grace=1)  # the listener thread writes as calls end; stopping the server flushes nothing extra
    lines = [json.loads(line) for line in _wait_for_lines(path, sum(made.values()) + 1)]
    predicts = [line for line in lines if line["method"] == "Predict"]
    assert sorted(line["status"] for line in predicts) == sorted(
        code for code, n in made.items() for _ in range(n))
    ok = next(line for line in predicts if line["status"] == "OK")
    assert ok["model"] == "seed" and ok["version"] == "1" and ok["mode"] == "values" and ok["rows"] == 5
    assert ok["latency_ms"] > 0 and ok["peer"].startswith("ipv4:127.0.0.1:") and "time" in ok
    assert "7.6543" not in path.read_text()  # names, counts and codes; no input values


def _wait_for_lines(path, count: int) -> list[str]:
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"access log has {len(lines)} lines; expected {count}")


TOKEN = "observability-token-5be1d0"


def _free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_serve_process_with_everything_on_logs_json_and_never_a_token(seed_h5, tmp_path):
    """`lstmserve serve` with metrics, access log, a token file and JSON logs: scraped over HTTP, and
    neither log holds the token, right or wrong."""
    import re
    import subprocess
    import sys
    import time
    from pathlib import Path
    tokens, access, log = tmp_path / "tokens", tmp_path / "access.jsonl", tmp_path / "serve.log"
    tokens.write_text(TOKEN + "\n")
    metrics_port = _free_port()
    lstmserve = str(Path(sys.executable).with_name("lstmserve"))
    with log.open("w") as stream:
        process = subprocess.Popen(
            [lstmserve, "serve", "--model", f"seed={seed_h5}", "--port", "0", "--metrics-port",
             str(metrics_port), "--access-log", str(access), "--auth-token-file", str(tokens),
             "--log-format", "json"], stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline, port = time.monotonic() + 120, None
        while port is None or not _serving(port):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            found = re.search(r"listening on 127.0.0.1:(\d+)", log.read_text())
            port = int(found[1]) if found else None
            time.sleep(0.3)
        with Client(f"127.0.0.1:{port}", token=TOKEN, timeout=30) as client:
            client.predict(GOOD)
            with client.session("seed", stream=False) as session:
                session.step(np.zeros((1, 1), np.float32))
                assert scrape(metrics_port)[("lstmserve_sessions_open", (("model", "seed"),))] == 1
        with Client(f"127.0.0.1:{port}", token="wrong-" + TOKEN, timeout=30) as client, \
                pytest.raises(LstmserveError, match="UNAUTHENTICATED"):
            client.predict(GOOD)
        samples = scrape(metrics_port)
        assert samples[("lstmserve_rejected_total", (("reason", "auth"),))] == 1
        ok = (("code", "OK"), ("method", "Predict"), ("mode", "values"), ("model", "seed"), ("version", "1"))
        assert samples[("lstmserve_requests_total", ok)] == 1
        lines = _wait_for_lines(access, 4)
    finally:
        process.terminate()
        process.wait(30)
    # One line per call that reached a servicer (refused calls never do): the prediction, then the
    # session's create, step and end.
    assert [json.loads(line)["status"] for line in lines] == ["OK"] * 4
    server_log = log.read_text()
    assert TOKEN not in server_log and TOKEN not in access.read_text()
    records = [json.loads(line) for line in server_log.splitlines() if line.strip()]
    assert any("listening on" in record["message"] for record in records)
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)


def _serving(port: int) -> bool:
    with Client(f"127.0.0.1:{port}", timeout=5) as client:
        return client.health() == "SERVING"


def test_otel_spans_cover_a_prediction_and_its_stages(start_server, loaded_seed):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lstmserve.server.transport import tracing
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    try:
        server = start_server(loaded_seed, interceptors=tracing.enable(provider))
        with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
            client.predict(GOOD)
    finally:
        tracing.disable()
    spans = {span.name: span for span in exported.get_finished_spans()}
    call = spans["/lstmserve.v1.PredictionService/Predict"]
    assert {"decode", "queue wait", "model run", "encode"} <= set(spans)
    for name in ("decode", "encode", "queue wait", "model run"):
        assert spans[name].context.trace_id == call.context.trace_id, name
        assert call.start_time <= spans[name].start_time <= spans[name].end_time <= call.end_time, name
    assert spans["decode"].parent.span_id == call.context.span_id


def test_calls_refused_before_any_handler_are_counted_by_reason(observed):
    server, port, _ = observed
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for _ in range(2):
            with pytest.raises(grpc.RpcError, match="request is not a valid lstmserve.v1.PredictRequest"):
                channel.unary_unary("/lstmserve.v1.PredictionService/Predict")(b"\xff\xff\xff", timeout=30)
    assert scrape(port)[("lstmserve_rejected_total", (("reason", "undecodable"),))] == 2


def test_access_log_drops_lines_past_its_bound_when_the_destination_stops_taking_them(tmp_path, caplog):
    import os
    import time
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, not read yet: the pipe fills (64 KiB)

    def drain() -> None:
        try:
            while os.read(reader, 1 << 16):
                pass
        except BlockingIOError:
            pass

    caplog.set_level("WARNING")
    access = AccessLog(str(fifo))
    access.MAX_QUEUED = 100
    record = CallRecord("/lstmserve.v1.PredictionService/Predict", 0.0, model="m" * 200)
    for _ in range(2_000):  # ~500 KB of lines: the writer blocks in write() once the pipe is full
        access.write(record, "OK", 0.001, "ipv4:127.0.0.1:1")
        time.sleep(0.0005)
    assert access.dropped > 0  # bounded: the rest were dropped, not queued
    deadline = time.monotonic() + 10
    while access.dropped and time.monotonic() < deadline:  # the destination takes writes again
        drain()
        time.sleep(0.01)
    access.close()
    drain()
    os.close(reader)
    assert any("lines dropped" in record.getMessage() for record in caplog.records)
