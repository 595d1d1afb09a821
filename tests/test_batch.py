"""``python -m bridge batch``, run as a user runs it, against the real simulated server."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from polling import poll

from bridge.batch._cli import build_parser, main
from bridge.testing import SimulatedServer


def request_line(i: int, *, model: str = "m") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": f"prompt {i}"}]}
    request = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
    return json.dumps({**request, "body": body}) + "\n"


def write_requests(path: Path, count: int, *, bad: dict[int, bytes] | None = None) -> None:
    """``count`` request lines; ``bad`` replaces some (by 0-based index) with raw bytes."""
    bad = bad or {}
    with path.open("wb") as out:
        for i in range(count):
            out.write(bad.get(i, request_line(i).encode()))


def batch(*args: str | Path, **kwargs: Any) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bridge", "batch", *map(str, args)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs
    )


def run_batch(*args: str | Path) -> tuple[int, str]:
    """Run the command to the end: its exit status and what it printed on stderr."""
    run = batch(*args)
    _, err = run.communicate(timeout=120)  # a hang guard only
    return run.returncode, err


def outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def status_of(line: dict[str, Any]) -> int | str:
    return line["response"]["status_code"] if line["response"] else line["error"]["code"]


def journal_rows(path: Path) -> dict[str, float]:
    """The successes the journal holds, with the time each was recorded."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            return dict(db.execute("SELECT key, finished FROM results WHERE status = 'ok'"))
        except sqlite3.OperationalError:  # not created yet
            return {}


def wait_for_rows(journal: Path, count: int) -> None:
    poll(lambda: len(journal_rows(journal)) >= count, timeout=60, what=f"{count} journal rows")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def admitted(server: SimulatedServer) -> int:
    return server.stats()["requests"]


