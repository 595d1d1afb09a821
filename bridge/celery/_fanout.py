"""Fan a list out over a Celery cluster: chunk tasks that record into a PostgreSQL journal.

The caller (the *driver*) splits the items into chunks by position (chunk ``n`` holds items
``n*size`` to ``(n+1)*size - 1``), leaves out the items the journal already holds, and
sends one ``bridge.celery.chunk`` task per chunk that has work left. Each task runs its
items on its worker's bridge through the same journaled iterator as ``map(journal=...)``:
an item already recorded is not run again, and each outcome is committed as it completes.

Delivery is at least once: the task is acknowledged late and rejected back to the queue
if its worker dies, so a killed worker's chunk runs again elsewhere and re-sends only its
unrecorded items. A chunk's advisory lock keeps a duplicate delivery from running beside
the first. The driver waits for the tasks through the app's result backend, counts
progress from the journal, and reads the results from it in input order.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import socket
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import bridge
from bridge._integration import (
    DEFAULT_KEY_SCHEME,
    Entry,
    JournalIterator,
    PostgresStore,
    Progress,
    Status,
    default_key,
    dumps,
    imap_start,
    is_postgres_url,
    loads,
    open_store,
    qualified_name,
    redacted_url,
    require,
    wanted,
)

from ._config import config_of, settings

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

__all__ = ["CHUNK_TASK", "DEFAULT_CHUNK_SIZE", "Batch", "fanout", "map", "register", "submit"]

F = TypeVar("F", bound=Callable[..., Any])

#: The name of the chunk task that ``init_app`` registers on the app.
CHUNK_TASK: Final = "bridge.celery.chunk"
#: Items per chunk task when none is named.
DEFAULT_CHUNK_SIZE: Final = 100
#: Seconds between two looks at the journal's counts while waiting.
POLL_SECONDS: Final = 0.5
#: The attribute :func:`fanout` sets: the workers run only functions that carry it.
_MARK: Final = "__bridge_fanout__"


def fanout(fn: F) -> F:
    """Mark ``fn`` as a function that :func:`bridge.celery.map` may run on the workers.

    A chunk task names its function by import path, and the workers run only functions
    carrying this mark, from modules they have already imported (their task modules):
    anyone who can publish to the broker can still only call what you marked, as with
    Celery's own tasks. ``fn`` is returned unchanged.
    """
    setattr(fn, _MARK, True)
    return fn


# -- the worker's side ------------------------------------------------------------------

_registered: weakref.WeakSet[Celery] = weakref.WeakSet()


def register(app: Celery) -> None:
    """Register the chunk task on ``app``: acknowledged late, requeued if its worker dies,
    and retried with backoff while the journal's database is unreachable."""
    if app in _registered:
        return
    _registered.add(app)
    # Not shared (with apps made later) and lazy: the app is not finalized here.
    app.task(name=CHUNK_TASK, shared=False, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(bridge.JournalUnavailableError,), max_retries=8,
             retry_backoff=2, retry_backoff_max=60)(run_chunk)  # fmt: skip


