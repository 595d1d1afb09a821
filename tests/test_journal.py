"""``map``/``imap`` with ``journal=``: resume, outcome rules, keys, stored results, the lock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import decimal
import enum
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, NamedTuple

import httpx2
import openai
import pytest
from polling import poll

import bridge
from bridge._core._journal import DEFAULT_KEY_SCHEME, default_key, dumps, loads, status_of_exception
from bridge.testing import SimulatedServer, serve

calls: list[Any] = []


async def double(n: int) -> int:
    calls.append(n)
    if n == 7:
        raise ValueError("seven is unlucky")
    return n * 2


async def other(n: Any) -> Any:
    calls.append(n)
    return n


async def describe(item: Any) -> str:
    calls.append(item)
    return f"{type(item).__name__}:{item!r}"


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


class TestResume:
    def test_rerun_skips_finished_items_and_returns_the_same(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        journal = tmp_path / "run.sqlite"
        first = b.map(double, range(10), journal=journal, return_exceptions=True)
        calls.clear()
        again = b.map(double, range(12), journal=journal, return_exceptions=True)
        assert calls == [10, 11]
        assert again[:7] == first[:7]
        assert again[8:10] == first[8:10]
        assert isinstance(again[7], bridge.RecordedError)
        assert again[7].type_name == "ValueError"

    def test_interrupted_imap_resumes(self, b: bridge.Bridge, tmp_path: Path) -> None:
        journal = tmp_path / "run.sqlite"
        results = b.imap(double, range(6), journal=journal, concurrency=1)
        assert [next(results) for _ in range(3)] == [0, 2, 4]
        results.close()
        calls.clear()
        assert list(b.imap(double, range(6), journal=journal)) == [0, 2, 4, 6, 8, 10]
        assert not {0, 1, 2} & set(calls)

    def test_what_finished_is_recorded_while_an_earlier_item_still_runs(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        # In order, item 0 holds the results back; a kill now must not pay 1..4 again.
        journal, release = tmp_path / "run.sqlite", threading.Event()

        def slow_first(n: int) -> int:
            if n == 0:
                release.wait(60)  # a hang guard; the test sets it
            return n

        def recorded() -> int:
            with sqlite3.connect(journal) as db:
                return int(db.execute("SELECT count(*) FROM results").fetchone()[0])

        rows_while_running: list[int] = []

        def watch() -> None:
            # poll's hang guard fails in this thread: the row count says what it saw.
            with contextlib.suppress(BaseException):
                poll(lambda: recorded() == 4, timeout=10, what="4 rows")
            rows_while_running.append(recorded())
            release.set()

        results = b.imap(slow_first, range(5), journal=journal, concurrency=5)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            seen = list(results)  # blocks on item 0 until the journal holds the other four
        finally:
            release.set()
            watcher.join()
        assert seen == [0, 1, 2, 3, 4]
        assert rows_while_running == [4]
        assert recorded() == 5

    def test_a_final_failure_is_replayed_and_retry_failed_runs_it_again(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        journal = tmp_path / "run.sqlite"
        with pytest.raises(ValueError, match="unlucky"):
            b.map(double, [7], journal=journal)
        with pytest.raises(bridge.RecordedError, match="retry_failed=True"):
            b.map(double, [7], journal=journal)
        calls.clear()
        with pytest.raises(ValueError, match="unlucky"):
            b.map(double, [7], journal=journal, retry_failed=True)
        assert calls == [7]

    def test_a_different_function_is_refused(self, b: bridge.Bridge, tmp_path: Path) -> None:
        journal = tmp_path / "run.sqlite"
        b.map(other, [1], journal=journal)
        with pytest.raises(bridge.JournalMismatchError, match="function"):
            b.map(double, [1], journal=journal)
        with pytest.raises(bridge.JournalMismatchError, match="key_scheme"):
            b.map(other, [1], journal=journal, key=str)

    def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        data = tmp_path / "data.jsonl"
        data.write_text('{"a": 1}\n' * 100)
        before = data.read_bytes()
        with pytest.raises(bridge.JournalMismatchError, match="is not a journal"):
            b.map(other, [1], journal=data)
        assert data.read_bytes() == before
        assert calls == []

    def test_openai_response_round_trips(self, b: bridge.Bridge, tmp_path: Path) -> None:
        with serve() as server:
            client = bridge.openai(base_url=server.base_url, api_key="test")

            async def ask(prompt: str) -> Any:
                return await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": prompt}]
                )

            journal = tmp_path / "run.sqlite"
            first = b.map(ask, ["a", "b"], journal=journal)
            before = server.stats()["requests"]
            again = b.map(ask, ["a", "b"], journal=journal)
            assert server.stats()["requests"] == before
        assert all(isinstance(r, openai.types.chat.ChatCompletion) for r in again)
        assert again == first


# -- final vs retryable -----------------------------------------------------------------

TARGET: dict[str, Any] = {}


async def ask_once(prompt: str) -> str:
    """One attempt with the official SDK (no retries), against TARGET's server."""
    async with openai.AsyncOpenAI(
        base_url=TARGET["url"], api_key="k", max_retries=0, timeout=TARGET.get("timeout", 30)
    ) as client:
        reply = await client.chat.completions.create(
            model=TARGET.get("model", "m"), messages=[{"role": "user", "content": prompt}]
        )
    return reply.choices[0].message.content or ""


