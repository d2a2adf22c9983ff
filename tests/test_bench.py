"""`lstmserve bench --quick` runs end to end and writes a result the README's numbers can come from."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quick_bench_writes_json_table_and_plot(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lstmserve.client.cli", "bench", "--quick", "--models", "seed",
         "--levels", "1", "4", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== seed: 1 row(s) per request ==" in done.stdout
    result = json.loads((tmp_path / "bench.json").read_text())["models"]["seed"]
    assert [level["concurrency"] for level in result["server"]] == [1, 4]
    assert [level["concurrency"] for level in result["floor"]] == [1, 4]
    for level in result["server"]:
        assert level["errors"] == {}
        assert level["requests_per_s"] > 0 and level["p50_ms"] <= level["p99_ms"]
        # The batch sizes come from the server's own counters (StatsService), read around the level.
        assert level["batches"]["batches"] >= 1 and level["batches"]["max_rows"] >= 1
    assert result["baseline"]["best_samples_per_s"] > 0
    # The baseline is measured again after every level, while the load generator waits.
    assert [r["after_level"] for r in result["baseline"]["rechecks"]] == [1, 4]
    assert all(r["samples_per_s"] > 0 for r in result["baseline"]["rechecks"])
    assert {v["target"] for v in result["verdicts"]} >= {"errors at any level",
                                                         "peak requests/s vs transport floor",
                                                         "time to SERVING vs import floor",
                                                         "resident memory after warm-up vs import floor"}
    # Start-up and memory, beside a process that only imports TensorFlow and Keras.
    footprint = result["footprint"]
    floor = footprint["import_floor"]
    assert footprint["serving_s"] > 0 and footprint["restart_serving_s"] > 0 and floor["seconds"] > 0
    # CPU time, which a busy machine does not stretch: the server does all the import does, and more.
    assert 0 < floor["cpu_s"] < footprint["serving_cpu_s"]
    warm = footprint["after_warmup"]
    assert floor["rss_mb"] < warm["rss_mb"] <= footprint["after_sweep"]["rss_mb"] + 50
    assert abs(warm["anon_mb"] + warm["file_mb"] - warm["rss_mb"]) < 5
    assert "import tensorflow, keras" in footprint["startup"] and "model 'seed'" in footprint["startup"]
    assert "start-up: SERVING" in done.stdout and "resident memory:" in done.stdout
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_sessions_scenario_measures_streams_against_their_limits(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lstmserve.client.cli", "bench", "--quick", "--models", "sessions",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== sessions: 2 x LSTM(64), 8 features" in done.stdout
    result = json.loads((tmp_path / "bench.json").read_text())["sessions"]
    phases = result["phases"]
    assert set(phases) == {"floor_streams", "decoding_floor_streams", "server_streams", "predict_500_steps",
                           "floor_one_stream", "server_one_stream", "predict_1_step", "memory"}
    for name, phase in phases.items():
        if name != "memory":
            assert phase["answers_per_s"] > 0 and phase["errors"] == 0, (name, phase)
    assert phases["server_streams"]["server_cpu_ms_per_answer"] > 0  # read from the server's /proc
    assert phases["memory"]["sessions"] == 50
    assert {v["target"] for v in result["verdicts"]} == {
        "steps/s at 256 sessions vs transport floor", "errors",
        "steps/s at 256 sessions vs stateless Predict of 500 steps",
        "p50 of one step at 1 session vs a 1-step Predict"}
    assert 0 < result["ratios"]["decoding floor vs transport floor (256 streams)"]
    assert "steps/s at 256 sessions vs decoding floor" in done.stdout
