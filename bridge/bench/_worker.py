"""One approach of scenario (c) in a process of its own, so its peak RSS is its own.

``python -m bridge.bench._worker APPROACH BASE_URL CALLS CONCURRENCY`` prints one JSON line.
The API key comes from ``BRIDGE_BENCH_API_KEY``, never from the command line.
"""

from __future__ import annotations

import json
import os
import resource
import sys

from ._approaches import Endpoint, make_prompts, run_approach


def _preload() -> None:
    """Import the client stacks up front, so no approach's wall pays for imports.

    No warm-up call: at 1 s latency it would cost each approach a second, and every
    approach here starts just as cold.
    """
    import aiohttp  # noqa: F401, PLC0415
    import httpx2  # noqa: F401, PLC0415
    import openai  # noqa: F401, PLC0415


def main(argv: list[str]) -> int:
    name, base_url, calls, concurrency = argv
    endpoint = Endpoint(base_url, os.environ.get("BRIDGE_BENCH_API_KEY", "bench-key"))
    _preload()
    prompts = make_prompts(int(calls))
    result = run_approach(name, endpoint, prompts, int(concurrency), warm_up=False).as_dict()
    # ru_maxrss is in KiB on Linux: the process's peak resident set, imports included.
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
