"""bridge._admission._preload: what bridge.django and bridge.flask do at start-up, before any fork.

The fresh-process tests run in a subprocess: this one has imported the SDKs long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from bridge._admission._preload import SDKS, preload, sdks_from_setting


def run_fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, SDKS),
        (False, ()),
        (["openai"], ("openai",)),
        ((), ()),
        (("anthropic",), ("anthropic",)),
    ],
)
def test_the_setting_names_sdks(value: object, expected: tuple[str, ...]) -> None:
    assert sdks_from_setting(value) == expected


@pytest.mark.parametrize("value", ["openai", ["mistral"], None, 1, {"openai": True}])
def test_a_bad_setting_says_what_it_may_be(value: object) -> None:
    with pytest.raises(ValueError, match=r"preload must be True, False or a list of SDK names"):
        sdks_from_setting(value)


def test_preload_refuses_an_sdk_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="cannot preload"):
        preload(["mistral"])


def test_preload_imports_and_warms_up_without_a_thread_or_a_request() -> None:
    """The SDKs, their HTTP stack and the reply models are ready; nothing was sent, and
    the process still has one thread, so forking it is safe."""
    found = run_fresh(
        """
        import json, sys, threading
        from bridge._admission._preload import preload
        assert "openai" not in sys.modules
        done = preload()
        from openai.types.chat import ChatCompletion
        from anthropic.types import Message
        print(json.dumps({
            "done": done,
            "modules": [m for m in ("openai.resources.chat", "anthropic.resources.messages",
                                    "httpcore2", "aiohttp", "bridge._admission._transport")
                        if m in sys.modules],
            "models": [ChatCompletion.__pydantic_complete__, Message.__pydantic_complete__],
            "threads": threading.active_count(),
            "again": preload(["openai"]),
        }))
        """
    )
    assert found["done"] == ["openai", "anthropic"]
    assert found["modules"] == [
        "openai.resources.chat",
        "anthropic.resources.messages",
        "httpcore2",
        "aiohttp",
        "bridge._admission._transport",
    ]
    assert found["models"] == [True, True]
    assert found["threads"] == 1
    assert found["again"] == ["openai"]


def test_preloading_nothing_imports_nothing() -> None:
    found = run_fresh(
        """
        import json, sys
        from bridge._admission._preload import preload
        print(json.dumps({"done": preload(()), "openai": "openai" in sys.modules}))
        """
    )
    assert found == {"done": [], "openai": False}


def test_an_sdk_without_the_llm_extra_is_still_preloaded_and_nothing_fails() -> None:
    """openai installed for another reason, tenacity missing: the app must still start."""
    found = run_fresh(
        """
        import json, sys
        sys.modules["tenacity"] = None  # import tenacity now raises ImportError
        from bridge._admission._preload import preload
        done = preload(["openai"])
        print(json.dumps({"done": done, "chat": "openai.resources.chat" in sys.modules}))
        """
    )
    assert found == {"done": ["openai"], "chat": True}