class TestRuns:
    def test_bad_lines_are_error_lines_and_the_rest_run(
        self, llm_server: SimulatedServer, tmp_path: Path
    ) -> None:
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        invalid_utf8 = b'{"custom_id": "r8", "body": {"model": "m", "messages": "\xff\xfe"}}\n'
        deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
        elsewhere = b'{"custom_id": "r16", "url": "@evil.example/v1/x", "body": {}}\n'
        write_requests(
            requests,
            20,
            bad={4: b"{not json\n", 8: invalid_utf8, 12: b"[1, 2]\n", 14: deep, 16: elsewhere},
        )
        prices = ("--price-in", "1", "--price-out", "2")
        status, err = run_batch(requests, "-o", output, "--base-url", llm_server.base_url, *prices)
        lines = outputs(output)
        assert len(lines) == 20
        assert lines[4]["error"]["message"].startswith("line 5: invalid JSON")
        assert lines[8]["error"]["message"].startswith("line 9: invalid UTF-8 at byte 57")
        assert lines[12]["error"]["message"] == "line 13: not a JSON object"
        assert lines[14]["error"]["message"] == "line 15: JSON nested too deeply to read"
        assert "url must be a path" in lines[16]["error"]["message"]  # the key stays home
        good = [i for i in range(20) if i not in (4, 8, 12, 14, 16)]
        assert [lines[i]["custom_id"] for i in good] == [f"r{i}" for i in good]
        assert all(status_of(lines[i]) == 200 for i in good)
        assert admitted(llm_server) == 15
        assert status == 1  # five lines failed
        assert "line 5" in err
        assert "line 9" in err
        assert "5 failed finally (invalid_request: 5" in err
        assert "estimated cost this run" in err

    @pytest.mark.llm_server(rpm=3000)
    def test_limits_are_learned_from_headers_without_rpm(
        self, llm_server: SimulatedServer, tmp_path: Path
    ) -> None:
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_requests(requests, 300)
        status, err = run_batch(requests, "-o", output, "--base-url", llm_server.base_url,
                                "--api-key", "k", "--concurrency", "20")  # fmt: skip
        stats = llm_server.stats()
        assert status == 0, err
        assert [status_of(line) for line in outputs(output)] == [200] * 300
        attempts = stats["requests"] + stats["rate_limited"]
        assert stats["rate_limited"] <= 0.05 * attempts, stats

    @pytest.mark.llm_server(rpm=300, rate_limit_headers=False)
    def test_without_headers_reruns_send_only_the_retryable_lines(
        self, llm_server: SimulatedServer, tmp_path: Path
    ) -> None:
        count = 60
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_requests(requests, count)
        options = ("-o", output, "--base-url", llm_server.base_url, "--api-key", "k",
                   "--concurrency", "20")  # fmt: skip
        status, err = run_batch(requests, *options)
        for _rerun in range(3):
            left = [line for line in outputs(output) if status_of(line) != 200]
            if not left:
                break
            assert all(status_of(line) == 429 for line in left), left
            before = llm_server.stats()["status_counts"].get("200", 0)
            status, err = run_batch(requests, *options)
            assert f"sent {len(left):,} ({len(left):,} of them again" in err
            now = [line for line in outputs(output) if status_of(line) != 200]
            became_ok = llm_server.stats()["status_counts"].get("200", 0) - before
            assert became_ok == len(left) - len(now)  # only the retryable lines were sent
        lines = outputs(output)
        assert [status_of(line) for line in lines] == [200] * count
        assert [line["custom_id"] for line in lines] == [f"r{i}" for i in range(count)]
        assert llm_server.stats()["status_counts"]["200"] == count  # no success paid twice
        assert status == 0, err

    @pytest.mark.llm_server(error_rates={503: 0.3}, seed=3)
    def test_retryable_lines_are_sent_again_and_final_ones_only_when_asked(
        self, llm_server: SimulatedServer, tmp_path: Path
    ) -> None:
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_requests(requests, 30, bad={5: request_line(5, model="").encode()})  # a 400
        options = ("-o", output, "--base-url", llm_server.base_url, "--attempts", "1")
        status, err = run_batch(requests, *options)
        assert status == 1
        left = sum(status_of(line) == 503 for line in outputs(output))
        assert left > 0  # one attempt each: the seeded faults leave some lines retryable
        for _rerun in range(10):
            if not left:
                break
            before = admitted(llm_server)
            run_batch(requests, *options)
            assert admitted(llm_server) - before == left  # only those were sent
            left = sum(status_of(line) == 503 for line in outputs(output))
        assert left == 0
        assert llm_server.stats()["status_counts"]["400"] == 1  # the final line: sent once
        status, err = run_batch(requests, *options)
        assert "nothing left to send" in err
        assert "1 failed finally (400: 1" in err
        assert status == 1
        before = admitted(llm_server)
        run_batch(requests, *options, "--retry-failed")
        assert llm_server.stats()["status_counts"]["400"] == 2
        assert admitted(llm_server) == before  # 400s are not admitted; nothing else sent
        lines = outputs(output)
        assert [status_of(line) for line in lines] == [200] * 5 + [400] + [200] * 24
        assert llm_server.stats()["status_counts"]["200"] == 29  # no success paid twice

    @pytest.mark.llm_server(latency=0.05, rpm=12_000, error_rates={500: 0.02})
    def test_sigkill_at_half_then_resume(self, llm_server: SimulatedServer, tmp_path: Path) -> None:
        # The issue asks for 2,000 requests; 400 keep CI short and exercise the same path.
        count = 400
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        journal = Path(f"{output}.journal.sqlite")
        write_requests(requests, count)
        options = ("-o", output, "--base-url", llm_server.base_url, "--concurrency", "20")
        run = batch(requests, *options)
        wait_for_rows(journal, count // 2)
        run.kill()
        run.communicate()
        finished = journal_rows(journal)
        before = llm_server.stats()
        assert f'"pid": {run.pid},' in Path(f"{journal}.lock").read_text()  # a stale lock
        status, err = run_batch(requests, *options)  # takes the dead run's lock over
        after = llm_server.stats()
        assert status == 0, err
        lines = outputs(output)
        assert [line["custom_id"] for line in lines] == [f"r{i}" for i in range(count)]
        # Every admitted request of the rerun is an unfinished item or a retried fault.
        faults = after["faults"].get("status:500", 0) - before["faults"].get("status:500", 0)
        assert after["requests"] - before["requests"] == count - len(finished) + faults
        assert f"{len(finished):,} resumed from the journal" in err
        # Successes paid twice: at most the requests in flight at the kill (--concurrency).
        assert after["status_counts"]["200"] - count <= 20
        rows = journal_rows(journal)
        assert all(rows[key] == stamp for key, stamp in finished.items())  # not redone
        with sqlite3.connect(journal) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    @pytest.mark.llm_server(latency=0.2)
    def test_ctrl_c_stops_cancels_and_keeps_what_finished(
        self, llm_server: SimulatedServer, tmp_path: Path
    ) -> None:
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        journal = Path(f"{output}.journal.sqlite")
        write_requests(requests, 300)
        run = batch(requests, "-o", output, "--base-url", llm_server.base_url,
                    "--concurrency", "10")  # fmt: skip
        wait_for_rows(journal, 20)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=30)  # a hang guard only
        kept = journal_rows(journal)
        deadline = time.monotonic() + 10
        while llm_server.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = llm_server.stats()
        assert run.returncode == 130
        assert "interrupted" in err
        assert stats["in_flight"] == 0
        assert stats["requests"] < 300
        assert len(kept) >= 20


