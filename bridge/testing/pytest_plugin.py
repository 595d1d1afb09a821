"""The ``llm_server`` pytest fixture, registered through the ``pytest11`` entry point.

Usage::

    @pytest.mark.llm_server(latency=0.05, rpm=600, error_rates={500: 0.1})
    def test_retries(llm_server):
        client = openai.OpenAI(base_url=llm_server.base_url, api_key="test")
        ...
        assert llm_server.stats()["status_counts"]["500"] > 0

The marker takes :class:`~bridge.testing.ServerConfig` fields as keywords.
Servers are started once per distinct configuration and kept for the session;
before each test the fixture calls :meth:`~bridge.testing.SimulatedServer.reset`,
so every test starts with zero counters, full rate-limit buckets and a freshly
seeded fault RNG, as if the server were new.

This module is imported by every pytest run where the package is installed:
it stays light, and starts no process until a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._config import ServerConfig
from ._handle import SimulatedServer, serve

__all__ = ["llm_server"]

_MARKER = "llm_server"


class _ServerPool:
    """One running server per distinct configuration, for the whole session."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, ...], SimulatedServer] = {}

    def get(self, config: ServerConfig) -> SimulatedServer:
        key = tuple(config.to_args())
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = serve(config)
        return server

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``llm_server`` marker, so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**options): configure the llm_server fixture with "
        "bridge.testing.ServerConfig fields, e.g. latency=0.1, rpm=600",
    )


@pytest.fixture(scope="session")
def _llm_server_pool() -> Iterator[_ServerPool]:
    pool = _ServerPool()
    yield pool
    pool.close()


@pytest.fixture
def llm_server(request: pytest.FixtureRequest, _llm_server_pool: _ServerPool) -> SimulatedServer:
    """A running simulated LLM server, reset for this test.

    Configure it with ``@pytest.mark.llm_server(**ServerConfig fields)``; the
    closest marker wins (function over class over module).
    """
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None and marker.args:
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER} takes keyword options only, e.g. "
            f"@pytest.mark.{_MARKER}(latency=0.1); got positional {marker.args!r}"
        )
    try:
        config = ServerConfig(**(marker.kwargs if marker is not None else {}))
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"bad @pytest.mark.{_MARKER} options: {exc}") from None
    server = _llm_server_pool.get(config)
    server.reset()
    return server