def run_chunk(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one chunk's items into the journal; what it did, for the driver's summary."""
    fn, judge = _marked(spec["fn"]), spec.get("judge")
    judged = _marked(judge) if judge else _ok
    store = PostgresStore(
        _worker_journal(settings().journal, spec["journal"]),
        batch=spec["batch"],
        role="chunk",
        chunk=spec["chunk"],
    )
    open_store(store, spec["config"])
    start = imap_start(bridge.get_default(), concurrency=spec["concurrency"], ordered=False)
    with bridge.priority("batch"):  # imap copies the context: a fan-out is batch work
        results = JournalIterator(
            start,
            _invoker(fn),
            iter(spec["items"]),
            store=store,
            key=_first,
            retry_failed=spec["retry_failed"],
            return_exceptions=True,
            judge=judged,
        )
    try:
        for _ in results:
            pass
    finally:
        results.close()
    counts = results.counts
    limited, retries = _traffic_since_reported()
    return {"chunk": spec["chunk"], "run": counts.run, "rerun": counts.rerun,
            "replayed": counts.replayed, "rate_limited": limited, "retries": retries,
            "worker": f"pid {os.getpid()} on {socket.gethostname()}"}  # fmt: skip


def _worker_journal(mine: str | None, drivers: str) -> str:
    if mine is None:
        raise RuntimeError(
            "this worker has no journal to record the chunk in: set bridge_journal in its "
            "Celery config (or pass journal= to bridge.celery.init_app), the same "
            "PostgreSQL database as the caller's"
        )
    if redacted_url(mine) != drivers:
        raise RuntimeError(
            f"the caller records this batch in {drivers}, but this worker's bridge_journal "
            f"is {redacted_url(mine)}: give the workers and the caller the same journal"
        )
    return mine


def _invoker(fn: Callable[[Any], Any]) -> Callable[[list[Any]], Any]:
    """``[key, item as journal JSON]`` to the awaitable of ``fn(item)``."""
    if inspect.iscoroutinefunction(fn):

        async def call_async(pair: list[Any]) -> Any:
            return await fn(loads(pair[1], trusted=False))

        return call_async

    async def call_sync(pair: list[Any]) -> Any:
        return await bridge.get_default().to_thread(fn, loads(pair[1], trusted=False))

    return call_sync


def _first(pair: list[Any]) -> str:
    return str(pair[0])


def _ok(value: object) -> Status:
    return "ok"


_reported_lock = threading.Lock()
_reported: dict[str, int] = {}


def _traffic_since_reported() -> tuple[int, int]:
    """429s and retries this process saw since a chunk last reported them.

    Chunks that overlap in one process (threads, gevent) each report a share, and the
    shares add up to the process's total: nothing is counted twice.
    """
    stats = bridge.stats().values()
    now = {"pid": os.getpid(), "limited": sum(s.rate_limited for s in stats),
           "retries": sum(s.retries for s in stats)}  # fmt: skip
    with _reported_lock:
        before = _reported if _reported.get("pid") == now["pid"] else {}
        _reported.clear()
        _reported.update(now)
    return now["limited"] - before.get("limited", 0), now["retries"] - before.get("retries", 0)


# -- the driver's side --------------------------------------------------------------------


@dataclass
class Batch:
    """A fan-out whose chunk tasks are queued: wait for it, watch it, read its results.

    ``done()`` counts the items with an outcome, from the journal, so it covers every
    worker of the cluster; ``wait()`` blocks until every chunk task has finished, and
    ``results()`` reads the outcomes in input order.
    """

    batch_id: str
    total: int
    #: Items that had no final outcome in the journal when the batch was submitted.
    pending: int
    #: Of ``pending``: items whose recorded outcome was a failure, to be attempted again.
    again: int
    chunks: int
    _store: PostgresStore = field(repr=False)
    _todo: set[int] = field(repr=False)
    _keys: list[str] = field(repr=False)
    _tasks: list[tuple[int, AsyncResult[Any]]] = field(repr=False)
    _since: float = field(repr=False)
    #: What each finished chunk task reported (or the error it failed with), by chunk.
    reports: dict[int, dict[str, Any] | BaseException] = field(default_factory=dict, repr=False)

    def was_pending(self, index: int) -> bool:
        """True if item ``index`` was sent to the workers by this submission."""
        return index in self._todo

    def done(self) -> int:
        """Items with an outcome now: those recorded before, plus those recorded since."""
        return min(self.total, self.total - self.pending + self._store.recorded_since(self._since))

    def wait(
        self,
        timeout: float | None = None,
        *,
        progress: Progress = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Block until every chunk task has finished (or failed).

        ``progress=True`` draws one bar for the whole cluster on a terminal (``"force"``:
        always), from the journal's counts; ``on_progress(done, total)`` is called with the
        same counts every half second or so, and once at the end.

        Raises:
            TimeoutError: not finished within ``timeout`` seconds; the chunks go on.
        """
        with _Bar(self, progress, on_progress) as tick:
            outcomes = self._join(timeout, tick) if self._tasks else []
            tick()
        for (number, _), outcome in zip(self._tasks, outcomes, strict=True):
            self.reports[number] = outcome

    def _join(self, timeout: float | None, tick: Callable[[], None]) -> list[Any]:
        from celery.exceptions import TimeoutError as CeleryTimeout  # noqa: PLC0415 - optional
        from celery.result import ResultSet  # noqa: PLC0415

        tasks = ResultSet([task for _, task in self._tasks])
        join = tasks.join_native if tasks.supports_native_join else tasks.join
        try:
            return list(join(timeout=timeout, propagate=False, on_interval=tick,
                             interval=POLL_SECONDS))  # fmt: skip
        except CeleryTimeout:
            raise TimeoutError(
                f"batch {self.batch_id} did not finish within {timeout} s; its chunks go on "
                "in the workers: wait again, or run it again later to resume"
            ) from None

    def failures(self) -> dict[int, BaseException]:
        """The chunk tasks that failed, by chunk number (their items stay unrecorded)."""
        return {n: r for n, r in self.reports.items() if isinstance(r, BaseException)}

    def entries(self) -> Iterator[Entry | None]:
        """Each item's latest journal entry, in input order (None: no outcome yet)."""
        for start in range(0, len(self._keys), 1000):
            keys = self._keys[start : start + 1000]
            found = self._store.lookup_many(keys)
            yield from (found.get(key) for key in keys)

    def results(self, *, return_exceptions: bool = False) -> list[Any]:
        """The outcomes in input order; failures raise (or are returned, as asked).

        A recorded failure comes back as ``bridge.RecordedError``; an item with no outcome
        (its chunk failed) as a ``RuntimeError`` saying to run the batch again.
        """
        values = []
        for index, entry in enumerate(self.entries()):
            value = _value(entry, self.batch_id, index)
            if isinstance(value, BaseException) and not return_exceptions:
                raise value
            values.append(value)
        return values

    def close(self) -> None:
        """Release the batch (its driver lock); the chunk tasks already queued still run."""
        self._store.close()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submit(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    app: Celery | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    journal: str | None = None,
    batch_id: str | None = None,
    key: Callable[[Any], str] | None = None,
    retry_failed: bool = False,
    concurrency: int | None = None,
    queue: str | None = None,
) -> Batch:
    """Send ``fn`` over ``items`` to ``app``'s workers, in chunk tasks; return at once.

    ``fn`` must be importable by the workers (a module-level ``def`` or ``async def``).
    Items travel as journal JSON (JSON data, tuples, sets, bytes, enums, pydantic models)
    and come back as the same types. The journal (``journal=``, default the app's
    ``bridge_journal``) records every outcome, so calling again with the same items (and
    ``batch_id``, by default a hash of ``fn``'s name and the items' keys) resumes.
    Close the returned :class:`Batch` (or use it in a ``with``) when done with it.

    Raises:
        ValueError: no journal, or a bad ``chunk_size``.
        TypeError: ``fn`` is not importable, or an item cannot travel as journal JSON.
        bridge.JournalLockedError: another caller is driving this batch.
    """
    return _submit(fn, items, app=app, chunk_size=chunk_size, journal=journal,
                   batch_id=batch_id, key=key, retry_failed=retry_failed,
                   concurrency=concurrency, queue=queue)  # fmt: skip


def map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    app: Celery | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    journal: str | None = None,
    batch_id: str | None = None,
    key: Callable[[Any], str] | None = None,
    retry_failed: bool = False,
    concurrency: int | None = None,
    queue: str | None = None,
    timeout: float | None = None,
    progress: Progress = False,
    return_exceptions: bool = False,
) -> list[Any]:
    """``fn`` on every item, over the Celery cluster; results in input order.

    :func:`submit`, then :meth:`Batch.wait` and :meth:`Batch.results`. Interrupted or timed
    out, the chunks go on in the workers and a new call resumes from the journal.
    """
    batch = _submit(fn, items, app=app, chunk_size=chunk_size, journal=journal,
                    batch_id=batch_id, key=key, retry_failed=retry_failed,
                    concurrency=concurrency, queue=queue)  # fmt: skip
    with batch:
        batch.wait(timeout, progress=progress)
        return batch.results(return_exceptions=return_exceptions)


