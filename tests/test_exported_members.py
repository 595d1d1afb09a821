"""The public surface: every exported name exists, is documented, and import stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bridge
import bridge.celery
import bridge.testing

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize(
    "module", [bridge, bridge.testing, bridge.celery], ids=lambda m: m.__name__
)
def test_all_is_sorted_and_every_name_exists(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(module, name), name


@pytest.mark.parametrize("name", bridge.__all__)
def test_every_public_name_has_a_docstring_and_a_place_in_the_docs(name: str) -> None:
    member = getattr(bridge, name)
    if callable(member):
        assert (member.__doc__ or "").strip(), f"bridge.{name} has no docstring"
    documented = "\n".join(page.read_text() for page in DOCS.glob("*.md"))
    assert name in documented, f"bridge.{name} is not mentioned in docs/"


def test_import_bridge_imports_no_framework_or_client_library() -> None:
    probe = (
        "import sys, bridge; "
        "heavy = {'django', 'flask', 'openai', 'anthropic', 'aiohttp', 'httpx', 'gevent', "
        "'redis', 'tenacity', 'anyio', 'asgiref', 'celery', 'kombu', 'psycopg'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", bridge.celery.__all__)
def test_every_bridge_celery_name_is_documented(name: str) -> None:
    member = getattr(bridge.celery, name)
    if callable(member):
        assert (member.__doc__ or "").strip(), f"bridge.celery.{name} has no docstring"
    assert name in (DOCS / "scale-out.md").read_text(), f"{name} is not in docs/scale-out.md"
