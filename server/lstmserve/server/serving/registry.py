"""The models a server holds, by name and version, and the state of every version it knows of.

A version enters service, and becomes the default when it is the highest, in one assignment under a
lock. Every call holds a lease on the version that answers it, so a version taken out of service is
closed only once the calls (and sessions) it already has have let go of it: a reload drops nothing.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lstmserve.server.errors import InvalidInput, ModelNotFound, ModelNotReady, shown
from lstmserve.server.serving.model import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_DRAIN_S = 30.0


class VersionState(enum.Enum):
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


@dataclass(frozen=True)
class VersionStatus:
    version: str
    state: VersionState
    reason: str = ""
    labels: tuple[str, ...] = ()
    is_default: bool = False
    file: str = ""


@dataclass(frozen=True)
class ModelStatus:
    name: str
    versions: tuple[VersionStatus, ...]  # highest first
    version_policy: str = ""
    problem: str = ""

    @property
    def available(self) -> bool:
        return any(v.state is VersionState.AVAILABLE for v in self.versions)


class _Slot:
    """One version in service: the model, and how many calls and sessions hold it."""

    __slots__ = ("model", "leases", "retired", "drained")

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.leases = 0
        self.retired = False
        self.drained = threading.Event()


class Lease:
    """A hold on one served version, which is not closed before every lease on it is released.

    `with registry.lease(name) as model: ...` for one call. A session takes one when it starts and
    releases it when it ends; `draining` turns True once its version is out of service (replaced or
    unloaded), so the session can tell its client to finish.
    """

    __slots__ = ("model", "_registry", "_slot", "_held")

    def __init__(self, registry: ModelRegistry, slot: _Slot) -> None:
        self.model = slot.model
        self._registry = registry
        self._slot = slot
        self._held = True

    @property
    def draining(self) -> bool:
        return self._slot.retired

    def release(self) -> None:
        """Let go of the version (once; later calls do nothing)."""
        if self._held:
            self._held = False
            self._registry._release(self._slot)

    def __enter__(self) -> LoadedModel:
        return self.model

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@dataclass
class _Model:
    """One name: its versions in service, the default, labels, and the noted state of other versions."""

    serving: dict[str, _Slot] = field(default_factory=dict)
    default: _Slot | None = None
    retiring: list[_Slot] = field(default_factory=list)
    notes: dict[str, tuple[VersionState, str]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # label -> version
    policy: str = ""
    problem: str = ""


class ModelRegistry:
    def __init__(self, drain_seconds: float = DEFAULT_DRAIN_S) -> None:
        self.drain_seconds = drain_seconds
        self._models: dict[str, _Model] = {}
        self._expected: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        self._drains: set[threading.Thread] = set()
        # Called (on the closing thread) after a retired version is closed: its memory is now garbage.
        self.on_closed: Callable[[], None] = lambda: None

    # The serving side: what answers a call.

    def get(self, name: str = "", version: str = "", label: str = "") -> LoadedModel:
        """The model of that name (any, when the server holds exactly one) at that version or label
        (the highest available one without either). For a call, `lease` keeps it from closing."""
        with self._lock:
            return self._resolve(name, version, label).model

    def lease(self, name: str = "", version: str = "", label: str = "") -> Lease:
        """`get`, holding the version in service until the lease is released."""
        with self._lock:
            slot = self._resolve(name, version, label)
            slot.leases += 1
        return Lease(self, slot)

    def all(self) -> list[LoadedModel]:
        """The default version of every model that has one."""
        with self._lock:
            return [entry.default.model for _, entry in sorted(self._models.items()) if entry.default]

    def available(self, name: str) -> bool:
        with self._lock:
            entry = self._models.get(name)
            return entry is not None and entry.default is not None

    def loaded(self) -> list[LoadedModel]:
        """Every version in service, of every model (what metrics read at scrape time)."""
        with self._lock:
            return [slot.model for _, entry in sorted(self._models.items())
                    for slot in entry.serving.values()]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def status(self, name: str = "") -> list[ModelStatus]:
        """Every version of one model (or of all), highest first; NOT_FOUND for an unknown name."""
        with self._lock:
            if name and name not in self._models:
                raise ModelNotFound(f"no model named '{shown(name)}'; this server holds "
                                    f"{sorted(self._models)}")
            names = [name] if name else sorted(self._models)
            return [_status_of(n, self._models[n]) for n in names]

    # The lifecycle side: what the repository (or a test) does.

    def add(self, model: LoadedModel) -> None:
        """Put a loaded and warm version in service; the highest version is the default. A version
        loaded again (its file changed) replaces the old one, which closes once its calls are done."""
        with self._lock:
            entry = self._models.setdefault(model.name, _Model())
            replaced = entry.serving.get(model.version)
            entry.serving[model.version] = _Slot(model)
            entry.notes.pop(model.version, None)
            entry.default = _highest(entry)
            if replaced is not None:
                self._retire(entry, replaced)
        if replaced is not None:
            self._drain_later(replaced, reason=None)
        self._changed(model.name)

    def unload(self, name: str, version: str, reason: str) -> bool:
        """Take a version out of service now (False if it is not in service) and close it in the
        background once its leases are released, or after drain_seconds at the latest."""
        with self._lock:
            entry = self._models.get(name)
            slot = entry.serving.pop(version, None) if entry else None
            if slot is None:
                return False
            entry.default = _highest(entry)
            entry.notes[version] = (VersionState.UNLOADING, reason)
            self._retire(entry, slot)
        self._drain_later(slot, reason)
        self._changed(name)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Take every version out of service and wait (up to `timeout`, default drain_seconds) until
        each has finished its calls and is closed: the end of a server's life."""
        with self._lock:
            versions = [(name, version) for name, entry in self._models.items() for version in entry.serving]
        for name, version in versions:
            self.unload(name, version, "the server is stopping")
        deadline = time.monotonic() + (self.drain_seconds if timeout is None else timeout) + 5
        for thread in list(self._drains):
            thread.join(max(0.0, deadline - time.monotonic()))

    def note(self, name: str, version: str, state: VersionState, reason: str = "",
             file: str = "") -> None:
        """Record the state of a version that is not (or not only) in service: LOADING, FAILED,
        UNLOADED."""
        with self._lock:
            entry = self._models.setdefault(name, _Model())
            current = entry.notes.get(version)
            if current and current[0] is VersionState.UNLOADING and state is VersionState.UNLOADED:
                return  # still draining: the drain records UNLOADED, with its own reason, when done
            entry.notes[version] = (state, reason)
            if file:
                entry.files[version] = file
        if current is None:
            self._changed(name)  # a name health has not heard of yet

    def describe(self, name: str, *, policy: str | None = None,
                 labels: Mapping[str, str] | None = None, problem: str = "") -> None:
        """The model-wide facts: its version policy, its labels (label -> version), and its problem
        (empty: none). Facts not given stay as they were."""
        with self._lock:
            entry = self._models.setdefault(name, _Model())
            entry.problem = problem
            if policy is not None:
                entry.policy = policy
            if labels is not None:
                entry.labels = dict(labels)

    def forget(self, name: str, version: str | None = None) -> None:
        """Drop what is noted of a version (of the whole model when version is None) that is neither in
        service nor draining: its files are gone from the repository."""
        with self._lock:
            entry = self._models.get(name)
            if entry is None:
                return
            for v in [version] if version is not None else list(entry.notes):
                if v not in entry.serving and not any(s.model.version == v for s in entry.retiring):
                    entry.notes.pop(v, None)
                    entry.files.pop(v, None)
            if version is None and not entry.serving and not entry.retiring and not entry.notes:
                del self._models[name]

    def expect(self, names: Iterable[str]) -> None:
        """Names the repository will load at start but has not reached yet: a call for one is told to
        retry (UNAVAILABLE), not that no such model exists. An empty list once the start is over."""
        with self._lock:
            self._expected = frozenset(names)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call `listener(name)` (on any thread) whenever a model's versions in service change, or a
        version is first heard of."""
        self._listeners.append(listener)

    def _resolve(self, name: str, version: str, label: str) -> _Slot:
        if version and label:
            raise InvalidInput(f"request names version '{shown(version)}' and label '{shown(label)}'; "
                               "give one or neither")
        name = name or self._only_name()
        entry = self._models.get(name)
        if entry is None and name in self._expected:
            raise ModelNotReady(f"model '{shown(name)}' is still loading (the server is starting); retry "
                                "shortly")
        if entry is None:
            raise ModelNotFound(f"no model named '{shown(name)}'; this server holds "
                                f"{sorted(self._models)}")
        if label:
            version = _labelled(name, entry, label)
        if not version:
            if entry.default is None:
                raise _nothing_available(name, entry)
            return entry.default
        slot = entry.serving.get(version)
        if slot is None:
            raise _version_unavailable(name, entry, version)
        return slot

    def _only_name(self) -> str:
        names = sorted(self._models)
        if len(names) == 1:
            return names[0]
        raise InvalidInput(f"request names no model, and this server holds {len(names)}: {names}")

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.leases -= 1
            if slot.retired and slot.leases == 0:
                slot.drained.set()

    def _retire(self, entry: _Model, slot: _Slot) -> None:
        """Under the lock: the slot takes no new leases; it is drained once the last one is released."""
        slot.retired = True
        entry.retiring.append(slot)
        if slot.leases == 0:
            slot.drained.set()

    def _drain_later(self, slot: _Slot, reason: str | None) -> None:
        model = slot.model
        thread = threading.Thread(target=self._drain, args=(slot, reason), daemon=True,
                                  name=f"drain-{model.name}-v{model.version}")
        self._drains.add(thread)
        thread.start()

    def _drain(self, slot: _Slot, reason: str | None) -> None:
        model = slot.model
        if not slot.drained.wait(self.drain_seconds):
            log.warning("model '%s' version %s still had %d calls or sessions after %.0f s out of "
                        "service; closing it (they get UNAVAILABLE)", model.name, model.version,
                        slot.leases, self.drain_seconds)
        model.close()
        with self._lock:
            entry = self._models.get(model.name)
            if entry is not None:
                entry.retiring.remove(slot)
                note = entry.notes.get(model.version)
                if reason is not None and note is not None and note[0] is VersionState.UNLOADING:
                    entry.notes[model.version] = (VersionState.UNLOADED, reason)
        self.on_closed()
        log.info("model '%s' version %s closed: its calls are done and its thread stopped",
                 model.name, model.version)
        self._drains.discard(threading.current_thread())

    def _changed(self, name: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(name)
            except Exception:  # noqa: BLE001 (a listener's failure must not undo a swap)
                log.exception("model change listener failed")


def _highest(entry: _Model) -> _Slot | None:
    if not entry.serving:
        return None
    return entry.serving[max(entry.serving, key=_version_key)]


def _labelled(name: str, entry: _Model, label: str) -> str:
    version = entry.labels.get(label)
    if version is None:
        raise ModelNotFound(f"model '{name}' has no label '{shown(label)}'; "
                            f"its labels: {sorted(entry.labels) or 'none'}")
    return version


def _nothing_available(name: str, entry: _Model) -> Exception:
    if any(state is VersionState.LOADING for state, _ in entry.notes.values()):
        return ModelNotReady(f"model '{name}' is still loading; retry shortly")
    return ModelNotFound(f"model '{name}' has no available version ({_states(entry)}); "
                         "see ModelService.GetModelStatus")


def _version_unavailable(name: str, entry: _Model, version: str) -> Exception:
    state = entry.notes.get(version, (None, ""))[0]
    if state is VersionState.LOADING:
        return ModelNotReady(f"model '{name}' version {version} is still loading; retry shortly")
    loaded = sorted(entry.serving, key=_version_key)
    if state is None:
        return ModelNotFound(f"model '{name}' has no version '{shown(version)}'; loaded versions: {loaded}")
    return ModelNotFound(f"model '{name}' version '{version}' is {state.value}; loaded versions: {loaded}")


def _states(entry: _Model) -> str:
    states = [f"{v} {state.value}" for v, (state, _) in sorted(entry.notes.items(),
                                                                 key=lambda item: _version_key(item[0]))]
    return ", ".join(states) or "none loaded"


def _status_of(name: str, entry: _Model) -> ModelStatus:
    labels_of: dict[str, list[str]] = {}
    for label, version in sorted(entry.labels.items()):
        labels_of.setdefault(version, []).append(label)
    versions = set(entry.serving) | set(entry.notes)
    default = entry.default.model.version if entry.default else None
    statuses = []
    for version in sorted(versions, key=_version_key, reverse=True):
        state, reason = _state_of(entry, version)
        statuses.append(VersionStatus(version, state, reason, tuple(labels_of.get(version, ())),
                                      version == default, entry.files.get(version, "")))
    return ModelStatus(name, tuple(statuses), entry.policy, entry.problem)


def _state_of(entry: _Model, version: str) -> tuple[VersionState, str]:
    note = entry.notes.get(version)
    if version not in entry.serving:
        return note
    if note is None:
        return VersionState.AVAILABLE, ""
    # In service, while a changed file of the same version loads or has failed to.
    return VersionState.AVAILABLE, f"serving its previous file; the new one is {note[0].value}: {note[1]}"


def _version_key(version: str) -> tuple[int, int | str]:
    # Numeric versions compare as numbers ("10" after "9"); others after them, by text.
    return (0, int(version)) if version.isascii() and version.isdigit() else (1, version)
