"""The default journal key: a SHA-256 of a typed, canonical form of the item.

Two items get the same key only if they are the same value of the same type, so a journal
never hands one item's result to another. JSON would conflate ``[1, 2]`` and ``(1, 2)``,
``1``, ``1.0`` and ``True``, and ``{1: "a"}`` and ``{"1": "a"}``; this form keeps each
type apart. Sets and dict entries are sorted by their canonical form, so the key does not
depend on ``PYTHONHASHSEED``. Anything whose identity this module cannot see (an object
whose ``repr`` may leave out what makes it different) is refused: pass ``key=``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import hashlib
import json
import pathlib
import uuid
from typing import Any, Final

__all__ = ["DEFAULT_KEY_SCHEME", "default_key"]

#: Names the default key scheme. It is stored in each journal and checked on reuse, so any
#: change to how default keys are made must change it (old journals are then refused).
DEFAULT_KEY_SCHEME: Final = "typed-sha256-v2"

# Value types whose repr is complete and stable (no memory address, every field shown).
_REPR_TYPES: Final = (
    datetime.date,  # datetime.datetime too
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    pathlib.PurePath,
    complex,
)
_CONTAINERS: Final = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}


def default_key(item: object) -> str:
    """The item's key: the SHA-256 of its typed canonical form.

    Raises:
        TypeError: the item holds a value whose identity cannot be captured; the message
            says to pass ``key=``.
    """
    # ASCII JSON: strings with lone surrogates still hash.
    text = json.dumps(_canonical(item, item), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any, item: object) -> Any:  # noqa: PLR0911 - one branch per kind
    kind: Any = type(value)  # exact types: a subclass (bool of int, IntEnum) is another kind
    if value is None:
        return None
    if kind is str or kind is bool:
        return [kind.__name__, value]
    if kind is int:
        return ["int", hex(value)]  # hex: no limit on the digits of huge ints
    if kind is float:
        return ["float", value.hex()]  # exact; keeps -0.0 and nan apart
    if kind is bytes:
        return ["bytes", value.hex()]
    if kind in _CONTAINERS:
        parts = [_canonical(v, item) for v in value]
        return [_CONTAINERS[kind], parts if kind in (list, tuple) else _sorted(parts)]
    if kind is dict:
        pairs = [[_canonical(k, item), _canonical(v, item)] for k, v in value.items()]
        return ["dict", _sorted(pairs)]
    return _canonical_object(value, item)


def _canonical_object(value: object, item: object) -> Any:
    cls = type(value)
    path = f"{cls.__module__}:{cls.__qualname__}"
    if isinstance(value, enum.Enum):
        return ["enum", path, value.name]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return [
            "dataclass",
            path,
            [[f.name, _canonical(getattr(value, f.name), item)] for f in fields],
        ]
    dump = getattr(value, "model_dump", None)
    if callable(dump) and hasattr(cls, "model_fields"):  # a pydantic model
        return ["pydantic", path, _canonical(dump(mode="python"), item)]
    if isinstance(value, _REPR_TYPES) and " at 0x" not in repr(value):
        return ["value", path, repr(value)]
    raise TypeError(_no_key(value, item))


def _sorted(parts: list[Any]) -> list[Any]:
    return sorted(parts, key=lambda part: json.dumps(part, separators=(",", ":")))


def _no_key(value: object, item: object) -> str:
    inside = "" if value is item else f" (inside {_short(item)})"
    return (
        f"cannot make a journal key for a {type(value).__qualname__} value {_short(value)}"
        f"{inside}: the default key takes None, bool, int, float, str, bytes, lists, tuples, "
        "dicts, sets, enums, dataclasses, pydantic models, dates, Decimal, UUID and paths. "
        "Pass key=lambda item: ... returning a str that identifies the item"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
