"""Issue 11 item 7: a 60 MB request whose deadline passes, then the next 1-row call (real `lstmserve serve`).

Usage: .venv/bin/python docs/measurements/cancelled_request.py models/seed.h5
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lstmserve.client import Client, LstmserveError
from lstmserve.server.bench.processes import real_server


def main(model: Path) -> None:
    log = Path(tempfile.mkdtemp()) / "serve.log"
    with real_server("seed", model, [], dict(os.environ), log) as server:
        address = server.address
        client = Client(address, timeout=600)
        big = np.random.default_rng(0).random((15_000_000, 1, 1), dtype=np.float32)
        one = big[:1].copy()
        client.predict(one, model="seed")
        for run in range(3):
            started = time.perf_counter()
            try:
                client.predict(big, model="seed", timeout=1.5)
                code = "OK"
            except LstmserveError as error:
                code = error.code.name
            gave_up = time.perf_counter() - started
            started = time.perf_counter()
            client.predict(one, model="seed")
            after = time.perf_counter() - started
            print(f"run {run}: 60 MB request {code} after {gave_up:.2f} s; "
                  f"the next 1-row call took {after * 1e3:.1f} ms")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
