"""bridge.flask: the extension, its config checks, its helpers, and streaming, through
Flask's test client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from flask import Flask, Response, current_app, request

import bridge
from bridge.flask import Bridge, BridgeConfig
from bridge.testing import SimulatedServer, Stats, expected_digest


@pytest.fixture(autouse=True)
def keep_default() -> Iterator[None]:
    """init_app installs the app's bridge as the process default: put the old one back."""
    outside = bridge.get_default()
    yield
    installed = bridge.set_default(outside)
    if installed is not None and installed is not outside:
        installed.close()


def make_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


class TestSetUp:
    def test_bridge_app_registers_the_extension_and_the_default(self) -> None:
        app = make_app(BRIDGE_CONCURRENCY=7, BRIDGE_THREADS=3)
        ext = Bridge(app)
        assert app.extensions["bridge"] is ext
        with app.app_context():
            assert current_app.extensions["bridge"] is ext
            assert ext.config == BridgeConfig(concurrency=7, threads=3)
            assert bridge.get_default() is ext.bridge

    def test_init_app_in_a_factory_gives_each_app_its_own_bridge(self) -> None:
        ext = Bridge()
        first, second = make_app(BRIDGE_CONCURRENCY=2), make_app(BRIDGE_CONCURRENCY=5)
        ext.init_app(first)
        ext.init_app(second)
        with first.app_context():
            one = ext.bridge
            assert ext.config.concurrency == 2
        with second.app_context():
            assert ext.config.concurrency == 5
            assert ext.bridge is not one
        one.close()

    def test_defaults_match_the_core(self) -> None:
        app = make_app()
        ext = Bridge(app)
        with app.app_context():
            assert ext.config.concurrency == bridge.DEFAULT_CONCURRENCY
            assert ext.config.threads == bridge.DEFAULT_THREADS

    def test_registering_twice_on_one_app_is_refused(self) -> None:
        app = make_app()
        Bridge(app)
        with pytest.raises(RuntimeError, match="once per app"):
            Bridge(app)

    def test_an_app_without_the_extension_says_how_to_set_it_up(self) -> None:
        ext = Bridge()
        with make_app().app_context(), pytest.raises(RuntimeError, match=r"init_app\(app\)"):
            _ = ext.bridge

    def test_the_bridge_starts_lazily(self) -> None:
        before = {t.name for t in threading.enumerate()}
        app = make_app()
        ext = Bridge(app)
        started = {t.name for t in threading.enumerate()} - before
        assert not any("flask-bridge" in name for name in started)
        with app.app_context():
            assert ext.run(asyncio.sleep(0, "ok")) == "ok"
        assert any("flask-bridge" in t.name for t in threading.enumerate())


class TestPreload:
    @pytest.mark.parametrize(
        ("config", "preloaded", "imported"),
        [
            pytest.param({}, ["openai", "anthropic"], True, id="by-default"),
            pytest.param({"BRIDGE_PRELOAD": ["anthropic"]}, ["anthropic"], False, id="one-sdk"),
            pytest.param({"BRIDGE_PRELOAD": False}, [], False, id="off"),
        ],
    )
    def test_init_app_preloads_in_a_fresh_process(
        self, config: dict[str, object], preloaded: list[str], imported: bool
    ) -> None:
        """What a gunicorn --preload master does: init_app imports the SDKs (or not)."""
        code = f"""
import json, sys
from flask import Flask
from bridge.flask import Bridge
app = Flask("preload")
app.config.update({config!r})
assert "openai" not in sys.modules
ext = Bridge(app)
with app.app_context():
    print(json.dumps([list(ext.config.preload), "openai.resources.chat" in sys.modules]))
"""
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [preloaded, imported]


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({"BRIDGE_CONCURRENCY": 0}, "BRIDGE_CONCURRENCY must be a whole number"),
            ({"BRIDGE_CONCURRENCY": "10"}, "got '10'"),
            ({"BRIDGE_THREADS": True}, "BRIDGE_THREADS must be a whole number"),
            ({"BRIDGE_STORE": "http://cache:6379"}, "BRIDGE_STORE is invalid"),
            ({"BRIDGE_LIMITS": ["https://x"]}, "BRIDGE_LIMITS must map base URLs"),
            ({"BRIDGE_LIMITS": {"api.openai.com": {}}}, "is not a base URL"),
            ({"BRIDGE_LIMITS": {"https://x/v1": {"rmp": 5}}}, "bridge.Limits keywords"),
            ({"BRIDGE_LIMITS": {"https://x/v1": {"rpm": -1}}}, r"BRIDGE_LIMITS\['https://x/v1'\]"),
            ({"BRIDGE_LIMITS": {"https://x/v1": 500}}, "expected a dict or a bridge.Limits"),
            ({"BRIDGE_PRELOAD": "openai"}, "BRIDGE_PRELOAD is invalid"),
            ({"BRIDGE_PRELOAD": ["mistral"]}, "a list of SDK names from"),
        ],
    )
    def test_init_app_names_the_bad_key_and_what_to_write(
        self, config: dict[str, object], message: str
    ) -> None:
        app = make_app(**config)
        with pytest.raises(ValueError, match=message):
            Bridge(app)
        assert "bridge" not in app.extensions

    def test_every_problem_is_reported_at_once(self) -> None:
        with pytest.raises(ValueError, match="invalid Flask config") as info:
            Bridge(make_app(BRIDGE_CONCURRENCY=-1, BRIDGE_THREADS=0, BRIDGE_STORE="x://"))
        for key in ("BRIDGE_CONCURRENCY", "BRIDGE_THREADS", "BRIDGE_STORE"):
            assert key in str(info.value)

    def test_limits_per_base_url_take_the_shared_store(self) -> None:
        own = bridge.Limits(rpm=10, store="redis://own:6379/1")
        app = make_app(
            BRIDGE_STORE="redis://shared:6379/0",
            BRIDGE_LIMITS={"https://a.example/v1/": {"rpm": 500}, "https://b.example/v1": own},
        )
        ext = Bridge(app)
        with app.app_context():
            a = ext.limits_for("https://a.example/v1")
            assert a == bridge.Limits(rpm=500, store="redis://shared:6379/0")
            assert ext.limits_for("https://b.example/v1/") == own
            assert ext.limits_for("https://elsewhere/v1") is None