class TestOutcomes:
    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"error_rates": {429: 1.0}}, "RateLimitError"),
            ({"error_rates": {503: 1.0}}, "InternalServerError"),
            ({"error_rates": {408: 1.0}}, "APIStatusError"),
            ({"hang_rate": 1.0}, "APITimeoutError"),
        ],
        ids=["429", "503", "408", "timeout"],
    )
    def test_a_retryable_failure_is_sent_again_by_a_plain_rerun(
        self,
        b: bridge.Bridge,
        tmp_path: Path,
        llm_server: SimulatedServer,
        options: dict[str, Any],
        error: str,
    ) -> None:
        journal = tmp_path / "run.sqlite"
        with serve(**options) as failing:
            TARGET.update(url=failing.base_url, timeout=0.3)
            first = b.map(ask_once, ["a", "b"], journal=journal, return_exceptions=True)
        assert [type(r).__name__ for r in first] == [error, error]
        TARGET.update(url=llm_server.base_url, timeout=30)
        again = b.map(ask_once, ["a", "b"], journal=journal)
        assert all(text.startswith("digest=") for text in again)
        assert llm_server.stats()["requests"] == 2  # both sent again, no flag needed
        b.map(ask_once, ["a", "b"], journal=journal)
        assert llm_server.stats()["requests"] == 2  # and, now finished, never again

    def test_a_connection_error_is_retryable(
        self, b: bridge.Bridge, tmp_path: Path, llm_server: SimulatedServer
    ) -> None:
        journal = tmp_path / "run.sqlite"
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            TARGET.update(url=f"http://127.0.0.1:{unused.getsockname()[1]}/v1")
            first = b.map(ask_once, ["a"], journal=journal, return_exceptions=True)
        assert isinstance(first[0], openai.APIConnectionError)
        TARGET.update(url=llm_server.base_url)
        assert b.map(ask_once, ["a"], journal=journal)[0].startswith("digest=")
        assert llm_server.stats()["requests"] == 1

    def test_a_client_error_is_final_until_retry_failed(
        self, b: bridge.Bridge, tmp_path: Path, llm_server: SimulatedServer
    ) -> None:
        journal = tmp_path / "run.sqlite"
        TARGET.update(url=llm_server.base_url, model="")  # the server answers 400
        with pytest.raises(openai.BadRequestError):
            b.map(ask_once, ["a"], journal=journal)
        TARGET.update(model="m")
        with pytest.raises(bridge.RecordedError, match="BadRequestError"):
            b.map(ask_once, ["a"], journal=journal)
        assert llm_server.stats()["status_counts"] == {"400": 1}  # replayed, not sent
        assert b.map(ask_once, ["a"], journal=journal, retry_failed=True)[0].startswith("digest")
        assert llm_server.stats()["status_counts"] == {"400": 1, "200": 1}

    @pytest.mark.parametrize(
        ("exc", "status"),
        [
            (TimeoutError(), "retryable"),
            (asyncio.TimeoutError(), "retryable"),
            (ConnectionResetError(), "retryable"),
            (httpx2.ReadTimeout("slow"), "retryable"),
            (httpx2.ConnectError("refused"), "retryable"),
            (httpx2.RemoteProtocolError("closed"), "retryable"),
            (ValueError("yours"), "final"),
            (KeyError("yours"), "final"),
        ],
        ids=repr,
    )
    def test_exceptions_are_classified_without_importing_the_sdks(
        self, exc: BaseException, status: str
    ) -> None:
        assert status_of_exception(exc) == status

    @pytest.mark.parametrize(
        ("code", "status"),
        [(408, "retryable"), (409, "retryable"), (429, "retryable"), (500, "retryable"),
         (529, "retryable"), (400, "final"), (401, "final"), (403, "final"), (404, "final"),
         (413, "final"), (422, "final")],
    )  # fmt: skip
    def test_http_status_errors_follow_the_transport_retry_rule(
        self, code: int, status: str
    ) -> None:
        request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
        response = httpx2.Response(code, request=request)
        exc = httpx2.HTTPStatusError("failed", request=request, response=response)
        assert status_of_exception(exc) == status


