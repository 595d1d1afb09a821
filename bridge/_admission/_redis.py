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
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import _process
from .._errors import RateLimitStoreError

__all__ = ["RedisStore", "StepReply", "StepRequest"]

logger = logging.getLogger(__name__)

#: Seconds the store is left alone after a failure before it is tried again.
RETRY_AFTER_FAILURE = 30.0
#: Seconds to connect to or hear from Redis before counting it as unreachable.
SOCKET_TIMEOUT = 1.0

_SCRIPT = """
-- One endpoint's shared admission state, in one hash: the pause and its epoch, a lending
-- bucket per limit and lane, the running totals, the lanes' last demand, and rate
-- discovery. Every operation reads the Redis server's clock, so machines agree.
local key, op = KEYS[1], ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local G, BETA, CEIL, MINR = 0.02, 0.7, 2.0, 1.0 / 60.0
local K = ((1.0 - BETA) / G) ^ (1.0 / 3.0)
local function num(field, default)
  local v = tonumber(redis.call('HGET', key, field))
  if v == nil then return default end
  return v
end
local function put(field, value) redis.call('HSET', key, field, string.format('%.17g', value)) end
local function cubic()
  local de = num('de', nil)
  if de == nil then return 0 end
  local dw = num('dw', MINR)
  local r = dw * (1 + G * (now - de - K) ^ 3)
  if r < CEIL * dw then return math.max(MINR, r) end
  local el = now - de
  if el > 1 and num('dn', 0) / el >= 0.75 * CEIL * dw then
    dw = dw * CEIL
    put('dw', dw)
    put('de', now - K)
  end
  return CEIL * dw
end
-- The rate (per second) a limit is held to: configured (> 0), none (0), or learned (-1):
-- told by headers, else, for requests, found from 429s.
local function rate(kind, cfg)
  if cfg >= 0 then return cfg end
  local told = num('rate:' .. kind, 0)
  if told > 0 or kind ~= 'r' then return told end
  return cubic()
end
local function parts(lane, idle, share)
  local other = (lane == 'i') and 'b' or 'i'
  if now - num('seen:' .. other, -1e18) < idle then
    if lane == 'i' then return share, 1 - share end
    return 1 - share, share
  end
  return 1, 1
end
local function take(kind, lane, r, cost, bucket_s)
  local cap = math.max(1, r * bucket_s)
  local lvl = num('lvl:' .. kind .. ':' .. lane, cap)
  local stm = num('stm:' .. kind .. ':' .. lane, now)
  lvl = math.min(cap, lvl + (now - stm) * r) - cost
  put('lvl:' .. kind .. ':' .. lane, lvl)
  put('stm:' .. kind .. ':' .. lane, now)
  if lvl < 0 then return -lvl / r end
  return 0
end
local function void_all(level_of)
  for _, kind in ipairs({'r', 't'}) do
    for _, lane in ipairs({'i', 'b'}) do
      put('lvl:' .. kind .. ':' .. lane, level_of(kind))
      put('stm:' .. kind .. ':' .. lane, now)
    end
  end
  redis.call('HINCRBY', key, 'epoch', 1)
end
local result
if op == 'step' then
  local ep, lane, share, bucket_s, idle = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
    tonumber(ARGV[5]), tonumber(ARGV[6])
  local cfg = {r = tonumber(ARGV[7]), t = tonumber(ARGV[8])}
  local cost = {r = tonumber(ARGV[9]), t = tonumber(ARGV[10])}
  local opening = tonumber(ARGV[11])
  local epoch, paused = num('epoch', 0), num('paused', 0)
  local wait = math.max(0, paused - now)
  if not (ep >= 0 and ep == epoch) then
    local other = (lane == 'i') and 'b' or 'i'
    local woke = now - num('seen:' .. lane, -1e18) >= idle
    put('seen:' .. lane, now)
    local mine = parts(lane, idle, share)
    local voided = woke and now - num('seen:' .. other, -1e18) < idle
    for _, kind in ipairs({'r', 't'}) do
      local r = rate(kind, cfg[kind])
      if r > 0 then
        wait = math.max(wait, take(kind, lane, r * mine, cost[kind], bucket_s))
        if voided then put('lvl:' .. kind .. ':' .. other, 0) end
      end
    end
    -- Nothing known yet (no limit told or found): the processes together open with
    -- `opening` requests, then a rate that starts at that many a second and doubles every
    -- second (slow start), until an answer says more. A server that never says (no
    -- headers, never a 429: a self-hosted model, say) is then not held to the opening.
    if opening > 0 and rate('r', cfg.r) == 0 and rate('t', cfg.t) == 0 then
      local since = num('os', nil)
      if since == nil then
        since = now
        put('os', now)
      end
      local grown = opening * 2 ^ math.min(20, now - since)
      wait = math.max(wait, take('o', 'i', grown, cost.r, 1.0))
    end
    if voided then epoch = redis.call('HINCRBY', key, 'epoch', 1) end
    if ep < 0 then
      redis.call('HINCRBYFLOAT', key, 'tot:r', cost.r)
      redis.call('HINCRBYFLOAT', key, 'tot:t', cost.t)
    end
  end
  if wait <= 0 then  -- let go now: a send, for discovery's count
    redis.call('HINCRBY', key, 'dn', 1)
    if num('ds', nil) == nil then put('ds', now) end
  end
  result = {string.format('%.17g', wait), epoch, string.format('%.17g', now),
    string.format('%.17g', num('tot:r', 0)), string.format('%.17g', num('tot:t', 0)),
    string.format('%.17g', rate('r', cfg.r)), string.format('%.17g', rate('t', cfg.t))}
elseif op == 'pause' then
  local seconds, cfg_r, cfg_t = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  if now + seconds > num('paused', 0) then
    put('paused', now + seconds)
    local rates = {r = rate('r', cfg_r), t = rate('t', cfg_t)}
    void_all(function(kind) return -rates[kind] * seconds - math.max(1, rates[kind] / 4) end)
  end
  result = 1
elseif op == 'learn' then
  local kind, per_second, remaining, mark = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
    tonumber(ARGV[5])
  local told, stale = num('rate:' .. kind, 0), tonumber(ARGV[7]) ~= num('epoch', 0)
  if per_second > 0 and math.abs(told - per_second) > 1e-6 * per_second then
    put('rate:' .. kind, per_second)  -- a new rate: its reservations are void
    for _, lane in ipairs({'i', 'b'}) do put('lvl:' .. kind .. ':' .. lane, 0) end
    redis.call('HINCRBY', key, 'epoch', 1)
  end
  -- The server's view, less what the cluster charged since: the batch lane takes the
  -- shortfall while it runs (it yields); the interactive lane only when alone. Not
  -- from a request reserved in an earlier epoch: the charges since its mark include
  -- reservations that were voided and are being made again, so they would count twice.
  local view = remaining - (num('tot:' .. kind, 0) - mark)
  local lane = (now - num('seen:b', -1e18) < tonumber(ARGV[6])) and 'b' or 'i'
  local field = 'lvl:' .. kind .. ':' .. lane
  local lvl = num(field, nil)
  if not stale and (lvl == nil or lvl > view) then
    put(field, view)
    put('stm:' .. kind .. ':' .. lane, now)
  end
  result = 1
elseif op == 'settle' then
  local field = 'lvl:' .. ARGV[2] .. ':' .. ARGV[3]
  put(field, num(field, 0) + tonumber(ARGV[4]))
  result = 1
elseif op == 'reject' then
  local sent_at, de = tonumber(ARGV[2]), num('de', -1e18)
  if sent_at <= de then
    if num('df', 0) == 1 then put('dw', math.max(MINR, num('dw', MINR) - 1 / num('dsp', 1))) end
    result = 0
  elseif sent_at <= de + 1.0 then
    -- Sent within a second of the cut: the server's bucket was still empty, and the
    -- pause that the 429 brought is told separately, so other processes may have sent
    -- before it landed. The same event: measured over that sliver of time, the rate
    -- taken would be a handful of requests, and the cluster would crawl at it.
    result = 0
  else
    local refused = num('dr', 0) + 1
    local span = math.max(0, now - num('ds', now)) + 1
    put('df', (de < -1e17) and 1 or 0)
    put('dw', math.max(MINR, (num('dn', 0) - refused) / span))
    put('dsp', span)
    put('de', now)
    put('ds', now)
    put('dn', 0)
    put('dr', 0)
    -- Reservations at the old rate are void (a new epoch): each is made again, at the
    -- new rate, after what is left of a pause that the 429 brought (if it landed first;
    -- if it lands later, it sets the same from the new rate).
    local hold = math.max(0, num('paused', 0) - now) * BETA * num('dw', MINR)
    for _, lane in ipairs({'i', 'b'}) do
      put('lvl:r:' .. lane, -hold)
      put('stm:r:' .. lane, now)
    end
    redis.call('HINCRBY', key, 'epoch', 1)
    result = 1
  end
end
redis.call('PEXPIRE', key, 3600000)
return result
"""


