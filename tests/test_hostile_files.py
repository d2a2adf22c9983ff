"""Hostile model files are refused before Keras or the server reads their contents, naming the culprit in
one line: by loading, by `lstmserve inspect`, and by `lstmserve serve`, which exits instead of hanging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hostile_files as hf
import pytest

from lstmserve.server.errors import ModelLoadError, UnsafeModelError
from lstmserve.server.loading.load import load_model

KERNEL = f"'/{hf.KERNEL}'"
BIAS = f"'/{hf.BIAS}'"
TESTS = Path(__file__).parent
LSTMSERVE = str(Path(sys.executable).with_name("lstmserve"))


def metadata(text: str) -> Callable[[Path], Path]:
    return lambda path: hf.with_attribute(path, "lstmserve_metadata", text)


def config(text: str) -> Callable[[Path], Path]:
    return lambda path: hf.with_attribute(path, "model_config", text)


# Each hostile file and a fragment of the one-line reason it is refused with.
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "config_100000_objects_deep": (hf.deep_config,
                                   "attribute 'model_config' nests deeper than the 100-level limit "
                                   "(--max-config-depth)"),
    "config_100000_lists_deep": (config("[" * 100_000 + "]" * 100_000), "nests deeper than the 100-level"),
    "config_a_list": (config("[1, 2]"), "'model_config' must be a JSON object naming a class_name; got list"),
    "config_a_string": (config('"Sequential"'), "must be a JSON object naming a class_name; got str"),
    "config_null": (config("null"), "must be a JSON object naming a class_name; got NoneType"),
    "config_not_json": (config("{'class_name': 'Sequential'"), "attribute 'model_config' is not valid JSON"),
    "weight_2p31_by_2p31": (lambda path: hf.declared_weight(path, (2**31, 2**31)),
                            "weights declare 18,446,744,073,709,551,632 bytes; the limit is 1,073,741,824 "
                            "(--max-model-bytes)"),
    "weight_of_another_shape": (lambda path: hf.declared_weight(path, (5, 4)),
                                "layer 'dense' (Dense): the file holds weights of shapes [(5, 4), (4,)]; "
                                "the layer built from its config has [(3, 4), (4,)]"),
    "weight_of_900_mb_never_written": (lambda path: hf.declared_weight(path, (15000, 15000)),
                                       "the file holds weights of shapes [(15000, 15000), (4,)]"),
    "config_declaring_2e9_units": (hf.huge_units, "Dense 'dense' declares units=2,000,000,000, more than "
                                                  "the 16 weight values the file holds"),
    "config_of_20_mb": (hf.huge_config, "attribute 'model_config' of '/' holds more than the 16,777,216-byte "
                                        "limit (--max-attribute-bytes)"),
    "layer_name_of_20_mb": (hf.huge_name_list, "attribute 'layer_names' of '/model_weights' holds more "
                                                    "than the 16,777,216-byte limit"),
    "nan_weight": (lambda path: hf.non_finite_weights(path, float("nan")),
                   f"layer 'dense': weight {BIAS} holds 1 NaN or infinite values of 4"),
    "infinite_weight": (lambda path: hf.non_finite_weights(path, float("-inf")),
                        f"weight {BIAS} holds 1 NaN or infinite values of 4"),
    "hard_link_cycle": (hf.hard_link_cycle, "group 'model_weights/dense/sequential/loop' is a second link to "
                                            "group 'model_weights' (a cycle or a shared group)"),
    "soft_link": (hf.soft_link, "'model_weights/dense/again' is an HDF5 soft link"),
    "text_weight": (hf.text_weights, f"weight dataset {KERNEL} has dtype object; weights are numbers"),
    "compound_weight": (hf.compound_weights,
                        f"weight dataset {KERNEL} has dtype [('re', '<f4'), ('im', '<f4')]"),
    "missing_weight_group": (hf.missing_weight_group,
                             "'dense' listed in '/model_weights' is missing, not a Group"),
    "missing_weight_dataset": (hf.missing_weight_dataset, "'sequential/dense/bias' listed in "
                                                          "'/model_weights/dense' is missing, not a Dataset"),
    "metadata_a_list": (metadata("[1]"), "'lstmserve_metadata' must be a JSON object; got list"),
    "metadata_not_json": (metadata("{task: 1"), "'lstmserve_metadata' is not valid JSON"),
    "metadata_100000_deep": (metadata("[" * 100_000 + "]" * 100_000),
                             "'lstmserve_metadata' is not valid JSON"),
    "metadata_task_a_number": (metadata('{"task": 5}'), "metadata task is 5; expected one of"),
    "metadata_labels_a_string": (metadata('{"labels": "up,down"}'),
                                 "metadata labels must be lists of strings"),
    "metadata_label_of_a_megabyte": (metadata(json.dumps({"labels": ["x" * (1 << 20)]})),
                                     "metadata labels must be at most 1024 characters each"),
    "metadata_million_labels": (metadata(json.dumps({"labels": ["a"] * 1_000_000})),
                                "output 'dense' (linear, 4 units) carries 1000000 class labels"),
    "metadata_training_a_string": (metadata('{"training": "yes"}'),
                                   "metadata 'training' must be a JSON object"),
    "metadata_training_of_a_megabyte": (metadata(json.dumps({"training": {"log": "x" * (1 << 20)}})),
                                        "metadata 'training' is longer than 65,536 characters"),
    "metadata_steps_a_number": (metadata('{"preparation": {"input_steps": 7}}'),
                                "preparation 'input_steps' must be a list; got int"),
    "metadata_unknown_step": (metadata('{"preparation": {"input_steps": [{"kind": "fourier"}]}}'),
                              "preparation step kind 'fourier' is unknown"),
    "metadata_step_features_numbers": (
        metadata('{"preparation": {"input_steps": [{"kind": "log", "features": [1, 2]}]}}'),
        "preparation step 'log' names its features as a list of strings; got [1, 2]"),
    "metadata_timesteps_a_string": (metadata('{"preparation": {"timesteps": "six", "input_steps": []}}'),
                                    "preparation timesteps must be an integer in 1..100000; got 'six'"),
    "metadata_100000_raw_features": (
        metadata(json.dumps({"preparation": {"raw_features": [f"f{i}" for i in range(100_000)],
                                             "input_steps": [{"kind": "log"}]}})),
        "metadata preparation names 100000 raw features; the model's first input takes float32 "
        "[batch, features=3]"),
}
# The three files that left `serve` NOT_SERVING forever before the loader caught every failure.
HUNG_SERVE = ("config_100000_objects_deep", "config_a_list", "weight_2p31_by_2p31")


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_refused_with_a_one_line_reason(name, tmp_path):
    build, reason = HOSTILE[name]
    path = build(tmp_path / f"{name}.h5")
    with pytest.raises(ModelLoadError) as caught:
        load_model(path)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message and len(message) < 1000


@pytest.mark.unit
def test_a_dataset_stored_in_another_local_file_is_refused(tmp_path):
    path = hf.external_storage(tmp_path / "leak.h5", tmp_path / "secret.txt")
    with pytest.raises(UnsafeModelError, match=r"dataset 'model_weights/dense/sequential/dense/bias' "
                       r"keeps its bytes in external files \[.*secret.txt'\], not in the model file"):
        load_model(path)


@pytest.mark.unit
def test_a_filter_hdf5_would_load_as_a_plugin_is_refused(tmp_path):
    path = hf.plugin_filter(tmp_path / "plugin.h5")
    with pytest.raises(UnsafeModelError, match=r"dataset 'model_weights/dense/sequential/dense/kernel' "
                       r"is compressed with HDF5 filter 32013 .* would load as a plugin"):
        load_model(path)


@pytest.mark.unit
def test_inspect_names_the_dataset_and_prints_no_traceback(tmp_path):
    path = hf.external_storage(tmp_path / "leak.h5", tmp_path / "secret.txt")
    result = subprocess.run([sys.executable, "-m", "lstmserve.client.cli", "inspect", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "dataset 'model_weights/dense/sequential/dense/bias' keeps its bytes in external files" \
        in result.stderr
    assert "Traceback" not in result.stderr
    assert hf.SECRET.decode()[:10] not in result.stdout + result.stderr


def inspect_many(paths: list[Path]) -> tuple[dict[str, dict], int]:
    """`lstmserve inspect` on each file in one process: each file's report, and the peak RSS in KiB."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    result = subprocess.run([sys.executable, str(TESTS / "inspect_many.py"), *map(str, paths)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {Path(line["path"]).stem: line for line in lines[:-1]}, lines[-1]["peak_rss_kib"]