# -- keys -------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Size(str, enum.Enum):
    SMALL = "small"


class Perm(enum.Flag):
    R = 1
    W = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Opaque:
    """Its repr leaves out what makes two of them different."""

    def __init__(self, secret: int = 0) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return "Opaque()"


class Pair(NamedTuple):
    a: int
    b: int


#: Keys of the default scheme for a few items, pinned: if a change to the key code alters
#: them, DEFAULT_KEY_SCHEME must be renamed too (old journals are then refused, not missed).
PINNED_KEYS = {
    "typed-sha256-v2": {
        "a": "c81bcc563c774a2efbf13701de14eb2445e57441287fa85339559a1049bf99a8",
        "[1, 2]": "2cebf07cdec2bcce67b2bb138875035853121079ea5ea26927e4c3f14207798a",
    }
}


class TestKeys:
    @pytest.mark.parametrize(
        "items",
        [
            ([1, 2], (1, 2)),
            (1, True, 1.0),
            (0, False, 0.0, -0.0, None, "", "0"),
            ({1: "a"}, {"1": "a"}, {True: "a"}),
            ({1, 2}, frozenset({1, 2}), [1, 2]),
            (Colour.RED, 1, "RED", Level.LOW, Size.SMALL, "small"),
            (Point(1, 2), (1, 2), {"x": 1, "y": 2}),
            (b"ab", "ab", [97, 98]),
            (decimal.Decimal("1.0"), decimal.Decimal("1.00"), 1.0),
        ],
        ids=["list-tuple", "int-bool-float", "falsy", "dict-keys", "sets", "enums",
             "dataclass", "bytes", "decimal"],
    )  # fmt: skip
    def test_values_json_would_conflate_get_different_keys(self, items: tuple[Any, ...]) -> None:
        assert len({default_key(item) for item in items}) == len(items)

    def test_a_list_and_a_tuple_do_not_share_a_result(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        journal = tmp_path / "run.sqlite"
        assert b.map(describe, [[1, 2]], journal=journal) == ["list:[1, 2]"]
        assert b.map(describe, [(1, 2)], journal=journal) == ["tuple:(1, 2)"]
        assert b.map(describe, [True, 1, 1.0], journal=journal) == [
            "bool:True",
            "int:1",
            "float:1.0",
        ]
        calls.clear()
        b.map(describe, [[1, 2], (1, 2), True, 1, 1.0], journal=journal)
        assert calls == []  # each resumed from its own record

    def test_set_keys_do_not_depend_on_the_hash_seed(self) -> None:
        probe = (
            "from bridge._core._journal import default_key; "
            "print(default_key(frozenset({'apple', 'pear', 'fig', ('a', 1)})), "
            "default_key({'k': {'x', 'y', 'z'}}))"
        )
        keys = {
            subprocess.run(
                [sys.executable, "-c", probe],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": seed},
            ).stdout
            for seed in ("1", "2", "3")
        }
        assert len(keys) == 1

    def test_dict_keys_do_not_depend_on_insertion_order(self) -> None:
        assert default_key({"a": 1, "b": 2}) == default_key({"b": 2, "a": 1})

    @pytest.mark.parametrize(
        "item",
        [
            object(),
            [1, object()],
            {"k": socket.socket},
            Opaque(),
        ],
        ids=["object", "nested", "class", "custom-repr"],
    )
    def test_an_item_without_a_faithful_key_is_refused(
        self, b: bridge.Bridge, tmp_path: Path, item: object
    ) -> None:
        with pytest.raises(TypeError, match="key=lambda"):
            b.map(other, [item], journal=tmp_path / "run.sqlite")
        assert calls == []

    def test_odd_strings_and_floats_have_keys(self) -> None:
        items = ["\ud800", "é", float("nan"), float("inf"), 10**5000, datetime.date(2024, 1, 1)]
        assert len({default_key(item) for item in items}) == len(items)

    def test_the_key_scheme_name_pins_the_keys(self) -> None:
        assert DEFAULT_KEY_SCHEME in PINNED_KEYS, (
            "DEFAULT_KEY_SCHEME changed: pin its keys in PINNED_KEYS"
        )
        pinned = PINNED_KEYS[DEFAULT_KEY_SCHEME]
        assert default_key("a") == pinned["a"], "key code changed: rename DEFAULT_KEY_SCHEME"
        assert default_key([1, 2]) == pinned["[1, 2]"], "rename DEFAULT_KEY_SCHEME"

    @pytest.mark.parametrize(
        ("schema", "scheme"), [("1", "json-sha256-v1"), ("2", "json-sha256-v1")]
    )
    def test_a_journal_from_an_older_key_scheme_is_refused_clearly(
        self, b: bridge.Bridge, tmp_path: Path, schema: str, scheme: str
    ) -> None:
        journal = tmp_path / "old.sqlite"
        with sqlite3.connect(journal) as db:
            db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
            config = {"schema": schema, "function": f"{__name__}.other", "key_scheme": scheme}
            db.executemany("INSERT INTO meta VALUES (?, ?)", config.items())
        db.close()
        with pytest.raises(bridge.JournalMismatchError, match="another version of bridge"):
            b.map(other, [1], journal=journal)
        assert calls == []


# -- stored results ---------------------------------------------------------------------


def _local_enum() -> enum.Enum:
    class Local(enum.Enum):
        ONE = 1

    return Local.ONE


class TestResults:
    @pytest.mark.parametrize(
        "value",
        [
            Level.LOW,
            Colour.RED,
            Size.SMALL,
            Perm.R | Perm.W,  # a combination: no single name
            Perm(0),  # no name at all
            (1, [2, (3,)]),
            {1, 2},
            frozenset({"a"}),
            b"\x00\xff",
            {"__bridge__": "not a tag", "x": (1,)},
            "\ud800",
            [None, True, 1, 1.5],
        ],
        ids=repr,
    )
    def test_a_result_comes_back_as_it_was(self, value: object) -> None:
        again = loads(dumps(value))
        assert again == value
        assert type(again) is type(value)

    def test_an_int_enum_result_resumes_as_the_enum(self, b: bridge.Bridge, tmp_path: Path) -> None:
        async def level(n: int) -> Level:
            return Level(n)

        journal = tmp_path / "run.sqlite"
        b.map(level, [1], journal=journal)
        (again,) = b.map(level, [1], journal=journal)
        assert again is Level.LOW

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            (Pair(1, 2), "subclass of tuple"),
            (_local_enum(), "define the class at module level"),
            ({1: "a"}, "str keys"),
            (object(), "return one of those instead"),
        ],
        ids=["namedtuple", "local-enum", "int-keys", "object"],
    )
    def test_a_result_that_would_come_back_different_is_refused_when_recorded(
        self, b: bridge.Bridge, tmp_path: Path, value: object, why: str
    ) -> None:
        async def give(n: int) -> object:
            return value

        with pytest.raises(TypeError, match=why):
            b.map(give, [1], journal=tmp_path / "run.sqlite")


