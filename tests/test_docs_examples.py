"""The README's and docs' code examples cannot drift from the code.

Every ``python`` block of README.md and docs/*.md is type-checked with mypy against the
package (a renamed keyword, a moved function or a wrong argument type in an example is
an error here). Fragments may use names a doc introduced earlier or leaves to the
reader (``documents``, ``client``), so undefined names are allowed, and each block gets
the same imports a reader has at hand.

Blocks preceded by ``<!-- docs-test: run -->`` are also run, as written, in a fresh
interpreter against the simulated server (``OPENAI_BASE_URL``/``OPENAI_API_KEY`` point at
it, and the working directory holds a ``tickets.txt``). ``<!-- docs-test: run; given:
CODE -->`` runs ``CODE`` first, for a name the doc leaves to the reader.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.testing import SimulatedServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"(?:<!-- docs-test: (?P<marker>[^>]*?) -->\n)?^```python\n(?P<code>.*?)^```", re.S | re.M
)
_PRELUDE = """\
from __future__ import annotations
import asyncio, json, os, time
from typing import Any
import anthropic, openai, pytest
import bridge
"""

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Example:
    doc: Path
    index: int
    code: str
    marker: str

    @property
    def name(self) -> str:
        return f"{self.doc.name}#{self.index}"

    @property
    def runs(self) -> bool:
        return self.marker.startswith("run")

    @property
    def given(self) -> str:
        _, _, code = self.marker.partition("given:")
        return code.strip()


def examples() -> list[Example]:
    found = []
    for doc in DOCS:
        for index, match in enumerate(_BLOCK.finditer(doc.read_text())):
            found.append(Example(doc, index, match["code"], match["marker"] or ""))
    return found


def test_every_example_type_checks(tmp_path: Path) -> None:
    blocks = examples()
    assert len(blocks) >= 20  # the docs have examples, and this test finds them
    for example in blocks:
        target = tmp_path / f"{example.doc.stem}_{example.index}.py"
        target.write_text(_PRELUDE + example.code)
    config = tmp_path / "mypy.ini"  # not the project's strict one: these are a reader's scripts
    config.write_text("[mypy]\n")
    done = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--config-file", str(config),
            "--no-error-summary", "--ignore-missing-imports",
            "--follow-imports=silent", "--python-version=3.11", "--check-untyped-defs",
            "--disable-error-code=name-defined", "--disable-error-code=empty-body",
            "--disable-error-code=no-redef", "--cache-dir", str(tmp_path / ".mypy_cache"),
            *sorted(str(p) for p in tmp_path.glob("*.py")),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}{done.stderr}"


RUNNABLE = [e for e in examples() if e.runs]


def test_some_examples_run() -> None:
    assert len(RUNNABLE) >= 3


@pytest.mark.parametrize("example", RUNNABLE, ids=[e.name for e in RUNNABLE])
def test_example_runs_against_the_simulated_server(
    example: Example, llm_server: SimulatedServer, tmp_path: Path
) -> None:
    (tmp_path / "tickets.txt").write_text("The printer is on fire.\n\nThe VPN drops at 5 pm.\n")
    code = textwrap.dedent(example.given) + "\n" + example.code
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **_clean_environment(),
            "OPENAI_BASE_URL": llm_server.base_url,
            "OPENAI_API_KEY": "sk-docs-example",
        },
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert llm_server.stats()["requests"] > 0  # it really called the server


def _clean_environment() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
