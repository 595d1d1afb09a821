"""Results to JSON text and back, so that a replayed result equals the one recorded.

Plain JSON types are stored as they are; tuples, sets, bytes, enums and pydantic models
(the SDKs' responses) carry a tag and come back as the same type. A value that would come
back different (a subclass of ``tuple`` or ``dict``, say, which would return as the plain
type) is refused when it is recorded, with a message saying what to return instead: a
journal never hands back something other than what ``fn`` returned.
"""

from __future__ import annotations

import enum
import functools
import importlib
import json
import sys
from typing import Any, Final

__all__ = ["dumps", "loads"]

_TAG: Final = "__bridge__"
_SCALARS: Final = (str, int, float, bool)
_TAGGED: Final = {tuple: "tuple", set: "set", frozenset: "frozenset"}


def dumps(value: object) -> str:
    """``value`` as JSON text.

    Raises:
        TypeError: the value, or something inside it, would not come back the same.
    """
    # ASCII: a str with a lone surrogate still stores; NaN and infinities round-trip.
    return json.dumps(_encode(value), allow_nan=True)


def loads(text: str, *, trusted: bool = True) -> Any:
    """The value :func:`dumps` stored.

    ``trusted=False`` is for text from the network (a chunk task's items): it imports
    nothing, and a tagged class must be an enum or a pydantic model already imported.

    Raises:
        ValueError: untrusted text names a class that is neither, or is not loaded.
    """
    return _decode(json.loads(text), _resolve if trusted else _resolve_loaded)


def _encode(value: Any) -> Any:  # noqa: PLR0911 - one branch per kind
    kind: Any = type(value)  # exact types: a subclass would come back as its base
    if value is None or kind in _SCALARS:
        return value
    if kind is list:
        return [_encode(v) for v in value]
    if kind in _TAGGED:
        return {_TAG: _TAGGED[kind], "items": [_encode(v) for v in value]}
    if kind is bytes:
        return {_TAG: "bytes", "hex": value.hex()}
    if kind is dict:
        return _encode_dict(value)
    if isinstance(value, enum.Enum):
        # By value, not name: a Flag combination (R|W) or a zero Flag has no single name,
        # and the class rebuilds any member from its value.
        return {_TAG: "enum", "cls": _class_path(kind, value), "value": _encode(value.value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump) and hasattr(kind, "model_validate"):
        data = dump(mode="json")
        return {_TAG: "pydantic", "cls": _class_path(kind, value), "data": data}
    raise TypeError(_unstorable(value))


def _encode_dict(value: dict[Any, Any]) -> Any:
    if not all(type(k) is str for k in value):
        raise TypeError(
            f"a journal stores dicts with str keys only, but fn returned {_short(value)}, "
            "whose keys would come back as str (or not at all); return str keys, or a "
            "list of pairs"
        )
    data = {k: _encode(v) for k, v in value.items()}
    return {_TAG: "dict", "items": data} if _TAG in value else data


@functools.lru_cache(maxsize=256)
def _importable(cls: type) -> str:
    path = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = _resolve(path)
    except (ImportError, AttributeError):
        found = None
    if found is not cls:
        raise LookupError(path)
    return path


def _class_path(cls: type, value: object) -> str:
    """The import path a rerun will rebuild ``value``'s class from; refused if it cannot."""
    try:
        return _importable(cls)
    except LookupError:
        raise TypeError(
            f"fn returned a {cls.__qualname__} ({_short(value)}), but a rerun could not "
            f"import its class as {cls.__module__}:{cls.__qualname__} to rebuild it "
            "(defined inside a function?): define the class at module level, or return "
            "plain data"
        ) from None


def _resolve(path: str) -> Any:
    module, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _unstorable(value: object) -> str:
    kind = type(value)
    base = next((b for b in (*_SCALARS, list, dict, *_TAGGED, bytes) if isinstance(value, b)), None)
    if base is not None:
        why = (
            f"a {kind.__qualname__}, a subclass of {base.__name__} that would come back "
            f"from the journal as a plain {base.__name__}"
        )
    else:
        why = f"a {kind.__qualname__}"
    return (
        f"a journal stores JSON data (dicts with str keys, lists, str, int, float, bool, "
        f"None), tuples, sets, bytes, enums and pydantic models, but fn returned {why}: "
        f"{_short(value)}; return one of those instead (for example a dict of the fields)"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _resolve_loaded(path: str) -> Any:
    """``_resolve`` for untrusted text: no import, and only an enum or a pydantic model."""
    module, _, qualname = path.partition(":")
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and (
        issubclass(found, enum.Enum) or callable(getattr(found, "model_validate", None))
    ):
        return found
    raise ValueError(f"refused to rebuild {path!r}: not an enum or a pydantic model loaded here")


def _decode(data: Any, resolve: Any) -> Any:  # noqa: PLR0911 - one branch per tag
    if isinstance(data, list):
        return [_decode(v, resolve) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: _decode(v, resolve) for k, v in data.items()}
    if tag == "dict":
        return {k: _decode(v, resolve) for k, v in data["items"].items()}
    if tag == "bytes":
        return bytes.fromhex(data["hex"])
    if tag == "enum":
        cls = resolve(data["cls"])
        return cls(_decode(data["value"], resolve)) if "value" in data else cls[data["name"]]
    if tag == "pydantic":
        return resolve(data["cls"]).model_validate(data["data"])
    items = [_decode(v, resolve) for v in data["items"]]
    return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
