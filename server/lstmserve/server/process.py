"""Process-wide settings, applied by entry points only (serve, inspect, the bench's processes), never by
a library module: the interpreter's switch interval, TensorFlow's environment (and its persistent
compilation cache), what Keras imports, and the log.

TensorFlow's C++ side writes to file descriptor 2 directly (a failed cuInit on machines without a GPU,
oneDNN and XLA notices), some of it before any setting can silence it. `configure_logging` moves what is
written to descriptor 2 into the logging module, as `lstmserve.native` lines at DEBUG (known-harmless
ones) or WARNING (the rest), so a user sees lstmserve's own lines and `--log-level debug` shows all.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import os
import platform
import re
import sys
import threading
from importlib import metadata
from pathlib import Path

# grpc.aio hands every completion from its poller thread to the event loop, and models run on their own
# threads; all take turns on one interpreter lock. By default a thread that wants the lock waits up to
# 5 ms for a busy one to yield it, so under load the loop starves the poller. Measured on 2 cores, 0.1 ms
# instead of 5 ms: seed model at 8 callers 1.8-2.0k -> 2.5k req/s, heavy model's batch cycle 6.3-6.8 ms
# -> 5.0-5.4 ms (the compute alone takes 4.4 ms); the bench's transport floor gets the same setting.
SWITCH_INTERVAL_S = 1e-4
# Young-object collections every 20,000 net allocations rather than 700 (see freeze_heap); the older
# generations at Python's defaults.
GC_THRESHOLDS = (20_000, 10, 10)

LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# absl's line prefix: severity letter, date, time, thread, file:line.
NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]*\] ?(.*)$")
HARMLESS_NATIVE = ("failed call to cuInit", "Could not find cuda drivers", "Unable to register cu",
                   "All log messages before absl::InitializeLog",
                   "oneDNN custom operations", "TF_ENABLE_ONEDNN_OPTS", "XLA service", "StreamExecutor",
                   "Compiled cluster using XLA", "rebuild TensorFlow with the appropriate compiler flags")
NOISY_PYTHON_LOGGERS = ("absl", "tensorflow", "py.warnings", "h5py", "numba")


def tune_for_serving() -> None:
    """Hand the interpreter lock over every 0.1 ms (see SWITCH_INTERVAL_S)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def prepare_tensorflow(level: str = "info") -> None:
    """Environment TensorFlow reads once, at import: call before anything imports it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if level == "debug" else "2")


def require_tensorflow() -> None:
    """A clear message, not a traceback, where lstmserve-server was installed without a TensorFlow build."""
    try:
        tensorflow_distribution()
    except metadata.PackageNotFoundError:
        raise RuntimeError("TensorFlow is not installed: pip install 'lstmserve-server[cpu]' (or [gpu] for "
                           "the CUDA build)") from None


def tensorflow_distribution() -> str:
    """'tensorflow-cpu 2.21.0' or 'tensorflow 2.21.0': the build installed (PackageNotFoundError if none)."""
    for name in ("tensorflow-cpu", "tensorflow"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    raise metadata.PackageNotFoundError("tensorflow")


def use_compilation_cache(directory: Path) -> Path:
    """Let XLA save every executable it compiles under `directory` and load it there the next time the
    same function meets the same shapes (a restart, another replica on the same machine type), instead
    of compiling again. Call before TensorFlow is imported: it reads TF_XLA_FLAGS once.

    The files are machine code the server runs, so they live in a subfolder per TensorFlow build and
    processor (an executable from another is never loaded) that must belong to this user and be
    writable by no one else. Returns that subfolder."""
    if "tensorflow" in sys.modules:
        raise RuntimeError("the compilation cache must be set before TensorFlow is imported")
    folder = Path(directory) / _build_tag()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = folder.stat()
    if state.st_uid != os.geteuid() or state.st_mode & 0o022:
        raise ValueError(f"compilation cache {folder} must belong to this user and be writable by no one "
                         f"else (it holds machine code the server loads); found uid {state.st_uid}, mode "
                         f"{state.st_mode & 0o777:o}")
    flags = os.environ.get("TF_XLA_FLAGS", "")
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={folder}".strip()
    return folder


def _build_tag() -> str:
    """'tensorflow-cpu-2.21.0-x86_64-<hash of the processor's feature flags>'."""
    features = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            features = next((line for line in cpuinfo if line.startswith("flags")), features)
    except OSError:
        pass
    digest = hashlib.sha256(features.encode()).hexdigest()[:12]
    return f"{tensorflow_distribution().replace(' ', '-')}-{platform.machine()}-{digest}"


