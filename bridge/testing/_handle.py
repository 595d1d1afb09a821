"""Start the simulated server in a child process and talk to its control endpoints.

The child is ``python -m bridge.testing serve --port 0 ...``: a fresh
interpreter, so the parent's threads, event loops and GIL are not shared, and
nothing is forked from a threaded process. It prints its URL once it listens,
which is the readiness signal.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import Any, TypedDict, cast

from bridge import BridgeError
from bridge._integration import require

from ._config import ServerConfig

__all__ = ["ServerStartError", "SimulatedServer", "Stats", "serve"]

DEFAULT_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


class ServerStartError(BridgeError, RuntimeError):
    """The simulated server did not start; the message carries what it printed."""


class Stats(TypedDict):
    """The counters of ``GET /_stats``; they start at zero and after :meth:`reset`."""

    requests: int  # admitted by the rate limiter (429s from the limiter are not)
    in_flight: int  # requests being answered now
    max_in_flight: int  # the most seen at once
    status_counts: dict[str, int]  # HTTP status (as a string) -> responses sent
    disconnected: int  # clients that went away before the full reply
    rate_limited: int  # 429s from the rate limiter (injected 429s are faults)
    tokens_in: int  # prompt tokens of admitted requests
    tokens_out: int  # reply tokens fully delivered
    endpoints: dict[str, int]  # "chat.completions", "messages", "embeddings" -> admitted
    faults: dict[str, int]  # "status:500", "reset", "hang", ... -> injected


class SimulatedServer:
    """A running simulated server; use it as a context manager to stop it.

    ``base_url`` ends in ``/v1``, ready for ``openai.OpenAI(base_url=...)``;
    ``root_url`` has no ``/v1``, as ``anthropic.Anthropic(base_url=...)`` wants.
    """

    def __init__(self, config: ServerConfig, *, startup_timeout: float) -> None:
        self.config = config
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the child
        self._process = subprocess.Popen(  # noqa: S603 -- our own interpreter, fixed arguments
            [sys.executable, "-m", "bridge.testing", "serve", "--watch-stdin", *config.to_args()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        try:
            self.base_url = self._wait_for_url(startup_timeout)
        except BaseException:
            self.close()
            raise
        self.root_url = self.base_url.removesuffix("/v1")

    @property
    def pid(self) -> int:
        """The server process's id."""
        return self._process.pid

    @property
    def port(self) -> int:
        """The port the server listens on (the one picked when ``port=0``)."""
        return int(self.root_url.rsplit(":", 1)[1])

    def stats(self) -> Stats:
        """Fetch the counters from ``GET /_stats``."""
        return cast("Stats", self._call("GET", "/_stats"))

    def reset(self) -> None:
        """Zero the counters, refill every rate-limit bucket and reseed the fault RNG."""
        self._call("POST", "/_reset")

    def close(self) -> None:
        """Stop the server and wait for it to exit. Safe to call twice."""
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()  # the child stops at stdin EOF
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._forward_stderr()

    def __enter__(self) -> SimulatedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        url = getattr(self, "base_url", "(starting)")  # unset while starting or if that failed
        return f"<SimulatedServer {url} pid={self.pid}>"

    def _wait_for_url(self, timeout: float) -> str:
        stdout = self._process.stdout
        assert stdout is not None  # Popen(stdout=PIPE) always sets it
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerStartError(
                        self._failure(
                            f"did not print its URL within {timeout:g} s; pass a larger "
                            "startup_timeout if the machine is very busy"
                        )
                    )
                if selector.select(left):
                    chunk = os.read(stdout.fileno(), 4096)
                    if not chunk:
                        self._process.wait(_STOP_TIMEOUT)
                        raise ServerStartError(
                            self._failure(
                                f"exited with code {self._process.returncode} before it was ready"
                            )
                        )
                    buffer += chunk
        return buffer.split(b"\n", 1)[0].decode().strip()

    def _failure(self, what: str) -> str:
        return f"The simulated LLM server {what}. It said:\n{self._read_stderr() or '(nothing)'}"

    def _read_stderr(self) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def _forward_stderr(self) -> None:
        # Tracebacks from inside the server would otherwise be lost with the temp file.
        text = self._read_stderr()
        self._stderr.close()
        if text:
            print(f"[bridge.testing server stderr]\n{text}", file=sys.stderr)

    def _call(self, method: str, path: str) -> Any:
        import urllib.request  # noqa: PLC0415 -- keeps the pytest plugin's import light

        # An empty ProxyHandler: HTTP_PROXY settings must never divert loopback calls.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        data = b"" if method == "POST" else None
        # The URL is always our own http://127.0.0.1 server, never user input.
        request = urllib.request.Request(  # noqa: S310
            self.root_url + path, data=data, method=method
        )
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())


def serve(
    config: ServerConfig | None = None,
    /,
    *,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    **options: Any,
) -> SimulatedServer:
    """Start a simulated server in a child process; use the result with ``with``.

    Pass a :class:`ServerConfig` or its fields as keywords (not both)::

        with serve(latency=0.2, rpm=600) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test")

    Raises :class:`ValueError` for a bad option and :class:`ServerStartError`
    when the server cannot start (for example, its port is in use).
    """
    if config is not None and options:
        raise TypeError("pass either a ServerConfig or keyword options to serve(), not both")
    require("bridge.testing.serve()", "testing", "aiohttp")  # the child would fail on it
    return SimulatedServer(config or ServerConfig(**options), startup_timeout=startup_timeout)
