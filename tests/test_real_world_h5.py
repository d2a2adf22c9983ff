"""Real-world .h5 files, second pass: each class of file once refused or broken is served with the writing
Keras's numbers (tf-keras or Keras 3 as the oracle, within 1e-5) and names the compatibility steps it took."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5edit
import keras
import modelzoo
import numpy as np
import pytest
from test_legacy_h5 import STEPS, assert_matches, assert_steps, load, oracle, served

from lstmserve.client import Client, LstmserveError
from lstmserve.server.engine.base import EngineConfig
from lstmserve.server.errors import ModelLoadError, UnsafeModelError
from lstmserve.server.inspect_command import describe
from lstmserve.server.loading.build import LoadOptions
from lstmserve.server.loading.compat.configs import translate_config
from lstmserve.server.loading.load import load_model
from lstmserve.server.loading.safety import CODE_CARRYING, DENIED, check_config, keras_names
from lstmserve.v1 import tensor_pb2 as tpb

L = keras.layers
SECOND_PASS = ("keras2_embedding_float_input", "keras215_stateful_gru", "keras2_stateful_lstm_batch4",
               "keras2_nested_odd_names", "keras2_layer_arguments", "keras2_attention")


def sequential_with(class_name: str) -> dict:
    return {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": class_name, "config": {"name": "x"}}]}}


@pytest.mark.unit
def test_the_allow_list_is_keras_own_registry_under_every_name():
    names = keras_names()
    # Names Keras 3.0-3.5 wrote, aliases, and classes a hand-written list missed.
    for name in ("OrthogonalInitializer", "STFTInitializer", "IdentityInitializer", "Orthogonal", "l1l2",
                 "Convolution1D", "Conv2D", "Normalization", "Rescaling", "CategoryEncoding", "ConvLSTM1D",
                 "ConvLSTM3D", "TimeDistributed", "Bidirectional", "UnitNormalization", "MaxNorm", "tanh"):
        assert name in names
    for name in sorted(names):
        check_config(sequential_with(name))
    public = {name for kind in ("layers", "initializers", "regularizers", "constraints")
              for name, value in vars(getattr(keras, kind)).items() if isinstance(value, type)}
    not_layers = {"InputSpec"}  # a shape description in keras.layers, never in a config
    assert public - set(DENIED) - not_layers <= names and not names & not_layers


@pytest.mark.unit
@pytest.mark.parametrize("class_name", sorted(DENIED))
def test_every_denied_class_is_refused_with_its_reason(class_name):
    with pytest.raises(UnsafeModelError, match=re.escape(f"is a {class_name}, which {DENIED[class_name]}")):
        check_config(sequential_with(class_name))
    if class_name in CODE_CARRYING:
        check_config(sequential_with(class_name), allow_code=True)  # the operator trusts the file
    else:
        with pytest.raises(UnsafeModelError, match="model files must be self-contained"):
            check_config(sequential_with(class_name), allow_code=True)


@pytest.mark.unit
@pytest.mark.parametrize("name", ["deserialize", "get", "Input", "concatenate", "Layer_", "os.system"])
def test_helpers_keras_would_call_are_no_classes_to_name(name):
    with pytest.raises(UnsafeModelError, match=f"uses class '{re.escape(name)}', which is neither a Keras"):
        check_config(sequential_with(name))


def recurrent_models() -> dict[str, tuple[keras.Model, list[np.ndarray]]]:
    """Keras 3 models of every public class a recurrent model uses, and inputs to run them on."""
    rng = np.random.default_rng(4)
    x = lambda *shape: rng.normal(size=shape).astype("float32")  # noqa: E731
    ids = rng.integers(1, 20, (3, 6)).astype("int32")
    seq = keras.Sequential
    return {
        "lstm_gru_simplernn": (seq([keras.Input((6, 3)), L.LSTM(4, return_sequences=True),
                                    L.GRU(3, return_sequences=True), L.SimpleRNN(2), L.Dense(2)]),
                               [x(3, 6, 3)]),
        "rnn_of_cells": (seq([keras.Input((6, 3)), L.RNN([L.LSTMCell(3), L.GRUCell(2), L.SimpleRNNCell(2)]),
                              L.Dense(1)]), [x(3, 6, 3)]),
        "bidirectional_convlstm1d": (seq([keras.Input((4, 8, 2)), L.Bidirectional(L.ConvLSTM1D(2, 3)),
                                          L.Flatten(), L.Dense(2)]), [x(3, 4, 8, 2)]),
        "convlstm2d": (seq([keras.Input((3, 6, 6, 1)), L.ConvLSTM2D(2, 3), L.GlobalAveragePooling2D(),
                            L.Dense(1)]), [x(3, 3, 6, 6, 1)]),
        "cnn_lstm_video": (seq([keras.Input((4, 8, 8, 1)), L.TimeDistributed(L.Conv2D(2, 3)),
                                L.TimeDistributed(L.MaxPooling2D(2)), L.TimeDistributed(L.Flatten()),
                                L.LSTM(3), L.Dense(1)]), [x(3, 4, 8, 8, 1)]),
        "conv1d_pooling_gru": (seq([keras.Input((12, 3)), L.Conv1D(4, 3, padding="causal"), L.MaxPooling1D(2),
                                    L.GRU(3), L.Dense(2)]), [x(3, 12, 3)]),
        "embedding_masked_bidirectional": (seq([keras.Input((6,), dtype="int32"),
                                                L.Embedding(20, 4, mask_zero=True),
                                                L.Bidirectional(L.LSTM(3)), L.Dense(2)]), [ids]),
        "normalization_rescaling": (seq([keras.Input((6, 3)), L.Normalization(mean=[0.1, 0.2, 0.3],
                                                                               variance=[1.0, 2.0, 0.5]),
                                         L.Rescaling(0.5), L.LSTM(3), L.Dense(1)]), [x(3, 6, 3)]),
        "category_encoding": (seq([keras.Input((6,), dtype="int32"), L.CategoryEncoding(20, "one_hot"),
                                   L.GRU(3), L.Dense(1)]), [ids]),
        "masking_time_distributed": (seq([keras.Input((6, 3)), L.Masking(0.0),
                                          L.LSTM(3, return_sequences=True), L.TimeDistributed(L.Dense(2))]),
                                     [x(3, 6, 3)]),
        "noise_dropout_normalization": (seq([keras.Input((6, 3)), L.GaussianNoise(0.1),
                                             L.SpatialDropout1D(0.2), L.BatchNormalization(),
                                             L.LayerNormalization(), L.LSTM(3), L.AlphaDropout(0.1),
                                             L.GaussianDropout(0.1), L.Dense(2)]), [x(3, 6, 3)]),
        "attention": (attention_model(), [x(3, 6, 3)]),
    }


def attention_model() -> keras.Model:
    series = keras.Input((6, 3))
    steps = L.LSTM(4, return_sequences=True)(series)
    attended = L.MultiHeadAttention(2, 3)(steps, steps)
    scored = L.Attention()([steps, L.LayerNormalization()(attended)])
    return keras.Model(series, L.Dense(2, activation="softmax")(L.GlobalAveragePooling1D()(scored)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(recurrent_models()))
def test_every_public_recurrent_class_saves_and_loads(name, tmp_path):
    keras.utils.set_random_seed(6)
    model, inputs = recurrent_models()[name]
    # The model itself is the oracle: Keras 3 cannot read back its own .h5 of an Attention layer
    # (its legacy reader turns score_mode 'dot' into the function keras.layers.dot).
    expected = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    path = modelzoo.save(model, tmp_path / f"{name}.h5")
    loaded = load_model(path, name, engine=EngineConfig(buckets=(4,), jit_compile=False))
    assert_matches(served(loaded, inputs), [np.asarray(expected)])
    loaded.close()


@pytest.mark.slow
def test_a_keras_30_file_naming_orthogonal_initializer_loads(tmp_path):
    """Keras 3.0-3.5 wrote recurrent kernels' initializer as OrthogonalInitializer."""
    keras.utils.set_random_seed(8)
    path = modelzoo.save(keras.Sequential([keras.Input((5, 2)), L.LSTM(3, return_sequences=True), L.GRU(2)]),
                         tmp_path / "keras33.h5")
    x = np.random.default_rng(3).normal(size=(4, 5, 2)).astype("float32")
    expected = modelzoo.reference(path, x)
    h5edit.edit_config(path, lambda config: json.loads(
        json.dumps(config).replace('"class_name": "Orthogonal"', '"class_name": "OrthogonalInitializer"')))
    h5edit.set_versions(path, "3.3.3")
    assert "OrthogonalInitializer" in json.dumps(h5edit.read_config(path))
    model = load(path)
    assert_matches(served(model, [x]), expected)
    assert model.compatibility_steps == ()


