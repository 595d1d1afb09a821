"""A simulated OpenAI- and Anthropic-compatible LLM server for tests and benchmarks.

It answers over real HTTP on loopback, in its own process, with latency, rate
limits per API key and injected faults, so code that calls an LLM through the
official SDKs can be tested without a network::

    import openai
    from bridge.testing import expected_digest, serve

    with serve(latency=0.1, rpm=600) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        reply = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content.startswith(
            "digest=" + expected_digest("hi"))
        assert server.stats()["requests"] == 1

In pytest, the ``llm_server`` fixture gives the same handle; configure it with
``@pytest.mark.llm_server(latency=..., rpm=...)``. From a shell, run
``python -m bridge.testing serve --help``. See docs/testing.md.

Importing this package does not import aiohttp: only the server process does.
"""

from __future__ import annotations

from ._config import ServerConfig
from ._content import expected_digest, token_count
from ._handle import ServerStartError, SimulatedServer, Stats, serve

__all__ = [
    "ServerConfig",
    "ServerStartError",
    "SimulatedServer",
    "Stats",
    "expected_digest",
    "serve",
    "token_count",
]
