"""One thread that runs commands in order, each answered through a Future, and wakes on its own.

The repository's changes all go through one: the poll, SIGHUP and the model control calls never race,
and whoever asked (an event loop, a signal handler) only waits on a Future.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)


class _Command:
    def __init__(self, function: Callable, args: tuple) -> None:
        self.function, self.args, self.future = function, args, Future()

    def run(self) -> None:
        try:
            self.future.set_result(self.function(*self.args))
        except Exception as error:  # noqa: BLE001 (the asker's future carries it; the thread lives on)
            self.future.set_exception(error)


class CommandThread:
    """Runs submitted functions one at a time; when nothing is submitted for `wake_in()` seconds (None:
    never), runs `on_wake` as if it had been."""

    def __init__(self, name: str, on_wake: Callable[[], object],
                 wake_in: Callable[[], float | None]) -> None:
        self._on_wake, self._wake_in = on_wake, wake_in
        self._commands: queue.SimpleQueue = queue.SimpleQueue()  # put() is safe in a signal handler
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, function: Callable, *args) -> Future:
        command = _Command(function, args)
        self._commands.put(command)
        return command.future

    def stop(self, timeout: float = 30) -> None:
        """Stop after the command in progress."""
        if self._thread.is_alive():
            self._commands.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                command = self._commands.get(timeout=self._wake_in())
            except queue.Empty:
                command = _Command(self._on_wake, ())
            if command is None:
                return
            command.run()
            if command.future.exception() is not None and command.function is self._on_wake:
                log.error("%s failed", self._thread.name, exc_info=command.future.exception())
