"""The page, the JSON API, its streaming twin, and an async view for ASGI servers.

No database transaction is ever open while LLM calls run: the JSON API writes its ``Run``
before the calls and completes it after them, each a write of a few milliseconds, and
each document's ``Outcome`` is written as its call ends, on the request's own thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import bridge

from . import llm
from .models import Outcome, Run
from .samples import SAMPLES
from .validation import InvalidRequestError, SummarizeRequest, parse_request


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    context = {
        "samples": SAMPLES,
        "concurrency": settings.SUMMARIZE_CONCURRENCY,
        "max_documents": settings.SUMMARIZE_MAX_DOCUMENTS,
    }
    return render(request, "summaries/index.html", context)


# A JSON API for programs: no cookies or sessions, so CSRF protection has nothing to guard.
@csrf_exempt
@require_POST
def summarize(request: HttpRequest) -> JsonResponse:
    """Summaries in input order; 4xx for bad input, 502 if any upstream call failed, 503
    with Retry-After if the LLM cannot answer within the request deadline."""
    try:
        job = parse_request(request)
    except InvalidRequestError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    # Before the calls: one short write (autocommit), no transaction left open.
    run = Run.objects.create(mode=job.mode, documents=len(job.documents))
    start = time.perf_counter()
    summaries = llm.summarise_all(
        job.documents, job.mode, start, on_done=functools.partial(record, run)
    )
    elapsed = time.perf_counter() - start
    failed = sum(1 for s in summaries if s.error)
    # After the calls: the writes that belong together, in one short transaction.
    with transaction.atomic():
        run.failed, run.elapsed_s, run.finished = failed, elapsed, timezone.now()
        run.save(update_fields=["failed", "elapsed_s", "finished"])
    return JsonResponse(result(job, summaries, elapsed), status=502 if failed else 200)


async def record(run: Run, summary: llm.Summary) -> None:
    """Store one document's outcome as its call ends.

    This coroutine runs on the bridge's loop, but bridge.django's bridge is
    thread-sensitive: the async ORM call below runs on the request's own thread, with its
    database connection, while the view waits in ``bridge.map``. It is one INSERT in
    autocommit, a few milliseconds; the other calls carry on meanwhile.
    """
    await Outcome.objects.acreate(
        run=run,
        index=summary.index,
        summary=summary.summary or "",
        error=summary.error or "",
        total_tokens=summary.usage["total_tokens"] if summary.usage else 0,
    )


def result(job: SummarizeRequest, summaries: list[llm.Summary], elapsed: float) -> dict:
    failed = sum(1 for s in summaries if s.error)
    body = {
        "mode": job.mode,
        "concurrency": llm.concurrency_for(job.mode),
        "elapsed_s": round(elapsed, 3),
        "pid": os.getpid(),
        "usage": llm.total_usage(summaries),
        "summaries": [s.as_dict() for s in summaries],
    }
    if failed:
        body["error"] = f"the LLM failed for {failed} of {len(summaries)} documents"
    return body


@csrf_exempt
@require_POST
def summarize_stream(request: HttpRequest) -> HttpResponse:
    """NDJSON: one line per summary as it finishes, then a line with the totals."""
    try:
        job = parse_request(request)
    except InvalidRequestError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    return StreamingHttpResponse(ndjson(job), content_type="application/x-ndjson")


def ndjson(job: SummarizeRequest) -> Iterator[str]:
    start = time.perf_counter()
    one = llm.summarise_indexed(start)
    summaries = []
    # imap yields in finishing order; closing it (client gone) cancels the calls in flight.
    results = bridge.imap(
        one, enumerate(job.documents), concurrency=llm.concurrency_for(job.mode), ordered=False
    )
    try:
        for summary in results:
            summaries.append(summary)
            yield json.dumps(summary.as_dict()) + "\n"
    finally:
        results.close()
    summaries.sort(key=lambda s: s.index)
    totals = result(job, summaries, time.perf_counter() - start)
    del totals["summaries"]
    yield json.dumps({"done": True, **totals}) + "\n"


@csrf_exempt
@require_POST
async def summarize_async(request: HttpRequest) -> JsonResponse:
    """The JSON API for ASGI servers: awaits the same client as the sync views, on the
    server's loop; its requests are sent on the bridge's, under the same limits."""
    try:
        job = parse_request(request)
    except InvalidRequestError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    start = time.perf_counter()
    one = llm.summarise_indexed(start)
    gate = asyncio.Semaphore(llm.concurrency_for(job.mode))

    async def bounded(item: tuple[int, str]) -> llm.Summary:
        async with gate:
            return await one(item)

    summaries = await asyncio.gather(*map(bounded, enumerate(job.documents)))
    elapsed = time.perf_counter() - start
    status = 502 if any(s.error for s in summaries) else 200
    return JsonResponse(result(job, list(summaries), elapsed), status=status)
