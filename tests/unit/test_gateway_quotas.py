"""Quotas per API key: fixed windows, reservations settled by usage, headers, and failing stores."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest

from aima.gateway.keys import ApiKey
from aima.gateway.quotas import (
    Kind,
    MemoryStore,
    Quotas,
    StoreError,
    Window,
    estimate,
    rate_limit_headers,
    windows,
)

pytestmark = pytest.mark.unit

METERED = ApiKey(name="team-a", requests_per_minute=3, tokens_per_minute=100)


class Clock:
    def __init__(self, now: float = 1_000_040.0) -> None:  # 20 s into a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


def quotas(clock: Clock, **options: int) -> Quotas:
    return Quotas(MemoryStore(), clock=clock, **options)


def test_windows_are_aligned_to_the_minute_and_the_utc_day_and_named_by_key() -> None:
    key = ApiKey(name="k", requests_per_minute=1, tokens_per_day=9, model_tokens_per_minute=(("chat", 5),))
    found = windows(key, model="chat", tokens=7, now=86400 * 3 + 61.5)
    assert [(w.kind, w.limit, w.cost, w.ends) for w in found] == [
        (Kind.REQUESTS, 1, 1, 86400 * 3 + 120),
        (Kind.TOKENS_DAY, 9, 7, 86400 * 4),
        (Kind.MODEL_TOKENS, 5, 7, 86400 * 3 + 120),
    ]
    assert found[0].counter == f"aima:quota:{{k}}:requests:{86400 * 3 + 60}"
    assert found[2].counter.startswith("aima:quota:{k}:model_tokens:chat:")
    assert windows(ApiKey(name="open"), model="chat", tokens=7, now=0) == ()
    assert [w.kind for w in windows(key, model="embed", tokens=1, now=0)] == [Kind.REQUESTS, Kind.TOKENS_DAY]


@pytest.mark.parametrize(
    ("payload", "size", "expected"),
    [
        ({"max_tokens": 50}, 40, 60),
        ({"max_completion_tokens": 20, "max_tokens": 50, "n": 2}, 0, 40),
        ({"messages": []}, 400, 356),
        ({"max_tokens": True, "n": -1}, 0, 256),
        (None, 10**6, 256),  # multipart audio: no prompt estimate from its bytes
    ],
    ids=["max_tokens", "completion_cap_times_n", "default", "odd_values", "not_json"],
)
def test_a_request_reserves_its_completion_cap_and_a_prompt_estimate(
    payload: dict[str, object] | None, size: int, expected: int
) -> None:
    assert estimate(payload, body_bytes=size, reserve_tokens=256) == expected


def test_headers_name_the_requests_window_and_the_token_window_that_refuses_first() -> None:
    found = windows(
        ApiKey(name="k", requests_per_minute=10, tokens_per_minute=100, tokens_per_day=1000),
        model="m",
        tokens=5,
        now=30.0,
    )
    headers = rate_limit_headers(found, [4, 40, 990], now=30.0)
    assert headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "6",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "10",
        "x-ratelimit-reset-tokens": "23h59m30s",
    }
    assert rate_limit_headers(found[:1], [12], now=59.98)["x-ratelimit-reset-requests"] == "20ms"
    assert rate_limit_headers(found[1:2], [0], now=0.5)["x-ratelimit-reset-tokens"] == "59.5s"


def test_a_spent_window_refuses_until_it_ends_and_the_next_one_admits() -> None:
    async def scenario() -> None:
        clock = Clock()
        limits = quotas(clock)
        admitted = [await limits.admit(METERED, model="chat", tokens=10) for _ in range(4)]
        assert [a.spent for a in admitted[:3]] == [None, None, None]
        refused = admitted[3]
        assert refused.spent is not None and refused.spent.kind is Kind.REQUESTS
        assert refused.retry_after == pytest.approx(40.0)
        assert refused.refusal == "Rate limit reached: 3 requests per minute for this key"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert admitted[2].headers["x-ratelimit-remaining-tokens"] == "70"
        clock.now += 40.0
        assert (await limits.admit(METERED, model="chat", tokens=10)).spent is None

    asyncio.run(scenario())


def test_usage_replaces_the_reservation_so_the_tokens_counted_are_those_used() -> None:
    async def scenario() -> None:
        limits = quotas(Clock())
        key = ApiKey(name="k", tokens_per_minute=100)
        first = await limits.admit(key, model="chat", tokens=90)
        assert first.headers["x-ratelimit-remaining-tokens"] == "10"
        await limits.settle(first, 30)
        await limits.settle(first, 1000)  # once only
        second = await limits.admit(key, model="chat", tokens=50)
        assert second.headers["x-ratelimit-remaining-tokens"] == "20"  # 30 used + 50 reserved
        await limits.settle(second, None)  # a stream without usage keeps its reservation
        third = await limits.admit(key, model="chat", tokens=5)
        assert third.headers["x-ratelimit-remaining-tokens"] == "15"
        await limits.settle(third, 0)  # failed: nothing used
        assert (await limits.admit(key, model="chat", tokens=1)).headers[
            "x-ratelimit-remaining-tokens"
        ] == "19"

    asyncio.run(scenario())


def test_a_window_below_its_limit_admits_a_request_larger_than_what_is_left() -> None:
    async def scenario() -> None:
        limits = quotas(Clock())
        key = ApiKey(name="k", tokens_per_minute=100)
        assert (await limits.admit(key, model="m", tokens=99)).spent is None
        big = await limits.admit(key, model="m", tokens=500)  # 99 < 100: admitted, overshoot bounded
        assert big.spent is None and big.headers["x-ratelimit-remaining-tokens"] == "0"
        assert (await limits.admit(key, model="m", tokens=1)).spent is not None

    asyncio.run(scenario())


def test_concurrent_admissions_overshoot_by_at_most_one_reservation() -> None:
    async def scenario() -> None:
        limits = quotas(Clock())
        key = ApiKey(name="k", tokens_per_minute=1000)
        found = await asyncio.gather(*(limits.admit(key, model="m", tokens=30) for _ in range(200)))
        admitted = [a for a in found if a.spent is None]
        assert len(admitted) == 34  # 33 * 30 = 990 < 1000, the 34th brings it to 1020
        assert 1000 <= 30 * len(admitted) < 1000 + 30

    asyncio.run(scenario())


def test_a_per_model_limit_refuses_that_model_only() -> None:
    async def scenario() -> None:
        limits = quotas(Clock())
        key = ApiKey(name="k", tokens_per_minute=1000, model_tokens_per_minute=(("chat", 10),))
        assert (await limits.admit(key, model="chat", tokens=10)).spent is None
        refused = await limits.admit(key, model="chat", tokens=10)
        assert refused.spent is not None and refused.spent.kind is Kind.MODEL_TOKENS
        assert refused.refusal == "Rate limit reached: 10 tokens per minute of this model for this key"
        assert (await limits.admit(key, model="embed", tokens=10)).spent is None

    asyncio.run(scenario())


def test_the_standing_of_a_key_lists_every_window_with_what_is_used_and_left() -> None:
    async def scenario() -> None:
        limits = quotas(Clock())
        key = ApiKey(name="k", tokens_per_minute=100, model_tokens_per_minute=(("chat", 50), ("embed", 9)))
        await limits.settle(await limits.admit(key, model="chat", tokens=30), 20)
        assert await limits.standing(key) == [
            {
                "limit": "tokens",
                "model": None,
                "value": 100,
                "used": 20,
                "remaining": 80,
                "resetSeconds": 40.0,
            },
            {
                "limit": "model_tokens",
                "model": "chat",
                "value": 50,
                "used": 20,
                "remaining": 30,
                "resetSeconds": 40.0,
            },
            {
                "limit": "model_tokens",
                "model": "embed",
                "value": 9,
                "used": 0,
                "remaining": 9,
                "resetSeconds": 40.0,
            },
        ]
        assert await limits.standing(ApiKey(name="open")) == []

    asyncio.run(scenario())


class BrokenStore:
    def __init__(self) -> None:
        self.calls = 0

    async def reserve(self, found: Sequence[Window], *, now: float) -> tuple[bool, list[int]]:
        self.calls += 1
        raise StoreError("ConnectionError: Error 111 connecting to redis:6379")

    async def adjust(self, found: Sequence[Window], delta: int, *, now: float) -> None:
        raise StoreError("down")

    async def read(self, found: Sequence[Window], *, now: float) -> list[int]:
        raise StoreError("down")

    async def close(self) -> None:
        pass


def test_a_failing_store_admits_counts_the_error_and_rests_before_it_is_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        clock, store, errors = Clock(), BrokenStore(), Counter[str]()
        limits = Quotas(store, clock=clock, errors=errors)
        first = await limits.admit(METERED, model="chat", tokens=10)
        assert (first.spent, first.headers, first.windows) == (None, {}, ())
        await limits.admit(METERED, model="chat", tokens=10)
        assert (store.calls, errors["reserve"]) == (1, 1)  # the second passed without asking
        clock.now += 5.0
        await limits.admit(METERED, model="chat", tokens=10)
        assert (store.calls, errors["reserve"]) == (2, 2)

    asyncio.run(scenario())
    assert "requests pass unchecked" in caplog.text
    assert "redis://" not in caplog.text