class TestHelpers:
    def test_a_sync_view_runs_calls_concurrently_up_to_the_config(self) -> None:
        app = make_app(BRIDGE_CONCURRENCY=4)
        ext = Bridge(app)
        running = peak = 0

        async def work(item: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1
            return item * 2

        @app.post("/double")
        def double() -> dict[str, object]:
            return {"out": ext.map(work, request.get_json()["items"])}

        response = app.test_client().post("/double", json={"items": list(range(12))})
        assert response.get_json() == {"out": [i * 2 for i in range(12)]}
        assert peak == 4

    def test_coroutines_see_the_app_context(self) -> None:
        app = make_app()
        ext = Bridge(app)

        async def name() -> str:
            return current_app.name

        @app.get("/name")
        def view() -> str:
            return ext.run(name())

        assert app.test_client().get("/name").text == app.name

    def test_gather_imap_and_the_module_functions_use_the_apps_bridge(self) -> None:
        app = make_app(BRIDGE_CONCURRENCY=3)
        ext = Bridge(app)
        with app.app_context():
            assert ext.gather(*(asyncio.sleep(0, i) for i in range(3))) == [0, 1, 2]
            with contextlib.closing(ext.imap(str, [1, 2, 3], ordered=False)) as results:
                assert sorted(results) == ["1", "2", "3"]
            assert bridge.get_default() is ext.bridge

    @pytest.mark.llm_server(latency=0.1)
    def test_openai_takes_the_limits_for_its_base_url(
        self, llm_server: SimulatedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
        app = make_app(BRIDGE_LIMITS={llm_server.base_url: {"max_in_flight": 2}})
        ext = Bridge(app)
        with app.app_context():
            client = ext.openai(api_key="limits-test")  # its own admission key

            async def ask(text: str) -> str:
                reply = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": text}]
                )
                return reply.choices[0].message.content or ""

            answers = ext.map(ask, ["a", "b", "c", "d", "e"])
            ext.run(client.close())
        assert [a.split()[0] for a in answers] == [f"digest={expected_digest(t)}" for t in "abcde"]
        assert llm_server.stats()["max_in_flight"] == 2


def streaming_app(base_url: str) -> tuple[Flask, Bridge]:
    app = make_app()
    ext = Bridge(app)

    @app.get("/stream")
    def stream() -> Response:
        client = app.extensions["client"]

        async def tokens() -> AsyncIterator[str]:
            reply = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async with reply:
                async for chunk in reply:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content

        return Response(ext.stream(tokens()), mimetype="text/plain")

    with app.app_context():
        app.extensions["client"] = ext.openai(base_url=base_url, api_key="test")
    return app, ext


def settled(server: SimulatedServer, condition: Callable[[Stats], bool]) -> Stats:
    """Poll the stats until ``condition`` holds; the server sees a disconnect slightly later."""
    deadline = time.monotonic() + 30
    while True:
        stats = server.stats()
        if condition(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


class TestStreaming:
    def test_tokens_stream_through_the_response(self, llm_server: SimulatedServer) -> None:
        app, _ = streaming_app(llm_server.base_url)
        response = app.test_client().get("/stream")
        assert response.is_streamed
        chunks = list(response.response)
        response.close()
        assert len(chunks) > 2  # token by token, not one body
        assert b"".join(chunks).decode().startswith(f"digest={expected_digest('hi')} ")
        assert llm_server.stats()["disconnected"] == 0

    @pytest.mark.llm_server(chunk_delay=0.05)
    def test_closing_the_response_early_stops_the_upstream_stream(
        self, llm_server: SimulatedServer
    ) -> None:
        app, _ = streaming_app(llm_server.base_url)
        response = app.test_client().get("/stream")
        first = next(iter(response.response))
        response.close()  # what the WSGI server does when the client goes away
        assert first
        stats = settled(llm_server, lambda s: s["disconnected"] == 1 and s["in_flight"] == 0)
        assert stats["disconnected"] == 1
        assert stats["in_flight"] == 0

    def test_stream_with_context_around_bridge_iterate_works_too(self) -> None:
        app = make_app()
        Bridge(app)

        async def words() -> AsyncIterator[str]:
            for word in (request.args["q"], "and", "more"):
                yield word + " "

        @app.get("/words")
        def view() -> Response:
            from flask import stream_with_context

            return Response(stream_with_context(bridge.iterate(words())))

        assert app.test_client().get("/words?q=hello").text == "hello and more "
