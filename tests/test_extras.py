"""A missing optional dependency names the extra that installs it.

Each case runs in a fresh interpreter where the module is made unimportable the way a
missing package is (``sys.modules[name] = None`` makes ``import name`` raise
ModuleNotFoundError), then calls the real feature: nothing of the bridge is mocked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

REPORT = """
try:
    {call}
except ModuleNotFoundError as exc:
    import bridge
    print(type(exc).__name__, isinstance(exc, bridge.BridgeError), exc.name, exc.extra)
    print(exc)
else:
    print("no error")
"""


def without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    shim = f"import sys\nsys.modules[{module!r}] = None  # as if it were not installed\n"
    return subprocess.run(
        [sys.executable, "-c", shim + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("module", "call", "extra"),
    [
        ("tenacity", "import bridge; bridge.openai(api_key='k')", "llm"),
        ("openai", "import bridge; bridge.openai(api_key='k')", "llm"),
        ("anthropic", "import bridge; bridge.anthropic(api_key='k')", "llm"),
        ("httpx2", "import bridge; bridge.http_client()", "llm"),
        ("tenacity", "import bridge, openai; bridge.wrap(openai.OpenAI(api_key='k'))", "llm"),
        ("redis", "import bridge; bridge.Limits(store='redis://127.0.0.1:6379/0')", "redis"),
        ("rich", "import bridge; bridge.map(abs, [1], progress='force')", "progress"),
        ("aiohttp", "from bridge.testing import serve; serve()", "testing"),
        ("opentelemetry", "import bridge.otel; bridge.otel.instrument()", "otel"),
    ],
    ids=["openai-no-tenacity", "openai", "anthropic", "http_client", "wrap", "redis-store",
         "progress", "testing-serve", "otel"],
)  # fmt: skip
def test_a_feature_names_its_extra(module: str, call: str, extra: str) -> None:
    done = without(module, REPORT.format(call=call))
    assert done.returncode == 0, done.stderr[-2000:]
    kind, message = done.stdout.splitlines()[:2]
    assert kind == f"MissingExtraError True {module} {extra}"
    assert f"needs {module}" in message
    assert f"pip install 'llm-sync-bridge[{extra}]'" in message


def test_thread_sensitive_names_the_package_no_extra_brings() -> None:
    call = "import bridge; bridge.Bridge(thread_sensitive=True)"
    done = without("asgiref", REPORT.format(call=call))
    kind, message = done.stdout.splitlines()[:2]
    assert kind == "MissingExtraError True asgiref None"
    assert message.endswith("pip install asgiref")


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("matplotlib", "from bridge.__main__ import main; sys.exit(main(['bench', '--no-chart']))"),
        ("aiohttp", "from bridge.testing._cli import main; sys.exit(main(['serve']))"),
    ],
)
def test_a_command_line_says_what_to_install_and_exits(module: str, command: str) -> None:
    done = without(module, command)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"needs {module}" in done.stderr
    assert "pip install 'llm-sync-bridge[" in done.stderr


def test_installed_extras_pass_the_check() -> None:
    from bridge._extras import require

    require("everything", "dev", "openai", "tenacity", "redis", "rich", "aiohttp")
