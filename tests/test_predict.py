"""Predictions over a real gRPC server in the three modes, compared with plain Keras."""

import modelzoo
import numpy as np
import pytest
from conftest import load

from lstmserve.client import Client, LstmserveError
from lstmserve.trainer.demos import CLASSIFIER_LABELS, classifier_data, seed_data

pytestmark = pytest.mark.integration


def test_seed_values_equal_keras(client, seed_h5):
    X, _ = seed_data()
    served = client.predict(X, model="seed")
    assert served.shape == (5, 1) and served.dtype == np.float32
    np.testing.assert_allclose(served, modelzoo.reference(seed_h5, X)[0], rtol=1e-5, atol=1e-6)


def test_seed_regression_refuses_classes_and_probabilities(client):
    X, _ = seed_data()
    for call in (client.predict_classes, client.predict_proba):
        with pytest.raises(LstmserveError) as caught:
            call(X, model="seed")
        assert caught.value.code.name == "FAILED_PRECONDITION"
        assert "linear activation" in caught.value.message
        assert "needs a sigmoid or softmax output" in caught.value.message


def test_classifier_classes_labels_and_probabilities(client, classifier_h5):
    X, y = classifier_data(rows=60, seed=11)
    probabilities = client.predict_proba(X, model="classifier")
    classes = client.predict_classes(X, model="classifier")
    labels = client.predict_classes(X, model="classifier", labels=True)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, modelzoo.reference(classifier_h5, X)[0], atol=1e-5)
    np.testing.assert_array_equal(classes, probabilities.argmax(axis=-1))
    assert classes.dtype == np.int64
    assert list(labels) == [CLASSIFIER_LABELS[i] for i in classes]
    assert (classes == y).mean() > 0.9  # the demo really learned its three shapes


def test_batches_larger_than_the_biggest_bucket(client, seed_h5):
    X = np.linspace(0, 1, 300, dtype=np.float32).reshape(300, 1, 1)
    np.testing.assert_allclose(client.predict(X, model="seed"),
                               modelzoo.reference(seed_h5, X)[0], rtol=1e-5, atol=1e-6)


def test_multi_input_multi_output_and_sequence_outputs(start_server, tmp_path):
    path = modelzoo.multi_io(tmp_path / "multi.h5")
    server = start_server(load(path, "multi"))
    rng = np.random.default_rng(0)
    for timesteps in (7, 12):  # free-length timesteps: any length is served
        series = rng.normal(size=(3, timesteps, 3)).astype(np.float32)
        static = rng.normal(size=(3, 4)).astype(np.float32)
        with Client(f"127.0.0.1:{server.port}") as client:
            values = client.predict({"series": series, "static": static})
        kind, trace = modelzoo.reference(path, series, static)
        np.testing.assert_allclose(values["kind"], kind, atol=1e-5)
        np.testing.assert_allclose(values["trace"], trace, atol=1e-5)
        assert values["trace"].shape == (3, timesteps, 2)


def test_multi_output_refuses_classes_when_one_output_is_linear(start_server, tmp_path):
    server = start_server(load(modelzoo.multi_io(tmp_path / "multi.h5"), "multi"))
    inputs = {"series": np.zeros((1, 2, 3), np.float32), "static": np.zeros((1, 4), np.float32)}
    with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(LstmserveError) as caught:
        client.predict_proba(inputs)
    assert caught.value.code.name == "FAILED_PRECONDITION"
    assert "output 'trace' has a linear activation" in caught.value.message


def test_single_sigmoid_unit_classes_are_p_over_half(start_server, tmp_path):
    path = modelzoo.binary(tmp_path / "binary.h5")
    server = start_server(load(path))
    X = np.random.default_rng(1).normal(scale=3, size=(40, 5, 2)).astype(np.float32)
    with Client(f"127.0.0.1:{server.port}") as client:
        classes = client.predict_classes(X)
        probabilities = client.predict_proba(X)
    p = modelzoo.reference(path, X)[0]
    np.testing.assert_allclose(probabilities, p, atol=1e-5)
    np.testing.assert_array_equal(classes, (p[:, 0] > 0.5).astype(np.int64))
    assert classes.shape == (40,)


def test_embedding_model_takes_integer_ids(start_server, tmp_path):
    path = modelzoo.embedding(tmp_path / "embedding.h5")
    server = start_server(load(path))
    ids = np.array([[3, 9, 14, 0, 0], [7, 1, 2, 30, 49]], dtype=np.int64)
    with Client(f"127.0.0.1:{server.port}") as client:
        served = client.predict(ids)
        as_floats = client.predict(ids.astype(np.float32))  # whole numbers: the same ids
        with pytest.raises(LstmserveError) as caught:
            client.predict((ids + 0.5).astype(np.float32))
    np.testing.assert_allclose(served, modelzoo.reference(path, ids.astype(np.int32))[0], atol=1e-5)
    np.testing.assert_array_equal(as_floats, served)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert ("has float32 values that are not whole numbers (an integer input: token ids); "
            "model 'embedding' expects int32") in caught.value.message