@pytest.fixture(scope="module")
def second_pass(corpus):
    """Each second-pass corpus file loaded once (one small bucket keeps compiling short)."""
    models = {name: load(corpus / f"{name}.h5", name) for name in SECOND_PASS}
    yield models
    for model in models.values():
        model.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", SECOND_PASS)
def test_second_pass_file_gives_the_writers_outputs_and_lists_its_steps(corpus, second_pass, name):
    model = second_pass[name]
    inputs, expected = oracle(corpus, name)
    assert_matches(served(model, inputs), expected)
    assert_steps(model, name)
    report = describe(model)  # what `lstmserve inspect` prints
    assert report["compatibility_steps"] == list(model.compatibility_steps)
    for fragment in STEPS[name]:
        assert any(fragment in step for step in report["compatibility_steps"])


@pytest.mark.slow
@pytest.mark.integration
def test_integer_token_ids_reach_a_float32_embedding_input(corpus, second_pass, start_server):
    model = second_pass["keras2_embedding_float_input"]
    (ids,), expected = oracle(corpus, model.name)
    server = start_server(model)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        metadata = client.metadata(model.name)
        for sent in (ids.astype(np.int64), ids.astype(np.int32), ids.astype(np.float32)):
            assert_matches([client.predict(sent, model=model.name)], expected)
        with pytest.raises(LstmserveError) as caught:
            client.predict(ids.astype(np.float32) + np.float32(0.5), model=model.name)
    assert metadata.inputs[0].dtype == tpb.DATA_TYPE_INT32
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert "values that are not whole numbers (an integer input: token ids)" in caught.value.message


