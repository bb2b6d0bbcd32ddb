"""Request and token quotas per API key, counted in one store that every gateway replica shares.

A key's limits come from its Secret (:mod:`aima.gateway.keys`): ``requestsPerMinute``,
``tokensPerMinute``, ``tokensPerDay`` and ``modelTokensPerMinute`` (``chat=600,embed=6000``: a
model's own cap for this key, beside the key's overall ones; model ids as /v1/models lists them).
Tokens are what the engines report in ``usage`` (prompt plus completion), streamed replies included.

Windows. Each limit is a fixed window aligned to the clock, the minute or the UTC day, with one
counter per key, limit and window. Admission is one atomic step over all of a request's counters:
if every counter is below its limit, each is raised by the request's cost, else none is and the
request is refused (429 ``rate_limit_exceeded``, Retry-After until the spent window ends). A request
costs 1 in the requests window and its estimate in the token windows: ``max_completion_tokens`` or
``max_tokens`` (times ``n``), else ``reserve_tokens``, plus a quarter of a JSON body's bytes for the
prompt. When the reply ends, the estimate is replaced by the usage the engine reported, in the
windows it was reserved in. A reply without usage is charged nothing, except a streamed one
(``text/event-stream``, whose client did not ask for ``stream_options.include_usage``), which keeps
its estimate.

Error bound. Since admission checks and reserves in one step (a Lua script in Redis, one step of the
event loop in memory), the N replicas and any concurrency see one counter, and a window's final
total is the sum of what its requests used. Admissions stop as soon as the counter reaches the
limit, so a window ends above its limit by less than one request's reservation (the largest), when
estimates are upper bounds (``max_tokens`` given), plus, for requests that used more than their
estimate, that excess of the requests in flight when the window filled. The bound does not grow with
the number of replicas (``hack/bench/quota.py``: 616 tokens a minute for a 600 limit driven at three
times it through three replicas, where counting per replica admits 1,804). Like any fixed window it
lets a key spend up to twice its limit in the 60 seconds around a boundary (the end of one minute,
the start of the next); over whole windows it holds. The replicas' clocks (NTP) pick the window, so
skew moves requests across a boundary and adds no budget.

Stores. :class:`MemoryStore` counts in this process: right for one replica, N times the limits
with N. :class:`RedisStore` (``Settings.gateway_quota_redis_url``) is shared; its keys carry the key
name as a hash tag, so a Redis Cluster keeps a key's counters in one slot, and expire a minute
after their window. If the store fails, requests are admitted (fail open: serving matters more
than the quota), the failure is logged and counted (``aima_gateway_quota_store_errors_total``), and
the store is left alone for ``_PAUSE_SECONDS`` before it is asked again.

Reading. ``GET /v1/quotas`` (:meth:`Quotas.standing`) shows a key its windows as the store has them.
There is no unit for it: units also run in the MCP server and the CLI, which reach the gateway with
credentials that read their own quotas only, and the MCP tool list is near its size budget; the
route and ``aima_gateway_key_tokens_total{key,kind}`` (summed over the replicas) cover it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio
import redis.exceptions

from aima.gateway.keys import ApiKey

__all__ = [
    "Admission",
    "Kind",
    "MemoryStore",
    "Quotas",
    "RedisStore",
    "Store",
    "StoreError",
    "Window",
    "estimate",
    "rate_limit_headers",
    "windows",
]

logger = logging.getLogger("aima.gateway.quotas")

_MINUTE, _DAY = 60.0, 86400.0
_PAUSE_SECONDS = 5.0
"""How long a failed store is left alone (requests pass unchecked) before it is asked again."""
_TTL_SLACK_SECONDS = 60.0
"""How long a counter outlives its window, so that the replies of its last requests still settle."""


class Kind(enum.Enum):
    """What a window counts."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    """Tokens per minute."""
    TOKENS_DAY = "tokens_per_day"
    MODEL_TOKENS = "model_tokens"
    """Tokens per minute of one model."""


@dataclass(frozen=True, slots=True)
class Window:
    """One counter a request is admitted against."""

    counter: str
    """The store's key for it: key name, kind, model and window start."""
    kind: Kind
    limit: int
    cost: int
    """What admission adds to it."""
    ends: float
    """End of the window, Unix seconds."""
    model: str | None = None
    """The model a MODEL_TOKENS window counts."""


