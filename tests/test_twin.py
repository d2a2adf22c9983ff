"""The compiled twin of small recurrent stacks: used only where it equals Keras, and equal to it there."""

import keras
import modelzoo
import numba
import numpy as np
import pytest
from conftest import load

from lstmserve.server.engine.compiled import CompiledEngine
from lstmserve.server.engine.twin import TwinEngine, build_twin

pytestmark = pytest.mark.integration


def _stack(*layers, input_shape=(7, 3)):
    keras.utils.set_random_seed(11)
    return keras.Sequential([keras.Input(input_shape), *layers])


STACKS = {
    "lstm": lambda: _stack(keras.layers.LSTM(5), keras.layers.Dense(1)),
    # Not sigmoid/tanh: the general LSTM step rather than the fused stock one.
    "lstm_other_activations": lambda: _stack(
        keras.layers.LSTM(5, activation="relu", recurrent_activation="tanh", return_sequences=True),
        keras.layers.LSTM(3), keras.layers.Dense(2)),
    "stacked_lstm_dropout": lambda: _stack(keras.layers.LSTM(6, return_sequences=True),
                                           keras.layers.Dropout(0.3), keras.layers.LSTM(4),
                                           keras.layers.Dense(3, activation="softmax")),
    "gru_reset_after": lambda: _stack(keras.layers.GRU(5), keras.layers.Dense(1, activation="sigmoid")),
    "gru_reset_before": lambda: _stack(keras.layers.GRU(5, reset_after=False),
                                       keras.layers.Dense(2, activation="relu")),
    "simple_rnn_sequences": lambda: _stack(keras.layers.SimpleRNN(4, return_sequences=True),
                                           keras.layers.Dense(2, activation="tanh")),
}


def _random_biases(model):
    # Fresh layers have zero biases: randomise them so a misplaced bias shows.
    rng = np.random.default_rng(5)
    for weight in model.weights:
        if "bias" in weight.path:
            weight.assign(rng.normal(scale=0.5, size=weight.shape).astype("float32"))
    return model


@pytest.mark.parametrize("kind", STACKS)
def test_twin_serves_plain_stacks_with_kerass_numbers(kind, tmp_path, start_server):
    path = modelzoo.save(_random_biases(STACKS[kind]()), tmp_path / f"{kind}.h5")
    model = load(path, kind)
    assert isinstance(model.engine.engine, TwinEngine)
    server = start_server(model)
    from lstmserve.client import Client
    rng = np.random.default_rng(1)
    with Client(f"127.0.0.1:{server.port}") as client:
        for rows in (1, 5, 64, 150):
            x = rng.normal(size=(rows, 7, 3)).astype(np.float32)
            np.testing.assert_allclose(client.predict(x), modelzoo.reference(path, x)[0],
                                       rtol=1e-5, atol=1e-5)


def test_seed_demo_is_served_by_the_twin(loaded_seed):
    assert isinstance(loaded_seed.engine.engine, TwinEngine)


@pytest.mark.parametrize("builder", [modelzoo.embedding, modelzoo.multi_io])
def test_other_models_keep_the_compiled_engine(builder, tmp_path):
    model = load(builder(tmp_path / "m.h5"))
    assert isinstance(model.engine.engine, CompiledEngine)


def test_a_twin_that_disagrees_with_the_compiled_model_is_not_used(loaded_seed, seed_h5):
    keras_model = keras.models.load_model(seed_h5, compile=False)
    compiled = CompiledEngine(keras_model, loaded_seed.inputs, buckets=(1, 4, 64))

    class Shifted:
        def predict(self, arrays):
            return [out + 1e-3 for out in compiled.predict(arrays)]

    assert build_twin(keras_model, loaded_seed.inputs, Shifted(), 64) is None
    assert build_twin(keras_model, loaded_seed.inputs, compiled, 64) is not None


def test_serving_never_compiles_whatever_memory_a_request_arrives_in(loaded_seed):
    """A decoded request is a read-only view of its bytes; the kernels must not meet a new type there."""
    from lstmserve.server.engine import twin
    kernels = [k for k in vars(twin).values() if isinstance(k, numba.core.dispatcher.Dispatcher)]
    assert len(kernels) >= 8
    compiled = [len(kernel.signatures) for kernel in kernels]
    runner = loaded_seed.engine.engine
    for rows in (1, 2, 64):
        x = np.linspace(-1, 1, rows, dtype=np.float32).reshape(rows, 1, 1)
        read_only = np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)
        strided = np.repeat(x, 2, axis=0)[::2]
        for variant in (x, read_only, strided):
            np.testing.assert_array_equal(runner.predict([variant])[0], runner.predict([x])[0])
    assert [len(kernel.signatures) for kernel in kernels] == compiled


def test_a_stack_over_the_arithmetic_budget_keeps_the_compiled_engine(tmp_path):
    # A full batch of 64 would cost this twin over a millisecond on the event loop: XLA takes it.
    wide = _stack(keras.layers.LSTM(32), keras.layers.Dense(1), input_shape=(30, 4))
    model = load(modelzoo.save(wide, tmp_path / "wide.h5"), "wide")
    assert isinstance(model.engine.engine, CompiledEngine)


def test_a_dense_stack_on_flat_rows_is_a_twin_too(tmp_path):
    # [rows, features] inputs run as one step inside the kernels and come back without a steps axis.
    mlp = _random_biases(_stack(keras.layers.Dense(6, activation="relu"), keras.layers.Dropout(0.2),
                                keras.layers.Dense(3, activation="softmax"), input_shape=(4,)))
    path = modelzoo.save(mlp, tmp_path / "mlp.h5")
    model = load(path, "mlp")
    assert isinstance(model.engine.engine, TwinEngine)
    x = np.random.default_rng(3).normal(size=(9, 4)).astype(np.float32)
    (served,) = model.engine.engine.predict([x])
    assert served.shape == (9, 3)
    np.testing.assert_allclose(served, modelzoo.reference(path, x)[0], rtol=1e-5, atol=1e-5)
