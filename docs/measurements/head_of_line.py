"""Issue 11 item 7: 1-row calls while eight 60 MB requests are in flight, against one real `lstmserve serve`.

Usage: .venv/bin/python docs/measurements/head_of_line.py models/seed.h5   (the seed demo, input [rows, 1, 1])
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from lstmserve.client import Client, LstmserveError
from lstmserve.server.bench.processes import real_server

ROWS = 60_000_000 // 4  # 60 MB of float32


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def main(model: Path) -> None:
    log = Path(tempfile.mkdtemp()) / "serve.log"
    with real_server("seed", model, [], dict(os.environ), log) as server:
        address = server.address
        client = Client(address, timeout=600)
        big = np.random.default_rng(0).random((ROWS, 1, 1), dtype=np.float32)
        one = big[:1].copy()
        idle = [timed(lambda: client.predict(one, model="seed")) for _ in range(20)]
        outcomes: list[tuple[str, float]] = []

        def send_big() -> None:
            started = time.perf_counter()
            try:
                Client(address, timeout=600).predict(big, model="seed")
                outcomes.append(("OK", time.perf_counter() - started))
            except LstmserveError as error:
                outcomes.append((error.code.name, time.perf_counter() - started))

        senders = [threading.Thread(target=send_big) for _ in range(8)]
        started = time.perf_counter()
        for sender in senders:
            sender.start()
        time.sleep(1.0)
        during = []
        for _ in range(5):
            during.append(timed(lambda: client.predict(one, model="seed")))
            time.sleep(0.5)
        for sender in senders:
            sender.join()
        print(f"1-row call, idle: median {np.median(idle) * 1e3:.2f} ms")
        print(f"1-row calls during eight 60 MB requests: {[round(s * 1e3, 1) for s in during]} ms")
        print("60 MB requests:", sorted((code, round(s, 1)) for code, s in outcomes))
        print(f"all answered after {time.perf_counter() - started:.1f} s; "
              f"server peak RSS {peak_rss_mb(server.pid):.0f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
