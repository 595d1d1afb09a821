"""Client factories: SDK clients whose every request passes the bridge's admission control.

``bridge.openai()`` and ``bridge.anthropic()`` build ``AsyncOpenAI``/``AsyncAnthropic``
clients; ``bridge.wrap(client)`` puts a client you built (async or sync) under the same
control; ``bridge.http_client()`` gives the bare ``httpx2`` client for any other SDK.

The SDK's own retries are off (``max_retries=0``): retries happen once, in the transport,
which also keeps the retries of an SDK client configured elsewhere (LangChain, LiteLLM)
from being sent on top. The clients can be made at import time, in any thread, and used
from any event loop: their connections are opened on the bridge's loop at the first
request (a request made on another loop is sent there), closed when the bridge closes, and
made afresh in a forked child. The SDKs are imported here, inside the factories, never by
``import bridge``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from .._extras import require
from ._limits import Limits, Retry
from ._preload import ready_for_first_request

if TYPE_CHECKING:
    import anthropic as anthropic_sdk
    import httpx2
    import openai as openai_sdk

    from ._transport import TransportChoice

__all__ = ["anthropic", "http_client", "openai", "wrap"]

C = TypeVar("C")


def openai(
    *,
    limits: Limits | None = None,
    retry: Retry | None = None,
    transport: TransportChoice | httpx2.AsyncBaseTransport = "auto",
    **kwargs: Any,
) -> openai_sdk.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` under admission control; ``kwargs`` go to the SDK.

    Args:
        limits: the endpoint's limits; default ``Limits()``, which learns RPM/TPM from the
            ``x-ratelimit-*`` headers.
        retry: the retry policy; default ``Retry()``.
        transport: ``"auto"`` (aiohttp when installed, else httpx2's), ``"aiohttp"``,
            ``"httpx"``, or a transport instance of your own (used on the loop each
            request is made on, with no hop; closing it is yours).
        **kwargs: go to ``AsyncOpenAI`` (``api_key``, ``base_url``, ``timeout``...).

    Raises:
        TypeError: ``max_retries`` or ``http_client`` among ``kwargs`` (use ``retry=``, or
            :func:`bridge.wrap` for a client you built).
        MissingExtraError: the ``llm`` extra is not installed.
    """
    require("bridge.openai()", "llm", "openai", "httpx2", "tenacity")
    import openai as sdk  # noqa: PLC0415 - optional dependency, imported on use

    _refuse(kwargs, "openai")
    ready_for_first_request("openai")
    http = sdk.DefaultAsyncHttpxClient(transport=_async_transport(limits, retry, transport))
    return sdk.AsyncOpenAI(http_client=http, max_retries=0, **kwargs)


def anthropic(
    *,
    limits: Limits | None = None,
    retry: Retry | None = None,
    transport: TransportChoice | httpx2.AsyncBaseTransport = "auto",
    **kwargs: Any,
) -> anthropic_sdk.AsyncAnthropic:
    """An ``anthropic.AsyncAnthropic`` under admission control; ``kwargs`` go to the SDK.

    Args:
        limits: the endpoint's limits; default ``Limits()``, which learns requests, input
            and output tokens per minute from the ``anthropic-ratelimit-*`` headers.
        retry: the retry policy; default ``Retry()``.
        transport: as for :func:`bridge.openai`.
        **kwargs: go to ``AsyncAnthropic`` (``api_key``, ``base_url``, ``timeout``...).

    Raises:
        TypeError: ``max_retries`` or ``http_client`` among ``kwargs``.
        MissingExtraError: the ``llm`` extra is not installed.
    """
    require("bridge.anthropic()", "llm", "anthropic", "httpx2", "tenacity")
    import anthropic as sdk  # noqa: PLC0415 - optional dependency, imported on use

    _refuse(kwargs, "anthropic")
    ready_for_first_request("anthropic")
    http = sdk.DefaultAsyncHttpxClient(transport=_async_transport(limits, retry, transport))
    return sdk.AsyncAnthropic(http_client=http, max_retries=0, **kwargs)


def wrap(client: C, *, limits: Limits | None = None, retry: Retry | None = None) -> C:
    """A copy of an SDK client you built, with its requests under admission control.

    Works for ``AsyncOpenAI``/``AsyncAnthropic`` and for the sync ``OpenAI``/``Anthropic``
    (use those through ``bridge.map(plain_function, ...)``, which runs them in the
    bridge's threads). The copy keeps your key, base URL, headers and timeout; it gets a
    fresh HTTP client of the bridge's (your ``http_client`` settings are not carried over)
    and ``max_retries=0``, since the bridge retries.

    Raises:
        TypeError: ``client`` is not an OpenAI or Anthropic SDK client.
    """
    require("bridge.wrap()", "llm", "httpx2", "tenacity")
    copy = getattr(client, "with_options", None)
    current = getattr(client, "_client", None)
    if copy is None or current is None:
        raise TypeError(
            f"wrap() expects an openai or anthropic SDK client, got {type(client).__name__}; "
            "for another httpx2-based SDK pass http_client=bridge.http_client() to it"
        )
    sync = not hasattr(current, "aclose")
    http = http_client(limits=limits, retry=retry, sync=sync)
    wrapped: C = copy(http_client=http, max_retries=0)
    return wrapped


def http_client(
    *,
    limits: Limits | None = None,
    retry: Retry | None = None,
    sync: bool = False,
    transport: TransportChoice | httpx2.AsyncBaseTransport = "auto",
    **kwargs: Any,
) -> Any:
    """An ``httpx2.AsyncClient`` (or ``httpx2.Client`` with ``sync=True``) under admission.

    Pass it as ``http_client=`` to an httpx2-based SDK, with the SDK's retries off.
    ``kwargs`` go to the httpx2 client (``timeout``, ``headers``...). ``transport`` is for
    the async client only; the sync one uses httpx2's thread-safe pool.
    """
    require("bridge.http_client()", "llm", "httpx2", "tenacity")
    import httpx2  # noqa: PLC0415 - optional dependency, imported on use

    from ._transport import SyncAdmissionTransport  # noqa: PLC0415 - imports httpx2

    _check_types(limits, retry)
    kwargs.setdefault("timeout", httpx2.Timeout(600.0, connect=5.0))
    if sync:
        inner = SyncAdmissionTransport(limits=limits or Limits(), retry=retry or Retry())
        return httpx2.Client(transport=inner, **kwargs)
    return httpx2.AsyncClient(transport=_async_transport(limits, retry, transport), **kwargs)


def _async_transport(
    limits: Limits | None,
    retry: Retry | None,
    transport: TransportChoice | httpx2.AsyncBaseTransport,
) -> httpx2.AsyncBaseTransport:
    from ._transport import AdmissionTransport  # noqa: PLC0415 - imports httpx2 and tenacity

    _check_types(limits, retry)
    return AdmissionTransport(limits=limits or Limits(), retry=retry or Retry(), inner=transport)


def _check_types(limits: object, retry: object) -> None:
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a bridge.Limits, got {type(limits).__name__}")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry must be a bridge.Retry, got {type(retry).__name__}")


def _refuse(kwargs: dict[str, Any], factory: str) -> None:
    if "max_retries" in kwargs:
        raise TypeError(
            f"bridge.{factory}() turns the SDK's retries off and retries in its transport; "
            "pass retry=bridge.Retry(attempts=...) instead of max_retries"
        )
    if "http_client" in kwargs:
        raise TypeError(
            f"bridge.{factory}() brings its own http_client; to control a client you "
            "built, use bridge.wrap(client)"
        )