def _submit(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    app: Celery | None,
    chunk_size: int,
    journal: str | None,
    batch_id: str | None,
    key: Callable[[Any], str] | None,
    retry_failed: bool,
    concurrency: int | None,
    queue: str | None,
    judge: Callable[[Any], Status] | None = None,
    config: dict[str, str] | None = None,
    fresh: bool = False,
) -> Batch:
    """:func:`submit`, with the batch command's extras: a judge, its config, a fresh start."""
    app = _app(app)
    url = _journal(app, journal)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number of at least 1, got {chunk_size!r}")
    path, judge_path = _importable(fn, "fn"), judge and _importable(judge, "judge")
    pairs = _encode(list(items), key or default_key)
    keys = [k for k, _ in pairs]
    config = config or {"function": qualified_name(fn),
                        "key_scheme": DEFAULT_KEY_SCHEME if key is None
                        else f"key:{qualified_name(key)}"}  # fmt: skip
    store = PostgresStore(url, batch=batch_id or _batch_id(config, keys), role="driver")
    open_store(store, config, fresh=fresh)
    try:
        todo, again = _pending(store, keys, retry_failed)
        since = store.server_time()
        spec = {"fn": path, "judge": judge_path, "journal": store.database,
                "batch": store.batch, "config": config, "retry_failed": retry_failed,
                "concurrency": concurrency}  # fmt: skip
        tasks = _send(app, spec, pairs, todo, chunk_size=chunk_size, queue=queue)
    except BaseException:
        store.close()
        raise
    return Batch(batch_id=store.batch, total=len(keys), pending=len(todo), again=again,
                 chunks=len(tasks), _store=store, _todo=todo, _keys=keys, _tasks=tasks,
                 _since=since)  # fmt: skip


