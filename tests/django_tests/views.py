"""Sync views that run coroutines through the bridge, as a WSGI site would."""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator
from typing import Any

import openai
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

import bridge
import bridge.django
from bridge._integration import time_left

from .notes.models import Note

#: A bridge without thread-sensitivity: the control that shows what the mode changes.
PLAIN = bridge.Bridge(name="plain-bridge")


def write_then_bridge(request: HttpRequest, alias: str) -> HttpResponse:
    """Write a row, then read and write through the bridge; ``?fail=1`` rolls all back."""
    Note.objects.using(alias).create(text="view")
    runner = PLAIN if request.GET.get("bridge") == "plain" else bridge.get_default()
    seen = runner.run(_inside(alias, threading.get_ident()))
    if request.GET.get("fail"):
        raise RuntimeError("the view failed after the bridged call: roll everything back")
    return JsonResponse({**seen, "view_thread": threading.get_ident()})


async def _inside(alias: str, view_thread: int) -> dict[str, Any]:
    try:
        saw_view_row = await Note.objects.using(alias).filter(text="view").aexists()
        await Note.objects.using(alias).acreate(text="coroutine")
        thread, atomic = await sync_to_async(_where, thread_sensitive=True)(alias)
    finally:
        # On another thread (the control), the connection opened there must not linger.
        await sync_to_async(_close_unless_on, thread_sensitive=True)(view_thread)
    return {"saw_view_row": saw_view_row, "orm_thread": thread, "in_atomic_block": atomic}


def _where(alias: str) -> tuple[int, bool]:
    return threading.get_ident(), connections[alias].in_atomic_block


def _close_unless_on(view_thread: int) -> None:
    if threading.get_ident() != view_thread:
        connections.close_all()


@functools.cache
def _client(base_url: str) -> openai.AsyncOpenAI:
    return bridge.django.openai(base_url=base_url, api_key="test")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream a chat completion's tokens to the client as they arrive."""
    client = _client(settings.LLM_BASE_URL)

    async def tokens() -> AsyncIterator[str]:
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async with reply:
            async for chunk in reply:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    return StreamingHttpResponse(bridge.iterate(tokens()), content_type="text/plain")


def no_database(view: Any) -> Any:
    """Keep ``view`` out of ATOMIC_REQUESTS on every database: it uses none."""
    for alias in settings.DATABASES:
        view = transaction.non_atomic_requests(using=alias)(view)
    return view


@no_database
def deadline_left(request: HttpRequest) -> JsonResponse:
    """The seconds left before the request's deadline, as a bridged coroutine sees them."""
    return JsonResponse({"left": bridge.run(_time_left())})


@no_database
async def deadline_left_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"left": await _time_left()})


async def _time_left() -> float | None:
    return time_left()


@no_database
def deadline_missed(request: HttpRequest) -> HttpResponse:
    """Raise what a call refused under the deadline raises (``?wrapped=1``: as an SDK does)."""
    wait = float(request.GET["wait"]) if "wait" in request.GET else None
    missed = bridge.DeadlineExceeded("the endpoint is paused", retry_after=wait)
    if request.GET.get("wrapped"):
        raise ConnectionError("the SDK's wrapping") from missed
    raise missed