# -- one writer -------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    import bridge

    def hold(n):
        if sys.argv[2] == "hold":
            print("holding", flush=True)
            sys.stdin.readline()  # until the test kills this process
        return n

    print(bridge.map(hold, [1, 2], journal=sys.argv[1], concurrency=1))
    """
)


class TestOneWriter:
    def test_a_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        script, journal = tmp_path / "holder.py", tmp_path / "run.sqlite"
        script.write_text(HOLDER)
        holder = subprocess.Popen(
            [sys.executable, str(script), str(journal), "hold"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "holding\n"  # it holds the lock now
            with pytest.raises(bridge.JournalLockedError) as refused:
                b.map(other, [1], journal=journal)
            message = str(refused.value)
            assert f"pid {holder.pid}" in message
            assert f"host {socket.gethostname()}" in message
            assert "started " in message
            assert calls == []
        finally:
            holder.kill()  # SIGKILL: no cleanup runs, the lock file still names it
            holder.communicate()
        assert str(holder.pid) in Path(f"{journal}.lock").read_text()
        done = subprocess.run(
            [sys.executable, str(script), str(journal), "finish"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "[1, 2]\n"

    def test_the_same_process_cannot_open_a_journal_twice(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        journal = tmp_path / "run.sqlite"
        results = b.imap(other, [1, 2], journal=journal)
        with pytest.raises(bridge.JournalLockedError, match=f"pid {os.getpid()}"):
            b.map(other, [3], journal=journal)
        assert list(results) == [1, 2]  # finishing closes the journal and frees it
        assert b.map(other, [3], journal=journal) == [3]
