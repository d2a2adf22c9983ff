"""How the client builds its channel: targets for lists of addresses, tokens, options; no socket."""

import json

import pytest

from lstmserve.client.channel import (
    DEFAULT_OPTIONS,
    PREDICTION_SERVICE,
    TOKEN_ENV,
    channel_spec,
    resolve_target,
    token_metadata,
)

pytestmark = pytest.mark.unit


def test_one_address_or_target_is_left_to_grpc():
    assert resolve_target("localhost:8500") == ("localhost:8500", None)
    assert resolve_target("dns:///models.internal:8500") == ("dns:///models.internal:8500", None)
    assert resolve_target(["localhost:8500"]) == ("localhost:8500", None)


def test_a_list_of_ipv4_addresses_becomes_one_ipv4_target():
    target, authority = resolve_target(["10.0.0.1:8500", "10.0.0.2:8501"])
    assert target == "ipv4:10.0.0.1:8500,10.0.0.2:8501"
    assert authority == "10.0.0.1:8500"


def test_a_list_of_ipv6_addresses_becomes_one_ipv6_target():
    assert resolve_target(["[::1]:8500", "[fd00::2]:8501"])[0] == "ipv6:[::1]:8500,[fd00::2]:8501"


def test_names_in_a_list_are_resolved_once_to_the_family_all_share():
    target, authority = resolve_target(["localhost:8500", "127.0.0.1:8501"])
    assert target == "ipv4:127.0.0.1:8500,127.0.0.1:8501"
    assert authority == "localhost:8500"  # TLS checks certificates against the name as written


def test_a_list_mixing_families_is_refused():
    with pytest.raises(ValueError, match="do not share an IP family"):
        resolve_target(["127.0.0.1:8500", "[::1]:8501"])


@pytest.mark.parametrize("entry", ["localhost", "localhost:", ":8500", "host:http"])
def test_a_list_entry_needs_host_and_port(entry):
    with pytest.raises(ValueError, match="must be host:port"):
        resolve_target([entry, "127.0.0.1:8500"])


def test_an_unknown_name_in_a_list_is_named():
    with pytest.raises(ValueError, match="cannot resolve 'no-such-host.invalid'"):
        resolve_target(["no-such-host.invalid:8500", "127.0.0.1:8500"])


def test_the_token_travels_as_bearer_metadata(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert token_metadata(None) == ()
    assert token_metadata("abc") == (("authorization", "Bearer abc"),)
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert token_metadata(None) == (("authorization", "Bearer from-env"),)
    assert token_metadata("explicit") == (("authorization", "Bearer explicit"),)
    monkeypatch.setenv(TOKEN_ENV, "")
    assert token_metadata(None) == ()


@pytest.mark.parametrize("token", ["two words", "line\nbreak", "caf\u00e9"])
def test_a_token_that_cannot_be_a_header_is_refused(token):
    with pytest.raises(ValueError, match="printable ASCII"):
        token_metadata(token)


def config_of(spec) -> dict:
    return json.loads(dict(spec.options)["grpc.service_config"])


def test_the_service_config_retries_failed_predictions_round_robin():
    options = dict(channel_spec("localhost:8500").options)
    config = config_of(channel_spec("localhost:8500"))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    # Predictions, session creation and forecasts are retried; a step changes its session, so never.
    assert method["name"] == [{"service": PREDICTION_SERVICE},
                              {"service": "lstmserve.v1.SessionService", "method": "CreateSession"},
                              {"service": "lstmserve.v1.SessionService", "method": "Forecast"}]
    assert set(method["retryPolicy"]["retryableStatusCodes"]) == {"UNAVAILABLE", "CANCELLED"}
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.keepalive_time_ms"] >= 300_000  # gRPC servers' default minimum ping interval


def test_options_replace_defaults_of_the_same_name_and_add_others():
    spec = channel_spec("localhost:8500", options=[("grpc.keepalive_time_ms", 60_000),
                                                   ("grpc.primary_user_agent", "mine")])
    options = dict(spec.options)
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.primary_user_agent"] == "mine"
    assert len(spec.options) == len(DEFAULT_OPTIONS) + 2  # + the service config and the user agent


def test_a_list_presents_its_first_address_as_authority_unless_told_otherwise():
    assert dict(channel_spec(["127.0.0.1:1", "127.0.0.1:2"]).options)["grpc.default_authority"] \
        == "127.0.0.1:1"
    spec = channel_spec(["127.0.0.1:1", "127.0.0.1:2"], options=[("grpc.default_authority", "models")])
    assert dict(spec.options)["grpc.default_authority"] == "models"
    assert "grpc.default_authority" not in dict(channel_spec("localhost:8500").options)


def test_tls_is_plaintext_unless_asked_for():
    assert channel_spec("localhost:8500").credentials is None
    assert channel_spec("localhost:8500", tls=True).credentials is not None


@pytest.mark.parametrize(("target", "checked"), [
    ("localhost:8500", False), (["localhost:8500"], False), ("dns:///models:8500", True),
    ("ipv4:10.0.0.1:1,10.0.0.2:1", True), (["127.0.0.1:1", "127.0.0.1:2"], True),
])
def test_health_checking_is_on_for_replicas_and_off_for_one_server(target, checked):
    assert ("healthCheckConfig" in config_of(channel_spec(target))) is checked
    assert "healthCheckConfig" not in config_of(channel_spec(target, health_check=False))
    assert config_of(channel_spec(target, health_check=True))["healthCheckConfig"] == {
        "serviceName": PREDICTION_SERVICE}