def windows(key: ApiKey, *, model: str | None, tokens: int, now: float) -> tuple[Window, ...]:
    """The windows that a request of ``key`` for ``model``, estimated at ``tokens``, is admitted
    against at ``now``; with no model, every window of the key, each model's included."""
    limits: list[tuple[Kind, int, float, str]] = []
    if key.requests_per_minute is not None:
        limits.append((Kind.REQUESTS, key.requests_per_minute, _MINUTE, ""))
    if key.tokens_per_minute is not None:
        limits.append((Kind.TOKENS, key.tokens_per_minute, _MINUTE, ""))
    if key.tokens_per_day is not None:
        limits.append((Kind.TOKENS_DAY, key.tokens_per_day, _DAY, ""))
    for name, per_model in key.model_tokens_per_minute:
        if model is None or name == model:
            limits.append((Kind.MODEL_TOKENS, per_model, _MINUTE, ":" + name))
    found = []
    for kind, limit, period, suffix in limits:
        start = now // period * period
        found.append(
            Window(
                # {name} is a Redis Cluster hash tag: one key's counters share a slot.
                counter=f"aima:quota:{{{key.name}}}:{kind.value}{suffix}:{int(start)}",
                kind=kind,
                limit=limit,
                cost=1 if kind is Kind.REQUESTS else tokens,
                ends=start + period,
                model=suffix[1:] or None,
            )
        )
    return tuple(found)


