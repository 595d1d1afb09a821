"""What the tests of both example apps share: a served app, hostile bodies and the
documented reply.

Both apps must answer a hostile body alike: a 4xx with a JSON ``{"error": ...}``, never a
500 or an HTML page. And the reply shape their docs give must be the one they return.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from polling import poll

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: 100,000 nested lists: json.loads raises RecursionError.
DEEP = b'{"documents": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
#: Python refuses to convert integers of over 4,300 digits (ValueError).
LONG_NUMBER = b'{"documents": ["a"], "n": ' + b"7" * 5_000 + b"}"

HOSTILE = [
    pytest.param(DEEP, "nests too deeply", id="nested-100000-deep"),
    pytest.param(LONG_NUMBER, "number too long", id="5000-digit-integer"),
    pytest.param(b'{"documents": ["caf\xe9"]}', "not UTF-8", id="latin-1"),
    pytest.param(b"\xff\xfe{\x00}\x00", "not UTF-8", id="utf-16"),
    pytest.param(b'{"documents": ["\\ud800"]}', "lone surrogate", id="lone-surrogate"),
    pytest.param(b"\xef\xbb\xbf{}", "not JSON", id="byte-order-mark"),
    pytest.param(b"", "not JSON", id="empty"),
    pytest.param(b'{"documents": ["a"]', "not JSON", id="truncated"),
    pytest.param(b"[1]", "must be a JSON object", id="a-list"),
    pytest.param(b'"documents"', "must be a JSON object", id="a-string"),
    pytest.param(b"null", "must be a JSON object", id="null"),
    pytest.param(b'{"documents": {"0": "a"}}', "non-empty list", id="documents-a-dict"),
    pytest.param(b'{"documents": ["a"], "mode": ["bridge"]}', "mode must be", id="mode-a-list"),
]

#: Bigger than both examples' 8,000,000-byte limit: 413, before the body is read.
TOO_BIG = b'{"documents": ["' + b"x" * 8_000_000 + b'"]}'

#: The packages a worker must have imported before its first request (under gunicorn
#: --preload: before fork): the SDKs, their HTTP stack, pydantic, and the bridge.
PRELOADED = {"openai", "anthropic", "httpx2", "httpcore2", "aiohttp", "tenacity", "pydantic"}
PRELOADED |= {"pydantic_core", "jiter", "anyio", "bridge"}

#: Content types the examples refuse with 415 (None: no Content-Type header at all).
NOT_JSON_TYPES = [None, "text/plain", "application/x-www-form-urlencoded"]


def documented_reply(page: str) -> tuple[set[str], set[str]]:
    """The keys of ``POST /api/summarize``'s reply in ``docs/<page>``'s table of endpoints:
    those of the reply, and those of each of its summaries."""
    text = (DOCS / page).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `POST /api/summarize` |"))
    found = re.search(r"returns `(\{.*?\})`", row)
    assert found, f"no reply shape in {page}'s row: {row}"
    shape = found.group(1)
    summary = re.search(r"\[\{(.*?)\}", shape)
    assert summary, f"no summary shape in {shape}"
    outer = shape.replace(summary.group(0), "")
    return set(re.findall(r'"(\w+)"', outer)), set(re.findall(r'"(\w+)"', summary.group(1)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A server process running an example app (gunicorn, uvicorn), logging to ``log``."""

    def __init__(self, command: list[str], *, cwd: Path, env: dict[str, str], log: Path,
                 port: int) -> None:  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_until_up(self, timeout: float = 60.0) -> None:
        poll(self.answers, timeout=timeout, what=f"{self.url} to answer:\n{self.text()}")

    def answers(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"the server exited ({self.process.returncode}):\n{self.text()}")
        try:
            return httpx.get(self.url + "/", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def text(self) -> str:
        return self.log.read_text()
