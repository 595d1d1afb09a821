"""Optional dependencies: one check that names the extra to install when one is missing."""

from __future__ import annotations

import importlib.util

from ._errors import MissingExtraError

__all__ = ["require"]

DISTRIBUTION = "llm-sync-bridge"


def require(feature: str, extra: str | None, *modules: str) -> None:
    """Raise MissingExtraError unless every top-level module in ``modules`` is installed.

    ``feature`` is what the user called (``"bridge.openai()"``), ``extra`` the extra of
    this distribution that installs ``modules`` (``None``: install the module itself).
    It looks the modules up without importing them, so it costs next to nothing where
    they are imported right after, and a missing dependency of a dependency (openai
    installed, tenacity not) is named before an import deep inside fails on it.
    """
    missing = [name for name in modules if not _installed(name)]
    if not missing:
        return
    install = f"'{DISTRIBUTION}[{extra}]'" if extra else " ".join(missing)
    raise MissingExtraError(
        f"{feature} needs {', '.join(missing)}, which {_is_or_are(missing)} not installed; "
        f"install {'the ' + repr(extra) + ' extra' if extra else 'it'}: pip install {install}",
        name=missing[0],
        extra=extra,
    )


def _installed(name: str) -> bool:
    try:
        # None also when sys.modules[name] is None: an import of it would fail.
        return importlib.util.find_spec(name) is not None
    except ValueError:  # in sys.modules without a __spec__ (put there by hand): importable
        return True


def _is_or_are(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"
