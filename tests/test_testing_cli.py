"""``python -m bridge.testing`` and the pytest plugin, run as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-m", "bridge.testing"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--latency", "-1"], "argument --latency: '-1' is out of range"),
        (["serve", "--latency", "soon"], "'soon' is not a number"),
        (["serve", "--port", "99999"], "argument --port"),
        (["serve", "--rpm", "0"], "argument --rpm"),
        (["serve", "--error-rate", "500"], "STATUS=PROBABILITY"),
        (["serve", "--error-rate", "200=0.1"], "STATUS=PROBABILITY"),
        (["serve", "--error-rate", "500=2"], "probability from 0 to 1"),
        (["serve", "--hang-rate", "0.7", "--reset-rate", "0.7"], "add up to 1.4"),
        (["serve", "--no-such-flag"], "unrecognized arguments"),
        (["serve", "--token-accounting", "both"], "argument --token-accounting"),
        (["serve", "--header-override", "x-ratelimit-limit-requests"], "NAME=VALUE"),
        (["serve", "--header-override-rate", "1.5"], "probability from 0 to 1"),
        (["serve", "--otpm", "-3"], "argument --otpm"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_flags_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: python -m bridge.testing")


def test_serve_prints_its_base_url_and_answers() -> None:
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--latency", "0.01", "--error-rate", "500=0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
        with httpx.Client(trust_env=False) as client:
            response = client.post(
                url + "/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "cli"}]},
            )
        assert response.status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode in (0, -15)
    assert "Traceback" not in stderr


def test_help_lists_the_flags() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag in (
        "--latency",
        "--jitter",
        "--rpm",
        "--tpm",
        "--burst-seconds",
        "--chunk-delay",
        "--error-rate",
        "--reset-rate",
        "--hang-rate",
        "--slow-first-byte-rate",
        "--slow-first-byte",
        "--stream-cut-rate",
        "--stream-stall-rate",
        "--seed",
    ):
        assert flag in result.stdout


def test_loadgen_runs_a_small_bounded_load() -> None:
    # A smoke test of the script only; the speed figure comes from running it by hand.
    result = run_cli("loadgen", "--requests", "300", "--concurrency", "8")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^300 ok, 0 failed in [\d.]+ s: [\d,]+ requests/s$", result.stdout, re.M)


def test_pytest_plugin_is_registered_by_the_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent("""
        import openai, pytest
        from bridge.testing import expected_digest

        @pytest.mark.llm_server(latency=0.01, rpm=600)
        def test_with_marker(llm_server):
            with openai.OpenAI(base_url=llm_server.base_url, api_key="k") as client:
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "plugin"}])
            assert reply.choices[0].message.content.startswith(
                "digest=" + expected_digest("plugin"))
            assert llm_server.config.rpm == 600
            assert llm_server.stats()["requests"] == 1

        def test_default_is_reset_between_tests(llm_server):
            assert llm_server.stats()["requests"] == 0
            assert llm_server.config.rpm is None

        @pytest.mark.llm_server(latency=-5)
        def test_bad_marker(llm_server):
            pass
    """)
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            "-W",
            "error",
            "-q",
            str(tmp_path / "test_user.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert "2 passed, 1 error" in result.stdout, result.stdout + result.stderr
    assert "bad @pytest.mark.llm_server options: latency must be" in result.stdout


def test_every_config_field_round_trips_through_the_flags() -> None:
    """The fixture starts servers from ``to_args()``: each option must survive the trip."""
    from bridge.testing import ServerConfig
    from bridge.testing._cli import _config, _parser

    config = ServerConfig(
        rpm=60,
        tpm=6000,
        itpm=100,
        otpm=200,
        token_accounting="max",
        rate_limit_headers=False,
        header_overrides={"x-ratelimit-limit-requests": "0", "retry-after": "x=y"},
        header_override_rate=0.25,
        error_rates={500: 0.1},
        seed=7,
    )
    parser = _parser()
    again = _config(parser.parse_args(["serve", *config.to_args()]), parser)
    assert again == config
