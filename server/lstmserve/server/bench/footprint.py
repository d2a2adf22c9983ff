"""The server's footprint: time from process start to SERVING and resident memory, beside the floor
measured in the same run (a process that only imports TensorFlow and Keras as the server does: no
TensorFlow server starts faster or smaller than that).

Run as `python -m lstmserve.server.bench.footprint`: imports as `serve` does and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from statistics import median

FLOOR_RUNS = 3


def memory_mb(pid: int) -> dict | None:
    """Resident memory of a process in MB: all of it, its private (anonymous) part and its file-backed
    part (shared libraries' pages, shared with other processes mapping the same files); None off Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.findall(r"^(Rss\w*|VmRSS):\s+(\d+) kB", status, re.M)
    fields = {key: int(value) / 1024 for key, value in found}
    return {"rss_mb": fields.get("VmRSS"), "anon_mb": fields.get("RssAnon"), "file_mb": fields.get("RssFile")}


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far (user + system; Linux): unlike wall time, the same on a busy
    machine as on a quiet one, give or take cache effects."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def import_floor(env: dict) -> dict:
    """The median of FLOOR_RUNS fresh processes that only import TensorFlow and Keras, then exit."""
    runs = []
    for _ in range(FLOOR_RUNS):
        done = subprocess.run([sys.executable, "-m", __name__], env=env, capture_output=True, text=True,
                              timeout=300, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: float(median(run[key] for run in runs)) for key in runs[0]}


def startup_line(log: Path) -> str | None:
    """The server's own account of its start (`SERVING 3.1 s after the process started: ...`)."""
    match = re.search(r"SERVING [\d.]+ s after the process started: (.*)", log.read_text())
    return match.group(1) if match else None


def docker_image_mb(image: str = "lstmserve") -> float | None:
    """The size of a locally built image of deploy/Dockerfile, if docker and the image are here."""
    try:
        done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(done.stdout) / 2**20 if done.returncode == 0 and done.stdout.strip().isdigit() else None


def _measure_import() -> dict:
    from lstmserve.server.process import import_keras, prepare_tensorflow
    prepare_tensorflow("warning")
    import_keras()
    from lstmserve.server.phases import since_process_start
    seconds, cpu = since_process_start(), os.times()
    return {"seconds": seconds, "cpu_s": cpu.user + cpu.system, **memory_mb(os.getpid())}


if __name__ == "__main__":
    print(json.dumps(_measure_import()), flush=True)