@pytest.mark.slow
def test_inspect_refuses_every_hostile_file_in_one_line(tmp_path):
    reports, _ = inspect_many([build(tmp_path / f"{name}.h5") for name, (build, _) in HOSTILE.items()])
    assert sorted(reports) == sorted(HOSTILE)
    for name, report in reports.items():
        assert report["escaped"] == "" and report["code"] == 1, (name, report)
        lines = report["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("lstmserve inspect: "), (name, lines)
        assert HOSTILE[name][1] in lines[0]


@pytest.mark.slow
def test_refusing_a_huge_declared_weight_allocates_nothing(tmp_path):
    """A 900 MB kernel that the file never wrote (and a 2^31 x 2^31 one) costs no more memory than
    inspecting a good file: declared sizes and shapes are checked before any value is read."""
    _, good_peak = inspect_many([hf.dense(tmp_path / "good.h5")])
    reports, hostile_peak = inspect_many([HOSTILE[name][0](tmp_path / f"{name}.h5") for name in
                                          ("weight_of_900_mb_never_written", "weight_2p31_by_2p31")])
    assert all(report["code"] == 1 for report in reports.values())
    assert hostile_peak < good_peak + 100 * 1024, f"peak RSS {hostile_peak} KiB vs {good_peak} KiB"


@pytest.mark.slow
@pytest.mark.parametrize("name", HUNG_SERVE)
def test_serve_exits_with_the_reason_instead_of_hanging(name, tmp_path):
    """A good model beside the hostile one: the server fails fast (exit 1) with one clear log line."""
    build, reason = HOSTILE[name]
    good, hostile = hf.dense(tmp_path / "good.h5"), build(tmp_path / f"{name}.h5")
    result = subprocess.run([LSTMSERVE, "serve", "--model", f"good={good}", "--model", f"bad={hostile}",
                             "--port", "0", "--metrics-port", "0", "--no-xla"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "cannot load model 'bad'" in line]
    assert len(lines) == 1 and reason in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
