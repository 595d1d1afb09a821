"""A bench target: a figure measured in this run, its limit, and whether it was met."""

from __future__ import annotations

from typing import Any

__all__ = ["target"]


def target(name: str, value: float, limit: float, *, at_least: bool) -> dict[str, Any]:
    met = value >= limit if at_least else value <= limit
    return {
        "name": name,
        "value": round(value, 3),
        "limit": limit,
        "kind": "at least" if at_least else "at most",
        "met": met,
    }
