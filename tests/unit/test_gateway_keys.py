"""API keys read from Secrets, looked up by token, and per-key token-bucket rate limits."""

from __future__ import annotations

import base64

import pytest

from aima.gateway.keys import ApiKey, KeyStore, RateLimiter, key_from_secret

pytestmark = pytest.mark.unit


def secret(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, object]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    meta = {
        "name": name,
        "namespace": "ns",
        "labels": {"aima.dev/api-key": "true"} if labels is None else labels,
    }
    return {"metadata": meta, "data": encoded}


def test_a_labelled_secret_declares_a_key_with_models_and_limit() -> None:
    found = key_from_secret(secret("team-a", key="sk-a", models="chat, embed", requestsPerMinute="60"))
    assert found == (
        "sk-a",
        ApiKey(name="team-a", models=frozenset({"chat", "embed"}), requests_per_minute=60),
    )


def test_a_key_without_models_may_use_every_model() -> None:
    found = key_from_secret(secret("open", key="sk-open"))
    assert found is not None
    assert found[1].allows("anything")
    assert found[1].requests_per_minute is None


@pytest.mark.parametrize(
    "body",
    [
        secret("unlabelled", labels={}, key="sk"),
        secret("no-key", models="chat"),
        secret("bad-limit", key="sk", requestsPerMinute="lots"),
        {"metadata": {"name": "bad", "labels": {"aima.dev/api-key": "true"}}, "data": {"key": "%%%"}},
    ],
)
def test_other_secrets_declare_no_key(body: dict[str, object]) -> None:
    assert key_from_secret(body) is None


def test_the_store_finds_keys_by_token_only() -> None:
    store = KeyStore([("sk-a", ApiKey(name="a"))])
    assert store.verify("sk-a") == ApiKey(name="a")
    assert store.accepts("sk-a")
    assert not store.accepts("sk-b")
    assert not store.accepts("")
    store.replace([])
    assert not store.accepts("sk-a")
    assert len(store) == 0


def test_a_key_may_burst_its_minute_then_waits_for_the_refill() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.admit("a", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.admit("a", 3) == pytest.approx(20.0)
    assert limiter.admit("b", 3) == 0.0  # buckets are per key
    now[0] += 20.0
    assert limiter.admit("a", 3) == 0.0
    assert limiter.admit("a", 3) > 0
