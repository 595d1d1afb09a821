"""A Celery app as a user writes one, run by the tests under each pool.

Workers start it with ``python -m celery -A celery_pool_app worker -P <pool>`` (the tests
put this folder on ``PYTHONPATH``); the environment names the broker, the queue, the
simulated server and the journal, so each test run has a queue of its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import openai
from celery import Celery

import bridge
import bridge.celery
from bridge._core._scope import current_lane
from bridge.testing import expected_digest

BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
#: Requests in flight per process to the simulated server: bridge_limits sets it.
PER_PROCESS = 3

app = Celery(
    "celery_pool_app",
    broker=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.task_default_queue = os.environ.get("BRIDGE_TEST_QUEUE", "bridge-test")
app.conf.bridge_limits = {BASE_URL: {"max_in_flight": PER_PROCESS, "rpm": None, "tpm": None}}
bridge.celery.init_app(app, concurrency=8, journal=os.environ.get("BRIDGE_TEST_JOURNAL"))

# Made at import time, in the parent of a prefork pool: connects on first use, per process.
client = bridge.celery.openai(api_key="sk-pools")
# The usual way, which celery#6552 is about: one AsyncOpenAI, a new loop per task.
plain = openai.AsyncOpenAI(base_url=BASE_URL, api_key="sk-pools", max_retries=0)


async def ask(text: str) -> bool:
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}]
    )
    content = reply.choices[0].message.content or ""
    return content.startswith("digest=" + expected_digest(text))


async def lane_in_loop() -> str:
    return current_lane()  # what admission control sees: the caller's context, copied


def where() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "bridge": id(bridge.get_default()),
        "lane": bridge.run(lane_in_loop()),
    }


@app.task
def summarise(texts: list[str]) -> dict[str, Any]:
    """bridge.map, bridge.run and bridge.imap inside a task, on one shared client."""
    mapped = bridge.map(ask, texts)
    one = bridge.run(ask(texts[0]))
    streamed = list(bridge.imap(ask, texts[:2]))
    return {"ok": all(mapped) and one and all(streamed), "sent": len(texts) + 3, **where()}


@app.task
def with_asyncio_run(text: str) -> str:
    """The failure to contrast with: asyncio.run per task with a client shared across tasks."""

    async def call() -> str:
        reply = await plain.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}]
        )
        return reply.choices[0].message.content or ""

    return asyncio.run(call())


@bridge.celery.fanout
async def digest_of(text: str) -> list[Any]:
    """Fanned out by bridge.celery.map: the reply's check, and the process that sent it."""
    return [await ask(text), os.getpid()]
