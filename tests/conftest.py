from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator

import pytest

import bridge

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The ``anyio``-marked tests use asyncio APIs; without this, anyio would run them on
    every installed backend, trio included (selenium, in the test extra, installs it)."""
    return "asyncio"


@pytest.fixture
def b() -> Iterator[bridge.Bridge]:
    """A fresh bridge per test, closed afterwards so no loop thread leaks between tests."""
    with bridge.Bridge(name="test-bridge") as instance:
        yield instance


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, so a pooled async client reuses them across calls,
    # which is exactly what breaks when each call gets a new event loop.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Tests drop connections on purpose (a closed loop, a killed client); the
        # traceback socketserver prints for each is noise in the test log.
        pass


@pytest.fixture(scope="session")
def echo_url() -> Iterator[str]:
    """A real HTTP/1.1 keep-alive server on loopback that echoes the request path."""
    server = _QuietServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis server's URL (``REDIS_URL``, default 127.0.0.1:6379/0).

    Under CI a missing Redis fails the test; elsewhere the test is skipped, saying why.
    """
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1.0).ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"CI must run the Redis tests, but Redis at {url} is unreachable: {exc}")
        pytest.skip(f"no Redis reachable at {url} ({exc}); set REDIS_URL or start redis-server")
    return url


def _service_url(name: str, env: str, default: str, probe: Callable[[str], object]) -> str:
    """``env``'s URL (default ``default``) if ``probe`` reaches it; under CI a missing
    service fails the test, elsewhere the test is skipped, saying why."""
    url = os.environ.get(env, default)
    try:
        probe(url)
    except Exception as exc:
        shown = url.split("@")[-1]  # never the password
        if IN_CI:
            pytest.fail(f"CI must run the {name} tests; {name} at {shown} is unreachable: {exc}")
        pytest.skip(f"no {name} reachable at {shown} ({exc}); set {env} or start it")
    return url


def _probe_rabbitmq(url: str) -> None:
    import kombu

    with kombu.Connection(url, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)


def _probe_postgres(url: str) -> None:
    import psycopg

    psycopg.connect(url, connect_timeout=2).close()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """A reachable RabbitMQ broker's URL (``RABBITMQ_URL``, default guest@127.0.0.1:5672)."""
    return _service_url(
        "RabbitMQ", "RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//", _probe_rabbitmq
    )


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL database's URL (``POSTGRES_URL``, default postgres@127.0.0.1/test)."""
    return _service_url(
        "PostgreSQL", "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test", _probe_postgres
    )
