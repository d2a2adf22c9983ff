"""What a model repository holds on disk: DIR/NAME/VERSION/<one>.h5, names checked before use, and
whether a file has stopped changing.

Names and versions that arrive over the network are checked here before they touch a path: a model
name is a plain directory name (no separators, no '..'), a version a positive integer.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from lstmserve.server.errors import InvalidInput, shown

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 128
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
VERSION = re.compile(r"[1-9][0-9]{0,17}")
MODEL_SUFFIX = ".h5"
# Entries of one directory the scan looks at; a repository beyond it is refused in part, with a warning.
MAX_ENTRIES = 1000
SETTLE_S = 1.0


def check_name(name: str) -> str:
    """A model name as the repository and health names use it; InvalidInput says what is wrong."""
    if not name:
        raise InvalidInput("model name is empty; name a model of the repository, such as 'seed'")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"model name has {len(name)} characters; at most {MAX_NAME_CHARS}")
    if "/" in name or "\\" in name or ".." in name:
        raise InvalidInput(f"model name '{shown(name, 60)}' holds a path separator or '..'; a model is "
                           "named by its directory in the repository, never by a path")
    if not is_plain_name(name):
        raise InvalidInput(f"model name '{shown(name, 60)}' is not a repository name: expected letters, "
                           "digits, '_', '-' and '.', starting with a letter or digit")
    return name


def check_version(version: str) -> str:
    """'' (none) or a positive integer, as version directories are named."""
    if version and not VERSION.fullmatch(version):
        raise InvalidInput(f"version '{shown(version, 30)}' is not a version of the repository; expected a "
                           "positive integer such as 3, or nothing")
    return version


def is_plain_name(name: str) -> bool:
    return len(name) <= MAX_NAME_CHARS and NAME.fullmatch(name) is not None and ".." not in name


@dataclass(frozen=True)
class Fingerprint:
    """What says a file changed: a new file renamed over it changes the inode, a copy its size and mtime."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


@dataclass(frozen=True)
class VersionFile:
    """One version directory: its model file and that file's fingerprint, or what is wrong with it."""

    version: int
    relative: str  # "3/model.h5", as status shows it
    path: Path | None = None
    fingerprint: Fingerprint | None = None
    problem: str = ""


class RepositoryScanner:
    """Lists model directories and version files; warns once about each entry it has to skip."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._warned: set[str] = set()

    def models(self) -> dict[str, Path] | None:
        """Model name -> directory; None when the repository itself cannot be read (then nothing
        served changes: an unmounted volume must not unload every model)."""
        entries = self._entries(self.root)
        if entries is None:
            return None
        models = {}
        for entry in entries:
            if entry.is_dir() and self._valid(entry, is_plain_name(entry.name),
                                              "model directory names are letters, digits, '_', '-', '.'"):
                models[entry.name] = Path(entry.path)
        return models

    def versions(self, model_dir: Path) -> dict[int, VersionFile]:
        """Version number -> its file, for every VERSION directory holding a .h5 (an empty one is
        not a version yet)."""
        entries = self._entries(model_dir) or []
        found = {}
        for entry in entries:
            if entry.is_dir() and self._valid(entry, VERSION.fullmatch(entry.name) is not None,
                                              "version directories are positive integers"):
                version_file = self._version_file(int(entry.name), Path(entry.path))
                if version_file is not None:
                    found[version_file.version] = version_file
        return found

    def _version_file(self, version: int, directory: Path) -> VersionFile | None:
        files = sorted(entry.name for entry in self._entries(directory) or []
                       if entry.name.endswith(MODEL_SUFFIX) and entry.is_file())
        if not files:
            return None
        if len(files) > 1:
            listed = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
            return VersionFile(version, f"{version}/", problem=f"version directory {version} holds "
                               f"{len(files)} .h5 files ({listed}); expected one")
        path = directory / files[0]
        return VersionFile(version, f"{version}/{files[0]}", path, Fingerprint.of(path))

    def _entries(self, directory: Path) -> list[os.DirEntry] | None:
        """Entries in name order, hidden ones (a copy in progress, '..data' of a Kubernetes volume)
        left out, at most MAX_ENTRIES."""
        try:
            with os.scandir(directory) as scan:
                entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as error:
            self._warn_once(str(directory), f"cannot read {directory}: {error.strerror}")
            return None
        if len(entries) > MAX_ENTRIES:
            self._warn_once(f"{directory}#many", f"{directory} holds {len(entries)} entries; only the "
                            f"first {MAX_ENTRIES} by name are looked at")
        return entries[:MAX_ENTRIES]

    def _valid(self, entry: os.DirEntry, valid: bool, rule: str) -> bool:
        if not valid:
            self._warn_once(entry.path, f"skipping {entry.path}: {rule}")
        return valid

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)


class Settling:
    """Whether version files have stopped changing: the same fingerprint at scans at least SETTLE_S
    apart, and not modified for SETTLE_S. What is there before the first scan ends (`started`) has not
    been seen changing and counts as settled, so a server starts without waiting."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], tuple[Fingerprint, float]] = {}
        self._starting = True

    def settled(self, key: tuple[str, int], fingerprint: Fingerprint | None) -> bool:
        if fingerprint is None:
            return False
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != fingerprint:
            seen = (fingerprint, now - SETTLE_S if self._starting else now)
            self._seen[key] = seen
        quiet = time.time_ns() - fingerprint.mtime_ns >= SETTLE_S * 1e9
        return now - seen[1] >= SETTLE_S and quiet

    def started(self) -> None:
        self._starting = False

    def reset(self, key: tuple[str, int]) -> None:
        """Watch a file afresh (it changed while it was read)."""
        self._seen.pop(key, None)

    def forget(self, name: str, keep: set[int] | None = None) -> None:
        """Forget a model's files (all of them, or all but the versions in `keep`)."""
        for key in [k for k in self._seen if k[0] == name and (keep is None or k[1] not in keep)]:
            del self._seen[key]
