"""The page, the JSON API and its streaming twin: plain sync views on the bridge."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, stream_with_context

from . import llm
from .samples import SAMPLES
from .validation import InvalidRequestError, SummarizeRequest, parse_request

blueprint = Blueprint("summaries", __name__)


@blueprint.get("/")
def index() -> str:
    return render_template(
        "index.html",
        samples=SAMPLES,
        concurrency=current_app.config["SUMMARIZE_CONCURRENCY"],
        max_documents=current_app.config["SUMMARIZE_MAX_DOCUMENTS"],
    )


@blueprint.errorhandler(InvalidRequestError)
def bad_request(exc: InvalidRequestError) -> tuple[dict[str, str], int]:
    return {"error": str(exc)}, exc.status


@blueprint.post("/api/summarize")
def summarize() -> tuple[dict[str, Any], int]:
    """Summaries in input order; 4xx for bad input, 502 if any upstream call failed, 503
    with Retry-After if the LLM cannot answer within the request deadline."""
    job = parse_request(request)
    start = time.perf_counter()
    summaries = llm.summarise_all(job.documents, job.mode, start)
    body = result(job, summaries, time.perf_counter() - start)
    return body, 502 if "error" in body else 200


def result(job: SummarizeRequest, summaries: list[llm.Summary], elapsed: float) -> dict[str, Any]:
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


@blueprint.post("/api/summarize/stream")
def summarize_stream() -> Response:
    """NDJSON: one line per summary as it finishes, then a line with the totals."""
    job = parse_request(request)
    llm.client()  # made on the request's thread before the calls start (if not yet made)
    return Response(stream_with_context(ndjson(job)), mimetype="application/x-ndjson")


def ndjson(job: SummarizeRequest) -> Iterator[str]:
    start = time.perf_counter()
    summaries = []
    # imap yields in finishing order; closing it (client gone) cancels the calls in flight.
    results = current_app.extensions["bridge"].imap(
        llm.summarise_indexed(start),
        enumerate(job.documents),
        concurrency=llm.concurrency_for(job.mode),
        ordered=False,
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
