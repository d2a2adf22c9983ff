"""The supervisor of `serve --processes N` over stub workers (fleet_stubs.py: the real Supervisor and the
real fleet channel, no TensorFlow): the health gate, signals forwarded, restarts within a budget, a
failed start, stragglers killed, workers that outlive a killed supervisor stop themselves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmserve.server.fleet import MAX_LINE, Channel
from lstmserve.server.supervisor import RestartBudget

pytestmark = pytest.mark.integration

STUBS = Path(__file__).with_name("fleet_stubs.py")


class StubFleet:
    """The stub supervisor in its own process, its output (and its workers') in one file."""

    def __init__(self, tmp_path: Path, *behaviours: str, grace_s: float = 5, margin_s: float = 5,
                 max_restarts: int = 3) -> None:
        self.log = tmp_path / "fleet.log"
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(STUBS), "supervise", str(len(behaviours)), str(grace_s), str(margin_s),
                 str(max_restarts), *behaviours], stdout=sink, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30) -> list[re.Match]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.text()))
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {count} x {pattern!r} in:\n{self.text()}")

    def pid(self, index: int, nth: int = 1) -> int:
        return int(self.wait_for(rf"worker {index} started \(pid (\d+)\)", nth)[nth - 1][1])

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def fleets(tmp_path):
    made: list[StubFleet] = []

    def make(*behaviours: str, **options) -> StubFleet:
        fleet = StubFleet(tmp_path / str(len(made)) if made else tmp_path, *behaviours, **options)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_health_opens_only_once_every_worker_is_ready(fleets, tmp_path):
    go = tmp_path / "go"
    fleet = fleets("ready", f"ready-when:{go}")
    fleet.wait_for("worker 0 ready \\(1 of 2\\)")
    fleet.wait_for("stub 1 .*: gate closed")
    time.sleep(0.3)  # room for a wrong "serve" to arrive; none may
    assert "gate open" not in fleet.text() and "health SERVING" not in fleet.text()
    go.touch()
    fleet.wait_for("gate open", 2)
    text = fleet.text()
    assert text.index("worker 1 ready (2 of 2)") < text.index("health SERVING: every worker (2) is ready")
    fleet.signal(signal.SIGTERM)
    assert fleet.wait() == 0


def test_sigterm_drains_every_worker_and_a_second_one_stops_them(fleets):
    fleet = fleets("drain-until-second", "drain-until-second")
    fleet.wait_for("gate open", 2)
    fleet.signal(signal.SIGTERM)
    fleet.wait_for("SIGTERM #1", 2)
    fleet.wait_for("gate closed", 4)  # closed at start, and again when the stop begins
    time.sleep(0.3)
    assert fleet.process.poll() is None  # still draining: the supervisor waits for its workers
    fleet.signal(signal.SIGTERM)
    fleet.wait_for("SIGTERM #2", 2)
    assert fleet.wait() == 0
    assert "SIGTERM again: every worker stops at once" in fleet.text()
    assert len(re.findall(r"worker \d \(pid \d+\) exited with 0", fleet.text())) == 2


def test_sigint_and_sighup_are_forwarded(fleets):
    fleet = fleets("ready", "ready")
    fleet.wait_for("gate open", 2)
    fleet.signal(signal.SIGHUP)
    fleet.wait_for("SIGHUP #1", 2)
    assert fleet.process.poll() is None
    fleet.signal(signal.SIGINT)
    fleet.wait_for("SIGINT #1", 2)
    assert fleet.wait() == 0


def test_a_sighup_reaches_a_worker_still_starting_once_it_is_ready(fleets, tmp_path):
    go = tmp_path / "go"
    fleet = fleets("ready", f"ready-when:{go}")
    fleet.wait_for("worker 0 ready \\(1 of 2\\)")
    fleet.signal(signal.SIGHUP)
    fleet.wait_for(r"stub 0 pid \d+: SIGHUP #1")
    time.sleep(0.3)
    assert not re.search(r"stub 1 pid \d+: SIGHUP", fleet.text())  # it has no handler before it is ready
    go.touch()
    fleet.wait_for(r"stub 1 pid \d+: SIGHUP #1")
    fleet.signal(signal.SIGTERM)
    assert fleet.wait() == 0