def _app(app: Celery | None) -> Celery:
    from celery import current_app  # noqa: PLC0415 - celery is optional

    found: Celery = app or cast(Any, current_app)._get_current_object()
    if found.backend.__class__.__name__ == "DisabledBackend":
        raise ValueError(
            f"bridge.celery.map waits for its chunk tasks through the result backend, and "
            f"the Celery app {found.main!r} has none: set result_backend (for example "
            "'rpc://', which needs nothing more than the broker)"
        )
    return found


def _journal(app: Celery, journal: str | None) -> str:
    config = config_of(app)
    url = journal or (config.journal if config is not None else None)
    if not is_postgres_url(url):
        raise ValueError(
            "bridge.celery.map records every outcome in a PostgreSQL journal that the workers "
            "share: pass journal='postgresql://...' or set bridge_journal in the app's config"
        )
    assert url is not None  # is_postgres_url checked it
    return url


def _importable(fn: Callable[..., Any], what: str) -> str:
    """``fn``'s import path, once it is sure the workers can find it and may run it."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    try:
        found = _resolve(importlib.import_module(str(module)), name)
    except (ImportError, AttributeError, ValueError):
        found = None
    if found is not fn or module == "__main__":
        raise TypeError(
            f"{what}={fn!r} must be importable by the workers, as module:name: define it at "
            "the top level of a module the workers import, such as your tasks module (not "
            "in __main__, a class body or another function, and not a lambda)"
        )
    if not getattr(fn, _MARK, False):
        raise TypeError(
            f"{what}={fn!r} is not marked for the workers: decorate it with "
            "@bridge.celery.fanout (they run only functions marked so)"
        )
    return f"{module}:{name}"


def _marked(path: str) -> Callable[..., Any]:
    """On a worker: the function a chunk names, if this worker may run it.

    A chunk comes from the broker: its path is untrusted. Nothing is imported for it (an
    import runs a module's code), nothing but a function marked by :func:`fanout` and
    defined in the module the path names is returned.
    """
    module_name, _, qualname = str(path).partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        raise RuntimeError(
            f"this worker has not imported {module_name}, where the batch's function "
            f"{path} lives: define the function in a task module, or list the module in "
            "the app's imports (app.conf.imports), so the workers load it at start"
        )
    found = _resolve(module, qualname)
    if not getattr(found, _MARK, False) or getattr(found, "__module__", None) != module_name:
        raise RuntimeError(
            f"refused to run {path}: a chunk may only name a function of its module marked "
            "with @bridge.celery.fanout"
        )
    return cast(Callable[..., Any], found)


def _resolve(module: Any, qualname: str) -> Any:
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def _encode(items: Sequence[Any], key: Callable[[Any], str]) -> list[tuple[str, str]]:
    pairs = []
    for index, item in enumerate(items):
        item_key = key(item)
        if not isinstance(item_key, str):
            raise TypeError(f"key= must return a str, got {type(item_key).__name__} for {item!r}")
        try:
            pairs.append((item_key, dumps(item)))
        except TypeError as exc:
            raise TypeError(
                f"item {index} cannot travel to the workers: items are sent as journal JSON "
                f"(JSON data, tuples, sets, bytes, enums, pydantic models). {exc}"
            ) from None
    return pairs


def _batch_id(config: dict[str, str], keys: list[str]) -> str:
    digest = hashlib.sha256(config["function"].encode())
    for item_key in keys:
        digest.update(b"\n" + item_key.encode())
    return f"map-{digest.hexdigest()[:32]}"


def _pending(store: PostgresStore, keys: list[str], retry_failed: bool) -> tuple[set[int], int]:
    """Positions of the items to run (no outcome yet, or a failure to attempt again), and
    how many of them failed before."""
    found = store.lookup_many(keys)
    retried = {"retryable", "final"} if retry_failed else {"retryable"}
    todo, again = set(), 0
    for index, item_key in enumerate(keys):
        entry = found.get(item_key)
        if entry is None or entry.status in retried:
            todo.add(index)
            again += entry is not None
    return todo, again


def _send(
    app: Celery,
    spec: dict[str, Any],
    pairs: list[tuple[str, str]],
    todo: set[int],
    *,
    chunk_size: int,
    queue: str | None,
) -> list[tuple[int, AsyncResult[Any]]]:
    """One task per chunk with work left, numbered by position so a rerun numbers alike."""
    tasks = []
    for number, start in enumerate(range(0, len(pairs), chunk_size)):
        items = [pairs[i] for i in range(start, min(start + chunk_size, len(pairs))) if i in todo]
        if items:
            message = {**spec, "chunk": number, "items": items}
            sent = (
                app.send_task(CHUNK_TASK, args=(message,), queue=queue)
                if queue
                else app.send_task(CHUNK_TASK, args=(message,))
            )
            tasks.append((number, sent))
    return tasks


def _value(entry: Entry | None, batch_id: str, index: int) -> Any:
    if entry is None:
        return RuntimeError(
            f"item {index} of batch {batch_id} has no outcome: its chunk task failed (see "
            "Batch.failures()); run the same call again to resume"
        )
    if entry.value is not None:
        return loads(entry.value)
    return bridge.RecordedError(entry.error_type or "?", entry.error_message or "")


class _Bar:
    """One progress bar for the whole cluster, fed from the journal's counts."""

    def __init__(
        self, batch: Batch, progress: Progress, report: Callable[[int, int], None] | None
    ) -> None:
        self._batch = batch
        self._on = wanted(progress)
        self._report = report
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if self._on:
            require("progress=True", "progress", "rich")
            from rich.console import Console  # noqa: PLC0415 - optional, only when drawn
            from rich.progress import Progress  # noqa: PLC0415

            self._bar = Progress(console=Console(stderr=True, force_terminal=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(f"batch {self._batch.batch_id}",
                                            total=self._batch.total)  # fmt: skip
        return self.tick

    def tick(self) -> None:
        if self._bar is None and self._report is None:
            return
        done = self._batch.done()
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        if self._report is not None:
            self._report(done, self._batch.total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
