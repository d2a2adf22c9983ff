"""What the measurement scripts share: `lstmserve serve` of one model on a free port, until it is SERVING."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serve(model: Path, log: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """(process, address) of `lstmserve serve --model seed=MODEL` once every model is loaded and warm."""
    command = [sys.executable, "-m", "lstmserve.client.cli", "serve", "--model", f"seed={model}",
               "--port", "0", "--metrics-port", "0", *flags]
    with open(log, "w") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while "loaded and warm" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-3000:])
            time.sleep(0.2)
        port = re.search(r"listening on \S+:(\d+)", log.read_text())[1]
        yield server, f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(60)
