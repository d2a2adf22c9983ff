"""Models trained from CSV files, served by a real server that applies their stored preparation."""

import json

import h5py
import numpy as np
import pytest
from conftest import load

from lstmserve.client import Client
from lstmserve.format.metadata import METADATA_ATTR
from lstmserve.format.preparation import Preparation
from lstmserve.trainer import datasets
from lstmserve.trainer.data import read_csv
from lstmserve.trainer.pipeline import Options, run
from lstmserve.trainer.save import keras

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AIRLINE = datasets.path("airline-passengers.csv")


def serving_metadata(path) -> dict:
    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs[METADATA_ATTR])


def airline_rows(path, rows: int):
    lines = AIRLINE.read_text().splitlines()
    path.write_text("\n".join(lines[:rows + 1]) + "\n")
    return path


def test_airline_trained_on_96_months_forecasts_the_rest_in_passengers(tmp_path, start_server):
    """The issue's quality bar, end to end: raw passenger counts in, passengers out."""
    model = tmp_path / "airline.h5"
    run(Options(data=airline_rows(tmp_path / "first96.csv", 96), output=model, verbose=0))
    passengers = read_csv(AIRLINE).numeric(["Passengers"])[:, 0]
    targets = np.arange(97, 144)  # months 98..144, 0-based rows
    raw = np.stack([passengers[t - 18:t] for t in targets])[..., None].astype(np.float32)
    server = start_server(load(model, "airline"))
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        forecasts = client.predict(raw)[:, 0]
        meta = client.metadata("airline")
        model_space = client.predict(Preparation.from_metadata(
            serving_metadata(model)["preparation"]).prepare([raw])[0], prepared=True)
        twelve = client.forecast(passengers[:96], horizon=12)  # the trainer's model declares a forecast
        with client.session() as session:  # a window session: Predict on the last 18 raw months
            stepped = session.step(passengers[:97, None])
    rmse = np.sqrt(np.mean((forecasts - passengers[targets]) ** 2))
    persistence = np.sqrt(np.mean((passengers[targets - 1] - passengers[targets]) ** 2))
    assert rmse <= persistence / 2, f"RMSE {rmse:.2f}; persistence {persistence:.2f}"
    assert meta.inputs[0].shape == [-1, 6, 1]
    assert meta.preparation.raw_timesteps == 18 and list(meta.preparation.raw_features) == ["Passengers"]
    assert [s.kind for s in meta.preparation.input_steps] == ["difference", "standard"]
    assert "window of 6 steps" in meta.preparation.description
    assert json.loads(meta.training_json)["data"]["rows"] == 96
    assert np.abs(model_space).max() < 10  # prepared=True: the model's own scaled differences
    assert not np.allclose(model_space[:, 0], forecasts)
    assert serving_metadata(model)["forecast"] == {"feature": "Passengers", "horizon": 1}
    assert meta.forecast.supported and meta.forecast.feature == "Passengers"
    assert meta.sessions.kind == 2 and meta.sessions.steps_before_first_answer == 17  # window of 18
    assert twelve.shape == (12,) and np.sqrt(np.mean((twelve - passengers[96:108]) ** 2)) < 50
    assert stepped.answered == 80 and stepped.missing == 0  # months 18..97 each end a full window
    np.testing.assert_allclose(stepped.last[0], forecasts[0], rtol=1e-5)  # month 98, as Predict said


def test_classifier_on_shipped_runs_answers_label_strings_and_probabilities(tmp_path, start_server):
    model = tmp_path / "machines.h5"
    run(Options(data=datasets.path("machine-runs.csv"), output=model, label="state", group="run",
                epochs=60, verbose=0))
    fresh = datasets.machine_runs(runs=45, seed=99)  # runs the model never saw, raw units
    raw = np.array([[r["vibration"], r["temperature"]] for r in fresh], dtype=np.float32).reshape(45, 24, 2)
    truth = [r["state"] for r in fresh[::24]]
    server = start_server(load(model, "machines"))
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        labels = client.predict_classes(raw, labels=True)
        probabilities = client.predict_proba(raw)
        meta = client.metadata("machines")
    assert set(labels) <= set(datasets.MACHINE_STATES)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    assert list(meta.outputs[0].class_labels) == sorted(datasets.MACHINE_STATES)
    assert meta.preparation.input_steps[0].kind == "standard"
    assert np.mean(np.array(labels) == np.array(truth)) >= 0.8


def test_validate_then_refit_on_all_rows(tmp_path):
    data = airline_rows(tmp_path / "first60.csv", 60)
    report = run(Options(data=data, output=tmp_path / "final.h5", validate=True, holdout=12, epochs=4,
                         plot=tmp_path / "plot.png", verbose=0))
    kept = run(Options(data=data, output=tmp_path / "validated.h5", validate=True, holdout=12, epochs=4,
                       refit=False, verbose=0))
    final, validated = serving_metadata(tmp_path / "final.h5"), serving_metadata(tmp_path / "validated.h5")
    passengers = read_csv(data).numeric(["Passengers"])[:, 0]
    assert final["training"]["final"]["rows"] == 60 and validated["training"]["final"]["rows"] == 48
    # Each file's scaling was fitted on exactly the rows its model was fit on.
    for meta, rows in ((final, 60), (validated, 48)):
        changes = passengers[12:rows] - passengers[:rows - 12]
        assert meta["preparation"]["input_steps"][-1]["mean"] == pytest.approx([changes.mean()])
    figures = report["validation"]["figures"]
    assert set(figures) == {"model", "persistence", "seasonal_naive"}
    assert figures["persistence"]["windows"] == 12 and figures["model"]["rmse"] > 0
    assert final["training"]["validation"]["figures"] == figures
    assert final["training"]["seed"] == 1 and "keras" in final["training"]["versions"]
    assert kept["final"]["refit"] is False
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_model(tmp_path):
    data = airline_rows(tmp_path / "first48.csv", 48)
    weights = []
    for name in ("a.h5", "b.h5"):
        run(Options(data=data, output=tmp_path / name, epochs=3, seed=7, verbose=0))
        weights.append(keras.models.load_model(tmp_path / name, compile=False).get_weights())
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)
