"""Stand-ins for `serve --processes N`'s processes, without TensorFlow or gRPC, so the supervisor's rules
run in a second: `python fleet_stubs.py supervise COUNT GRACE_S MARGIN_S MAX_RESTARTS BEHAVIOUR...` runs
the real Supervisor over stub workers (`python fleet_stubs.py worker INDEX:FD BEHAVIOUR`), which speak the
real fleet channel and print what they hear. A restarted worker behaves as "ready".

Behaviours: ready | ready-when:PATH (once the file exists) | fail:CODE (exits at start) | stubborn
(ignores SIGTERM) | drain-until-second (a first SIGTERM drains, a second one exits).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from lstmserve.server.fleet import WorkerLink
from lstmserve.server.supervisor import RestartBudget, Supervisor


def worker(flag: str, behaviour: str) -> int:
    link = WorkerLink.from_flag(flag)
    say = lambda text: print(f"stub {link.index} pid {os.getpid()}: {text}", flush=True)  # noqa: E731
    stop, signals = threading.Event(), Counter()

    def on_signal(signum, frame) -> None:
        name = signal.Signals(signum).name
        signals[name] += 1
        say(f"{name} #{signals[name]}")
        if signum == signal.SIGHUP or behaviour == "stubborn":
            return
        if behaviour != "drain-until-second" or signals[name] > 1:
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    link.attach(Gate(say))
    if behaviour.startswith("fail:"):
        say("failing at start")
        return int(behaviour.split(":")[1])
    if behaviour.startswith("ready-when:"):
        while not Path(behaviour.split(":", 1)[1]).exists():
            time.sleep(0.02)
    link.ready()
    say("ready")
    while not stop.wait(0.05):
        pass
    say("exiting")
    return 0


class Gate:
    """What the supervisor's words reach in a real worker: RunningServer.set_gate."""

    def __init__(self, say) -> None:
        self.say = say

    def set_gate(self, open_: bool) -> None:
        self.say(f"gate {'open' if open_ else 'closed'}")


def supervise(count: int, grace_s: float, margin_s: float, max_restarts: int, behaviours: list[str]) -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    spawned: Counter = Counter()

    def command(index: int, fd: int) -> list[str]:
        spawned[index] += 1
        behaviour = behaviours[index] if spawned[index] == 1 else "ready"
        return [sys.executable, __file__, "worker", f"{index}:{fd}", behaviour]

    budget = RestartBudget(max_restarts, 60.0, first_delay_s=0.05)
    return Supervisor(count, command, dict(os.environ), grace_s, budget, stop_margin_s=margin_s).run()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        sys.exit(worker(sys.argv[2], sys.argv[3]))
    count, grace, margin, restarts, *rest = sys.argv[2:]
    sys.exit(supervise(int(count), float(grace), float(margin), int(restarts), rest))
