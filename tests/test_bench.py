"""Smoke test of ``python -m bridge bench --quick``: the JSON's shape and sane values.

Timings are the bench's business, not a test's: nothing here asserts a duration or a ratio.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "bench", *args],
        capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    done = _bench("--quick", "--out", str(out), cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "bench.png").stat().st_size > 10_000
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def test_every_scenario_is_there_with_targets(quick_run: dict[str, Any]) -> None:
    assert set(quick_run) == {"meta", "a", "b", "c", "d", "e", "f"}
    assert quick_run["meta"]["mode"] == "quick"
    for key in "abcdef":
        scenario = quick_run[key]
        assert scenario["title"].startswith(f"({key})")
        assert scenario["approaches"], key
        for target in scenario["targets"]:
            assert {"name", "value", "limit", "kind", "met"} <= set(target)
            assert target["met"] in (True, False)


def test_every_llm_call_returned_its_own_answer(quick_run: dict[str, Any]) -> None:
    for key in "abc":
        for name, figures in quick_run[key]["approaches"].items():
            assert figures["failed"] == 0, (key, name, figures)
            assert figures["wall_s"] > 0


def test_figures_are_sane(quick_run: dict[str, Any]) -> None:
    a = quick_run["a"]
    assert a["approaches"]["sequential"]["extrapolated"] is True
    # A sequential loop cannot beat the latency floor of its calls.
    floor = a["workload"]["calls"] * a["workload"]["latency_s"]
    assert a["approaches"]["sequential"]["wall_s"] >= floor
    assert all(f["req_per_s"] > 0 for f in quick_run["b"]["approaches"].values())
    assert all(f["peak_rss_mb"] > 10 for f in quick_run["c"]["approaches"].values())
    assert all(f["us_per_call"] > 0 for f in quick_run["e"]["approaches"].values())
    f = quick_run["f"]["approaches"]
    assert f["bridge_per_call"]["event_loop_closed"] == 0
    assert f["bridge_per_call"]["ok"] == quick_run["f"]["workload"]["calls"]


def test_bad_flag_and_unreachable_url_exit_2(tmp_path: Path) -> None:
    bad_flag = _bench("--scenario", "z", cwd=tmp_path)
    assert bad_flag.returncode == 2
    assert "unknown scenario" in bad_flag.stderr
    unreachable = _bench("--base-url", "http://127.0.0.1:9/v1", "--api-key", "k", cwd=tmp_path)
    assert unreachable.returncode == 2
    assert "cannot reach" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _bench("--scenario", "f", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 2
    assert "did not start" in done.stderr
    assert "Traceback" not in done.stderr


def test_real_endpoint_mode_never_writes_the_key(tmp_path: Path) -> None:
    from bridge.testing import serve

    secret = "sk-test-do-not-write-" + "x" * 8
    with serve() as server:  # stands in for a real OpenAI-compatible endpoint
        done = _bench(
            "--base-url", server.base_url, "--api-key", secret, "--out", str(tmp_path),
            "--no-chart", cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not the simulated server" in done.stdout
    written = (tmp_path / "results.json").read_text()
    assert secret not in written
    assert secret not in done.stdout + done.stderr
    results = json.loads(written)
    assert set(results) == {"meta", "a"}
    assert results["meta"]["target"] == "real endpoint"
    assert results["a"]["approaches"]["bridge"]["failed"] == 0


def test_scenario_flag_is_refused_with_a_base_url(tmp_path: Path) -> None:
    done = _bench("--base-url", "http://127.0.0.1:9/v1", "--api-key", "k", "--scenario", "b",
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "--scenario is for the simulated server" in done.stderr
