"""Time the JSON API under gunicorn: 20 documents concurrently (the bridge) vs sequentially.

    python flask_example/bench_api.py [--latency 0.3] [--documents 20] [--rounds 3]

Starts the simulated LLM server, then gunicorn with gthread workers (2 x 4 threads,
--preload) and with gevent workers (2), each on a free loopback port; warms every worker
up, then prints the server-side ``elapsed_s`` and the client's wall time per mode, best of
``--rounds``. Timing lives here, not in the tests: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bridge.testing import serve

HERE = Path(__file__).resolve().parent
WORKERS = {
    "gthread": "--worker-class gthread --workers 2 --threads 4 --preload",
    "gevent": "--worker-class gevent --workers 2 --worker-connections 100",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with serve(latency=args.latency) as llm, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "bench"}
        print(
            f"{args.documents} documents, simulated latency {args.latency} s, best of "
            f"{args.rounds}:"
        )
        for name, flags in WORKERS.items():
            port = free_port()
            command = [
                Path(sys.executable).parent / "gunicorn",
                *flags.split(),
                *f"--no-control-socket --bind 127.0.0.1:{port} app:app".split(),
            ]
            with open(Path(tmp) / f"{name}.log", "w") as log:
                server = subprocess.Popen(command, cwd=HERE, env=env, stderr=log)  # noqa: S603 - fixed arguments
            try:
                bench(name, f"http://127.0.0.1:{port}", args)
            finally:
                server.terminate()
                server.wait(15)


def bench(name: str, url: str, args: argparse.Namespace) -> None:
    wait_until_up(url)
    documents = [f"Document {i}: the quarterly report, part {i}." for i in range(args.documents)]
    with httpx.Client(base_url=url, timeout=120) as client:
        # Each worker's first call starts its loop and imports the SDK: keep that out.
        for i in range(8):
            client.post("/api/summarize", json={"documents": [f"warm-up {i}"]})
        for mode in ("bridge", "sequential"):
            runs = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                response = client.post(
                    "/api/summarize", json={"documents": documents, "mode": mode}
                )
                wall = time.perf_counter() - start
                response.raise_for_status()
                runs.append((response.json()["elapsed_s"], wall))
            view, wall = min(runs)
            label = "concurrently (bridge, 10)" if mode == "bridge" else "one at a time"
            print(f"  {name:<8} {label:<27} view {view:6.2f} s   client {wall:6.2f} s")


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.1)
        else:
            return
    raise SystemExit(f"gunicorn did not answer at {url}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
