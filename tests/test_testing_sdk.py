"""The official openai and anthropic SDKs, sync and async, talk to the simulated server."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from bridge.testing import SimulatedServer, expected_digest, token_count

PROMPTS = ["What is 2 + 2?", "Name a colour.", "x" * 400, "Schreib ein Gedicht über Züge."]


def openai_client(server: SimulatedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


def anthropic_client(server: SimulatedServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root_url, api_key="sk-ant-test", max_retries=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_belongs(text: str, prompt: str) -> None:
    assert text.startswith(f"digest={expected_digest(prompt)} "), (text, prompt)


class TestOpenAIChat:
    @pytest.mark.parametrize("prompt", PROMPTS)
    def test_reply_belongs_to_its_prompt_with_plausible_usage(
        self, llm_server: SimulatedServer, prompt: str
    ) -> None:
        with openai_client(llm_server) as client:
            reply = client.chat.completions.create(
                model="gpt-sim",
                messages=[{"role": "system", "content": "Be brief."}, *user(prompt)],
            )
        content = reply.choices[0].message.content
        assert content is not None
        assert_belongs(content, prompt)
        assert reply.model == "gpt-sim"
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == token_count("Be brief.") + token_count(prompt)
        assert reply.usage.completion_tokens == token_count(content)
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + token_count(content)

    def test_max_tokens_bounds_the_reply(self, llm_server: SimulatedServer) -> None:
        with openai_client(llm_server) as client:
            full = client.chat.completions.create(model="m", messages=user("long one"))
            cut = client.chat.completions.create(model="m", messages=user("long one"), max_tokens=3)
        assert full.usage is not None
        assert full.usage.completion_tokens > 3
        assert cut.usage is not None
        assert cut.usage.completion_tokens == 3
        assert cut.choices[0].finish_reason == "length"
        assert cut.choices[0].message.content == (full.choices[0].message.content or "")[:12]

    def test_stream_with_usage(self, llm_server: SimulatedServer) -> None:
        with openai_client(llm_server) as client:
            stream = client.chat.completions.create(
                model="m",
                messages=user("stream me"),
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert_belongs(text, "stream me")
        assert len([c for c in chunks if c.choices]) > 3  # really streamed in pieces
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == token_count(text)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert llm_server.stats()["tokens_out"] == token_count(text)

    def test_stream_without_usage_has_no_usage_chunk(self, llm_server: SimulatedServer) -> None:
        with openai_client(llm_server) as client:
            chunks = list(
                client.chat.completions.create(
                    model="m", messages=user("hello"), stream=True, max_tokens=4
                )
            )
        assert all(c.choices and c.usage is None for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert token_count(text) == 4
        assert chunks[-1].choices[0].finish_reason == "length"

    @pytest.mark.anyio
    async def test_async_client_many_at_once(self, llm_server: SimulatedServer) -> None:
        prompts = [f"question {i}" for i in range(40)]
        async with openai.AsyncOpenAI(
            base_url=llm_server.base_url, api_key="k", max_retries=0
        ) as client:
            replies = await asyncio.gather(
                *(client.chat.completions.create(model="m", messages=user(p)) for p in prompts)
            )
            stream = await client.chat.completions.create(
                model="m", messages=user("async stream"), stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream]
        for prompt, reply in zip(prompts, replies, strict=True):
            assert_belongs(reply.choices[0].message.content or "", prompt)
        assert_belongs("".join(pieces), "async stream")
        stats = llm_server.stats()
        assert stats["requests"] == 41
        assert stats["status_counts"] == {"200": 41}
        assert stats["endpoints"] == {"chat.completions": 41}


class TestOpenAIEmbeddings:
    def test_default_base64_and_float_agree_and_are_deterministic(
        self, llm_server: SimulatedServer
    ) -> None:
        with openai_client(llm_server) as client:
            # The SDK asks for base64 by default and decodes it.
            first = client.embeddings.create(model="e", input=["alpha", "beta"])
            again = client.embeddings.create(model="e", input="alpha", encoding_format="float")
            wide = client.embeddings.create(model="e", input="alpha", dimensions=20)
        alpha, beta = (d.embedding for d in first.data)
        assert len(alpha) == 8
        assert alpha == again.data[0].embedding
        assert alpha != beta
        assert len(wide.data[0].embedding) == 20
        assert sum(v * v for v in alpha) == pytest.approx(1.0, rel=1e-5)
        assert first.usage.prompt_tokens == token_count("alpha") + token_count("beta")


class TestAnthropicMessages:
    @pytest.mark.parametrize("prompt", PROMPTS[:2])
    def test_reply_belongs_to_its_prompt(self, llm_server: SimulatedServer, prompt: str) -> None:
        with anthropic_client(llm_server) as client:
            message = client.messages.create(
                model="claude-sim", max_tokens=200, system="Be brief.", messages=user(prompt)
            )
        block = message.content[0]
        assert block.type == "text"
        assert_belongs(block.text, prompt)
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens == token_count("Be brief.") + token_count(prompt)
        assert message.usage.output_tokens == token_count(block.text)

    def test_max_tokens_bounds_the_reply(self, llm_server: SimulatedServer) -> None:
        with anthropic_client(llm_server) as client:
            message = client.messages.create(model="c", max_tokens=2, messages=user("hi"))
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 2
        assert message.content[0].type == "text"
        assert len(message.content[0].text) == 8

    def test_stream_helper(self, llm_server: SimulatedServer) -> None:
        with (
            anthropic_client(llm_server) as client,
            client.messages.stream(
                model="c", max_tokens=300, messages=user("stream please")
            ) as stream,
        ):
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        text = "".join(pieces)
        assert len(pieces) > 3
        assert_belongs(text, "stream please")
        assert final.usage.output_tokens == token_count(text)
        assert final.stop_reason == "end_turn"

    def test_raw_stream_events(self, llm_server: SimulatedServer) -> None:
        with anthropic_client(llm_server) as client:
            events = list(
                client.messages.create(model="c", max_tokens=5, stream=True, messages=user("raw"))
            )
        kinds = [e.type for e in events]
        assert kinds[:2] == ["message_start", "content_block_start"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(kinds[2:-3]) == {"content_block_delta"}

    @pytest.mark.anyio
    async def test_async_client(self, llm_server: SimulatedServer) -> None:
        async with anthropic.AsyncAnthropic(
            base_url=llm_server.root_url, api_key="k", max_retries=0
        ) as client:
            messages = await asyncio.gather(
                *(
                    client.messages.create(model="c", max_tokens=100, messages=user(f"q{i}"))
                    for i in range(20)
                )
            )
            async with client.messages.stream(
                model="c", max_tokens=100, messages=user("async")
            ) as stream:
                text = "".join([piece async for piece in stream.text_stream])
        for i, message in enumerate(messages):
            assert message.content[0].type == "text"
            assert_belongs(message.content[0].text, f"q{i}")
        assert_belongs(text, "async")
        assert llm_server.stats()["endpoints"] == {"messages": 21}


@pytest.mark.llm_server(latency=0.2, chunk_delay=0.01)
def test_latency_and_chunk_delay_still_answer_correctly(llm_server: SimulatedServer) -> None:
    with openai_client(llm_server) as client:
        pieces = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=user("slow"), stream=True)
        ]
    assert_belongs("".join(pieces), "slow")
    assert llm_server.config.latency == 0.2
