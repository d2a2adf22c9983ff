"""`lstmserve serve --processes N`: N worker processes on one port, started, watched and stopped by a
supervisor that never imports TensorFlow.

Each worker is a fresh interpreter running `lstmserve serve` with the same arguments and the hidden
--fleet-worker flag (subprocess, never fork: TensorFlow's threads do not survive a fork, so each worker
starts its own and loads the models itself). The workers share the port with SO_REUSEPORT: the kernel
spreads connections, not calls, over them. The supervisor
- holds the port (a bound, not listening SO_REUSEPORT socket): port 0 becomes one port for every worker,
  and a restarted worker binds the same one;
- opens health once every worker is ready and closes it while one is not (fleet.py);
- restarts a worker that dies, after a backoff, at most --max-restarts times in --restart-window-seconds;
  beyond that it stops the others and exits 1. A worker that fails before the fleet ever served (bad
  flags, a model that does not load) stops the fleet with that worker's exit code, as one process would;
- forwards SIGTERM and SIGINT (the drain), a second one (stop at once) and SIGHUP (rescan the repository),
  and kills a worker still running --grace-seconds + STOP_MARGIN_S after the stop;
- serves /metrics on --metrics-port from prometheus_client's multiprocess files, which the workers write
  to a fresh directory of this run (removed at exit).
The workers run in a session of their own, so a terminal's Ctrl-C reaches them once, through here.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lstmserve.server.fleet import HOLD, READY, SERVE, Channel, worker_flag

log = logging.getLogger("lstmserve.supervisor")

MAX_PROCESSES = 64
STOP_MARGIN_S = 10.0  # after the drain: closing engines and leaving the interpreter
POLL_S = 0.1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode: where workers write


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", type=int, default=1,
                        help="worker processes sharing the port (SO_REUSEPORT), each loading the models "
                        "itself, under a supervisor that restarts them (default 1: one process, no "
                        f"supervisor; at most {MAX_PROCESSES})")
    parser.add_argument("--max-restarts", type=int, default=5,
                        help="--processes: restarts of dead workers allowed within --restart-window-seconds "
                        "before the supervisor stops the fleet and exits 1 (default 5)")
    parser.add_argument("--restart-window-seconds", type=float, default=60.0,
                        help="--processes: the window --max-restarts counts in (default 60)")
    parser.add_argument("--fleet-worker", help=argparse.SUPPRESS)  # INDEX:FD, set by the supervisor


@dataclass
class RestartBudget:
    """At most `limit` restarts within `window_s`, each after a backoff doubling from `first_delay_s`."""

    limit: int = 5
    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    times: deque = field(default_factory=deque)

    def next_delay(self, now: float) -> float | None:
        """The wait before the next restart, counted now; None once the budget is spent."""
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return None
        delay = min(self.max_delay_s, self.first_delay_s * 2 ** len(self.times))
        self.times.append(now)
        return delay


class NoFleetMetrics:
    """What the supervisor tells its metrics (metrics_multiprocess.FleetMetrics; nothing with
    --metrics-port 0)."""

    def worker_exited(self, pid: int) -> None:
        pass

    def restarted(self) -> None:
        pass

    def ready(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Worker:
    index: int
    process: subprocess.Popen
    channel: Channel
    ready: bool = False
    rescan_pending: bool = False  # a SIGHUP came while it was starting: forwarded once it is ready


class Supervisor:
    """Runs `count` workers, each started by `command(index, fd)` (fd: its end of the channel), until a
    stop signal, a spent restart budget or a failed start; `run` returns the exit code."""

    def __init__(self, count: int, command: Callable[[int, int], list[str]], env: dict, grace_s: float,
                 budget: RestartBudget, metrics=None, stop_margin_s: float = STOP_MARGIN_S) -> None:
        self.count, self.command, self.env = count, command, env
        self.stop_after_s = grace_s + stop_margin_s
        self.budget = budget
        self.metrics = metrics or NoFleetMetrics()
        self.events: queue.SimpleQueue = queue.SimpleQueue()  # put() is safe in a signal handler
        self.workers: dict[int, Worker] = {}
        self.restarts_due: dict[int, float] = {}
        self.gate_open = False
        self.served = False  # every worker was ready at least once
        self.stopping = False
        self.deadline: float | None = None
        self.exit_code = 0

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in FORWARDED}
        try:
            for index in range(self.count):
                self._spawn(index)
            while not (self.stopping and not self.workers):
                self._handle(self._next_event())
                self._reap()
                self._restart_due()
                self._enforce_deadline()
        finally:
            self.stopping = True
            for worker in list(self.workers.values()):  # only on an error of our own
                worker.process.kill()
                self._exited(worker, worker.process.wait(30))
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.exit_code

    def _on_signal(self, signum: int, frame) -> None:
        self.events.put(("signal", signum, None))

    def _next_event(self) -> tuple | None:
        try:
            return self.events.get(timeout=POLL_S)
        except queue.Empty:
            return None

    def _handle(self, event: tuple | None) -> None:
        if event is None:
            return
        kind, value, worker = event
        if kind == "signal":
            self._signalled(value)
        elif worker is self.workers.get(worker.index) and not self.stopping:
            self._heard(worker, value)

    def _signalled(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            # A worker still starting has no handler yet (SIGHUP would end it): it gets the signal once
            # ready, so a change it may have scanned too early is not missed.
            log.info("SIGHUP: every worker rescans the model repository")
            for worker in self.workers.values():
                worker.rescan_pending = not worker.ready
            self._forward(signum, [worker for worker in self.workers.values() if worker.ready])
        elif not self.stopping:
            log.info("%s: draining every worker (then stopping)", signal.Signals(signum).name)
            self._stop(0, signum)
        else:
            log.info("%s again: every worker stops at once", signal.Signals(signum).name)
            self._forward(signum)

    def _heard(self, worker: Worker, word: str) -> None:
        if word != READY:
            log.warning("worker %d said %r; expected %r", worker.index, word, READY)
            return
        worker.ready = True
        if worker.rescan_pending:
            self._forward(signal.SIGHUP, [worker])
        ready = sum(w.ready for w in self.workers.values())
        self.metrics.ready(ready)
        log.info("worker %d ready (%d of %d)", worker.index, ready, self.count)
        if ready == self.count:
            self.served = True
            self._gate(True, f"every worker ({self.count}) is ready")

    def _spawn(self, index: int) -> None:
        channel = Channel.pair()
        try:
            process = subprocess.Popen(self.command(index, channel.peer.fileno()), env=self.env,
                                       pass_fds=(channel.peer.fileno(),), stdin=subprocess.DEVNULL,
                                       stderr=sys.stderr, start_new_session=True)
        except OSError as error:
            channel.close()
            log.error("cannot start worker %d: %s; stopping", index, error)
            self._stop(1)
            return
        channel.spawned()
        worker = Worker(index, process, channel)
        self.workers[index] = worker
        channel.read(lambda line: self.events.put(("line", line, worker)), lambda: None,
                     name=f"fleet-worker-{index}")
        log.info("worker %d started (pid %d)", index, process.pid)

    def _reap(self) -> None:
        for worker in list(self.workers.values()):
            code = worker.process.poll()
            if code is not None:
                self._exited(worker, code)

    def _exited(self, worker: Worker, code: int) -> None:
        del self.workers[worker.index]
        worker.channel.close()
        self.metrics.worker_exited(worker.process.pid)
        self.metrics.ready(sum(w.ready for w in self.workers.values()))
        how = f"exited with {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
        if self.stopping:
            clean = code == 0 or -code in (signal.SIGTERM, signal.SIGINT)  # stopped before it could drain
            log.log(logging.INFO if clean else logging.WARNING, "worker %d (pid %d) %s", worker.index,
                    worker.process.pid, how)
            self.exit_code = self.exit_code or (0 if clean else 1)
            return
        log.error("worker %d (pid %d) %s", worker.index, worker.process.pid, how)
        self._gate(False, f"worker {worker.index} is gone")
        if not self.served and code > 0:
            log.error("worker %d failed to start; stopping the others", worker.index)
            self._stop(code)
        else:
            self._schedule_restart(worker.index)

    def _schedule_restart(self, index: int) -> None:
        delay = self.budget.next_delay(time.monotonic())
        if delay is None:
            log.error("worker %d died with no restart left (--max-restarts %d within "
                      "--restart-window-seconds %g): giving up, stopping the others", index,
                      self.budget.limit, self.budget.window_s)
            self._stop(1)
            return
        log.warning("restarting worker %d in %.1f s (restart %d of at most %d within %g s)", index, delay,
                    len(self.budget.times), self.budget.limit, self.budget.window_s)
        self.metrics.restarted()
        self.restarts_due[index] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.restarts_due.items()):
            if now >= when and not self.stopping:
                del self.restarts_due[index]
                self._spawn(index)

    def _gate(self, open_: bool, why: str) -> None:
        if self.gate_open == open_:
            return
        self.gate_open = open_
        log.info("health %s: %s", "SERVING" if open_ else "NOT_SERVING", why)
        for worker in self.workers.values():
            worker.channel.send(SERVE if open_ else HOLD)

    def _stop(self, code: int, signum: int = signal.SIGTERM) -> None:
        """Drain every worker (they answer what they accepted), then exit with `code` if all went well."""
        if self.stopping:
            return
        self.stopping, self.exit_code = True, code
        self.deadline = time.monotonic() + self.stop_after_s
        self.restarts_due.clear()
        self._gate(False, "stopping")
        self._forward(signum)

    def _forward(self, signum: int, workers: list[Worker] | None = None) -> None:
        for worker in self.workers.values() if workers is None else workers:
            try:
                worker.process.send_signal(signum)
            except ProcessLookupError:  # already gone: the next reap sees it
                pass

    def _enforce_deadline(self) -> None:
        if self.deadline is None or time.monotonic() < self.deadline:
            return
        self.deadline = None
        for worker in self.workers.values():
            log.warning("worker %d (pid %d) still running %g s after the stop: killing it", worker.index,
                        worker.process.pid, self.stop_after_s)
            worker.process.kill()
        self.exit_code = self.exit_code or 1


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """`serve --processes N`: `argv` is the command line after the program name ("serve", ...)."""
    from lstmserve.server.process import configure_logging
    configure_logging(args.log_level or "info", json_lines=args.log_format == "json")
    try:
        _check(args, argv)
        holder = reserve_port(args.host, args.port)
    except (ValueError, OSError) as error:
        print(f"lstmserve serve: {error}", file=sys.stderr)
        return 2
    port = holder.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if key != MULTIPROC_DIR}
    metrics = NoFleetMetrics()
    try:
        if args.metrics_port:
            from lstmserve.server.transport.metrics_multiprocess import FleetMetrics
            metrics = FleetMetrics(args.metrics_host or args.host, args.metrics_port)
            env[MULTIPROC_DIR] = metrics.directory
        log.info("supervising %d workers on %s:%d", args.processes, args.host, port)
        budget = RestartBudget(args.max_restarts, args.restart_window_seconds)
        supervisor = Supervisor(args.processes, lambda index, fd: worker_command(argv, port, index, fd), env,
                                args.grace_seconds, budget, metrics)
        return supervisor.run()
    except OSError as error:
        print(f"lstmserve serve: {error}", file=sys.stderr)
        return 2
    finally:
        metrics.close()
        holder.close()


def worker_command(argv: list[str], port: int, index: int, fd: int) -> list[str]:
    """The same `serve` command line, on the fleet's port, as worker `index` of the channel at `fd`."""
    return [sys.executable, "-m", "lstmserve.client.cli", *argv, "--port", str(port),
            "--fleet-worker", worker_flag(index, fd)]


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening SO_REUSEPORT socket on host:port: it receives no connection, keeps the port
    this fleet's while workers restart, and turns port 0 into one free port."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--processes needs SO_REUSEPORT, which this system does not have")
    family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    holder = socket.socket(family, kind, proto)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind(address)
    except OSError as error:
        holder.close()
        raise OSError(f"cannot listen on {host}:{port} ({error.strerror})") from None
    return holder


def _check(args: argparse.Namespace, argv: list[str]) -> None:
    if not 1 <= args.processes <= MAX_PROCESSES:
        raise ValueError(f"--processes is 1 to {MAX_PROCESSES}; got {args.processes}")
    if args.max_restarts < 0 or args.restart_window_seconds <= 0:
        raise ValueError("--max-restarts is at least 0 and --restart-window-seconds above 0")
    if argv[:1] != ["serve"]:
        raise ValueError("--processes restarts `lstmserve serve` from its own command line, which this "
                         f"process does not have (it was started as {argv[:1]})")
