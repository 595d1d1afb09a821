"""``python -m bridge.bench.scale``: batch throughput with 1, 2 and 4 worker processes.

Each run is the real thing: ``python -m bridge worker --concurrency N`` (one Celery worker
with N prefork processes, fresh: its own queue, API key and Redis key prefix, so nothing
is learned before the run) and ``python -m bridge batch --broker``, timed from the driver's
start to its exit, the workers already up. Four scenarios, against the simulated server:

- **limited**: rpm 1200 with rate-limit headers; the throughput should track the limit
  (20 requests/s), not the number of processes;
- **unlimited**: no limits and a short latency; the throughput is bounded by the CPU, which
  the workers, the driver and the server share (2 cores on the project's machine);
- **kill**: 2 workers x 2 processes, rpm 1200, one worker SIGKILLed at about 40 %; the wall
  time against the 15 s that the limit allows for 300 requests;
- **limited, no headers**: 4 processes against rpm 1200 answering 429 + ``retry-after``
  only, so the cluster must find the rate from its 429s.

It prints a Markdown table and, with ``--docs`` (the default), writes it into
docs/scale-out.md between its markers, with the chart docs/bench/scale.png and the raw
figures in docs/bench/scale.json. It needs RabbitMQ, Redis and PostgreSQL (``--broker``,
``--store``, ``--journal``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge._integration import require
from bridge.batch._cli import input_batch_id
from bridge.testing import SimulatedServer, serve

__all__ = ["Run", "main"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
BEGIN, END = "<!-- bench.scale:begin -->", "<!-- bench.scale:end -->"
PROCESSES = (1, 2, 4)
#: The limited server's rate, and its latency per reply (seconds, plus or minus jitter).
RPM, LATENCY, JITTER = 1200, 0.2, 0.05
#: A hang guard for a worker's start and a batch, never a measurement.
GUARD = 600.0


@dataclass(frozen=True)
class Run:
    """One batch: what it sent, what the server answered, and how long it took."""

    scenario: str
    processes: int
    requests: int
    ok: int
    rate_limited: int
    wall: float

    @property
    def throughput(self) -> float:
        return self.ok / self.wall

    def row(self, limit: float | None) -> str:
        share = f"{self.rate_limited / (self.requests + self.rate_limited):.1%}"
        versus = f"{self.throughput / limit:.2f} x the limit" if limit else "no limit"
        return (
            f"| {self.scenario} | {self.processes} | {self.requests} | {self.ok} | "
            f"{self.rate_limited} ({share}) | {self.wall:.1f} s | {self.throughput:.1f}/s "
            f"| {versus} |"
        )


class Cluster:
    """Workers of the batch command's app on a queue of their own, against ``server``."""

    def __init__(self, args: argparse.Namespace, server: SimulatedServer, workdir: Path) -> None:
        self.args, self.server, self.workdir = args, server, workdir
        self.queue = f"bridge-bench-{uuid.uuid4().hex[:10]}"
        self.store = f"{args.store}?key_prefix=bench-scale-{uuid.uuid4().hex[:10]}:"
        self.env = {**os.environ, "OPENAI_BASE_URL": server.base_url,
                    "OPENAI_API_KEY": f"sk-bench-{uuid.uuid4().hex[:10]}"}  # fmt: skip
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, workers: int, processes: int) -> None:
        for n in range(workers):
            log = self.workdir / f"{self.queue}-{n}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                    [sys.executable, "-m", "bridge", "worker", "--broker", self.args.broker,
                     "--store", self.store, "--journal", self.args.journal, "--queue", self.queue,
                     "--concurrency", str(processes)],
                    env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            self.workers.append((process, log))
        for process, log in self.workers:
            _wait_ready(process, log)

    def batch(self, requests: Path, *, kill_at: float | None = None) -> float:
        """Run the driver to its end; its wall time. ``kill_at``: SIGKILL the first worker
        when that share of the requests has been answered."""
        output = requests.with_suffix(".out.jsonl")
        started = time.perf_counter()
        driver = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "bridge", "batch", str(requests), "-o", str(output),
             "--broker", self.args.broker, "--journal", self.args.journal,
             "--queue", self.queue, "--chunk-size", str(self.args.chunk_size)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        if kill_at is not None:
            total = len(requests.read_text().splitlines())
            while self.server.stats()["status_counts"].get("200", 0) < kill_at * total:
                time.sleep(0.02)
            os.killpg(self.workers[0][0].pid, signal.SIGKILL)
        _, err = driver.communicate(timeout=GUARD)
        wall = time.perf_counter() - started
        if driver.returncode != 0:
            raise RuntimeError(f"the batch failed: {err.decode(errors='replace')[-2000:]}")
        return wall

    def stop(self) -> None:
        for process, _ in self.workers:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process, _ in self.workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + GUARD
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"a worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def write_requests(path: Path, count: int) -> Path:
    tag = uuid.uuid4().hex  # a batch id of its own: it hashes the input
    with path.open("w") as out:
        for i in range(count):
            body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} {i}"}]}
            out.write(json.dumps({"custom_id": f"r{i}", "body": body}) + "\n")
    return path


