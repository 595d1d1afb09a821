"""Time the JSON API under gunicorn: 20 documents concurrently (the bridge) vs sequentially.

    python django_example/bench_api.py [--latency 0.3] [--documents 20] [--rounds 3]

Starts the simulated LLM server and gunicorn (gthread, 4 workers x 4 threads, --preload)
on free loopback ports, warms every worker up, then prints the server-side ``elapsed_s``
and the client's wall time for each mode, best of ``--rounds``. Timing lives here, not in
the tests: the machine may be shared.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with serve(latency=args.latency) as llm, tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "bench",
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
            "DJANGO_DEBUG": "0",
        }
        python = Path(sys.executable)
        migrate = [python, "manage.py", "migrate", "-v0"]
        subprocess.run(migrate, cwd=HERE, env=env, check=True)  # noqa: S603 - fixed arguments
        port = free_port()
        flags = (
            "--worker-class gthread --workers 4 --threads 4 --preload --no-control-socket "
            f"--bind 127.0.0.1:{port} example.wsgi"
        )
        command = [python.parent / "gunicorn", *flags.split()]
        with open(Path(tmp) / "log", "w") as log:
            server = subprocess.Popen(command, cwd=HERE, env=env, stderr=log)  # noqa: S603 - fixed arguments
        try:
            bench(f"http://127.0.0.1:{port}", args)
        finally:
            server.terminate()
            server.wait(15)


def bench(url: str, args: argparse.Namespace) -> None:
    wait_until_up(url)
    documents = [f"Document {i}: the quarterly report, part {i}." for i in range(args.documents)]
    with httpx.Client(base_url=url, timeout=120) as client:
        # Each worker's first call starts its loop and imports the SDK: keep that out.
        for i in range(16):
            client.post("/api/summarize", json={"documents": [f"warm-up {i}"]})
        print(
            f"{args.documents} documents, simulated latency {args.latency} s, best of "
            f"{args.rounds}:"
        )
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
            print(f"  {label:<27} view {view:6.2f} s   client {wall:6.2f} s")


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
