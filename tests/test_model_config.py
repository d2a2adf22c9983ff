"""A repository model's config.json: what it may set, and every way a hostile or careless file is refused
with a message naming the key, what was expected and what arrived."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmserve.server.engine.base import BatchConfig
from lstmserve.server.errors import ModelConfigError
from lstmserve.server.serving.model_config import (
    MAX_CONFIG_BYTES,
    ModelSettings,
    VersionPolicy,
    read_settings,
)

pytestmark = pytest.mark.unit

DEFAULTS = ModelSettings(batching=BatchConfig(32, 0.002, 100))


def read(tmp_path, text: str | bytes, trust: bool = False) -> ModelSettings:
    model_dir = tmp_path / "m"
    model_dir.mkdir(exist_ok=True)
    data = text if isinstance(text, bytes) else text.encode()
    (model_dir / "config.json").write_bytes(data)
    return read_settings(model_dir, DEFAULTS, trust)


def refused(tmp_path, text: str | bytes, trust: bool = False) -> str:
    with pytest.raises(ModelConfigError) as caught:
        read(tmp_path, text, trust)
    assert str(caught.value).startswith("m/config.json: ")
    return str(caught.value)


def test_no_config_means_the_flags(tmp_path):
    (tmp_path / "m").mkdir()
    assert read_settings(tmp_path / "m", DEFAULTS, False) is DEFAULTS


def test_a_config_overrides_policy_labels_and_batching_and_keeps_the_rest(tmp_path):
    settings = read(tmp_path, json.dumps({"version_policy": "latest:2", "labels": {"stable": 3},
                                          "batching": {"max_batch": 8, "max_delay_ms": 1.5}}))
    assert settings.policy == VersionPolicy("latest", 2)
    assert settings.labels == {"stable": 3}
    assert settings.batching == BatchConfig(8, 0.0015, 100)
    assert settings.custom_objects == () and settings.allow_code is False


def test_code_settings_need_the_operator_s_trust(tmp_path):
    text = json.dumps({"allow_code": True, "custom_objects": ["mypackage.layers"]})
    message = refused(tmp_path, text)
    assert "'custom_objects' lets a model file run code" in message and "--trust-model-config" in message
    trusted = read(tmp_path, text, trust=True)
    assert trusted.allow_code is True and trusted.custom_objects == ("mypackage.layers",)


@pytest.mark.parametrize("text,message", [
    ('{"version_policy": "lastest:1"}', "version policy is 'lastest:1'; expected 'latest:N'"),
    ('{"version_policy": "latest:0"}', "version policy is 'latest:0'"),
    ('{"version_policy": "specific:1,x"}', "version policy is 'specific:1,x'"),
    ('{"version_policy": "specific:01"}', "version policy is 'specific:01'"),
    ('{"version_policy": "latest:\u00b2"}', "version policy is 'latest:\u00b2'"),
    ('{"version_policy": 3}', "'version_policy' is the number 3; expected a string"),
    ('{"labels": {"Stable": 1}}', "label 'Stable' is not a label"),
    ('{"labels": {"7": 1}}', "label '7' is not a label"),
    ('{"labels": {"stable": "3"}}', "label 'stable' names the string '3'; expected a version number"),
    ('{"labels": {"stable": true}}', "label 'stable' names true; expected a version number"),
    ('{"labels": {"stable": 0}}', "label 'stable' names the number 0"),
    ('{"labels": [1]}', "'labels' is a list; expected an object"),
    ('{"batching": {"max_batch": 0}}', "'batching.max_batch' is the number 0; expected an integer from 1"),
    ('{"batching": {"max_batch": 2.5}}', "'batching.max_batch' is the number 2.5; expected an integer"),
    ('{"batching": {"max_delay_ms": -1}}', "'batching.max_delay_ms' is the number -1; expected a number"),
    ('{"batching": {"queue": 5}}', "unknown key 'queue' in 'batching'"),
    ('{"allow_code": "yes"}', "'allow_code' is the string 'yes'; expected true or false"),
    ('{"custom_objects": ["os; rm -rf"]}', "'custom_objects' holds 'os; rm -rf'; expected a module name"),
    ('{"policy": "all"}', "unknown key 'policy' in the top level; expected ['version_policy'"),
    ('{"labels": {}, "labels": {}}', "key 'labels' appears more than once"),
    ('{"batching": {"max_delay_ms": NaN}}', "NaN is not a number JSON allows"),
    ('[]', "expected a JSON object; the file holds a list"),
    ('{"version_policy": "all"', "not valid JSON: Expecting ',' delimiter at line 1 column 25"),
    ("[" * 5 + "]" * 5, "the JSON nests 5 levels deep; at most 4"),
    ("[" * 50_000, "the JSON nests 50000 levels deep; at most 4"),
])
def test_bad_configs_are_refused_with_what_was_expected(tmp_path, text, message):
    assert message in refused(tmp_path, text, trust=True)


def test_size_and_encoding_are_checked_before_parsing(tmp_path):
    big = '{"labels": {}}' + " " * MAX_CONFIG_BYTES
    assert f"the file is larger than {MAX_CONFIG_BYTES} bytes" in refused(tmp_path, big)
    assert "the file is not UTF-8" in refused(tmp_path, b'{"labels": "\xff"}')


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    assert read(tmp_path, '{"version_policy": "all", "labels": {}}').policy.kind == "all"
    assert "label '[[[[[[' is not a label" in refused(tmp_path, '{"labels": {"[[[[[[": 1}}')


@pytest.mark.parametrize("policy,served", [("latest:2", {5, 4}), ("all", {5, 4, 2, 1}),
                                           ("specific:1,3,4", {4, 1}), ("latest:9", {5, 4, 2, 1})])
def test_version_policies_select(policy, served):
    assert VersionPolicy.parse(policy).select([1, 2, 4, 5], cap=8) == served
    assert VersionPolicy.parse(policy).describe() == policy


def test_the_cap_keeps_the_highest_versions():
    assert VersionPolicy.parse("all").select(range(1, 20), cap=3) == {19, 18, 17}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                       max_size=4),
    max_leaves=12)
config_like = st.fixed_dictionaries({}, optional={
    "version_policy": st.text(max_size=20) | st.sampled_from(["all", "latest:3", "specific:2,4"]),
    "labels": json_values, "batching": json_values, "custom_objects": json_values,
    "allow_code": json_values, "extra": json_values})


@settings(max_examples=300, deadline=None)
@given(document=config_like | json_values, trust=st.booleans())
def test_any_json_is_read_or_refused_with_a_config_error(tmp_path_factory, document, trust):
    _read_or_refuse(tmp_path_factory.mktemp("fuzz"), json.dumps(document).encode(), trust)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_are_read_or_refused_with_a_config_error(tmp_path_factory, data):
    _read_or_refuse(tmp_path_factory.mktemp("fuzz"), data, True)


def _read_or_refuse(folder, data: bytes, trust: bool) -> None:
    (folder / "config.json").write_bytes(data)
    try:
        settings_read = read_settings(folder, DEFAULTS, trust)
    except ModelConfigError as error:
        assert str(error).startswith(f"{folder.name}/config.json: ") and len(str(error)) < 400
        return
    assert isinstance(settings_read, ModelSettings)