@pytest.mark.slow
@pytest.mark.integration
def test_a_stateful_model_answers_each_row_from_a_fresh_state(corpus, second_pass, start_server):
    """Five rows in one request equal Keras predict on each row after reset_states()."""
    gru, lstm = second_pass["keras215_stateful_gru"], second_pass["keras2_stateful_lstm_batch4"]
    server = start_server(gru, lstm)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        (rows,), expected = oracle(corpus, gru.name)
        assert_matches([client.predict(rows, model=gru.name)], expected)
        assert_matches([client.predict(rows[3:4], model=gru.name)], [expected[0][3:4]])
        (batch,), expected = oracle(corpus, lstm.name)  # batch size 4 in the file; 3 rows sent
        assert_matches([client.predict(batch[:3], model=lstm.name)], [expected[0][:3]])
        steps = list(client.metadata(gru.name).compatibility_steps)
    assert any("only batch size 1 is compiled" in step for step in steps)
    assert "batch sizes [1] compiled ahead" in gru.engine.describe()


@pytest.mark.slow
@pytest.mark.integration
def test_odd_names_are_kept_for_inputs_outputs_and_metadata(corpus, second_pass, start_server):
    model = second_pass["keras2_nested_odd_names"]
    (x,), expected = oracle(corpus, model.name)
    server = start_server(model)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        values = client.predict({"series (scaled)": x}, model=model.name)
        metadata = client.metadata(model.name)
    assert_matches([values], expected)
    assert [spec.name for spec in metadata.inputs] == ["series (scaled)"]
    assert [output.tensor.name for output in metadata.outputs] == ["next value"]
    assert "Sequential 'BiLSTM Model v0.2.0>bilstm_model_64'" in model.layers


