"""REER_STORAGE_OPTIONS refuses options named like secrets (it is forwarded to every remote workload)."""

from __future__ import annotations

import json

import pytest

from reer_assets import settings


@pytest.fixture
def options(monkeypatch):
    def set_options(value) -> None:
        monkeypatch.setenv("REER_STORAGE_OPTIONS", value if isinstance(value, str) else json.dumps(value))
    return set_options


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value, names", [
    ({"key": "AKIA-not-a-real-one"}, "key"),
    ({"secret": "s3cr3t-value"}, "secret"),
    ({"token": "t0k3n-value"}, "token"),
    ({"Password": "hunter2-value"}, "Password"),
    ({"aws_secret_access_key": "s3cr3t-value", "endpoint_url": "http://127.0.0.1:9000"}, "aws_secret_access_key"),
    ({"client_kwargs": {"aws_session_token": "t0k3n-value", "region_name": "eu"}}, "client_kwargs.aws_session_token"),
    ({"sasToken": "t0k3n-value"}, "sasToken"),
    ({"account_key": "k3y-value", "ACCESS_KEY_ID": "AKIA-not-a-real-one"}, "account_key, ACCESS_KEY_ID"),
])
def test_secret_option_names_are_refused_naming_them_but_not_their_values(options, value, names):
    options(value)
    with pytest.raises(ValueError) as raised:
        settings.storage_options()
    message = str(raised.value)
    assert f"REER_STORAGE_OPTIONS names secret option(s) {names}:" in message, message
    assert "environment on each worker" in message
    for secret in ("AKIA-not-a-real-one", "s3cr3t-value", "t0k3n-value", "hunter2-value", "k3y-value"):
        assert secret not in message


@pytest.mark.timeout(30)
def test_plain_options_pass_unchanged(options, monkeypatch):
    plain = {"endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"region_name": "eu-west-1"},
             "config_kwargs": {"s3": {"addressing_style": "path"}}, "use_ssl": False}
    options(plain)
    assert settings.storage_options() == plain
    monkeypatch.delenv("REER_STORAGE_OPTIONS")
    assert settings.storage_options() == {}


@pytest.mark.timeout(30)
def test_malformed_options_say_what_is_wrong_without_echoing_them(options):
    options('{"endpoint_url": "http://x", "secret": oops}')
    with pytest.raises(ValueError, match="not valid JSON") as raised:
        settings.storage_options()
    assert "oops" not in str(raised.value)
    options('["endpoint_url"]')
    with pytest.raises(ValueError, match="must be a JSON object"):
        settings.storage_options()
