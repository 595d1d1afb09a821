"""The BRIDGE setting: ready() installs a configured, thread-sensitive default; checks."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import bridge
import bridge.django
from bridge.django._settings import check_bridge_settings, read_settings
from bridge.django.apps import install

from .conftest import app_config


def ids(setting: object) -> list[str]:
    with override_settings(BRIDGE=setting):
        return [error.id for error in check_bridge_settings()]


def test_ready_installed_the_configured_thread_sensitive_default() -> None:
    installed = app_config().bridge
    assert installed is bridge.get_default()
    assert installed is not None
    assert installed.thread_sensitive
    assert (installed.concurrency, installed.threads) == (8, 8)


def test_ready_preloaded_the_installed_sdks() -> None:
    assert app_config().preloaded == ("openai", "anthropic")
    assert "openai.resources.chat" in sys.modules


@pytest.mark.parametrize(
    ("setting", "preloaded", "imported"),
    [
        pytest.param({}, ["openai", "anthropic"], True, id="by-default"),
        pytest.param({"preload": ["anthropic"]}, ["anthropic"], False, id="one-sdk"),
        pytest.param({"preload": False}, [], False, id="off"),
    ],
)
def test_ready_preloads_in_a_fresh_process(
    setting: dict[str, object], preloaded: list[str], imported: bool
) -> None:
    """What a gunicorn --preload master does: django.setup() imports the SDKs (or not)."""
    code = f"""
import json, sys, django
from django.conf import settings
settings.configure(INSTALLED_APPS=["bridge.django"], BRIDGE={setting!r})
assert "openai" not in sys.modules
django.setup()
from django.apps import apps
config = apps.get_app_config("bridge")
print(json.dumps([config.preloaded, "openai.resources.chat" in sys.modules]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [preloaded, imported]


def test_thread_sensitivity_can_be_turned_off() -> None:
    with override_settings(BRIDGE={"thread_sensitive": False}):
        made = install(read_settings())
    try:
        assert not made.thread_sensitive
    finally:
        made.close()


def test_limits_per_endpoint_ignore_a_trailing_slash() -> None:
    assert bridge.django.limits_for("http://127.0.0.1:9/v1") == bridge.Limits(
        rpm=600, max_in_flight=4
    )
    assert bridge.django.limits_for("https://elsewhere.example/v1") is None


def test_the_shared_store_applies_unless_an_endpoint_names_its_own() -> None:
    setting = {
        "store": "redis://127.0.0.1:6379/0",
        "limits": {"http://a/v1": {"rpm": 5}, "http://b/v1": {"store": "redis://other:6379/1"}},
    }
    with override_settings(BRIDGE=setting):
        assert bridge.django.limits_for("http://a/v1").store == "redis://127.0.0.1:6379/0"
        assert bridge.django.limits_for("http://b/v1").store == "redis://other:6379/1"


def test_a_limits_instance_is_accepted() -> None:
    with override_settings(BRIDGE={"limits": {"http://a/v1": bridge.Limits(tpm=None)}}):
        assert bridge.django.limits_for("http://a/v1") == bridge.Limits(tpm=None)


def test_valid_settings_pass_the_check() -> None:
    assert ids({"concurrency": 4, "threads": 2, "limits": {"https://x/v1": {"rpm": 1}}}) == []
    assert ids({}) == []


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param(["concurrency", 4], ["bridge.E001"], id="not-a-dict"),
        pytest.param({"concurency": 4}, ["bridge.E002"], id="unknown-key"),
        pytest.param({"concurrency": 0}, ["bridge.E003"], id="zero-concurrency"),
        pytest.param({"threads": -1}, ["bridge.E003"], id="negative-threads"),
        pytest.param({"threads": True}, ["bridge.E003"], id="bool-threads"),
        pytest.param({"thread_sensitive": "yes"}, ["bridge.E003"], id="bad-flag"),
        pytest.param({"store": "http://redis"}, ["bridge.E004"], id="bad-store"),
        pytest.param({"limits": ["https://x/v1"]}, ["bridge.E005"], id="limits-not-a-dict"),
        pytest.param({"limits": {"api.openai.com": {}}}, ["bridge.E005"], id="not-a-url"),
        pytest.param({"limits": {"https://x/v1": {"rpm": 0}}}, ["bridge.E005"], id="bad-rpm"),
        pytest.param({"limits": {"https://x/v1": {"rps": 1}}}, ["bridge.E005"], id="bad-kw"),
        pytest.param({"limits": {"https://x/v1": 5}}, ["bridge.E005"], id="not-limits"),
        pytest.param({"preload": "openai"}, ["bridge.E006"], id="preload-a-string"),
        pytest.param({"preload": ["mistral"]}, ["bridge.E006"], id="preload-unknown-sdk"),
    ],
)
def test_bad_settings_are_reported(setting: object, expected: list[str]) -> None:
    assert ids(setting) == expected


def test_the_message_names_the_key_and_the_hint_the_fix() -> None:
    with override_settings(BRIDGE={"limits": {"https://x/v1": {"rpm": -3}}}):
        (error,) = check_bridge_settings()
    assert "BRIDGE['limits']['https://x/v1']" in error.msg
    assert "rpm must be positive" in error.msg
    assert "concurrency, rpm, tpm" in error.hint


def test_manage_py_check_fails_on_bad_settings() -> None:
    with override_settings(BRIDGE={"concurrency": 0, "bogus": 1}):
        with pytest.raises(SystemCheckError, match=r"bridge\.E002.*|bridge\.E003"):
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
        with pytest.raises(ValueError, match="unknown key 'bogus'"):
            read_settings()
    call_command("check", stdout=io.StringIO())  # the test settings themselves are fine