@pytest.mark.slow
def test_inspect_says_a_stateful_file_runs_at_its_batch_size(corpus):
    lstmserve = str(Path(sys.executable).with_name("lstmserve"))
    result = subprocess.run([lstmserve, "inspect", str(corpus / "keras215_stateful_gru.h5"), "--json",
                             "--no-xla"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["engine"].startswith("traced graph function, batch sizes [1] compiled ahead")
    assert report["written_by"].startswith("Keras 2.15.0 as tf.keras")
    assert_fragments(report["compatibility_steps"], STEPS["keras215_stateful_gru"])


def assert_fragments(steps: list[str], fragments: list[str]) -> None:
    for fragment in fragments:
        assert any(fragment in step for step in steps), f"no step with {fragment!r} in {steps}"


def failing_model(path: Path) -> Path:
    import custom_layers
    return modelzoo.save(keras.Sequential([keras.Input((4, 2)), L.LSTM(3, return_sequences=True),
                                           custom_layers.FailsWhenRun(name="fails")]), path)


@pytest.mark.unit
def test_a_model_that_fails_while_warming_is_a_one_line_load_error(tmp_path):
    path = failing_model(tmp_path / "fails.h5")
    with pytest.raises(ModelLoadError) as caught:
        load_model(path, options=LoadOptions.create(("custom_layers",)), engine=EngineConfig(buckets=(1,)))
    assert re.fullmatch(rf"cannot load {re.escape(str(path))}: ValueError: .*FailsWhenRun refuses to run.*",
                        str(caught.value))
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_serve_exits_with_the_reason_when_a_model_fails_while_warming(tmp_path):
    path = failing_model(tmp_path / "fails.h5")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    result = subprocess.run([str(Path(sys.executable).with_name("lstmserve")), "serve", "--model", str(path),
                             "--port", "0", "--metrics-port", "0", "--custom-objects", "custom_layers",
                             "--no-xla"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "cannot load model 'fails'" in line]
    assert len(lines) == 1 and "FailsWhenRun refuses to run" in lines[0]
    assert "Traceback" not in result.stderr


def one_layer(class_name: str, **config) -> dict:
    return {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 6, 3]}},
        {"class_name": class_name, "config": {"name": "layer", **config}}]}}


@pytest.mark.unit
@pytest.mark.parametrize("class_name, argument, value", [
    ("Attention", "causal", True), ("AdditiveAttention", "causal", True), ("DepthwiseConv1D", "groups", 2),
    ("MultiHeadAttention", "softmax_robust_masking", True), ("Softmax", "robust_masking", True)])
def test_an_old_argument_whose_value_changes_the_answer_is_refused(class_name, argument, value):
    with pytest.raises(ModelLoadError, match=rf"{class_name} 'layer' was saved with {argument}={value}; "
                       r"Keras 3 has no such argument .*would change the answers"):
        translate_config(one_layer(class_name, **{argument: value}))


@pytest.mark.unit
def test_refused_names_become_unique_valid_names_everywhere_they_are_referenced():
    config = {"class_name": "Functional", "config": {"name": "my model", "layers": [
        {"class_name": "InputLayer", "name": "in put", "config": {"name": "in put"}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "in_put", "config": {"name": "in_put"},
         "inbound_nodes": [[["in put", 0, 0, {}]]]},
        {"class_name": "Dense", "name": "ünïcode", "config": {"name": "ünïcode"},
         "inbound_nodes": [[["in_put", 0, 0, {}]]]}],
        "input_layers": [["in put", 0, 0]], "output_layers": [["ünïcode", 0, 0]]}}
    translation = translate_config(config)
    assert translation.renamed == {"in put": "in_put_1", "my model": "my_model", "ünïcode": "x_n_code"}
    layers = translation.config["config"]["layers"]
    assert [layer["name"] for layer in layers] == ["in_put_1", "in_put", "x_n_code"]
    assert [layer["config"]["name"] for layer in layers] == ["in_put_1", "in_put", "x_n_code"]
    assert layers[1]["inbound_nodes"] == [[["in_put_1", 0, 0, {}]]]
    assert translation.config["config"]["input_layers"] == [["in_put_1", 0, 0]]
    assert translation.config["config"]["output_layers"] == [["x_n_code", 0, 0]]
