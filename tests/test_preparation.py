"""The preparation that travels in the .h5: fitted on training rows, applied to raw windows, inverted."""

import numpy as np
import pytest

from lstmserve.format.errors import FormatError, RawInputError
from lstmserve.format.preparation import Preparation, fit_preparation

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(0)
SERIES = np.c_[100 + np.cumsum(RNG.uniform(0, 5, 80)), RNG.uniform(1, 9, 80)]  # positive, trending


@pytest.mark.parametrize("options", [
    {"lags": [1]}, {"lags": [12]}, {"lags": [1, 12], "log": True, "scaling": "minmax"},
    {"lags": [], "scaling": "none"},
])
def test_windows_round_trip_through_prepare_and_restore(options):
    prep = Preparation.from_metadata(
        fit_preparation(SERIES[:60], ["sales", "price"], "sales", **options).to_metadata())
    horizon, span = 3, 4 + prep.lag  # 4 prepared timesteps per window
    starts = range(span, len(SERIES) - horizon + 1)
    raw = np.stack([SERIES[s - span:s] for s in starts])
    prepared_series = prep.transform(SERIES)
    target = prep.transform_target(SERIES[:, 0])
    np.testing.assert_allclose(prep.prepare([raw])[0], np.stack([prepared_series[s - span:s - prep.lag]
                                                                for s in starts]))
    model_outputs = np.stack([target[s - prep.lag:s - prep.lag + horizon] for s in starts])
    restored = prep.restore([model_outputs], [raw])[0]
    np.testing.assert_allclose(restored, np.stack([SERIES[s:s + horizon, 0] for s in starts]), rtol=1e-9)


def test_fitted_on_training_rows_only():
    prep = fit_preparation(SERIES[:50], ["sales", "price"], "sales", lags=[1])
    scaling = prep.input_steps[-1]
    np.testing.assert_allclose(scaling["mean"], np.diff(SERIES[:50], axis=0).mean(axis=0))
    assert prep.output_steps[-1]["mean"] == [scaling["mean"][0]]


def test_raw_specs_ask_for_the_lag_in_front_of_the_window():
    prep = fit_preparation(SERIES, ["sales", "price"], "sales", lags=[1, 12])
    model = (None, 6, 2)
    assert prep.raw_shape(model) == (None, 19, 2)
    assert prep.raw_timesteps(model) == 19
    assert Preparation().raw_timesteps(model) == 6


def test_unknown_step_kind_refuses_to_load():
    with pytest.raises(FormatError, match="step kind 'boxcox' is unknown"):
        Preparation.from_metadata({"input_steps": [{"kind": "boxcox", "features": ["x"]}],
                                   "raw_features": ["x"]})


def test_log_preparation_refuses_non_positive_raw_inputs():
    prep = fit_preparation(SERIES, ["sales", "price"], "sales", lags=[1], log=True)
    raw = SERIES[:8][None].copy()
    raw[0, 3, 1] = 0.0
    with pytest.raises(RawInputError, match="must be > 0.*received a minimum of 0"):
        prep.prepare([raw])