def estimate(payload: dict[str, Any] | None, *, body_bytes: int, reserve_tokens: int) -> int:
    """The tokens to reserve for a request: its completion cap (or ``reserve_tokens``) times ``n``, and
    a quarter of a JSON body's bytes for the prompt (a JSON body has fewer tokens than that)."""
    if payload is None:
        return reserve_tokens
    cap = _count(payload.get("max_completion_tokens")) or _count(payload.get("max_tokens"))
    return (cap or reserve_tokens) * (_count(payload.get("n")) or 1) + body_bytes // 4


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def rate_limit_headers(found: Sequence[Window], counts: Sequence[int], *, now: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: the requests window, and of the token windows the one with the
    fewest tokens left (the one that refuses first)."""
    headers: dict[str, str] = {}
    tokens: tuple[int, Window] | None = None
    for window, count in zip(found, counts, strict=True):
        left = max(0, window.limit - count)
        if window.kind is Kind.REQUESTS:
            headers |= _headers("requests", window, left, now=now)
        elif tokens is None or left < tokens[0]:
            tokens = (left, window)
    if tokens is not None:
        headers |= _headers("tokens", tokens[1], tokens[0], now=now)
    return headers


def _headers(what: str, window: Window, left: int, *, now: float) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{what}": str(window.limit),
        f"x-ratelimit-remaining-{what}": str(left),
        f"x-ratelimit-reset-{what}": _duration(window.ends - now),
    }


def _duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's): ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


class StoreError(Exception):
    """The store could not be asked (unreachable, timed out, refused)."""


class Store(Protocol):
    """Where the counters live."""

    async def reserve(self, found: Sequence[Window], *, now: float) -> tuple[bool, list[int]]:
        """In one atomic step: if every counter is below its limit, add each its cost. Whether it
        did, and the counters after."""

    async def adjust(self, found: Sequence[Window], delta: int, *, now: float) -> None:
        """Add ``delta`` to those counters that still exist."""

    async def read(self, found: Sequence[Window], *, now: float) -> list[int]:
        """The counters as they are (0 for those that do not exist)."""

    async def close(self) -> None:
        """Let go of connections."""


class MemoryStore:
    """Counters in this process (a single replica's)."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[int, float]] = {}  # counter -> (count, expires)
        self._next_prune = 0.0

    async def reserve(self, found: Sequence[Window], *, now: float) -> tuple[bool, list[int]]:
        if now >= self._next_prune:
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
            self._next_prune = now + _MINUTE
        counts = [self._count(w.counter, now) for w in found]
        if any(count >= w.limit for count, w in zip(counts, found, strict=True)):
            return False, counts
        counts = [count + w.cost for count, w in zip(counts, found, strict=True)]
        for count, w in zip(counts, found, strict=True):
            self._counters[w.counter] = (count, w.ends + _TTL_SLACK_SECONDS)
        return True, counts

    async def adjust(self, found: Sequence[Window], delta: int, *, now: float) -> None:
        for w in found:
            count, expires = self._counters.get(w.counter, (0, 0.0))
            if expires > now:
                self._counters[w.counter] = (count + delta, expires)

    async def read(self, found: Sequence[Window], *, now: float) -> list[int]:
        return [self._count(w.counter, now) for w in found]

    async def close(self) -> None:
        self._counters.clear()

    def _count(self, counter: str, now: float) -> int:
        count, expires = self._counters.get(counter, (0, 0.0))
        return count if expires > now else 0


# KEYS: the counters; ARGV: limit, cost and time to live (ms) of each. Returns {admitted, counts...}.
_RESERVE = """
local counts, spent = {}, false
for i = 1, #KEYS do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counts[i] >= tonumber(ARGV[3 * i - 2]) then spent = true end
end
if not spent then
  for i = 1, #KEYS do
    counts[i] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 1])
    redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
  end
end
table.insert(counts, 1, spent and 0 or 1)
return counts
"""
# KEYS: the counters; ARGV[1]: what to add to those that still exist (an expired one stays gone).
_ADJUST = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 0
"""


class RedisStore:
    """Counters in Redis, shared by every replica; each step is one Lua script, so one round trip."""

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        self._reserve = self._redis.register_script(_RESERVE)
        self._adjust = self._redis.register_script(_ADJUST)

    async def reserve(self, found: Sequence[Window], *, now: float) -> tuple[bool, list[int]]:
        args: list[int] = []
        for w in found:
            args += [w.limit, w.cost, _ttl_ms(w, now)]
        reply = await self._call(self._reserve, [w.counter for w in found], args)
        return bool(reply[0]), [int(n) for n in reply[1:]]

    async def adjust(self, found: Sequence[Window], delta: int, *, now: float) -> None:
        await self._call(self._adjust, [w.counter for w in found], [delta])

    async def read(self, found: Sequence[Window], *, now: float) -> list[int]:
        if not found:
            return []
        try:
            values = await self._redis.mget([w.counter for w in found])
        except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
            raise StoreError(f"{type(error).__name__}: {error}") from None
        return [int(v or 0) for v in values]

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[int]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
            # The error names the host at most, never the URL's password.
            raise StoreError(f"{type(error).__name__}: {error}") from None


def _ttl_ms(window: Window, now: float) -> int:
    return max(1, round((window.ends - now + _TTL_SLACK_SECONDS) * 1000))


@dataclass(kw_only=True, slots=True)
class Admission:
    """A request's standing against its key's windows."""

    windows: tuple[Window, ...] = ()
    reserved: int = 0
    """Tokens reserved in the token windows, replaced by the reply's usage when it settles."""
    headers: dict[str, str] = field(default_factory=dict)
    """The x-ratelimit-* headers of the reply."""
    spent: Window | None = None
    """The window that is spent (None: admitted)."""
    retry_after: float = 0.0
    """Refused: seconds until every spent window has ended."""
    settled: bool = False

    @property
    def refusal(self) -> str:
        """The message of the 429."""
        window = self.spent or self.windows[0]
        what = {
            Kind.REQUESTS: "requests per minute",
            Kind.TOKENS: "tokens per minute",
            Kind.TOKENS_DAY: "tokens per day",
            Kind.MODEL_TOKENS: "tokens per minute of this model",
        }[window.kind]
        return f"Rate limit reached: {window.limit} {what} for this key"


class Quotas:
    """Admission and settlement of requests against their keys' windows in ``store``."""

    def __init__(
        self,
        store: Store,
        *,
        reserve_tokens: int = 256,
        errors: Counter[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.reserve_tokens = reserve_tokens
        self._errors = Counter[str]() if errors is None else errors
        self._clock = clock
        self._paused_until = 0.0

    async def admit(self, key: ApiKey, *, model: str, tokens: int) -> Admission:
        """Reserve a request of ``tokens`` (estimated) for ``key`` and ``model``; a key without limits,
        or a store that fails, admits it unchecked."""
        now = self._clock()
        found = windows(key, model=model, tokens=tokens, now=now)
        if not found or now < self._paused_until:
            return Admission()
        try:
            admitted, counts = await self.store.reserve(found, now=now)
        except StoreError as error:
            self._failed("reserve", error, now=now)
            return Admission()
        headers = rate_limit_headers(found, counts, now=now)
        if admitted:
            return Admission(windows=found, reserved=tokens, headers=headers)
        spent = [w for w, count in zip(found, counts, strict=True) if count >= w.limit]
        return Admission(
            windows=found,
            headers=headers,
            spent=spent[0],
            retry_after=max(w.ends for w in spent) - now,
            settled=True,
        )

    async def standing(self, key: ApiKey) -> list[dict[str, object]]:
        """Each of ``key``'s windows now: what it counts, its limit, what is used and left, and when
        it resets (raises :class:`StoreError`)."""
        now = self._clock()
        found = windows(key, model=None, tokens=0, now=now)
        counts = await self.store.read(found, now=now)
        return [
            {
                "limit": w.kind.value,
                "model": w.model,
                "value": w.limit,
                "used": count,
                "remaining": max(0, w.limit - count),
                "resetSeconds": round(w.ends - now, 3),
            }
            for w, count in zip(found, counts, strict=True)
        ]

    async def settle(self, admission: Admission, tokens: int | None) -> None:
        """Replace the reservation by the ``tokens`` the reply used (None keeps it); once per admission."""
        if admission.settled:
            return
        admission.settled = True
        delta = 0 if tokens is None else tokens - admission.reserved
        found = [w for w in admission.windows if w.kind is not Kind.REQUESTS]
        if not delta or not found:
            return
        now = self._clock()
        try:
            await self.store.adjust(found, delta, now=now)
        except StoreError as error:
            self._failed("adjust", error, now=now)

    def _failed(self, what: str, error: StoreError, *, now: float) -> None:
        self._errors[what] += 1
        self._paused_until = now + _PAUSE_SECONDS
        logger.warning(
            "The quota store failed (%s: %s); requests pass unchecked for %.0f s",
            what,
            error,
            _PAUSE_SECONDS,
        )
