"""``python -m bridge batch requests.jsonl -o results.jsonl``: a resumable JSONL runner.

Each input line is a provider Batch API request (``custom_id``, ``method``, ``url``,
``body``) or a bare request body. Every line gets one output line, with the response or
the error. Outcomes go to a journal next to the output, so a rerun sends only what is
missing; the output file is rewritten from the journal each run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import bridge

__all__ = ["main"]

DEFAULT_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class Request:
    """One input line: what to send, or why it cannot be sent."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any] | None
    error: str | None = None


def parse_line(number: int, text: str) -> Request:
    """The request on input line ``number``; a malformed line becomes a Request with error."""
    fallback = f"line-{number}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Request(number, fallback, DEFAULT_URL, None, f"line {number}: invalid JSON: {exc}")
    if not isinstance(data, dict):
        return Request(number, fallback, DEFAULT_URL, None, f"line {number}: not a JSON object")
    if "body" not in data:  # a bare request body, as the cookbook processor takes
        return Request(number, fallback, DEFAULT_URL, data)
    body, method = data["body"], str(data.get("method", "POST")).upper()
    custom_id = str(data.get("custom_id", fallback))
    if not isinstance(body, dict) or method != "POST":
        why = "body is not a JSON object" if method == "POST" else f"method {method} (not POST)"
        return Request(number, custom_id, DEFAULT_URL, None, f"line {number}: {why}")
    return Request(number, custom_id, str(data.get("url", DEFAULT_URL)), body)


def read_requests(path: Path) -> Iterator[Request]:
    """Every non-blank line of ``path``, parsed."""
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if text.strip():
                yield parse_line(number, text)


def request_key(request: Request) -> str:
    """The journal key: the line number and its content, so an edited line is sent again."""
    content = json.dumps([request.custom_id, request.url, request.body], sort_keys=True)
    return f"{request.line}:{bridge_key(content)}"


def bridge_key(text: str) -> str:
    from bridge._journal import default_key  # noqa: PLC0415 - private helper, same package

    return default_key(text)


class Sender:
    """POSTs one request through a client under admission control; never raises for HTTP."""

    def __init__(self, client: Any, base_url: str) -> None:
        self._client = client
        self._base = base_url.rstrip("/")

    async def __call__(self, request: Request) -> dict[str, Any]:
        if request.error is not None:
            return _line(request, None, {"code": "invalid_request", "message": request.error})
        try:
            response = await self._client.post(self._url(request.url), json=request.body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes that line's error
            return _line(request, None, {"code": type(exc).__name__, "message": str(exc)})
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return _line(request, {"status_code": response.status_code, "body": body}, None)

    def _url(self, path: str) -> str:
        # Batch files name "/v1/chat/completions"; base URLs usually end in /v1 already.
        if self._base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        return self._base + path


def _line(request: Request, response: Any, error: Any) -> dict[str, Any]:
    return {"custom_id": request.custom_id, "response": response, "error": error}


@dataclass
class Summary:
    """Usage and failures over the output lines."""

    requests: int = 0
    failures: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, line: dict[str, Any]) -> None:
        self.requests += 1
        response = line["response"] or {}
        if line["error"] is not None or response.get("status_code", 0) >= 400:
            self.failures += 1
        body = response.get("body")
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict):
            self.tokens_in += int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
            self.tokens_out += int(
                usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
            )

    def report(self, price_in: float | None, price_out: float | None, out: TextIO) -> None:
        rate_limited = sum(s.rate_limited for s in bridge.stats().values())
        print(
            f"{self.requests} lines, {self.failures} failed, {rate_limited} 429s this run; "
            f"tokens in {self.tokens_in:,}, out {self.tokens_out:,}",
            file=out,
        )
        if price_in is not None and price_out is not None:
            cost = (self.tokens_in * price_in + self.tokens_out * price_out) / 1_000_000
            print(f"estimated cost: {cost:.4f} (at the prices you gave per 1M tokens)", file=out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge batch", description=__doc__, allow_abbrev=False
    )
    parser.add_argument("input", type=Path, help="requests, one JSON object per line")
    parser.add_argument("-o", "--output", type=Path, required=True, help="results JSONL")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    parser.add_argument("--completion-order", action="store_true", help="stream as finished")
    parser.add_argument(
        "--no-resume", dest="resume", action="store_false", help="ignore an existing journal"
    )
    parser.add_argument("--price-in", type=float, default=None, help="price per 1M input tokens")
    parser.add_argument("--price-out", type=float, default=None, help="per 1M output tokens")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.input.is_file():
        print(f"error: input file {args.input} does not exist", file=sys.stderr)
        return 2
    if not args.base_url:
        print("error: pass --base-url or set OPENAI_BASE_URL", file=sys.stderr)
        return 2
    journal = Path(f"{args.output}.journal.sqlite")
    try:
        # Opened before anything is sent: an unwritable path costs no requests.
        out = args.output.open("w", encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write the output {args.output}: {exc}", file=sys.stderr)
        return 2
    if not args.resume:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{journal}{suffix}").unlink(missing_ok=True)
    with out:
        return _run(args, journal, out)


def _run(args: argparse.Namespace, journal: Path, out: TextIO) -> int:
    limits = bridge.Limits(concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    client = bridge.http_client(limits=limits, headers=headers)
    summary = Summary()
    results = bridge.imap(
        Sender(client, args.base_url),
        read_requests(args.input),
        concurrency=args.concurrency,
        ordered=not args.completion_order,
        journal=journal,
        key=request_key,
    )
    try:
        for line in results:
            out.write(json.dumps(line) + "\n")
            summary.add(line)
            if line["error"] is not None and line["error"]["code"] == "invalid_request":
                print(f"skipped: {line['error']['message']}", file=sys.stderr)
    except KeyboardInterrupt:
        out.flush()
        print(
            f"interrupted: {summary.requests} lines written; rerun to resume from {journal}",
            file=sys.stderr,
        )
        return 130
    summary.report(args.price_in, args.price_out, sys.stderr)
    return 1 if summary.failures else 0
