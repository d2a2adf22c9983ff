"""Hostile model files are refused before Keras or the server reads their contents, naming the culprit."""

from __future__ import annotations

import subprocess
import sys

import hostile_files
import pytest

from lstmserve.server.errors import UnsafeModelError
from lstmserve.server.loading.load import load_model

pytestmark = pytest.mark.unit


def test_a_dataset_stored_in_another_local_file_is_refused(tmp_path):
    path = hostile_files.external_storage(tmp_path / "leak.h5", tmp_path / "secret.txt")
    with pytest.raises(UnsafeModelError, match=r"dataset 'model_weights/dense/sequential/dense/bias' "
                       r"keeps its bytes in external files \[.*secret.txt'\], not in the model file"):
        load_model(path)


def test_a_filter_hdf5_would_load_as_a_plugin_is_refused(tmp_path):
    path = hostile_files.plugin_filter(tmp_path / "plugin.h5")
    with pytest.raises(UnsafeModelError, match=r"dataset 'model_weights/dense/sequential/dense/kernel' "
                       r"is compressed with HDF5 filter 32013 .* would load as a plugin"):
        load_model(path)


def test_inspect_names_the_dataset_and_prints_no_traceback(tmp_path):
    path = hostile_files.external_storage(tmp_path / "leak.h5", tmp_path / "secret.txt")
    result = subprocess.run([sys.executable, "-m", "lstmserve.client.cli", "inspect", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "dataset 'model_weights/dense/sequential/dense/bias' keeps its bytes in external files" \
        in result.stderr
    assert "Traceback" not in result.stderr
    assert hostile_files.SECRET.decode()[:10] not in result.stdout + result.stderr
