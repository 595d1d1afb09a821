"""The libraries users wrap around their client, from sync code: the docs/ecosystem.md recipes.

instructor, LangChain, pydantic-ai and LiteLLM over bridge clients, and the SDK's sync
client. For each: 20 calls at once from sync code, every request admitted (bridge.stats()
counts what the server counts), the calls overlapping (the server's max_in_flight), two
rounds in a row, and against a server that always answers 500, attempts that never exceed
``Retry.attempts``, whatever the library sets its own retries to. Real HTTP to the
simulated server; counts, never time.

The libraries are heavy to import (LiteLLM takes seconds), so each is imported once, by
its own fixture, only when a test that needs it runs. They come with the ``ecosystem``
extra (in ``dev``), except instructor, whose jiter pin clashes with openai's: CI installs
it without its dependencies (see .ci/run). Missing ones skip, and fail in CI.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import uuid
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import bridge
from bridge.testing import SimulatedServer, expected_digest

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CALLS = 20
FAILING = 3  # calls against the always-500 server
RETRY = bridge.Retry(attempts=2, backoff=0.01, max_wait=0.05)
FAST = pytest.mark.llm_server(latency=0.1)
ALWAYS_500 = pytest.mark.llm_server(error_rates={500: 1.0})


def library(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if IN_CI:
            raise
        hint = (
            "pip install --no-deps 'instructor==1.17.*'"
            if name == "instructor"
            else "pip install -e '.[dev]'"
        )
        pytest.skip(f"{name} is not installed ({exc}); {hint}")


@pytest.fixture(scope="module", autouse=True)
def own_default_bridge() -> Iterator[bridge.Bridge]:
    """The libraries leave tasks on the loop they run on (LiteLLM's logging worker): a
    default bridge of this module's own, closed at its end, takes them with it."""
    mine = bridge.Bridge(name="ecosystem")
    previous = bridge.set_default(mine) or bridge.Bridge()  # None: no default was made yet
    yield mine
    mine.close()
    bridge.set_default(previous)


def new_key() -> str:
    return f"sk-eco-{uuid.uuid4().hex}"


def prompt(i: int) -> str:
    return f"question number {i}"


def matches(i: int, text: str | None) -> bool:
    return (text or "").startswith("digest=" + expected_digest(prompt(i)))


def requests_of(key: str) -> int:
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    [stats] = [s for s in bridge.stats().values() if s.endpoint.endswith(digest)]
    return stats.requests


def check_round(server: SimulatedServer, key: str, answers: list[bool], rounds: int) -> None:
    """Every answer belongs to its prompt, the bridge admitted every request the server saw,
    and the calls overlapped."""
    assert answers == [True] * CALLS
    served = server.stats()
    assert served["requests"] == requests_of(key) == CALLS * rounds
    assert served["max_in_flight"] > 1


def check_attempts(server: SimulatedServer, key: str, outcomes: list[Any], error: type) -> None:
    assert all(isinstance(o, error) for o in outcomes), outcomes
    assert server.stats()["status_counts"] == {"500": RETRY.attempts * FAILING}
    assert requests_of(key) == RETRY.attempts * FAILING


# -- instructor ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructor() -> ModuleType:
    return library("instructor")


def answer_model(*, accept: bool) -> Any:
    import pydantic

    class Answer(pydantic.BaseModel):
        digest: str
        text: str

        @pydantic.field_validator("digest")
        @classmethod
        def _check(cls, value: str) -> str:
            if not accept:
                raise ValueError("never good enough, so instructor asks again")
            return value

    return Answer


@FAST
def test_instructor(instructor: ModuleType, llm_server: SimulatedServer) -> None:
    key = new_key()
    client = instructor.from_openai(bridge.openai(base_url=llm_server.base_url, api_key=key))
    answer = answer_model(accept=True)

    async def ask(i: int) -> bool:
        reply = await client.chat.completions.create(
            model="m", response_model=answer, messages=[{"role": "user", "content": prompt(i)}]
        )
        return bool(reply.digest == expected_digest(prompt(i)))

    for rounds in (1, 2):
        check_round(llm_server, key, bridge.map(ask, range(CALLS)), rounds)


@pytest.mark.llm_server
def test_instructor_reasks_are_separate_requests(
    instructor: ModuleType, llm_server: SimulatedServer
) -> None:
    """A reply that fails validation is asked again: 1 + max_retries (default 3) requests."""
    key = new_key()
    client = instructor.from_openai(bridge.openai(base_url=llm_server.base_url, api_key=key))
    answer = answer_model(accept=False)

    async def ask(i: int) -> Any:
        return await client.chat.completions.create(
            model="m", response_model=answer, messages=[{"role": "user", "content": prompt(i)}]
        )

    from instructor.core import InstructorRetryException

    outcomes = bridge.map(ask, range(5), return_exceptions=True)
    assert all(isinstance(o, InstructorRetryException) for o in outcomes)
    assert llm_server.stats()["requests"] == requests_of(key) == 5 * 4


@ALWAYS_500
def test_instructor_against_errors(instructor: ModuleType, llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key, retry=RETRY)
    patched = instructor.from_openai(client)

    async def ask(i: int) -> Any:
        return await patched.chat.completions.create(
            model="m",
            response_model=answer_model(accept=True),
            messages=[{"role": "user", "content": prompt(i)}],
        )

    from instructor.core import InstructorRetryException

    outcomes = bridge.map(ask, range(FAILING), return_exceptions=True)
    check_attempts(llm_server, key, outcomes, InstructorRetryException)


# -- LangChain -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_openai() -> Any:
    return library("langchain_openai").ChatOpenAI


def langchain_llm(chat_openai: Any, server: SimulatedServer, key: str, **retry: Any) -> Any:
    return chat_openai(
        model="m",
        base_url=server.base_url,
        api_key=key,
        http_async_client=bridge.http_client(**retry),
        http_client=bridge.http_client(sync=True, **retry),
    )


@FAST
def test_langchain_sync_and_async(chat_openai: Any, llm_server: SimulatedServer) -> None:
    key = new_key()
    llm = langchain_llm(chat_openai, llm_server, key)
    prompts = [prompt(i) for i in range(CALLS)]
    # Sync: LangChain's own threads, on the sync client; async: its coroutine, mapped.
    replies = llm.batch(prompts, config={"max_concurrency": CALLS})
    check_round(llm_server, key, [matches(i, r.content) for i, r in enumerate(replies)], 1)
    replies = bridge.map(llm.ainvoke, prompts)
    check_round(llm_server, key, [matches(i, r.content) for i, r in enumerate(replies)], 2)


@ALWAYS_500
@pytest.mark.parametrize("way", ["sync", "async"])
def test_langchain_default_retries_never_multiply(
    chat_openai: Any, llm_server: SimulatedServer, way: str
) -> None:
    import openai

    key = new_key()
    llm = langchain_llm(chat_openai, llm_server, key, retry=RETRY)
    assert llm.max_retries is None  # LangChain's default: the SDK's own, 2
    prompts = [prompt(i) for i in range(FAILING)]
    if way == "sync":
        outcomes = llm.batch(prompts, return_exceptions=True)
    else:
        outcomes = bridge.map(llm.ainvoke, prompts, return_exceptions=True)
    check_attempts(llm_server, key, outcomes, openai.InternalServerError)


# -- pydantic-ai ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pydantic_ai() -> ModuleType:
    return library("pydantic_ai")


@pytest.fixture
def run_sync_loop() -> Iterator[None]:
    """run_sync makes an event loop for the thread and never closes it (pydantic-ai's way);
    close it, as a process would at exit, before asyncio.run elsewhere drops it unclosed."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = asyncio.get_event_loop_policy().get_event_loop()
    loop.close()
    asyncio.set_event_loop(None)


def agent_over(pydantic_ai: ModuleType, client: Any) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return pydantic_ai.Agent(OpenAIChatModel("m", provider=OpenAIProvider(openai_client=client)))


@FAST
@pytest.mark.usefixtures("run_sync_loop")
def test_pydantic_ai_run_and_run_sync(pydantic_ai: ModuleType, llm_server: SimulatedServer) -> None:
    key = new_key()
    agent = agent_over(pydantic_ai, bridge.openai(base_url=llm_server.base_url, api_key=key))
    prompts = [prompt(i) for i in range(CALLS)]
    for rounds in (1, 2):
        results = bridge.map(agent.run, prompts)
        check_round(llm_server, key, [matches(i, r.output) for i, r in enumerate(results)], rounds)
    # run_sync drives its own loop in this thread: each request hops to the bridge's.
    assert matches(1, agent.run_sync(prompt(1)).output)
    assert matches(2, agent.run_sync(prompt(2)).output)
    assert requests_of(key) == llm_server.stats()["requests"] == 2 * CALLS + 2


@ALWAYS_500
def test_pydantic_ai_default_retries_never_multiply(
    pydantic_ai: ModuleType, llm_server: SimulatedServer
) -> None:
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    key = new_key()
    # The provider makes the SDK client, with the SDK's default max_retries=2.
    provider = OpenAIProvider(
        base_url=llm_server.base_url, api_key=key, http_client=bridge.http_client(retry=RETRY)
    )
    assert provider.client.max_retries == 2
    agent = pydantic_ai.Agent(OpenAIChatModel("m", provider=provider))
    outcomes = bridge.map(agent.run, [prompt(i) for i in range(FAILING)], return_exceptions=True)
    check_attempts(llm_server, key, outcomes, ModelHTTPError)


# -- LiteLLM -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    with pytest.MonkeyPatch.context() as patch:
        # Its model price list, fetched at import, comes from the package instead: no network.
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        module = library("litellm")
    module.suppress_debug_info = True  # no "Give Feedback" banner on each error
    return module


def litellm_caller(litellm: ModuleType, **options: Any) -> Any:
    async def call(i: int) -> bool:
        messages = [{"role": "user", "content": prompt(i)}]
        reply = await litellm.acompletion(model="openai/m", messages=messages, **options)
        return matches(i, reply.choices[0].message.content)

    return call


@FAST
def test_litellm_with_a_bridge_client(litellm: ModuleType, llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)
    call = litellm_caller(litellm, client=client)
    for rounds in (1, 2):
        check_round(llm_server, key, bridge.map(call, range(CALLS)), rounds)


@FAST
def test_litellm_api_base_through_its_session(
    litellm: ModuleType, llm_server: SimulatedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM's own path (model="openai/...", api_base=...) passes admission when its
    aclient_session (client_session, for litellm.completion) is a bridge client."""
    monkeypatch.setattr(litellm, "aclient_session", bridge.http_client())
    key = new_key()
    call = litellm_caller(litellm, api_base=llm_server.base_url, api_key=key)
    for rounds in (1, 2):
        check_round(llm_server, key, bridge.map(call, range(CALLS)), rounds)
    assert asyncio.run(call(1))  # and from a loop of its own (LiteLLM caches a client per loop)
    # litellm.completion, from sync code, through its sync setting.
    monkeypatch.setattr(litellm, "client_session", bridge.http_client(sync=True))
    messages = [{"role": "user", "content": prompt(2)}]
    reply = litellm.completion(
        model="openai/m", messages=messages, api_base=llm_server.base_url, api_key=key
    )
    assert matches(2, reply.choices[0].message.content)
    assert requests_of(key) == llm_server.stats()["requests"] == 2 * CALLS + 2


@ALWAYS_500
@pytest.mark.parametrize("path", ["client", "api_base"])
def test_litellm_retries_never_multiply(
    litellm: ModuleType, llm_server: SimulatedServer, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """With client=, LiteLLM sets the client's max_retries back to 2; on its own path it
    passes 2 to the SDK client it makes."""
    key = new_key()
    if path == "client":
        client = bridge.openai(base_url=llm_server.base_url, api_key=key, retry=RETRY)
        call = litellm_caller(litellm, client=client)
    else:
        monkeypatch.setattr(litellm, "aclient_session", bridge.http_client(retry=RETRY))
        call = litellm_caller(litellm, api_base=llm_server.base_url, api_key=key)
    outcomes = bridge.map(call, range(FAILING), return_exceptions=True)
    check_attempts(llm_server, key, outcomes, litellm.InternalServerError)
    if path == "client":
        assert client.max_retries == 2  # what LiteLLM set; none of those retries was sent


# -- the SDK's sync client ------------------------------------------------------------------------


@FAST
def test_sync_sdk_client(llm_server: SimulatedServer) -> None:
    import openai

    key = new_key()
    client = openai.OpenAI(
        base_url=llm_server.base_url, api_key=key, http_client=bridge.http_client(sync=True)
    )

    def ask(i: int) -> bool:  # a plain function: bridge.map runs it in the bridge's threads
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt(i)}]
        )
        return matches(i, reply.choices[0].message.content)

    for rounds in (1, 2):
        check_round(llm_server, key, bridge.map(ask, range(CALLS), concurrency=CALLS), rounds)


def test_importing_bridge_imports_none_of_them() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bridge; heavy = ('instructor', 'langchain', 'pydantic_ai', 'litellm', "
        "'openai', 'httpx2'); print([m for m in sys.modules if m.split('.')[0] in heavy])"
    )
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