def measure(
    args: argparse.Namespace,
    server: SimulatedServer,
    scenario: str,
    *,
    requests: int,
    workers: int,
    processes: int,
    kill_at: float | None = None,
) -> Run:
    server.reset()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(args, server, Path(tmp))
        lines = write_requests(Path(tmp) / "in.jsonl", requests)
        try:
            cluster.start(workers, processes)
            wall = cluster.batch(lines, kill_at=kill_at)
        finally:
            cluster.stop()
            _forget(args.journal, input_batch_id(lines))
    stats = server.stats()
    return Run(scenario, workers * processes, requests, stats["status_counts"].get("200", 0),
               stats["rate_limited"], wall)  # fmt: skip


def _forget(journal: str, batch_id: str) -> None:
    """Delete a run's batch from the journal: the figures are kept, not the rows."""
    import psycopg  # noqa: PLC0415 - the postgres extra

    with psycopg.connect(journal, autocommit=True) as db:
        for table in ("bridge_journal", "bridge_journal_meta", "bridge_journal_holders"):
            db.execute(f"DELETE FROM {table} WHERE batch_id = %s", (batch_id,))  # noqa: S608


def run_all(args: argparse.Namespace) -> list[Run]:
    runs = []
    with serve(rpm=RPM, latency=LATENCY, jitter=JITTER) as limited:
        for n in PROCESSES:
            runs.append(measure(args, limited, "limited", requests=args.limited_requests,
                                workers=1, processes=n))  # fmt: skip
            print(runs[-1].row(RPM / 60), flush=True)
        runs.append(measure(args, limited, "kill", requests=300, workers=2, processes=2,
                            kill_at=0.4))  # fmt: skip
        print(runs[-1].row(RPM / 60), flush=True)
    # A gateway's 429s only: the cluster finds the rate together (the shared discovery).
    with serve(rpm=RPM, latency=LATENCY, jitter=JITTER, rate_limit_headers=False) as bare:
        runs.append(measure(args, bare, "limited, no headers", requests=args.limited_requests,
                            workers=1, processes=max(PROCESSES)))  # fmt: skip
        print(runs[-1].row(RPM / 60), flush=True)
    with serve(latency=args.unlimited_latency) as unlimited:
        for n in PROCESSES:
            runs.append(measure(args, unlimited, "unlimited", requests=args.unlimited_requests,
                                workers=1, processes=n))  # fmt: skip
            print(runs[-1].row(None), flush=True)
    return runs


def table(runs: list[Run]) -> str:
    head = (
        "| scenario | worker processes | requests | 200s | 429s (share of attempts) | wall "
        "| throughput | against the limit |\n|---|---|---|---|---|---|---|---|"
    )
    rows = [run.row(None if run.scenario == "unlimited" else RPM / 60) for run in runs]
    return "\n".join([head, *rows])


def chart(runs: list[Run], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - the bench extra

    matplotlib.use("Agg")  # no display: the chart only goes to a file
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, scenario in zip(axes, ("limited", "unlimited"), strict=True):
        mine = [r for r in runs if r.scenario == scenario]
        ax.plot([r.processes for r in mine], [r.throughput for r in mine], "o-", label="bridge")
        if scenario == "limited":
            ax.axhline(RPM / 60, color="grey", linestyle="--", label=f"the limit (rpm {RPM})")
        ax.set_title(f"{scenario} server")
        ax.set_xlabel("worker processes")
        ax.set_ylabel("requests per second")
        ax.set_xticks(PROCESSES)
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(runs: list[Run], command: str) -> None:
    (DOCS / "bench").mkdir(exist_ok=True)
    chart(runs, DOCS / "bench" / "scale.png")
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    figures = {"command": command, "machine": machine, "runs": [asdict(r) for r in runs]}
    (DOCS / "bench" / "scale.json").write_text(json.dumps(figures, indent=2) + "\n")
    block = (
        f"{BEGIN}\nMeasured with `{command}` ({machine}, shared with other work):\n\n"
        f"{table(runs)}\n\n![throughput by worker processes](bench/scale.png)\n{END}"
    )
    page = DOCS / "scale-out.md"
    text = page.read_text()
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    page.write_text(before + block + after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.bench.scale", description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = parser.add_argument
    add("--broker", default="amqp://guest:guest@127.0.0.1:5672//", help="the Celery broker")
    add("--store", default="redis://127.0.0.1:6379/0", help="the Redis store (no query)")
    add("--journal", default="postgresql://postgres@127.0.0.1:5432/test", help="PostgreSQL")
    add("--chunk-size", type=int, default=20, help="lines per chunk task (default 20)")
    add("--limited-requests", type=int, default=400, help="requests per limited run (400)")
    add("--unlimited-requests", type=int, default=2000, help="requests per unlimited run")
    add("--unlimited-latency", type=float, default=0.05, help="unlimited server's latency")
    add("--no-docs", dest="docs", action="store_false", help="print only; write no docs")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    require("python -m bridge.bench.scale", "bench", "matplotlib", "aiohttp")
    require("python -m bridge.bench.scale", "celery", "celery", "psycopg")
    print(table([]))
    runs = run_all(args)
    if args.docs:
        write_docs(runs, " ".join(["python -m bridge.bench.scale", *given]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
