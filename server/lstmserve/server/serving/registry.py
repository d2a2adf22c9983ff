"""The models a server holds, by name and version; a reload is one dictionary assignment."""

from __future__ import annotations

import threading

from lstmserve.server.errors import InvalidInput, ModelNotFound, ModelNotReady
from lstmserve.server.serving.model import LoadedModel


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[str, dict[str, LoadedModel]] = {}
        self._latest: dict[str, LoadedModel] = {}  # per name, chosen once per add, not per request
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    def expect(self, name: str) -> None:
        """Announce a model that is loading, so requests for it get 'not ready' rather than 'not found'."""
        with self._lock:
            self._loading.add(name)

    def add(self, model: LoadedModel) -> None:
        with self._lock:
            versions = dict(self._models.get(model.name, {}))
            versions[model.version] = model
            self._latest[model.name] = versions[max(versions, key=_version_key)]
            self._models[model.name] = versions
            self._loading.discard(model.name)

    def forget(self, name: str) -> None:
        """Drop a model that failed to load from the 'loading' set."""
        with self._lock:
            self._loading.discard(name)

    def get(self, name: str = "", version: str = "") -> LoadedModel:
        """The model of that name (any, when the server holds exactly one) at that version (latest)."""
        models, loading = self._models, self._loading
        if not name:
            name = self._only_name(models, loading)
        if name not in models:
            if name in loading:
                raise ModelNotReady(f"model '{name}' is still loading; retry shortly")
            raise ModelNotFound(f"no model named '{name}'; this server holds {self._names()}")
        if not version:
            return self._latest[name]
        versions = models[name]
        if version not in versions:
            raise ModelNotFound(
                f"model '{name}' has no version '{version}'; loaded versions: {sorted(versions)}"
            )
        return versions[version]

    def all(self) -> list[LoadedModel]:
        """The latest version of every model."""
        return [self.get(name) for name in sorted(self._models)]

    def loaded(self) -> list[LoadedModel]:
        """Every version of every model."""
        models = self._models
        return [model for name in sorted(models) for model in models[name].values()]

    def _names(self) -> list[str]:
        return sorted(set(self._models) | self._loading)

    def _only_name(self, models, loading) -> str:
        names = self._names()
        if len(names) == 1:
            return names[0]
        raise InvalidInput(f"request names no model, and this server holds {len(names)}: {names}")


def _version_key(version: str) -> tuple[int, int | str]:
    # Numeric versions compare as numbers ("10" after "9"); others after them, by text.
    return (0, int(version)) if version.isdigit() else (1, version)
