"""RPM/TPM token buckets kept in Redis, reserved atomically by one Lua script.

The script reads the clock of the Redis server (``TIME``), so processes on machines whose
clocks differ still agree. Each bucket is a hash ``{level, stamp}`` that expires when idle.
Async callers use ``redis.asyncio`` with one client per event loop (closed when a bridge's
loop closes); sync callers (sync SDK clients in threads) share one blocking client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import _process
from .._errors import RateLimitStoreError

__all__ = ["Rates", "RedisStore"]

#: (RPM, TPM) in force; None where there is none.
Rates = tuple[float | None, float | None]

logger = logging.getLogger(__name__)

#: Seconds the store is left alone after a failure before it is tried again.
RETRY_AFTER_FAILURE = 30.0
#: Seconds to connect to or hear from Redis before counting it as unreachable.
SOCKET_TIMEOUT = 1.0

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function take(key, rate, cap, cost)
  if rate <= 0 then return 0 end
  local s = redis.call('HMGET', key, 'level', 'stamp')
  local level, stamp = tonumber(s[1]), tonumber(s[2])
  if level == nil or stamp == nil then level, stamp = cap, now end
  level = math.min(cap, level + (now - stamp) * rate) - cost
  redis.call('HSET', key, 'level', tostring(level), 'stamp', tostring(now))
  redis.call('PEXPIRE', key, 600000)
  if level < 0 then return -level / rate end
  return 0
end
local a = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
local b = take(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
return tostring(math.max(a, b))
"""

_KEY_PREFIX_PARAM = "key_prefix"
_DEFAULT_PREFIX = "bridge:limits:"


class RedisStore:
    """Shared token buckets in Redis.

    Args:
        url: ``redis://[:password@]host:port/db``; an extra ``?key_prefix=...`` query
            parameter sets the prefix of the keys (default ``bridge:limits:``).
        on_error: ``"local"`` falls back to the process's own buckets, with a warning,
            while Redis is unreachable (and tries it again 30 s later); ``"fail"`` raises
            :class:`~bridge.RateLimitStoreError`.
    """

    def __init__(
        self,
        url: str,
        *,
        on_error: Literal["local", "fail"] = "local",
        bucket_seconds: float = 0.5,
    ) -> None:
        self._url, self.prefix = _split_prefix(url)
        self._bucket_seconds = bucket_seconds
        self._label = _redacted(url)
        self._on_error = on_error
        self._failed_until = 0.0
        self._lock = threading.Lock()
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._sync: Any = None
        _stores.add(self)

    def __repr__(self) -> str:
        return f"<RedisStore {self._label} prefix={self.prefix!r}>"

    @property
    def failed(self) -> bool:
        """True while the store is unreachable and the local buckets stand in."""
        return time.monotonic() < self._failed_until

    # -- reservations ---------------------------------------------------------------------

    async def reserve_async(self, endpoint: str, rates: Rates, tokens: int) -> float:
        """Reserve one request and ``tokens`` of ``endpoint`` (a key-safe label) at
        ``rates`` (RPM, TPM; None for none); the seconds to wait (0.0 when unlimited)."""
        args = self._args(endpoint, rates, tokens)
        if args is None:
            return 0.0
        try:
            client = self._async_client()
            reply = await client.eval(_SCRIPT, 2, *args)
        except Exception as exc:  # noqa: BLE001 - any Redis or socket failure is a store failure
            return self._failure(exc)
        return float(reply)

    def reserve_sync(self, endpoint: str, rates: Rates, tokens: int) -> float:
        args = self._args(endpoint, rates, tokens)
        if args is None:
            return 0.0
        try:
            reply = self._sync_client().eval(_SCRIPT, 2, *args)
        except Exception as exc:  # noqa: BLE001 - any Redis or socket failure is a store failure
            return self._failure(exc)
        return float(reply)

    def _args(self, endpoint: str, rates: Rates, tokens: int) -> list[object] | None:
        rpm, tpm = rates
        if rpm is None and tpm is None:
            return None
        base = f"{self.prefix}{endpoint}"
        return [
            f"{base}:requests",
            f"{base}:tokens",
            *self._bucket_args(rpm, 1),
            *self._bucket_args(tpm, tokens),
        ]

    def _bucket_args(self, per_minute: float | None, cost: int) -> tuple[float, float, int]:
        if per_minute is None:
            return (0.0, 0.0, 0)
        rate = per_minute / 60.0
        # The same shape as the local bucket: its seconds of quota, at least one unit.
        return (rate, max(1.0, rate * self._bucket_seconds), cost)

    def _failure(self, exc: BaseException) -> float:
        if self._on_error == "fail":
            raise RateLimitStoreError(
                f"the rate-limit store {self._label} is unreachable ({type(exc).__name__}: "
                f"{exc}); start Redis there, fix Limits(store=...), or pass "
                "on_store_error='local' to fall back to per-process limits"
            ) from exc
        with self._lock:
            first = not self.failed
            self._failed_until = time.monotonic() + RETRY_AFTER_FAILURE
        if first:
            logger.warning(
                "rate-limit store %s is unreachable (%s: %s); using this process's own "
                "limits for the next %.0f s, so processes sharing the key may exceed it "
                "together",
                self._label,
                type(exc).__name__,
                exc,
                RETRY_AFTER_FAILURE,
            )
        return 0.0

    # -- clients ---------------------------------------------------------------------------

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            import redis.asyncio  # noqa: PLC0415 - redis is an optional dependency

            client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
            )
            self._async[loop] = client
        return client

    def _sync_client(self) -> Any:
        with self._lock:
            if self._sync is None:
                import redis  # noqa: PLC0415 - redis is an optional dependency

                self._sync = redis.Redis.from_url(
                    self._url,
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=SOCKET_TIMEOUT,
                )
            return self._sync

    async def aclose_for(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the async client made for ``loop`` (called as a bridge's loop closes)."""
        client = self._async.pop(loop, None)
        if client is not None:
            await client.aclose()


def _split_prefix(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == _KEY_PREFIX_PARAM), _DEFAULT_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != _KEY_PREFIX_PARAM])
    return urlunsplit(parts._replace(query=rest)), prefix


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


async def _close_for_loop(loop: asyncio.AbstractEventLoop) -> None:
    for store in list(_stores):
        await store.aclose_for(loop)


_process.on_loop_close("stores", _close_for_loop)
