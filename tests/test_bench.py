"""Smoke test of ``python -m bridge bench --quick``: the JSON's shape and sane values.

Timings are the bench's business, not a test's: nothing here asserts a duration or a ratio.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _bench(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "bench", *args],
        capture_output=True, text=True, timeout=300, check=False, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def quick_done(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """``--quick`` with stdout piped, as in a log: the results and what was printed."""
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # rich's default: 80
    done = _bench("--quick", "--out", str(out), cwd=out, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "bench.png").stat().st_size > 10_000
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results, done


@pytest.fixture(scope="module")
def quick_run(
    quick_done: tuple[dict[str, Any], subprocess.CompletedProcess[str]],
) -> dict[str, Any]:
    return quick_done[0]


def test_piped_output_is_whole_and_has_no_progress_display(
    quick_done: tuple[dict[str, Any], subprocess.CompletedProcess[str]],
) -> None:
    results, done = quick_done
    assert "…" not in done.stdout  # nothing cut to fit 80 columns
    assert "\x1b" not in done.stdout  # no escape codes: no colour, no cursor moves
    assert "\r" not in done.stdout  # no redrawn progress frames
    # The first thing in the log is the first table, not a leftover progress bar.
    assert done.stdout.startswith(results["a"]["title"])
    lines = done.stdout.splitlines()
    for key in "abcdef":
        for name in results[key]["approaches"]:
            assert any(f" {name} " in line for line in lines), (key, name)
    # Progress goes to stderr instead, one plain line per step.
    assert "bench: (a) thread_pool" in done.stderr
    assert "\x1b" not in done.stderr


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


@pytest.mark.parametrize("joined", [False, True], ids=["--api-key KEY", "--api-key=KEY"])
def test_real_endpoint_mode_never_writes_the_key(tmp_path: Path, joined: bool) -> None:
    from bridge.testing import serve

    secret = "sk-test-do-not-write-" + "x" * 8
    key_flag = [f"--api-key={secret}"] if joined else ["--api-key", secret]
    with serve() as server:  # stands in for a real OpenAI-compatible endpoint
        done = _bench(
            "--base-url", server.base_url, *key_flag, "--out", str(tmp_path),
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


def test_real_endpoint_mode_never_writes_a_url_password(tmp_path: Path) -> None:
    from bridge.testing import serve

    password = "pa$$-do-not-write-" + "y" * 8
    secret = "sk-test-do-not-write-" + "z" * 8
    with serve() as server:
        url = server.base_url.replace("http://", f"http://alice:{password.replace('$', '%24')}@")
        done = _bench(
            "--base-url", url, "--out", str(tmp_path), "--no-chart", cwd=tmp_path,
            env={**os.environ, "OPENAI_API_KEY": secret},  # the key from the environment
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    shown = done.stdout + done.stderr + (tmp_path / "results.json").read_text()
    for leaked in (password, password.replace("$", "%24"), "alice:", secret):
        assert leaked not in shown
    assert "http://***@127.0.0.1:" in done.stdout


@pytest.mark.parametrize("spelling", [["--api=KEYVALUE"], ["--api-k", "KEYVALUE"]])
def test_abbreviated_flags_are_refused_without_echoing_their_value(
    tmp_path: Path, spelling: list[str]
) -> None:
    argv = ["--base-url", "http://127.0.0.1:9/v1", *spelling, "--out", str(tmp_path)]
    done = _bench(*argv, cwd=tmp_path)
    assert done.returncode == 2
    assert "unrecognized arguments: --api" in done.stderr
    assert "no abbreviations" in done.stderr
    assert "KEYVALUE" not in done.stdout + done.stderr
    assert not (tmp_path / "results.json").exists()


class TestRedactor:
    def test_by_value_whatever_the_spelling(self) -> None:
        from bridge.bench._redact import Redactor

        redact = Redactor.for_run("sk-1", "https://bob:p%40ss@host/v1")
        line = "--api-key sk-1 --api-key=sk-1 https://bob:p%40ss@host/v1 Bearer sk-1 p@ss"
        assert redact(line) == ("--api-key *** --api-key=*** https://***@host/v1 Bearer *** ***")

    def test_a_short_key_does_not_eat_other_words(self) -> None:
        from bridge.bench._redact import Redactor

        redact = Redactor.for_run("k", None)
        assert redact("python -m bridge bench --api-key k --out bench-k") == (
            "python -m bridge bench --api-key *** --out bench-k"
        )
        results = {"meta": {"command": "--api-key k"}, "a": {"approaches": {"k": {"n": 1}}}}
        assert redact.walk(results) == {
            "meta": {"command": "--api-key ***"},
            "a": {"approaches": {"k": {"n": 1}}},  # keys are the file's shape: kept
        }

    def test_nothing_to_hide(self) -> None:
        from bridge.bench._redact import Redactor, without_userinfo

        assert Redactor.for_run(None, "http://host/v1")("http://host/v1") == "http://host/v1"
        assert without_userinfo("http://host:8/v1") == "http://host:8/v1"


def _results_with(approaches: dict[str, Any], *, met: bool = True) -> dict[str, Any]:
    target = {"name": "bridge / other", "value": 0.75, "limit": 0.6, "kind": "at most"}
    return {
        "meta": {"title": "t"},
        "e": {
            "title": "(e) round trip",
            "workload": {"calls": 100},
            "unit": "µs per call",
            "approaches": approaches,
            "targets": [{**target, "met": met}],
        },
    }


class TestReport:
    def test_at_80_columns_names_print_whole_and_nothing_is_cut(self) -> None:
        from rich.console import Console

        from bridge.bench._report import print_tables

        names = ["asyncio_gather_aiohttp", "asyncio_gather", "run_coroutine_threadsafe"]
        figures = {
            "wall_s": 2.0526, "req_per_s": 974.4, "cpu_us_per_call": 1023.1,
            "rounds_req_per_s": [872.1, 974.4, 955.8], "measured_calls": 10, "failed": 0,
        }  # fmt: skip
        out = io.StringIO()
        print_tables(_results_with(dict.fromkeys(names, figures)), Console(file=out, width=80))
        text = out.getvalue()
        assert "…" not in text
        assert max(map(len, text.splitlines())) <= 80
        for name in names:
            assert f" {name} " in text

    def test_a_missed_target_says_what_it_means(self) -> None:
        from rich.console import Console

        from bridge.bench._report import print_tables

        out = io.StringIO()
        print_tables(_results_with({"bridge": {"us_per_call": 1.0}}, met=False),
                     Console(file=out, width=200))  # fmt: skip
        text = " ".join(out.getvalue().split())
        assert "MISSED: (e) bridge / other" in text
        assert "small or loaded machine" in text
        assert "docs/benchmarks.md" in text
        out = io.StringIO()
        print_tables(_results_with({"bridge": {"us_per_call": 1.0}}), Console(file=out))
        assert "MISSED" not in out.getvalue()

    def test_extrapolated_bar_is_hatched_and_labelled(self, tmp_path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from bridge.bench._report import _panel

        scenario = {
            "title": "(a) headline", "workload": {"calls": 100}, "unit": "wall s", "targets": [],
            "approaches": {
                "sequential": {"wall_s": 40.6, "measured_calls": 10, "extrapolated": True},
                "bridge": {"wall_s": 4.12},
            },
        }  # fmt: skip
        fig, axis = plt.subplots()
        _panel(axis, "a", scenario)
        sequential, ours = axis.patches
        assert sequential.get_hatch() == "//"
        assert ours.get_hatch() is None
        labels = [text.get_text() for text in axis.texts]
        plt.close(fig)
        assert labels == ["40.6\nextrapolated from 10 calls", "4.12"]

    @pytest.mark.parametrize(
        ("value", "shown"),
        [(1983.4, "1,983"), (892.04, "892"), (73.41, "73.4"), (4.12, "4.12"), (0.32, "0.32"),
         (0.0, "0"), (100.0, "100"), (12.0, "12")],
    )  # fmt: skip
    def test_bar_labels_are_plain_numbers(self, value: float, shown: str) -> None:
        from bridge.bench._report import plain_number

        assert plain_number(value) == shown


def test_hop_bench_runs_and_reports_every_figure(tmp_path: Path) -> None:
    """``python -m bridge.bench.hop``, tiny: every figure is there and is a number."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge.bench.hop", "--calls", "10", "--rounds", "1", "--json"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    names = {"native", "hop", "empty hop", "native stream", "hop stream", "chunks per stream"}
    assert names | {"hop per request", "hop per chunk"} == set(figures)
    assert all(figures[name] > 0 for name in names)
