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


@pytest.mark.parametrize("name", bridge.__all__)
def test_public_names_are_at_home_in_bridge(name: str) -> None:
    """``bridge.Bridge``, not ``bridge._core._bridge.Bridge``, in reprs and tracebacks."""
    member = getattr(bridge, name)
    module = getattr(member, "__module__", None)
    if module is not None and isinstance(member, type | type(bridge.run)):
        assert module == "bridge", f"bridge.{name} says it lives in {module}"


@pytest.mark.parametrize("name", ["run", "gather", "map", "imap", "iterate", "syncify"])
def test_module_functions_name_every_parameter(name: str) -> None:
    import inspect

    function = getattr(bridge, name)
    doc = function.__doc__ or ""
    for parameter in inspect.signature(function).parameters:
        assert parameter in doc, f"bridge.{name}'s docstring does not mention {parameter}"


def test_no_layer_imports_one_above_it() -> None:
    """The loop layer never imports admission control; neither imports an integration."""
    import ast
    import importlib.util

    root = Path(bridge.__file__).parent
    integrations = (
        "bridge.django",
        "bridge.flask",
        "bridge.celery",
        "bridge.otel",
        "bridge.testing",
    )
    tools = ("bridge.bench", "bridge.batch", "bridge._integration")
    above = {
        "_core": ("bridge._admission", *integrations, *tools),
        "_admission": (*integrations, *tools),
    }
    seen = 0
    for layer, forbidden in above.items():
        for path in (root / layer).rglob("*.py"):
            package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    name = importlib.util.resolve_name(
                        "." * node.level + (node.module or ""), package
                    )
                    seen += 1
                    assert not name.startswith(forbidden), f"{path.name} imports {name}"
    assert seen > 50  # the walk really read the imports


@pytest.mark.parametrize("name", bridge.celery.__all__)
def test_every_bridge_celery_name_is_documented(name: str) -> None:
    member = getattr(bridge.celery, name)
    if callable(member):
        assert (member.__doc__ or "").strip(), f"bridge.celery.{name} has no docstring"
    assert name in (DOCS / "scale-out.md").read_text(), f"{name} is not in docs/scale-out.md"
