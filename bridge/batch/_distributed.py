"""The batch command's Celery app, and what its chunk tasks run on a worker.

Both sides make the same app (:func:`make_app`): ``python -m bridge worker`` runs it, and
``python -m bridge batch --broker`` sends it chunks of request lines. Each line is sent by
:func:`send`, with this worker process's one client: the endpoint comes from the worker's
``OPENAI_BASE_URL``/``OPENAI_API_KEY``, its limits are learned from the provider's headers
and shared through the worker's ``--store``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import TYPE_CHECKING, Any, Final, Literal

import bridge
import bridge.celery
from bridge._integration import Status

from ._requests import Request, request_key
from ._send import Line, Sender

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_QUEUE", "as_item", "line_status", "make_app", "request_item_key", "send"]

#: The queue the batch command's chunks go through when none is named.
DEFAULT_QUEUE: Final = "bridge-batch"

_lock = threading.Lock()
_sender: tuple[int, Sender] | None = None


def make_app(
    *,
    broker: str,
    journal: str,
    queue: str,
    store: str | None = None,
    base_url: str | None = None,
    on_store_error: Literal["local", "fail"] = "local",
    worker_concurrency: int | None = None,
) -> Celery:
    """The batch's Celery app: late acknowledgement, one chunk prefetched per process."""
    from celery import Celery  # noqa: PLC0415 - celery is an optional dependency

    app = Celery("bridge-batch", broker=broker, backend="rpc://", set_as_current=True)
    app.conf.update(
        task_acks_late=True,  # a chunk is acknowledged once it has finished...
        task_reject_on_worker_lost=True,  # ...and requeued if its worker process dies
        worker_prefetch_multiplier=1,  # a busy process holds no chunks another could run
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
    )
    limits = {base_url: {"on_store_error": on_store_error}} if base_url else {}
    bridge.celery.init_app(
        app, journal=journal, store=store, limits=limits, concurrency=worker_concurrency,
        preload=["openai"],
    )  # fmt: skip
    return app


@bridge.celery.fanout
async def send(item: dict[str, Any]) -> Line:
    """Send one request line (a :class:`Request` as a dict) with this process's client."""
    return await _process_sender()(Request(**item))


@bridge.celery.fanout
def line_status(result: Line) -> Status:
    """The status the journal records for a sent line: the line's own."""
    return result[1]


def request_item_key(item: dict[str, Any]) -> str:
    """The journal key of a request dict: the single-process command's key for that line."""
    return request_key(Request(**item))


def as_item(request: Request) -> dict[str, Any]:
    """A request as the dict that travels in a chunk task."""
    return dataclasses.asdict(request)


def _process_sender() -> Sender:
    """This worker process's sender, made on first use (after the fork, in prefork)."""
    global _sender  # noqa: PLW0603 - one client per worker process
    pid = os.getpid()
    with _lock:
        if _sender is None or _sender[0] != pid:
            _sender = (pid, _new_sender())
        return _sender[1]


def _new_sender() -> Sender:
    base_url = os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        raise RuntimeError(
            "this worker has no endpoint: set OPENAI_BASE_URL (and OPENAI_API_KEY) in the "
            "environment of python -m bridge worker"
        )
    key = os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = bridge.celery.settings().limits_for(base_url)
    client = bridge.http_client(limits=limits, retry=bridge.Retry(), headers=headers)
    return Sender(client, base_url)
