"""Shared fixtures: demo models trained once per session, and real gRPC servers on port 0."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lstmserve.server.process import prepare_tensorflow

prepare_tensorflow()  # the test session is an entry point: TensorFlow's environment before it loads

from lstmserve.client import Client  # noqa: E402
from lstmserve.server.loading.build import LoadOptions  # noqa: E402
from lstmserve.server.loading.load import load_model  # noqa: E402
from lstmserve.server.serving.model import LoadedModel  # noqa: E402
from lstmserve.server.serving.registry import ModelRegistry  # noqa: E402
from lstmserve.server.transport.server import RunningServer, create_server  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """tf-keras writes the Keras 2 corpus (legacy_corpus.py) once per session, in its own process."""
    out = tmp_path_factory.mktemp("legacy")
    tests = Path(__file__).parent
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(tests)}
    done = subprocess.run([sys.executable, str(tests / "legacy_corpus.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def seed_h5(models_dir) -> Path:
    """The seed's own example, trained as `lstmserve train --demo seed` does."""
    from lstmserve.trainer.demos import train_seed
    return train_seed(models_dir / "seed.h5").path


@pytest.fixture(scope="session")
def classifier_h5(models_dir) -> Path:
    from lstmserve.trainer.demos import train_classifier
    return train_classifier(models_dir / "classifier.h5").path


@pytest.fixture(scope="session")
def loaded_seed(seed_h5) -> LoadedModel:
    return load_model(seed_h5, "seed")


@pytest.fixture(scope="session")
def loaded_classifier(classifier_h5) -> LoadedModel:
    return load_model(classifier_h5, "classifier")


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Factory: start a real server on 127.0.0.1:0 holding the given LoadedModels, SERVING.

    `options` go to create_server as they are (credentials=..., auth=...); `observer_for` makes
    the server's observer from its registry (metrics read the models at scrape time).
    """
    started: list[RunningServer] = []

    def start(*models: LoadedModel, serving: bool = True, workers: int = 16, observer_for=None,
              **options) -> RunningServer:
        registry = ModelRegistry()
        for model in models:
            registry.add(model)
        if observer_for is not None:
            options["observer"] = observer_for(registry)
        running = create_server(registry, "127.0.0.1:0", workers, **options)
        running.set_serving(serving)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(grace=None)


@pytest.fixture
def demo_server(start_server, loaded_seed, loaded_classifier) -> RunningServer:
    return start_server(loaded_seed, loaded_classifier)


@pytest.fixture
def client(demo_server) -> Iterator[Client]:
    with Client(f"127.0.0.1:{demo_server.port}", timeout=30) as c:
        yield c


def load(path: Path, name: str | None = None, **options) -> LoadedModel:
    """Load a model file the way `lstmserve serve` does, with optional LoadOptions fields."""
    return load_model(path, name, options=LoadOptions.create(**options))
