"""Where the seconds go from process start to SERVING: named phases, timed where they happen.

Loading code marks its phases with `phase(name)`; they count only inside `recording()` (the thread that
loads a model for `serve`), so library calls elsewhere cost nothing and log nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()
_IMPORTED_AT = time.time()


class Phases:
    """Seconds per phase, in the order they first started; a repeated name adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def describe(self) -> str:
        """'read 0.01, build 0.12, bucket 1 0.40' (seconds)."""
        return ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.seconds.items())


@contextmanager
def recording() -> Iterator[Phases]:
    """Phases marked on this thread until the block ends."""
    previous = getattr(_local, "phases", None)
    _local.phases = Phases()
    try:
        yield _local.phases
    finally:
        _local.phases = previous


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as `name` when this thread is recording; otherwise do nothing."""
    phases = getattr(_local, "phases", None)
    if phases is None:
        yield
        return
    with phases.time(name):
        yield


def since_process_start() -> float:
    """Seconds since the kernel started this process (Linux); elsewhere since this module was imported."""
    try:
        with open("/proc/self/stat") as stat:
            # Field 22, after the command name in parentheses, counts clock ticks since boot.
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            up = float(uptime.read().split()[0])
        return up - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED_AT
