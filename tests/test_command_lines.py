"""Every command line of the project refuses abbreviated flags.

argparse accepts any unique prefix by default: ``--api=KEY`` silently meant ``--api-key``,
and a key typed that way escaped the bench's redaction. A mistyped flag is now an error.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bridge"


def _bench(argv: list[str]) -> Any:
    from bridge.bench._cli import parse_args

    return parse_args(argv)


def _limits(argv: list[str]) -> Any:
    from bridge.bench.limits import main

    return main(argv)


def _roundtrip(argv: list[str]) -> Any:
    from bridge.bench.roundtrip import main

    return main(argv)


def _testing(argv: list[str]) -> Any:
    from bridge.testing._cli import main

    return main(argv)


def _batch(argv: list[str]) -> Any:
    from bridge.batch._cli import build_parser

    return build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        (_bench, ["--api=KEY"]),
        (_bench, ["--api-k", "KEY"]),
        (_bench, ["--scen", "a"]),
        (_limits, ["--cal", "5"]),
        (_roundtrip, ["--round", "1"]),
        (_testing, ["serve", "--lat", "0.1"]),
        (_testing, ["loadgen", "--req", "5"]),
        (_batch, ["in.jsonl", "-o", "out.jsonl", "--api", "KEY"]),
        (_batch, ["in.jsonl", "-o", "out.jsonl", "--conc", "5"]),
    ],
    ids=lambda value: getattr(value, "__name__", None) or " ".join(value),
)
def test_abbreviated_flags_are_refused(
    command: Callable[[list[str]], Any], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        command(argv)
    assert exited.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_every_parser_in_the_package_turns_abbreviations_off() -> None:
    """A parser added later must say ``allow_abbrev=False`` too."""
    missing = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name not in {"ArgumentParser", "add_parser"}:
                continue
            if not any(
                k.arg == "allow_abbrev" and getattr(k.value, "value", True) is False
                for k in node.keywords
            ):
                missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert missing == []
