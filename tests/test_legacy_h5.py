"""Files from Keras 2.0 to tf-keras 2.21 and Keras 3 are served with the writer's numbers, or refused clearly.

The corpus is written by tf-keras in a subprocess (legacy_corpus.py); tf-keras's own outputs are the oracle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5edit
import keras
import modelzoo
import numpy as np
import pytest

from lstmserve.client import Client
from lstmserve.server.engine.base import EngineConfig
from lstmserve.server.errors import ModelLoadError, UnsafeModelError
from lstmserve.server.loading.build import LoadOptions
from lstmserve.server.loading.load import load_model
from lstmserve.server.loading.safety import check_config
from lstmserve.server.serving.heads import Mode
from lstmserve.server.serving.model import LoadedModel

TOLERANCE = 1e-5
# Each corpus file and what the loader must have done to read it (one fragment per step expected).
STEPS = {
    "tfkeras_lstm": ["time_major=False removed", "training_config not read"],
    "tfkeras_gru_bidirectional": ["time_major=False removed", "GRU 'gru'"],
    "keras20_sequential": ["layer-list Sequential", "keras issue 20106", "reset_after=False",
                           "hard_sigmoid computed as Keras 2 did", "training_config not read"],
    "keras20_embedding": ["layer-list Sequential", "keras issue 20106", "Embedding dtype int32"],
    "wrapped_without_module": ["module 'keras.layers' given to wrapped layers"],
    "cudnn": ["CuDNNLSTM 'lstm' -> LSTM", "CuDNNGRU", "-> GRU"],
    "multi_io": ["time_major=False removed", "LSTM 'encoder', LSTM 'summary'"],
    "seq2seq": ["initial_state=: LSTM 'decoder'"],
    "keras2_embedding_float_input": ["input built int32 for integer token ids", "(float32 in the file)"],
    "keras215_stateful_gru": ["stateful=True served on a fresh state for every request row",
                              "batch size 1 fixed in the file (stateful layers): only batch size 1"],
    "keras2_stateful_lstm_batch4": ["stateful=True served on a fresh state",
                                    "batch size 4 fixed in the file"],
    "keras2_nested_odd_names": ["calls of nested models renumbered from 0",
                                "'BiLSTM Model v0.2.0>bilstm_model_64' -> "
                                "'BiLSTM_Model_v0.2.0>bilstm_model_64'",
                                "'GRU:encoder' -> 'GRU_encoder'", "'series (scaled)' -> 'series__scaled_'"],
    "keras2_layer_arguments": ["noise_shape removed", "trainable removed", "alpha renamed negative_slope",
                               "kernel_initializer removed", "groups removed",
                               "ThresholdedReLU built as ReLU(threshold=theta)",
                               "dtype removed from initializer configs"],
    "keras2_attention": ["query_shape removed", "softmax_robust_masking removed", "score_mode removed",
                         "tensors passed by keyword"],
}
SERVED_OVER_GRPC = ("keras20_sequential", "cudnn", "multi_io", "seq2seq")
# Issue 13's classes, each served through a real server in its own test.
SECOND_PASS = ("keras2_embedding_float_input", "keras215_stateful_gru", "keras2_nested_odd_names")


def oracle(corpus: Path, name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    saved = np.load(corpus / f"{name}.npz")
    count = lambda prefix: sum(key.startswith(prefix) for key in saved.files)  # noqa: E731
    return [saved[f"x{i}"] for i in range(count("x"))], [saved[f"y{i}"] for i in range(count("y"))]


def load(path: Path, name: str | None = None, **options) -> LoadedModel:
    # One small bucket keeps XLA compilation short.
    return load_model(path, name, options=LoadOptions.create(**options), engine=EngineConfig(buckets=(4,)))


def served(model: LoadedModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    arrays = {spec.name: x for spec, x in zip(model.inputs, inputs)}
    return list(model.predict(arrays, Mode.VALUES).outputs.values())


def assert_matches(outputs: list[np.ndarray], expected: list[np.ndarray]) -> float:
    assert [o.shape for o in outputs] == [e.shape for e in expected]
    worst = max(float(np.max(np.abs(o - e))) for o, e in zip(outputs, expected))
    assert worst <= TOLERANCE, f"max abs difference {worst} vs the writing Keras"
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(STEPS) - set(SERVED_OVER_GRPC) - set(SECOND_PASS)))
def test_keras2_file_gives_the_writers_outputs(corpus, name):
    model = load(corpus / f"{name}.h5", name)
    inputs, expected = oracle(corpus, name)
    assert_matches(served(model, inputs), expected)
    assert_steps(model, name)


def assert_steps(model: LoadedModel, name: str) -> None:
    steps = "\n".join(model.compatibility_steps)
    for fragment in STEPS[name]:
        assert fragment in steps, f"{name}: no step with {fragment!r} in:\n{steps}"


@pytest.mark.slow
@pytest.mark.integration
def test_legacy_files_served_over_grpc(corpus, start_server):
    """Keras 2.0, CuDNN, multi-input/-output and encoder-decoder files through a real server."""
    models = [load(corpus / f"{name}.h5", name) for name in SERVED_OVER_GRPC]
    server = start_server(*models)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        for model in models:
            inputs, expected = oracle(corpus, model.name)
            values = client.predict({s.name: x for s, x in zip(model.inputs, inputs)}, model=model.name)
            values = values if isinstance(values, dict) else {model.heads[0].name: values}
            assert_matches([values[head.name] for head in model.heads], expected)
            assert_steps(model, model.name)
            metadata = client.metadata(model.name)
            assert list(metadata.compatibility_steps) == list(model.compatibility_steps)


@pytest.mark.slow
def test_inspect_reports_the_writer_the_layers_and_each_step(corpus):
    """`lstmserve inspect` from the shell, as an operator checks a file before serving it."""
    lstmserve = str(Path(sys.executable).with_name("lstmserve"))
    result = subprocess.run([lstmserve, "inspect", str(corpus / "cudnn.h5"), "--json", "--no-xla"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["written_by"] == "standalone Keras 2.2.4, tensorflow backend"
    assert report["file_layers"] == ["InputLayer 'series'", "CuDNNLSTM 'lstm'",
                                     "Bidirectional(CuDNNGRU) 'bidirectional'", "Dense 'out'"]
    assert report["layers"] == ["LSTM 'lstm'", "Bidirectional 'bidirectional'", "Dense 'out'"]
    assert report["compatibility_steps"] == list(load(corpus / "cudnn.h5").compatibility_steps)
    assert any("CuDNNLSTM 'lstm' -> LSTM" in step for step in report["compatibility_steps"])


def test_keras3_file_loads_with_no_steps(tmp_path):
    keras.utils.set_random_seed(9)
    path = modelzoo.save(keras.Sequential([
        keras.Input((5, 2)), keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True)),
        keras.layers.TimeDistributed(keras.layers.Dense(2))]), tmp_path / "k3.h5")
    x = np.random.default_rng(2).normal(size=(4, 5, 2)).astype(np.float32)
    model = load(path)
    assert_matches(served(model, [x]), modelzoo.reference(path, x))
    assert model.compatibility_steps == ()


@pytest.mark.slow
def test_lambda_is_refused_unless_code_is_allowed(corpus):
    with pytest.raises(UnsafeModelError, match=r"Lambda 'lambda' is a Lambda, which carries Python "
                       r"code .* --allow-code"):
        load(corpus / "lambda.h5")
    inputs, expected = oracle(corpus, "lambda")
    assert_matches(served(load(corpus / "lambda.h5", allow_code=True), inputs), expected)


def test_unknown_custom_class_is_named_with_the_flag_to_supply_it(corpus):
    with pytest.raises(UnsafeModelError, match=r"uses class 'SeqPooling'.* --custom-objects module.path"):
        load(corpus / "custom_unknown.h5")


def test_custom_class_shadowing_a_builtin_is_not_replaced_by_it(corpus):
    with pytest.raises(ModelLoadError, match=r"Unrecognized keyword arguments passed to Attention.*"
                       r"your own layer class that shares a Keras built-in's name.*--custom-objects"):
        load(corpus / "custom_attention.h5")


def test_shadowing_class_whose_config_fits_the_builtin_is_caught_by_its_weights(corpus, tmp_path):
    path = copy(corpus / "custom_attention.h5", tmp_path)
    def as_pooling(config: dict) -> None:
        # A user's pooling layer named like Keras's weightless one, with no arguments of its own.
        layer = config["config"]["layers"][2]
        layer["class_name"] = "GlobalMaxPooling1D"
        layer["config"].pop("units")
    h5edit.edit_config(path, as_pooling)
    with pytest.raises(ModelLoadError, match=r"layer 'attention' \(GlobalMaxPooling1D\): the file holds "
                       r"weights of shapes \[\(4, 3\), \(3, 1\)\]; the layer built from its config has "
                       r"\[\]; if 'GlobalMaxPooling1D' is your own layer class .*--custom-objects"):
        load(path)


def test_shadowing_class_from_a_foreign_module_is_refused_before_deserialising():
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Attention", "module": "my_layers", "config": {"name": "att"}}]}}
    with pytest.raises(UnsafeModelError, match=r"class 'Attention' from Python module 'my_layers' "
                       r"\(not Keras's own Attention, whose name it shares\).*--custom-objects"):
        check_config(config)


@pytest.mark.slow
def test_supplied_custom_class_wins_over_the_builtin_of_its_name(corpus):
    model = load(corpus / "custom_attention.h5", custom_modules=("custom_layers",))
    assert "Attention 'attention' from custom_layers" in model.layers
    inputs, expected = oracle(corpus, "custom_attention")
    assert_matches(served(model, inputs), expected)


def test_time_major_true_is_refused(corpus, tmp_path):
    path = copy(corpus / "tfkeras_lstm.h5", tmp_path)
    h5edit.edit_config(path, lambda c: c["config"]["layers"][1]["config"].update(time_major=True))
    with pytest.raises(ModelLoadError, match=r"saved with time_major=True .* \[batch, timesteps, features\]"):
        load(path)


@pytest.mark.parametrize("plant, message", [
    (lambda path, d: h5edit.add_external_link(path, d / "other.h5"),
     r"'model_weights/elsewhere' is an HDF5 external link to .*other.h5; model files must be self-contained"),
    (lambda path, d: h5edit.add_virtual_dataset(path, d / "source.h5"),
     r"dataset 'borrowed' is a virtual dataset reading other files; model files must be self-contained"),
], ids=["external_link", "virtual_dataset"])
def test_file_that_reads_other_files_is_refused(corpus, tmp_path, plant, message):
    path = copy(corpus / "tfkeras_lstm.h5", tmp_path)
    plant(path, tmp_path)
    with pytest.raises(UnsafeModelError, match=message):
        load(path)


def copy(source: Path, directory: Path) -> Path:
    target = directory / source.name
    target.write_bytes(source.read_bytes())
    return target
