"""The one polling helper of the tests: for what offers no event to wait on.

A server that is starting, a journal another process writes, an orphan that exits: the
tests poll those, and only those. The timeout is a hang guard, never a timing assertion:
a test that passes slowly on a loaded machine still passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def poll(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``condition`` until it returns something true, and return that.

    Fails the test, saying ``what`` was awaited, when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(interval)
