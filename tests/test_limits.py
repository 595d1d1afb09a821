"""Limits and Retry: validation at construction, reprs, equality."""

from __future__ import annotations

import dataclasses

import pytest

import bridge


class TestLimits:
    def test_defaults_learn_rpm_and_tpm(self) -> None:
        limits = bridge.Limits()
        assert limits.rpm is bridge.LEARN
        assert limits.tpm is bridge.LEARN
        assert limits.learns

    def test_repr_shows_values(self) -> None:
        text = repr(bridge.Limits(max_in_flight=50, rpm=1200, tpm=None))
        assert text == ("Limits(max_in_flight=50, rpm=1200, tpm=None, on_store_error='local')")

    def test_repr_hides_store_password(self) -> None:
        limits = bridge.Limits(rpm=60, store="redis://:s3cret@redis.example:6379/0")
        assert "s3cret" not in repr(limits)
        assert "redis://redis.example:6379/0" in repr(limits)

    def test_frozen_and_keyword_only(self) -> None:
        limits = bridge.Limits(rpm=60)
        with pytest.raises(dataclasses.FrozenInstanceError):
            limits.rpm = 10  # type: ignore[misc]
        with pytest.raises(TypeError):
            bridge.Limits(10)  # type: ignore[misc]

    def test_equality(self) -> None:
        assert bridge.Limits(rpm=60) == bridge.Limits(rpm=60)
        assert bridge.Limits(rpm=60) != bridge.Limits(rpm=61)

    @pytest.mark.parametrize("name", ["rpm", "tpm"])
    @pytest.mark.parametrize("value", [0, -5, 1.5, True, "60"])
    def test_bad_rate(self, name: str, value: object) -> None:
        with pytest.raises(ValueError, match=f"{name} must be positive, or None for no limit"):
            bridge.Limits(**{name: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [0, -1, 2.0])
    def test_bad_concurrency(self, value: object) -> None:
        with pytest.raises(ValueError, match="max_in_flight must be positive"):
            bridge.Limits(max_in_flight=value)  # type: ignore[arg-type]

    def test_none_means_no_limit(self) -> None:
        limits = bridge.Limits(rpm=None, tpm=None)
        assert not limits.learns

    def test_unknown_store_scheme(self) -> None:
        with pytest.raises(ValueError, match="store URL scheme 'memcached' is not supported"):
            bridge.Limits(rpm=60, store="memcached://localhost:11211")

    def test_bad_on_store_error(self) -> None:
        with pytest.raises(ValueError, match="on_store_error must be 'local' or 'fail'"):
            bridge.Limits(on_store_error="ignore")  # type: ignore[arg-type]


class TestRetry:
    def test_defaults_and_repr(self) -> None:
        assert repr(bridge.Retry(attempts=3, backoff=0.25, max_wait=5)) == (
            "Retry(attempts=3, backoff=0.25, max_wait=5)"
        )

    @pytest.mark.parametrize("field", ["backoff", "max_wait"])
    @pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "1"])
    def test_bad_wait(self, field: str, value: object) -> None:
        with pytest.raises(ValueError, match=f"{field} must be a number of seconds >= 0"):
            bridge.Retry(**{field: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [0, -1, 1.5, None])
    def test_bad_attempts(self, value: object) -> None:
        with pytest.raises(ValueError, match="attempts must be"):
            bridge.Retry(attempts=value)  # type: ignore[arg-type]


def test_factories_refuse_sdk_retries() -> None:
    pytest.importorskip("openai")
    with pytest.raises(TypeError, match=r"retry=bridge.Retry\(attempts=...\)"):
        bridge.openai(api_key="k", max_retries=3)


def test_import_bridge_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bridge; heavy = {'openai', 'anthropic', 'httpx2', 'tenacity', 'redis', "
        "'aiohttp'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_moved_keyword_names_the_new_one() -> None:
    with pytest.raises(
        TypeError, match=r"Limits\(concurrency=\.\.\.\) is now Limits\(max_in_flight"
    ):
        bridge.Limits(concurrency=10)  # type: ignore[call-arg]
    assert bridge.Limits(max_in_flight=10).max_in_flight == 10
