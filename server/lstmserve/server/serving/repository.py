"""The model repository as served: DIR/NAME/VERSION/*.h5 watched; each version loaded and warmed in the
background, swapped in as the default, drained and closed when it leaves service.

One worker thread makes every change, in order: the poll, SIGHUP and the ModelService's calls become
commands on its queue, so two changes never race and a load (seconds of compiling) never runs on the
event loop. A version is loaded only once its file has stopped changing (the same size, mtime and
inode at two scans at least SETTLE_S apart, and untouched for SETTLE_S); a version that fails to load
leaves what is served as it was and is tried again only when its file or its model's settings change.
Models given as files (`--model NAME=PATH`) are loaded once, as version 1, and not watched.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

from lstmserve.server.engine.base import DEFAULT_ENGINE, EngineConfig
from lstmserve.server.errors import ModelConfigError, ModelLoadError, ModelNotFound, Overloaded
from lstmserve.server.loading.build import LoadOptions
from lstmserve.server.loading.load import load_model
from lstmserve.server.loading.modelfile import DEFAULT_LIMITS, FileLimits
from lstmserve.server.phases import recording
from lstmserve.server.serving.model import LoadedModel
from lstmserve.server.serving.model_config import ModelSettings, VersionPolicy, read_settings
from lstmserve.server.serving.registry import ModelRegistry, ModelStatus, VersionState
from lstmserve.server.serving.repository_files import (
    SETTLE_S,
    Fingerprint,
    RepositoryScanner,
    Settling,
    VersionFile,
    check_name,
    check_version,
)
from lstmserve.server.serving.worker import CommandThread

log = logging.getLogger(__name__)

LOAD_WAIT_S = 3 * SETTLE_S  # how long LoadModel waits for a file that is still changing
Key = tuple[str, int]


@dataclass(frozen=True)
class RepositoryOptions:
    """The serve flags that shape the repository: where it is, what every model gets by default."""

    root: Path | None = None
    files: Mapping[str, Path] = field(default_factory=dict)  # --model NAME=PATH
    defaults: ModelSettings = ModelSettings()
    engine: EngineConfig = DEFAULT_ENGINE
    limits: FileLimits = DEFAULT_LIMITS
    poll_seconds: float = 5.0
    max_versions: int = 8
    trust_config: bool = False
    # What an operator's metrics hear of loads: (model, seconds) for each version loaded, and the
    # model's name for each that failed.
    observe_load: Callable[[str, float], None] = lambda name, seconds: None
    count_load_failure: Callable[[str], None] = lambda name: None


class Repository:
    """Keeps the registry in step with the repository. Public methods may be called from any thread
    (a signal handler too) and return a Future settled by the repository's one thread."""

    def __init__(self, registry: ModelRegistry, options: RepositoryOptions,
                 loader: Callable[..., LoadedModel] = load_model) -> None:
        self.registry = registry
        self.options = options
        self._loader = loader
        self._worker = CommandThread("model-repository", self._sync_all, self._wake_in)
        self._scanner = RepositoryScanner(options.root) if options.root else None
        # Touched by the worker thread only.
        self._known: dict[str, Path] = {}
        self._settling = Settling()
        self._loaded: dict[Key, tuple] = {}  # (fingerprint, load key) of what is in service
        self._failed: dict[Key, tuple] = {}  # the same, of what failed: not tried again unchanged
        self._logged: dict[Key | str, str] = {}
        self._pinned: set[Key] = set()  # loaded by LoadModel, whatever the policy says
        self._unpinned: set[Key] = set()  # unloaded by UnloadModel
        self._disabled: set[str] = set()  # every version unloaded by UnloadModel
        self._pending: set[str] = set()  # models with a version whose file has not settled yet
        self._startup: Future = Future()
        self._startup.add_done_callback(lambda _: registry.expect(()))
        self._failures: list[str] = []
        # Seconds each version loaded at start took, in the order loaded (the start-up line reads it);
        # later reloads are the metrics' and the log's, so this stays as small as the start.
        self.startup_load_seconds: dict[Key, float] = {}

    def start(self) -> Future:
        """Scan and load everything; the Future's result lists what failed (empty: all loaded)."""
        self.registry.expect(self.options.files)  # the repository's own names once it is scanned
        self._worker.start()
        self._worker.submit(self._sync_all)
        return self._startup

    def rescan(self) -> Future:
        """Look at the repository now (SIGHUP, ReloadRepository); result: every model's status."""
        return self._worker.submit(self._sync_all)

    def load(self, name: str, version: str = "") -> Future:
        """Serve a version of the repository (what its policy selects, without one); result: status."""
        return self._worker.submit(self._load_command, check_name(name), check_version(version))

    def unload(self, name: str, version: str = "") -> Future:
        """Take a version (every version, without one) out of service until loaded again."""
        return self._worker.submit(self._unload_command, check_name(name), check_version(version))

    def stop(self, timeout: float = 30) -> None:
        """Stop watching (after the command in progress, a load perhaps); what is served stays."""
        self._worker.stop(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop watching, then close every version once its calls are done."""
        self.stop()
        self.registry.close(timeout)

    def _wake_in(self) -> float | None:
        if self._pending:
            return SETTLE_S
        poll = self.options.poll_seconds
        return poll if poll > 0 and self._scanner else None

    # Scanning and reconciling (worker thread).

    def _sync_all(self) -> list[ModelStatus]:
        found = self._scanner.models() if self._scanner else {}
        if not self._startup.done():  # every model of the start is "still loading" until it is reached
            self.registry.expect([*self.options.files, *(found or {})])
        for name, path in sorted(self.options.files.items()):
            self._sync_file(name, path)
        if found is None:
            self._fail_start("the model repository cannot be read")
        else:
            found = {n: p for n, p in found.items() if not self._shadowed(n)}
            for name, model_dir in sorted(found.items()):
                self._sync_directory(name, model_dir)
            for name in sorted(set(self._known) - set(found)):
                self._remove_model(name)
            self._known = found
        self._settling.started()
        if not self._startup.done() and not self._pending:
            self._startup.set_result(list(self._failures))
        return self.registry.status()

    def _sync_one(self, name: str) -> None:
        if name in self.options.files:
            self._sync_file(name, self.options.files[name])
        else:
            self._sync_directory(name, self._known[name])

    def _sync_file(self, name: str, path: Path) -> None:
        file = VersionFile(1, path.name, path, Fingerprint.of(path))
        settings = replace(self.options.defaults, policy=VersionPolicy("all"), labels={})
        self._reconcile(name, settings, {1: file}, follow=False, policy="file")

    def _sync_directory(self, name: str, model_dir: Path) -> None:
        try:
            settings = read_settings(model_dir, self.options.defaults, self.options.trust_config)
        except ModelConfigError as error:
            self._report(name, str(error), f"model '{name}': %s (what it serves stays as it is)")
            self.registry.describe(name, problem=str(error))
            self._pending.discard(name)
            return
        self._logged.pop(name, None)
        files = self._scanner.versions(model_dir)
        self._reconcile(name, settings, files, follow=True, policy=settings.policy.describe())

    def _reconcile(self, name: str, settings: ModelSettings, files: dict[int, VersionFile],
                   follow: bool, policy: str) -> None:
        labels = {label: str(v) for label, v in settings.labels.items()}
        self.registry.describe(name, policy=policy, labels=labels)
        self._pending.discard(name)
        ready, held = self._ready(name, settings, files, follow)
        candidates = {v: f for v, f in ready.items() if not self._idle((name, v))}
        while True:
            desired = self._desired(name, settings, candidates)
            todo = [v for v in sorted(desired, reverse=True)
                    if v not in held and self._needs_load((name, v), candidates[v], settings, follow)]
            if not todo:
                break
            if not self._load_version(name, candidates[todo[0]], settings):
                del candidates[todo[0]], ready[todo[0]]
        for version in sorted(self._served(name) - desired):
            gone = version not in files
            self._unload(name, version, "its directory was removed from the repository" if gone
                         else self._idle_reason(name, version, settings, set(ready)))
        for version in sorted(set(ready) - desired - held):
            self.registry.note(name, str(version), VersionState.UNLOADED,
                               self._idle_reason(name, version, settings, set(ready)),
                               files[version].relative)
        self._forget_missing(name, files)

    def _ready(self, name: str, settings: ModelSettings, files: dict[int, VersionFile],
               follow: bool) -> tuple[dict[int, VersionFile], set[int]]:
        """The versions that may be served now, and among them those held as they are: in service,
        while their changed file waits to settle or has failed."""
        ready, held = {}, set()
        for version, file in files.items():
            key = (name, version)
            if file.problem:
                self._fail(key, file, file.problem)
            elif self._idle(key) and key not in self._loaded:
                self._settling.settled(key, file.fingerprint)  # watched, so LoadModel finds it settled
                ready[version] = file
                continue
            elif follow and not self._settling.settled(key, file.fingerprint):
                self._pending.add(name)
                self.registry.note(name, str(version), VersionState.LOADING,
                                   "waiting for its file to stop changing", file.relative)
            elif self._failed.get(key) != (file.fingerprint, settings.load_key):
                ready[version] = file
                continue
            if key in self._loaded:
                ready[version] = file
                held.add(version)
        return ready, held

    def _desired(self, name: str, settings: ModelSettings, ready: dict[int, VersionFile]) -> set[int]:
        """What the policy selects, plus labelled and LoadModel'd versions, at most max_versions."""
        cap = self.options.max_versions
        chosen = settings.policy.select(ready, cap)
        extra = {v for v in settings.labels.values() if v in ready}
        extra |= {v for n, v in self._pinned if n == name and v in ready}
        keep = sorted(extra, reverse=True)[:cap]
        rest = sorted(chosen - set(keep), reverse=True)[:cap - len(keep)]
        return set(keep) | set(rest)

    def _needs_load(self, key: Key, file: VersionFile, settings: ModelSettings, follow: bool) -> bool:
        loaded = self._loaded.get(key)
        if loaded is None:
            return True
        return follow and loaded != (file.fingerprint, settings.load_key)

    def _load_version(self, name: str, file: VersionFile, settings: ModelSettings) -> bool:
        """Load, compile and warm one version and put it in service; False when it did not."""
        key, version = (name, file.version), str(file.version)
        self.registry.note(name, version, VersionState.LOADING, "reading, compiling and warming",
                           file.relative)
        started = time.monotonic()
        try:
            options = LoadOptions.create(settings.custom_objects, settings.allow_code)
            engine = replace(self.options.engine, batching=settings.batching)
            with recording() as phases:
                model = self._loader(file.path, name, version, options=options, engine=engine,
                                     limits=self.options.limits)
        except Exception as error:  # noqa: BLE001 (load_model says ModelLoadError; anything else too)
            reason = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
            self._fail(key, file, self._within(reason), (file.fingerprint, settings.load_key))
            self.options.count_load_failure(name)
            return False
        if Fingerprint.of(file.path) != file.fingerprint:
            model.close()  # its bytes may be half old, half new: wait for the file to settle again
            self._settling.reset(key)
            self._pending.add(name)
            self.registry.note(name, version, VersionState.LOADING, "its file changed while it was read")
            return False
        self._loaded[key] = (file.fingerprint, settings.load_key)
        self._failed.pop(key, None)
        self._logged.pop(key, None)
        self.registry.add(model)
        seconds = time.monotonic() - started
        if not self._startup.done():
            self.startup_load_seconds[key] = seconds
        self.options.observe_load(name, seconds)
        log.info("model '%s' version %s loaded from %s in %.2f s (%s): inputs %s", name, version,
                 file.path.name if name in self.options.files else f"{name}/{file.relative}",
                 seconds, phases.describe(), [s.describe() for s in model.inputs])
        return True

    def _within(self, text: str) -> str:
        """Paths in a reason as the repository sees them ("seed/3/model.h5"): status travels over the
        network, and the server's directory layout is not the caller's business."""
        return text.replace(f"{self.options.root}{os.sep}", "") if self.options.root else text

    def _fail(self, key: Key, file: VersionFile, reason: str, failed_as: tuple | None = None) -> None:
        name, version = key
        self._failed[key] = failed_as or (file.fingerprint, None)
        self.registry.note(name, str(version), VersionState.FAILED, reason, file.relative)
        self._report(key, reason, f"cannot load model '{name}' version {version}: %s")

    def _report(self, key: Key | str, reason: str, template: str) -> None:
        """Log a failure once (polls see it again and again), and count it while starting."""
        if self._logged.get(key) != reason:
            self._logged[key] = reason
            log.error(template, reason)
        self._fail_start(template % reason)

    def _fail_start(self, text: str) -> None:
        if not self._startup.done() and text not in self._failures:
            self._failures.append(text)

    def _unload(self, name: str, version: int, reason: str) -> None:
        if self._loaded.pop((name, version), None) is not None:
            log.info("model '%s' version %s out of service (%s); closing it once its calls are done",
                     name, version, reason)
            self.registry.unload(name, str(version), reason)

    def _idle(self, key: Key) -> bool:
        """Unloaded by UnloadModel, and not asked for again since."""
        return key in self._unpinned or key[0] in self._disabled

    def _idle_reason(self, name: str, version: int, settings: ModelSettings, ready: set[int]) -> str:
        if self._idle((name, version)):
            return "unloaded by UnloadModel; LoadModel serves it again"
        if version in settings.policy.select(ready, len(ready)):
            return f"beyond --max-versions {self.options.max_versions}"
        return f"outside the version policy {settings.policy.describe()}"

    def _served(self, name: str) -> set[int]:
        return {v for n, v in self._loaded if n == name}

    def _forget_missing(self, name: str, files: dict[int, VersionFile]) -> None:
        idle = (VersionState.FAILED, VersionState.UNLOADED, VersionState.LOADING)
        for status in self.registry.status(name)[0].versions:
            if status.state in idle and int(status.version) not in files:
                self.registry.forget(name, status.version)
        self._settling.forget(name, keep=set(files))
        for key in [k for k in self._failed if k[0] == name and k[1] not in files]:
            del self._failed[key]

    def _remove_model(self, name: str) -> None:
        for version in sorted(self._served(name)):
            self._unload(name, version, "its directory was removed from the repository")
        self._settling.forget(name)
        for table in (self._failed, self._logged):
            for key in [k for k in table if k == name or (isinstance(k, tuple) and k[0] == name)]:
                table.pop(key)
        self._pinned = {k for k in self._pinned if k[0] != name}
        self._unpinned = {k for k in self._unpinned if k[0] != name}
        self._disabled.discard(name)
        self._pending.discard(name)
        self.registry.forget(name)

    def _shadowed(self, name: str) -> bool:
        if name in self.options.files:
            self._report(f"shadow:{name}", f"a model named '{name}' is given by --model; its "
                         "repository directory is ignored", "%s")
            return True
        return False

    # Model control (worker thread).

    def _load_command(self, name: str, version: str) -> ModelStatus:
        files = self._files_of(name)
        if version:
            key = (name, int(version))
            if key[1] not in files:
                raise ModelNotFound(f"model '{name}' has no version {version} in the repository; "
                                    f"versions there: {sorted(files)}")
            if key not in self._loaded and len(self._served(name)) >= self.options.max_versions:
                raise Overloaded(f"model '{name}' already serves {self.options.max_versions} versions "
                                 "(--max-versions); unload one first")
            self._unpinned.discard(key)
            self._pinned.add(key)
            self._failed.pop(key, None)
        else:
            self._disabled.discard(name)
            self._unpinned = {k for k in self._unpinned if k[0] != name}
            self._failed = {k: v for k, v in self._failed.items() if k[0] != name}
        self._sync_one(name)
        waited = 0.0
        while name in self._pending and waited < LOAD_WAIT_S:  # a file just copied in: let it settle
            time.sleep(SETTLE_S / 2)
            waited += SETTLE_S / 2
            self._sync_one(name)
        return self._loaded_status(name, version)

    def _loaded_status(self, name: str, version: str) -> ModelStatus:
        status = self.registry.status(name)[0]
        if status.problem:
            raise ModelConfigError(status.problem)
        asked = [v for v in status.versions if v.version == version] if version else []
        failed = asked and asked[0].state is VersionState.FAILED
        if failed or (not version and not status.available and status.versions
                      and status.versions[0].state is VersionState.FAILED):
            shown = asked[0] if asked else status.versions[0]
            raise ModelLoadError(f"model '{name}' version {shown.version} failed to load: {shown.reason}")
        return status

    def _unload_command(self, name: str, version: str) -> ModelStatus:
        self._files_of(name)
        if version:
            key = (name, int(version))
            if key not in self._loaded:
                raise ModelNotFound(f"model '{name}' version {version} is not loaded; loaded versions: "
                                    f"{sorted(self._served(name))}")
            self._pinned.discard(key)
            self._unpinned.add(key)
        else:
            self._disabled.add(name)
            self._pinned = {k for k in self._pinned if k[0] != name}
        self._sync_one(name)
        return self.registry.status(name)[0]

    def _files_of(self, name: str) -> dict[int, VersionFile]:
        """The versions of a model the operator gave (a --model file, a repository directory)."""
        if name in self.options.files:
            return {1: VersionFile(1, self.options.files[name].name)}
        model_dir = self.options.root / name if self.options.root else None
        if model_dir is None or not model_dir.is_dir():
            known = sorted({*self.options.files, *self._known})
            raise ModelNotFound(f"no model named '{name}' in the repository; models there: {known}")
        self._known.setdefault(name, model_dir)
        return self._scanner.versions(model_dir)