def start_tensorflow(compilation_cache: Path | None, startup) -> None:
    """What TensorFlow reads once (the compilation cache), then TensorFlow and Keras themselves, timed as
    the start-up phase "import tensorflow, keras" of `startup` (phases.Phases)."""
    require_tensorflow()
    if compilation_cache is not None:
        folder = use_compilation_cache(compilation_cache)
        logging.getLogger("lstmserve.server").info("XLA compilation cache: %s", folder)
    with startup.time("import tensorflow, keras"):
        import_keras()


def import_keras() -> None:
    """Import Keras (and TensorFlow) for serving, without matplotlib: Keras's plotting utilities import it
    whenever it is installed (0.4 s and about 30 MB), and no served model draws. Blocked only while
    Keras loads, so an operator's custom-objects module may still import it."""
    blocked = "matplotlib" not in sys.modules
    if blocked:
        sys.modules["matplotlib"] = None  # an import of it raises ImportError, which Keras expects
    try:
        import keras  # noqa: F401
    finally:
        if blocked and sys.modules.get("matplotlib", False) is None:
            del sys.modules["matplotlib"]


def freeze_heap(collect: bool = False) -> None:
    """Keep the objects alive now (TensorFlow, Keras, the models: some 280,000) out of every later
    garbage collection, and collect young objects less often.

    Python's full collection walks every tracked object: 0.15 s with the interpreter lock held, every
    few seconds under load, measured 0.9 s of 15 s serving 256 streaming sessions (and each one a
    0.15 s pause for every call). Frozen (gc.freeze) and with a first generation of GC_THRESHOLDS[0]
    allocations, the same load spent 0.03 s in collections. `collect`: a model version has been
    closed, so the frozen objects are thawed and collected first (its reference cycles would otherwise
    stay frozen for good): one 0.15 s collection, which HeapKeeper runs once per burst of closes.
    Without it nothing is collected: at start the heap held 10 unreachable objects."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class HeapKeeper:
    """Runs freeze_heap(collect=True) once model versions have closed: REFREEZE_DELAY_S after the last
    of a burst (a rescan replacing ten models collects once, not ten times), and never once `stop`
    has been called (a server closing all its models on the way out has nothing to keep)."""

    REFREEZE_DELAY_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._stopped = False

    def model_closed(self) -> None:
        with self._lock:
            if self._stopped:
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.REFREEZE_DELAY_S, freeze_heap, kwargs={"collect": True})
            self._timer.daemon = True
            self._timer.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()


def release_freed_memory() -> None:
    """Hand the heap memory freed since start back to the system (glibc's malloc_trim; elsewhere nothing).

    XLA's compiler frees what it used, but glibc keeps the freed pages for later allocations, and a
    server that has compiled every bucket allocates little after: 696 -> 640 MB resident for the heavy
    benchmark model, in 50 ms. Called once models are loaded."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def configure_logging(level: str = "info", json_lines: bool = False, worker: int | None = None) -> None:
    """lstmserve's lines at `level`, as text or one JSON object a line (python-json-logger); TensorFlow,
    Keras and absl (Python and C++) only at debug. A `worker` of `serve --processes N` tags its lines."""
    if level not in LEVELS:
        raise ValueError(f"log level is {level!r}; expected one of {LEVELS}")
    prepare_tensorflow(level)
    handler = logging.StreamHandler(_capture_native_stderr())
    handler.setFormatter(_json_formatter(worker) if json_lines else logging.Formatter(
        TEXT_FORMAT if worker is None else TEXT_FORMAT.replace("%(name)s", f"[worker {worker}] %(name)s")))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)
    if level != "debug":
        for name in NOISY_PYTHON_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


_captured: list = []  # the stream standing for the real stderr, once descriptor 2 has been captured


def _json_formatter(worker: int | None) -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter
    return JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger"},
                         static_fields=None if worker is None else {"worker": worker})


def _capture_native_stderr():
    """Point descriptor 2 at a pipe read into the log; Python's own stderr keeps the real terminal."""
    if _captured:
        return _captured[0]
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="replace")
    sys.stderr = stream
    threading.Thread(target=_forward_native, args=(read_end,), name="native-stderr", daemon=True).start()
    _captured.append(stream)
    return stream


def _forward_native(read_end: int) -> None:
    log = logging.getLogger("lstmserve.native")
    with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            text = line.rstrip()
            if text:
                log.log(_native_level(text), "%s", text)


def _native_level(text: str) -> int:
    match = NATIVE_LINE.match(text)
    message = match.group(2) if match else text
    if any(marker in message for marker in HARMLESS_NATIVE) or (match and match.group(1) in "IW"):
        return logging.DEBUG
    return logging.CRITICAL if match and match.group(1) == "F" else logging.WARNING