def test_a_dead_worker_is_restarted_and_health_closes_until_it_is_ready(fleets):
    fleet = fleets("ready", "ready")
    fleet.wait_for("gate open", 2)
    first = fleet.pid(1)
    os.kill(first, signal.SIGKILL)
    fleet.wait_for(f"worker 1 \\(pid {first}\\) was killed by SIGKILL")
    second = fleet.pid(1, nth=2)
    assert second != first
    fleet.wait_for(f"stub 0 pid {fleet.pid(0)}: gate closed", 2)  # held while worker 1 was gone
    fleet.wait_for("health SERVING", 2)
    fleet.wait_for(f"stub 1 pid {second}: gate open")
    assert "restarting worker 1 in" in fleet.text()
    fleet.signal(signal.SIGTERM)
    assert fleet.wait() == 0


def test_restarts_beyond_the_budget_stop_the_fleet(fleets):
    fleet = fleets("ready", "ready", max_restarts=1)
    fleet.wait_for("gate open", 2)
    os.kill(fleet.pid(0), signal.SIGKILL)
    os.kill(fleet.pid(0, nth=2), signal.SIGKILL)
    assert fleet.wait() == 1
    text = fleet.text()
    assert ("worker 0 died with no restart left (--max-restarts 1 within --restart-window-seconds 60): "
            "giving up") in text
    assert re.search(r"stub 1 pid \d+: SIGTERM #1", text)  # the survivor was drained, not left behind
    assert not alive(fleet.pid(1))


def test_a_worker_failing_at_start_stops_the_fleet_with_its_code(fleets):
    fleet = fleets("ready", "fail:2")
    assert fleet.wait() == 2
    text = fleet.text()
    assert "worker 1 failed to start; stopping the others" in text
    assert "restarting" not in text
    assert not alive(fleet.pid(0))


def test_a_worker_still_running_after_the_grace_is_killed(fleets):
    fleet = fleets("ready", "stubborn", grace_s=0.2, margin_s=0.2)
    fleet.wait_for("gate open", 2)
    fleet.signal(signal.SIGTERM)
    assert fleet.wait() == 1
    text = fleet.text()
    assert re.search(r"worker 1 \(pid \d+\) still running 0.4 s after the stop: killing it", text)
    assert re.search(r"worker 1 \(pid \d+\) was killed by SIGKILL", text)
    assert re.search(r"worker 0 \(pid \d+\) exited with 0", text)


def test_workers_stop_themselves_when_the_supervisor_is_killed(fleets):
    fleet = fleets("ready", "ready")
    fleet.wait_for("gate open", 2)
    pids = [fleet.pid(0), fleet.pid(1)]
    fleet.signal(signal.SIGKILL)
    fleet.wait()
    fleet.wait_for("exiting", 2)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)
    assert len(re.findall(r"SIGTERM #1", fleet.text())) == 2  # the supervisor gone reads as SIGTERM


@pytest.mark.unit
@given(st.integers(0, 6), st.lists(st.floats(0, 200), max_size=30))
def test_the_restart_budget_never_allows_more_than_its_limit_in_a_window(limit, gaps):
    budget = RestartBudget(limit, window_s=60.0, first_delay_s=0.5, max_delay_s=10.0)
    now, allowed = 0.0, []
    for gap in gaps:
        now += gap
        delay = budget.next_delay(now)
        if delay is not None:
            assert 0.5 <= delay <= 10.0
            allowed.append(now)
    for start in allowed:
        assert sum(start <= t <= start + 60.0 for t in allowed) <= limit


def test_the_supervisor_side_imports_no_tensorflow():
    code = ("import sys; import lstmserve.server.cli, lstmserve.server.supervisor, lstmserve.server.fleet, "
            "lstmserve.server.transport.metrics_multiprocess; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.unit
@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000))
def test_the_channel_reads_any_bytes_as_short_lines_then_ends(payload):
    channel = Channel.pair()
    lines, ended = [], threading.Event()
    channel.read(lines.append, ended.set, name="test-channel")
    channel.peer.sendall(payload)
    channel.peer.close()
    assert ended.wait(10)
    assert all(len(line) <= MAX_LINE + 1 for line in lines)
    assert len(lines) >= payload.count(b"\n")
    channel.close()
