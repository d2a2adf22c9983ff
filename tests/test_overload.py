"""Overload: 2,000 simultaneous callers of 64-row requests (from a process of their own) against one
`lstmserve serve` answering at most 200 calls at once: every call is answered OK or RESOURCE_EXHAUSTED,
never CANCELLED, and health checks made throughout all answer SERVING. (On this machine: about 1,500 of
the 6,000 calls are refused; before the limit, gRPC dropped some of such a burst as CANCELLED.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serving import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLERS, ROUNDS, ROWS, LIMIT = 2000, 3, 64, 200


def test_two_thousand_callers_get_answers_or_resource_exhausted_and_health_answers(classifier_h5, tmp_path):
    log = tmp_path / "serve.log"
    process, address = serve({"classifier": classifier_h5}, log, "--max-concurrent-calls", str(LIMIT))
    try:
        burst = subprocess.run([sys.executable, str(Path(__file__).with_name("overload_burst.py")), address,
                                str(CALLERS), str(ROUNDS), str(ROWS)],
                               capture_output=True, text=True, timeout=600)
        assert burst.returncode == 0, burst.stderr[-3000:]
        counts = json.loads(burst.stdout)
    finally:
        process.terminate()
        assert process.wait(60) == 0, log.read_text()[-3000:]
    assert sum(counts["predict"].values()) == CALLERS * ROUNDS
    assert set(counts["predict"]) <= {"OK", "RESOURCE_EXHAUSTED"}, counts
    assert counts["predict"].get("OK", 0) >= LIMIT, counts  # the limit admits, it does not starve
    assert set(counts["health"]) == {"SERVING"} and counts["health"]["SERVING"] >= 5, counts
    assert "Traceback" not in log.read_text()