class TestRefusals:
    @pytest.mark.parametrize("how", ["same-path", "relative-path", "hard-link", "symlink"])
    def test_an_output_that_is_the_input_is_refused(
        self,
        llm_server: SimulatedServer,
        tmp_path: Path,
        how: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        requests = tmp_path / "in.jsonl"
        write_requests(requests, 5)
        digest = sha256(requests)
        output = {
            "same-path": requests,
            "relative-path": Path("sub/../in.jsonl"),
            "hard-link": tmp_path / "link.jsonl",
            "symlink": tmp_path / "sym.jsonl",
        }[how]
        (tmp_path / "sub").mkdir()
        if how == "hard-link":
            os.link(requests, output)
        elif how == "symlink":
            output.symlink_to(requests)
        monkeypatch.chdir(tmp_path)
        status, err = run_batch("in.jsonl", "-o", output, "--base-url", llm_server.base_url)
        assert status == 2
        assert "is the input file" in err
        assert "Traceback" not in err
        assert sha256(requests) == digest
        assert admitted(llm_server) == 0
        assert not list(tmp_path.glob("*.journal.sqlite*"))  # nothing opened for writing

    @pytest.mark.parametrize(
        ("journal", "message"),
        [("out.jsonl", "is the journal"), ("in.jsonl", "is the input file")],
        ids=["journal-is-output", "journal-is-input"],
    )
    def test_a_journal_that_is_the_output_or_the_input_is_refused(
        self, llm_server: SimulatedServer, tmp_path: Path, journal: str, message: str
    ) -> None:
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_requests(requests, 5)
        output.write_text("previous results\n")
        digests = (sha256(requests), sha256(output))
        status, err = run_batch(requests, "-o", output, "--journal", tmp_path / journal,
                                "--base-url", llm_server.base_url)  # fmt: skip
        assert status == 2
        assert message in err
        assert (sha256(requests), sha256(output)) == digests
        assert admitted(llm_server) == 0

    def test_unwritable_output_fails_before_any_request(
        self, llm_server: SimulatedServer, tmp_path: Path
    ) -> None:
        requests = tmp_path / "in.jsonl"
        write_requests(requests, 3)
        unwritable = tmp_path / "missing" / "out.jsonl"
        status, err = run_batch(requests, "-o", unwritable, "--base-url", llm_server.base_url)
        assert status == 2
        assert "cannot write the output" in err
        assert admitted(llm_server) == 0

    @pytest.mark.llm_server(latency=0.2)
    def test_a_second_process_on_the_same_journal_is_refused(
        self, llm_server: SimulatedServer, tmp_path: Path
    ) -> None:
        count = 100
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_requests(requests, count)
        options = ("-o", output, "--base-url", llm_server.base_url, "--concurrency", "10")
        first = batch(requests, *options)
        wait_for_rows(Path(f"{output}.journal.sqlite"), 5)
        status, err = run_batch(requests, *options)
        assert status == 2
        assert f"in use by pid {first.pid} on host {socket.gethostname()}, started" in err
        _, first_err = first.communicate(timeout=120)
        assert first.returncode == 0, first_err
        assert [line["custom_id"] for line in outputs(output)] == [f"r{i}" for i in range(count)]
        assert admitted(llm_server) == count  # each line sent once


class TestUsage:
    @pytest.mark.parametrize(
        "args",
        [
            ["--concurrency", "0"],
            ["--concurrency", "1.5"],
            ["--rpm", "0"],
            ["--rpm", "-5"],
            ["--tpm", "lots"],
            ["--attempts", "0"],
            ["--conc", "5"],  # no abbreviations: a later option could make one ambiguous
            ["--price-in", "1"],
            ["--price-in", "-1", "--price-out", "1"],
        ],
        ids=" ".join,
    )
    def test_a_bad_option_is_a_usage_error(
        self, args: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["in.jsonl", "-o", "out.jsonl", *args])
        err = capsys.readouterr().err
        assert exited.value.code == 2
        assert "usage: python -m bridge batch" in err
        assert "Traceback" not in err

    def test_help_reads_cleanly_with_every_default(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-show-1234")
        with pytest.raises(SystemExit) as exited:
            main(["--help"])
        text = capsys.readouterr().out
        assert exited.value.code == 0
        assert "``" not in text
        assert ":func:" not in text
        assert "sk-do-not-show" not in text
        for action in build_parser()._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, action.option_strings
                assert action.required or "default" in action.help, action.option_strings

    def test_a_missing_input_is_refused_before_any_request(
        self, llm_server: SimulatedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status = main([str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                       "--base-url", llm_server.base_url])  # fmt: skip
        assert admitted(llm_server) == 0
        assert status == 2
        assert "does not exist" in capsys.readouterr().err
        assert not (tmp_path / "out.jsonl").exists()
