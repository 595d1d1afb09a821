"""Watching admission: the one hook that metrics and traces hang on.

Nothing is watched, and nothing costs, until a watcher is added (``bridge.otel`` adds one
when you instrument). Then every LLM call that passes a bridge client reports to it, with
its endpoint and lane: how long each attempt waited for admission, each attempt and its
answer, its tokens, and its end; and the endpoint reports its pauses. ``bridge.stats()``
stays as the zero-dependency view; watchers are for whoever wants more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["NO_WATCH", "CallInfo", "Watch", "Watcher", "add_watcher", "remove_watcher", "watch"]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What is known of an LLM call when it starts.

    ``system`` is ``"openai"`` or ``"anthropic"`` (by the API path), ``operation`` the
    API's name for it (``"chat"``, ``"embeddings"``...), ``model`` the request's model
    (read from its body only when something watches), ``deadline_left`` the seconds the
    ``bridge.deadline()`` in force leaves.
    """

    endpoint: str
    system: str
    operation: str
    model: str | None
    lane: str
    deadline_left: float | None


class Watch(Protocol):
    """One LLM call being watched (all its attempts, retries included)."""

    def admitted(self, seconds: float) -> None:
        """An attempt waited ``seconds`` for admission, and is sent now."""

    def answered(self, status: int, seconds: float) -> None:
        """An attempt was answered with ``status`` after ``seconds``."""

    def retry(self, reason: str) -> None:
        """Another attempt follows, because of ``reason`` (``"HTTP 429"``, an error name)."""

    def tokens(self, used_in: int, used_out: int) -> None:
        """The provider's ``usage`` of the call."""

    def end(self, error: BaseException | None) -> None:
        """The call is over: answered (``None``), or failed with ``error``."""


class Watcher(Protocol):
    """Something that watches LLM calls and endpoints."""

    def start(self, call: CallInfo) -> Watch:
        """A call starts."""

    def paused(self, endpoint: str, seconds: float) -> None:
        """An endpoint was paused by a 429 for ``seconds``."""


class _NoWatch:
    """What a call gets when nothing watches: every report is nothing."""

    def admitted(self, seconds: float) -> None:
        pass

    def answered(self, status: int, seconds: float) -> None:
        pass

    def retry(self, reason: str) -> None:
        pass

    def tokens(self, used_in: int, used_out: int) -> None:
        pass

    def end(self, error: BaseException | None) -> None:
        pass


NO_WATCH: Watch = _NoWatch()


class _Many:
    """Every watcher's watch of one call, told each report."""

    def __init__(self, watches: list[Watch]) -> None:
        self._watches = watches

    def admitted(self, seconds: float) -> None:
        for w in self._watches:
            w.admitted(seconds)

    def answered(self, status: int, seconds: float) -> None:
        for w in self._watches:
            w.answered(status, seconds)

    def retry(self, reason: str) -> None:
        for w in self._watches:
            w.retry(reason)

    def tokens(self, used_in: int, used_out: int) -> None:
        for w in self._watches:
            w.tokens(used_in, used_out)

    def end(self, error: BaseException | None) -> None:
        for w in self._watches:
            w.end(error)


_watchers: list[Watcher] = []


def add_watcher(watcher: Watcher) -> None:
    """Have ``watcher`` told of every LLM call and pause from now on."""
    if watcher not in _watchers:
        _watchers.append(watcher)


def remove_watcher(watcher: Watcher) -> None:
    if watcher in _watchers:
        _watchers.remove(watcher)


def watching() -> bool:
    """Whether anything watches (callers skip the work of describing a call if not)."""
    return bool(_watchers)


def watch(describe: Callable[[], CallInfo]) -> Watch:
    """The watch of a call that starts now; ``describe`` is called only if watched."""
    if not _watchers:
        return NO_WATCH
    info = describe()
    watches = [w.start(info) for w in list(_watchers)]
    return watches[0] if len(watches) == 1 else _Many(watches)


def paused(endpoint: str, seconds: float) -> None:
    """Tell every watcher that ``endpoint`` was paused."""
    for w in tuple(_watchers):  # a watcher may be removed meanwhile
        w.paused(endpoint, seconds)
