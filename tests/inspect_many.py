"""Runs `lstmserve inspect` on each file named on the command line inside one process (TensorFlow is
imported once), printing one JSON line per file: its exit code, what it wrote to stderr, and any
exception that escaped; then the process's peak RSS in KiB."""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import traceback

from lstmserve.client.cli import main
from lstmserve.server.process import configure_logging

if __name__ == "__main__":
    configure_logging("warning")  # once, before any inspect: it takes over the process's stderr
    for path in sys.argv[1:]:
        stderr, escaped, code = io.StringIO(), "", None
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(["inspect", path])
            except BaseException:  # noqa: BLE001 (what escapes is what the test reports)
                escaped = traceback.format_exc()
        print(json.dumps({"path": path, "code": code, "stderr": stderr.getvalue(), "escaped": escaped}))
    print(json.dumps({"peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
