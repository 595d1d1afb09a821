"""The page, the JSON API, its streaming twin, and an async view for ASGI servers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import bridge

from . import llm
from .models import Run
from .samples import SAMPLES
from .validation import InvalidRequestError, SummarizeRequest, parse


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
    """Summaries in input order; 400 for bad input, 502 if any upstream call failed."""
    try:
        job = parse(request.body)
    except InvalidRequestError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    start = time.perf_counter()
    summaries = llm.summarise_all(job.documents, job.mode)
    elapsed = time.perf_counter() - start
    failed = sum(1 for s in summaries if s.error)
    # Plain ORM on the request's thread, in its transaction (ATOMIC_REQUESTS).
    Run.objects.create(mode=job.mode, documents=len(summaries), failed=failed, elapsed_s=elapsed)
    return JsonResponse(result(job, summaries, elapsed), status=502 if failed else 200)


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
        job = parse(request.body)
    except InvalidRequestError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
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


# Async views cannot run inside ATOMIC_REQUESTS' transaction; Django refuses the mix.
@transaction.non_atomic_requests
@csrf_exempt
@require_POST
async def summarize_async(request: HttpRequest) -> JsonResponse:
    """The JSON API for ASGI servers: awaits the client on the server's loop."""
    try:
        job = parse(request.body)
    except InvalidRequestError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    start = time.perf_counter()
    one = llm.summarise_indexed(start, llm=llm.async_client())
    gate = asyncio.Semaphore(llm.concurrency_for(job.mode))

    async def bounded(item: tuple[int, str]) -> llm.Summary:
        async with gate:
            return await one(item)

    summaries = await asyncio.gather(*map(bounded, enumerate(job.documents)))
    elapsed = time.perf_counter() - start
    status = 502 if any(s.error for s in summaries) else 200
    return JsonResponse(result(job, list(summaries), elapsed), status=status)
