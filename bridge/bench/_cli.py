"""``python -m bridge bench``: the side-by-side benchmark, its table, JSON and chart."""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._approaches import Endpoint
from ._scenarios import SCENARIOS, Mode, headline

__all__ = ["main"]

EXIT_USAGE = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bridge bench",
        description="Compare the bridge with sequential code, threads, asyncio.run, asgiref "
        "and anyio on the same LLM workload, side by side, on an embedded simulated server.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, under 30 s (smoke test)")
    size.add_argument("--full", action="store_true", help="the 4 s latency of the headline claim")
    parser.add_argument(
        "--scenario",
        type=_scenarios,
        default=list(SCENARIOS),
        help="comma-separated scenarios to run, from a,b,c,d,e,f (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="directory for results.json and bench.png (default ./bench-results)",
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="run a small N against this OpenAI-compatible server instead "
        "(default: $OPENAI_BASE_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="API key for --base-url (default: $OPENAI_API_KEY)",
    )
    parser.add_argument("--model", default="gpt-4o-mini", help="model for --base-url runs")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port for the embedded simulated server (default: a free one)",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip bench.png")
    args = parser.parse_args(argv)
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key (or OPENAI_API_KEY)")
    if args.base_url and args.scenario != list(SCENARIOS):
        parser.error("--scenario is for the simulated server; --base-url runs scenario (a) only")
    return args


def _scenarios(text: str) -> list[str]:
    keys = [key.strip().lower() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SCENARIOS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or text!r}; choose from a,b,c,d,e,f"
        )
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 on success, 2 for bad input (a flag, --out, --base-url, a port)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    try:
        _check_out(args.out)
        if args.base_url:
            _check_reachable(args.base_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    mode = Mode(
        "quick" if args.quick else "full" if args.full else "default",
        quick=args.quick,
        full=args.full,
        port=args.port,
    )
    try:
        results = _run(args, mode)
    except _StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _save(results, args)


class _StartError(Exception):
    """The embedded server could not start."""


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create --out {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {out} is not writable; pass another directory")


def _check_reachable(base_url: str) -> None:
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"--base-url must look like https://host/v1, got {base_url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as exc:
        raise ValueError(
            f"cannot reach {parts.scheme}://{parts.hostname}:{port} ({exc}); "
            "check --base-url, or leave it out to use the embedded simulated server"
        ) from None


def _run(args: argparse.Namespace, mode: Mode) -> dict[str, Any]:
    from rich.progress import Progress  # noqa: PLC0415 - the bench extra

    from bridge.testing import ServerStartError  # noqa: PLC0415

    results: dict[str, Any] = {"meta": _meta(args, mode)}
    with Progress(transient=False) as progress:
        if args.base_url:
            print(f"Running a small workload against {args.base_url} (not the simulated server).")
            endpoint = Endpoint(args.base_url, args.api_key, args.model, simulated=False)
            task = progress.add_task("(a) real endpoint", total=6)
            step = _stepper(progress, task, "a")
            results["a"] = headline(Mode("quick", quick=True), step, endpoint)
            return results
        total = sum(SCENARIOS[key].steps(mode) for key in args.scenario)
        task = progress.add_task("bench", total=total)
        started = time.perf_counter()
        for key in args.scenario:
            began = time.perf_counter()
            try:
                results[key] = SCENARIOS[key].run(mode, _stepper(progress, task, key))
            except ServerStartError as exc:
                raise _StartError(f"the simulated server did not start: {exc}") from None
            results[key]["elapsed_s"] = round(time.perf_counter() - began, 1)
        results["meta"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    return results


def _stepper(progress: Any, task: Any, key: str) -> Callable[[str], None]:
    started = [False]

    def step(name: str) -> None:
        if started[0]:
            progress.advance(task)
        started[0] = True
        progress.update(task, description=f"({key}) {name}")

    return step


def _meta(args: argparse.Namespace, mode: Mode) -> dict[str, Any]:
    return {
        "title": "llm-sync-bridge: side-by-side benchmark"
        + (f" ({mode.name} run)" if mode.name != "default" else ""),
        "mode": mode.name,
        "target": "real endpoint" if args.base_url else "embedded simulated server",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(["python -m bridge bench", *_redacted(args.argv)]),
    }


def _redacted(argv: list[str]) -> list[str]:
    """The command line with the API key replaced, so results.json never holds it."""
    shown = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append("***")
        elif arg.startswith("--api-key="):
            shown.append("--api-key=***")
        else:
            shown.append(arg)
        hide_next = arg == "--api-key"
    return shown


def _save(results: dict[str, Any], args: argparse.Namespace) -> int:
    from ._report import draw_chart, print_tables, write_json  # noqa: PLC0415

    print_tables(results)
    path = write_json(results, args.out)
    print(f"wrote {path}")
    if not args.no_chart:
        print(f"wrote {draw_chart(results, args.out)}")
    return 0
