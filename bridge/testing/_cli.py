"""``python -m bridge.testing``: run the simulated server, or measure its speed.

Every flag is checked by an argparse ``type=`` function, so a bad value gets a
usage message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import sys
from collections.abc import Callable, Sequence

from bridge import MissingExtraError
from bridge._integration import require

from ._config import DEFAULT_BURST_SECONDS, DEFAULT_HOST, DEFAULT_SLOW_FIRST_BYTE, ServerConfig
from ._ratelimit import TOKEN_ACCOUNTING

__all__ = ["main"]


def _number(check: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; {what}") from None
        if not (math.isfinite(value) and check(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; {what}")
        return value

    return parse


_seconds = _number(lambda v: v >= 0, "give seconds >= 0, e.g. 0.2")
_positive_seconds = _number(lambda v: v > 0, "give seconds > 0, e.g. 1.0")
_probability = _number(lambda v: 0 <= v <= 1, "give a probability from 0 to 1, e.g. 0.02")


def _integer(low: int, high: int | None, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; {what}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; {what}")
        return value

    return parse


_port = _integer(0, 65535, "give 0-65535 (0 picks a free port)")
_per_minute = _integer(1, None, "give a positive number per minute, e.g. 600")
_count = _integer(1, None, "give a positive integer")


def _error_rate(text: str) -> tuple[int, float]:
    status, sep, rate = text.partition("=")
    what = "write STATUS=PROBABILITY with a status of 400-599, e.g. 500=0.02"
    if not sep or not status.strip().isdigit() or not 400 <= int(status) <= 599:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid error rate; {what}")
    return int(status), _probability(rate)


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a header; write NAME=VALUE, e.g. x-ratelimit-limit-requests=0"
        )
    return name.strip(), value


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    add("--port", type=_port, default=0, help="port; 0 picks a free one (default)")
    add("--latency", type=_seconds, default=0.0, help="seconds before each reply")
    add("--jitter", type=_seconds, default=0.0, help="uniform +/- seconds on the latency")
    add("--chunk-delay", type=_seconds, default=0.0, help="seconds between streamed chunks")
    add("--rpm", type=_per_minute, help="requests per minute per API key (default: no limit)")
    add("--tpm", type=_per_minute, help="tokens per minute per API key (default: no limit)")
    add(
        "--burst-seconds",
        type=_positive_seconds,
        default=DEFAULT_BURST_SECONDS,
        help="bucket size in seconds of quota (default %(default)s)",
    )
    add("--itpm", type=_per_minute, help="input tokens per minute per key (Anthropic's ITPM)")
    add("--otpm", type=_per_minute, help="output tokens per minute per key (Anthropic's OTPM)")
    add(
        "--token-accounting",
        choices=TOKEN_ACCOUNTING,
        default="sum",
        help="what a request costs against --tpm: sum = prompt + max_tokens up front, no "
        "refund (Azure OpenAI); max = the larger of the two, no refund (OpenAI); usage = "
        "settled to the real usage (default %(default)s)",
    )
    add(
        "--no-rate-limit-headers",
        dest="rate_limit_headers",
        action="store_false",
        help="send no x-ratelimit-*/anthropic-ratelimit-* headers; 429s carry only "
        "retry-after in whole seconds, as many gateways do",
    )
    add(
        "--header-override",
        type=_header,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set this response header (e.g. a broken x-ratelimit-limit-requests=0); repeatable",
    )
    add(
        "--header-override-rate",
        type=_probability,
        default=1.0,
        metavar="P",
        help="share of API responses that get the --header-override values (default 1)",
    )
    add(
        "--error-rate",
        type=_error_rate,
        action="append",
        default=[],
        metavar="STATUS=P",
        help="answer STATUS with probability P; repeatable",
    )
    for kind, what in (
        ("reset", "reset the connection before replying"),
        ("hang", "never answer"),
        ("slow-first-byte", "wait --slow-first-byte more seconds"),
        ("stream-cut", "close a stream half-way"),
        ("stream-stall", "stop a stream half-way, connection open"),
    ):
        add(
            f"--{kind}-rate",
            type=_probability,
            default=0.0,
            metavar="P",
            help=f"probability to {what}",
        )
    add(
        "--slow-first-byte",
        type=_seconds,
        default=DEFAULT_SLOW_FIRST_BYTE,
        help="extra seconds for the slow-first-byte fault (default %(default)s)",
    )
    add("--seed", type=int, default=0, help="seed of the fault RNG (default 0)")
    add("--watch-stdin", action="store_true", help=argparse.SUPPRESS)


def _loadgen_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--url", help="base URL of a running server; default: start one with serve()")
    add("--requests", type=_count, default=20_000, help="requests in total (default %(default)s)")
    add("--concurrency", type=_count, default=64, help="connections per process (default 64)")
    add("--processes", type=_count, default=1, help="load generator processes (default 1)")
    add("--endpoint", choices=("chat", "messages", "embeddings"), default="chat")
    add(
        "--time-limit",
        type=_positive_seconds,
        default=120.0,
        help="stop after this many seconds even if requests are left (default 120)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.testing",
        description="A simulated OpenAI- and Anthropic-compatible LLM server for tests.",
        allow_abbrev=False,  # a mistyped flag is refused, never guessed
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_flags(
        commands.add_parser("serve", help="run the server; prints its base URL", allow_abbrev=False)
    )
    _loadgen_flags(
        commands.add_parser("loadgen", help="measure non-streaming requests/s", allow_abbrev=False)
    )
    return parser


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerConfig:
    try:
        return ServerConfig(
            host=args.host,
            port=args.port,
            latency=args.latency,
            jitter=args.jitter,
            chunk_delay=args.chunk_delay,
            rpm=args.rpm,
            tpm=args.tpm,
            burst_seconds=args.burst_seconds,
            itpm=args.itpm,
            otpm=args.otpm,
            token_accounting=args.token_accounting,
            rate_limit_headers=args.rate_limit_headers,
            header_overrides=dict(args.header_override),
            header_override_rate=args.header_override_rate,
            error_rates=dict(args.error_rate),
            reset_rate=args.reset_rate,
            hang_rate=args.hang_rate,
            slow_first_byte_rate=args.slow_first_byte_rate,
            slow_first_byte=args.slow_first_byte,
            stream_cut_rate=args.stream_cut_rate,
            stream_stall_rate=args.stream_stall_rate,
            seed=args.seed,
        )
    except ValueError as exc:  # checks across flags, e.g. probabilities adding up past 1
        parser.error(str(exc))


def _serve(config: ServerConfig, watch_stdin: bool) -> int:
    from ._server import run  # noqa: PLC0415 -- aiohttp loads only when serving

    def ready(url: str) -> None:
        print(url, flush=True)

    try:
        run(config, ready, watch_stdin=watch_stdin)
    except OSError as exc:
        hint = (
            "it is already in use: pick another --port, or --port 0 for a free one"
            if exc.errno == errno.EADDRINUSE
            else str(exc)
        )
        print(f"error: cannot listen on {config.host}:{config.port}: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        require("python -m bridge.testing", "testing", "aiohttp")
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "serve":
        return _serve(_config(args, parser), args.watch_stdin)
    from ._loadgen import run_loadgen  # noqa: PLC0415 -- aiohttp loads only when used

    return run_loadgen(
        url=args.url,
        requests=args.requests,
        concurrency=args.concurrency,
        processes=args.processes,
        endpoint=args.endpoint,
        time_limit=args.time_limit,
    )