@dataclass(frozen=True, slots=True)
class StepRequest:
    """One admission step on the shared state; rates per second (0: none, -1: learned)."""

    epoch: int | None
    lane: str
    share: float
    bucket_seconds: float
    lane_idle: float
    rates: tuple[float, float]
    costs: tuple[int, int]
    #: While nothing is known of the limits, the cluster sends at most this many at once
    #: (and this many a second); 0 when they are configured.
    opening: int = 0

    def args(self) -> list[object]:
        return [
            "step",
            -1 if self.epoch is None else self.epoch,
            "i" if self.lane == "interactive" else "b",
            self.share,
            self.bucket_seconds,
            self.lane_idle,
            *self.rates,
            *self.costs,
            self.opening,
        ]


@dataclass(frozen=True, slots=True)
class StepReply:
    """What the shared state said: the wait, its epoch, the server's time, the running
    totals of requests and tokens, and the rates in force (per second)."""

    wait: float
    epoch: int
    now: float
    totals: tuple[float, float]
    rates: tuple[float, float]

    @classmethod
    def parse(cls, reply: Any) -> StepReply:
        wait, epoch, now, total_r, total_t, rate_r, rate_t = reply
        return cls(
            float(wait),
            int(epoch),
            float(now),
            (float(total_r), float(total_t)),
            (float(rate_r), float(rate_t)),
        )


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
        self._telling: set[asyncio.Task[None]] = set()
        _stores.add(self)

    def __repr__(self) -> str:
        return f"<RedisStore {self._label} prefix={self.prefix!r}>"

    @property
    def failed(self) -> bool:
        """True while the store is unreachable and the local buckets stand in."""
        return time.monotonic() < self._failed_until

    # -- the shared state ------------------------------------------------------------------

    async def step_async(self, endpoint: str, request: StepRequest) -> StepReply | None:
        """Reserve (or confirm, within ``request.epoch``) on the shared state.

        None when Redis is unreachable and ``on_error="local"``: the caller's own buckets
        stand in.
        """
        try:
            reply = await self._async_client().eval(
                _SCRIPT, 1, self._key(endpoint), *request.args()
            )
        except Exception as exc:  # noqa: BLE001 - any Redis or socket failure is a store failure
            self._failure(exc)
            return None
        return StepReply.parse(reply)

    def step_sync(self, endpoint: str, request: StepRequest) -> StepReply | None:
        """The blocking twin of :meth:`step_async`, for sync clients in threads."""
        try:
            reply = self._sync_client().eval(_SCRIPT, 1, self._key(endpoint), *request.args())
        except Exception as exc:  # noqa: BLE001 - any Redis or socket failure is a store failure
            self._failure(exc)
            return None
        return StepReply.parse(reply)

    def tell(self, endpoint: str, *args: object) -> None:
        """Send what every process must know (a pause, a learned limit, a settlement, a
        429 for discovery), without waiting for it: from a loop, as a task; elsewhere, at
        once. A failure is a store failure, as for a reservation."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._tell_sync(endpoint, args)
            return
        task = loop.create_task(self._tell_async(endpoint, args))
        self._telling.add(task)  # a task nobody holds can be collected before it runs
        task.add_done_callback(self._telling.discard)

    async def _tell_async(self, endpoint: str, args: tuple[object, ...]) -> None:
        try:
            await self._async_client().eval(_SCRIPT, 1, self._key(endpoint), *args)
        except Exception as exc:  # noqa: BLE001 - any Redis or socket failure is a store failure
            self._tolerate(exc)

    def _tell_sync(self, endpoint: str, args: tuple[object, ...]) -> None:
        try:
            self._sync_client().eval(_SCRIPT, 1, self._key(endpoint), *args)
        except Exception as exc:  # noqa: BLE001 - any Redis or socket failure is a store failure
            self._tolerate(exc)

    def _tolerate(self, exc: BaseException) -> None:
        # Raising from a notification would fail an answered request: mark and log only.
        try:
            self._failure(exc)
        except RateLimitStoreError:
            logger.warning("rate-limit store %s: an update was lost: %s", self._label, exc)

    def _key(self, endpoint: str) -> str:
        return f"{self.prefix}{endpoint}"

    def _failure(self, exc: BaseException) -> None:
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
