"""The server's HTTP surface: bad input, control endpoints, and the serve() handle."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import poll

import bridge.testing
from bridge.testing import ServerConfig, ServerStartError, SimulatedServer, serve

OPENAI_400 = {"type": "invalid_request_error", "code": None}


def post(
    server: SimulatedServer, path: str, content: bytes | None = None, body: Any = None
) -> httpx.Response:
    with httpx.Client(trust_env=False) as client:
        if content is not None:
            return client.post(
                server.base_url + path,
                content=content,
                headers={"Content-Type": "application/json"},
            )
        return client.post(server.base_url + path, json=body)


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"messages": [{"role": "user", "content": "x"}]}, "model"),
            ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
            ({"model": "m"}, "messages"),
            ({"model": "m", "messages": []}, "messages"),
            ({"model": "m", "messages": "hello"}, "messages"),
            ({"model": "m", "messages": [{"content": "x"}]}, "messages[0]"),
            ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
            (
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
                "max_tokens",
            ),
            (
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"},
                "max_tokens",
            ),
            (
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
                "stream",
            ),
            (
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": 3},
                "stream_options",
            ),
        ],
    )
    def test_chat_400_names_the_field(
        self, llm_server: SimulatedServer, body: object, param: str
    ) -> None:
        response = post(llm_server, "/chat/completions", body=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == param
        assert {k: error[k] for k in OPENAI_400} == OPENAI_400
        assert error["message"]

    @pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"null"])
    def test_body_must_be_a_json_object(self, llm_server: SimulatedServer, raw: bytes) -> None:
        response = post(llm_server, "/chat/completions", content=raw)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

    @pytest.mark.parametrize(
        "body",
        [
            {"model": "c", "messages": [{"role": "user", "content": "x"}]},  # no max_tokens
            {"model": "c", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]},
            {"model": "c", "max_tokens": 5, "messages": [], "system": "s"},
            {
                "model": "c",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "system": 7,
            },
        ],
    )
    def test_messages_400_is_anthropic_shaped(
        self, llm_server: SimulatedServer, body: object
    ) -> None:
        response = post(llm_server, "/messages", body=body)
        assert response.status_code == 400
        payload = response.json()
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"

    @pytest.mark.parametrize(
        "body",
        [
            {"model": "e"},
            {"model": "e", "input": ""},
            {"model": "e", "input": [1.5]},
            {"model": "e", "input": "x", "dimensions": 0},
            {"model": "e", "input": "x", "encoding_format": "hex"},
        ],
    )
    def test_embeddings_400(self, llm_server: SimulatedServer, body: object) -> None:
        response = post(llm_server, "/embeddings", body=body)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

    def test_bad_requests_are_not_admitted(self, llm_server: SimulatedServer) -> None:
        post(llm_server, "/chat/completions", body={"model": "m"})
        stats = llm_server.stats()
        assert stats["requests"] == 0
        assert stats["status_counts"] == {"400": 1}


class TestRoutes:
    def test_unknown_path_and_wrong_method(self, llm_server: SimulatedServer) -> None:
        with httpx.Client(trust_env=False) as client:
            missing = client.post(llm_server.base_url + "/completions", json={})
            wrong = client.get(llm_server.base_url + "/chat/completions")
        assert missing.status_code == 404
        assert "/v1/chat/completions" in missing.json()["error"]["message"]
        assert wrong.status_code == 405

    def test_reset_zeroes_the_counters(self, llm_server: SimulatedServer) -> None:
        post(llm_server, "/embeddings", body={"model": "e", "input": ["a", "b"]})
        stats = llm_server.stats()
        assert stats["requests"] == 1
        assert stats["tokens_in"] == 2
        assert stats["max_in_flight"] == 1
        assert stats["endpoints"] == {"embeddings": 1}
        llm_server.reset()
        assert llm_server.stats() == {
            "requests": 0,
            "in_flight": 0,
            "max_in_flight": 0,
            "status_counts": {},
            "disconnected": 0,
            "rate_limited": 0,
            "tokens_in": 0,
            "tokens_out": 0,
            "endpoints": {},
            "faults": {},
        }


TOOL = {"type": "function", "function": {"name": "Answer", "parameters": {}}}
OTHER_TOOL = {"type": "function", "function": {"name": "Other", "parameters": {}}}


class TestToolCalls:
    def body(self, **extra: Any) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}

    def test_a_named_tool_choice_is_answered_with_that_call(
        self, llm_server: SimulatedServer
    ) -> None:
        choice = {"type": "function", "function": {"name": "Answer"}}
        body = self.body(tools=[OTHER_TOOL, TOOL], tool_choice=choice)
        reply = post(llm_server, "/chat/completions", body=body).json()["choices"][0]
        [call] = reply["message"]["tool_calls"]
        arguments = json.loads(call["function"]["arguments"])
        assert (reply["finish_reason"], call["function"]["name"]) == ("tool_calls", "Answer")
        assert arguments["digest"] == bridge.testing.expected_digest("hi")
        assert arguments["text"].startswith("digest=" + arguments["digest"])
        assert reply["message"]["content"] is None

    @pytest.mark.parametrize("choice", [None, "auto", "required"])
    def test_otherwise_the_answer_is_text(
        self, llm_server: SimulatedServer, choice: str | None
    ) -> None:
        body = self.body(tools=[TOOL, OTHER_TOOL], tool_choice=choice)
        message = post(llm_server, "/chat/completions", body=body).json()["choices"][0]["message"]
        assert "tool_calls" not in message
        assert message["content"].startswith("digest=")

    @pytest.mark.parametrize(
        "extra",
        [
            {"tools": "Answer"},
            {"tools": [{"type": "function"}]},
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "X"}}},
        ],
    )
    def test_bad_tools_400(self, llm_server: SimulatedServer, extra: dict[str, Any]) -> None:
        response = post(llm_server, "/chat/completions", body=self.body(**extra))
        assert response.status_code == 400
        assert response.json()["error"]["param"] in {"tools", "tool_choice"}


class TestServe:
    def test_start_and_stop_leave_no_process(self) -> None:
        with serve(latency=0.01) as server:
            assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
            assert server.root_url == f"http://127.0.0.1:{server.port}"
            assert server.config.latency == 0.01
            assert server.stats()["requests"] == 0
            process = server._process
        assert process.returncode is not None  # reaped: no zombie
        with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as client:
            client.get(server.root_url + "/_stats")
        server.close()  # twice is fine

    def test_port_in_use_is_a_clear_error(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(ServerStartError, match="already in use"):
                serve(port=port)

    def test_config_or_options_not_both(self) -> None:
        with pytest.raises(TypeError, match="not both"):
            serve(ServerConfig(), latency=1)

    @pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
    def test_server_exits_when_its_parent_dies(self) -> None:
        # The child watches stdin: a parent killed without cleanup still stops it.
        code = (
            "import bridge.testing, os; s = bridge.testing.serve(); "
            "print(s.pid, flush=True); os._exit(0)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert _gone_within(int(out.stdout), seconds=30)


def _gone_within(pid: int, seconds: float) -> bool:
    """Poll /proc: the orphan is not our child, so it cannot be waited for."""
    return poll(lambda: _gone(pid), timeout=seconds, what=f"process {pid} to exit")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # exited; only its parent's parent has yet to reap it


class TestConfig:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"latency": -1}, "latency must be"),
            ({"rpm": 0}, "rpm must be a positive integer"),
            ({"error_rates": {200: 0.5}}, "400-599"),
            ({"error_rates": {500: 1.5}}, "between 0 and 1"),
            ({"hang_rate": 0.6, "reset_rate": 0.6}, "add up to 1.2"),
            ({"port": 70000}, "0-65535"),
            ({"burst_seconds": 0}, "burst_seconds"),
        ],
    )
    def test_bad_values_say_what_to_do(self, options: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            ServerConfig(**options)

    def test_frozen_keyword_only_and_copied(self) -> None:
        rates = {500: 0.1}
        config = ServerConfig(error_rates=rates)
        rates[502] = 0.2
        assert dict(config.error_rates) == {500: 0.1}
        assert config == ServerConfig(error_rates={500: 0.1})
        with pytest.raises(AttributeError):
            config.latency = 1.0  # type: ignore[misc]
        with pytest.raises(TypeError):
            ServerConfig(0.1)  # type: ignore[misc]

    def test_to_args_round_trips_through_the_cli(self) -> None:
        from bridge.testing._cli import _config, _parser

        config = ServerConfig(
            latency=0.25, rpm=600, error_rates={500: 0.02, 429: 0.01}, stream_cut_rate=0.1, seed=3
        )
        parser = _parser()
        assert _config(parser.parse_args(["serve", *config.to_args()]), parser) == config


def test_public_names_exist_and_are_documented() -> None:
    assert bridge.testing.__all__ == sorted(bridge.testing.__all__)
    for name in bridge.testing.__all__:
        member = getattr(bridge.testing, name)
        assert (member.__doc__ or "").strip(), name


def test_importing_the_package_does_not_import_aiohttp() -> None:
    code = (
        "import sys, bridge.testing, bridge.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'multidict', 'yarl')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
