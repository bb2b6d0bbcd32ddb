"""API keys read from Secrets (with their limits) and looked up by token."""

from __future__ import annotations

import asyncio
import base64

import pytest

from aima.gateway.identity import looks_like_jwt
from aima.gateway.keys import ApiKey, KeyStore, UnitsAccess, key_from_secret
from aima.gateway.server import loopback_url

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


def test_a_key_secret_may_limit_tokens_per_minute_and_day_overall_and_per_model() -> None:
    found = key_from_secret(
        secret(
            "metered",
            key="sk-m",
            tokensPerMinute="600",
            tokensPerDay="100000",
            modelTokensPerMinute="chat=100, team-b/embed=5000",
        )
    )
    assert found is not None
    key = found[1]
    assert (key.tokens_per_minute, key.tokens_per_day, key.requests_per_minute) == (600, 100000, None)
    assert key.model_tokens_per_minute == (("chat", 100), ("team-b/embed", 5000))


def test_a_key_without_models_may_use_every_model() -> None:
    found = key_from_secret(secret("open", key="sk-open"))
    assert found is not None
    assert found[1].allows("anything")
    assert found[1].requests_per_minute is None
    assert found[1].units is UnitsAccess.NONE  # a key for chat clients cannot reach /api/v2


@pytest.mark.parametrize(("units", "access"), [("read", UnitsAccess.READ), ("Write", UnitsAccess.WRITE)])
def test_a_key_secret_may_grant_the_units_door(units: str, access: UnitsAccess) -> None:
    found = key_from_secret(secret("console", key="sk-c", units=units))
    assert found is not None and found[1].units is access


@pytest.mark.parametrize(
    "body",
    [
        secret("unlabelled", labels={}, key="sk"),
        secret("no-key", models="chat"),
        secret("bad-limit", key="sk", requestsPerMinute="lots"),
        secret("bad-units", key="sk", units="admin"),
        secret("negative", key="sk", tokensPerMinute="-1"),
        secret("bad-model-limit", key="sk", modelTokensPerMinute="chat"),
        secret("no-model", key="sk", modelTokensPerMinute="=5"),
        {"metadata": {"name": "bad", "labels": {"aima.dev/api-key": "true"}}, "data": {"key": "%%%"}},
    ],
)
def test_other_secrets_declare_no_key(body: dict[str, object]) -> None:
    assert key_from_secret(body) is None


def test_the_store_finds_keys_by_token_only() -> None:
    store = KeyStore([("sk-a", ApiKey(name="a"))])
    assert store.verify("sk-a") == ApiKey(name="a")
    assert store.verify("sk-b") is None
    assert store.verify("") is None
    assert (store.named("a"), store.named("b")) == (ApiKey(name="a"), None)
    store.replace([])
    assert store.verify("sk-a") is None
    assert len(store) == 0


def test_a_pinned_key_outlives_replacement_and_unknown_tokens_go_to_review() -> None:
    reviewed: list[str] = []

    async def review(token: str) -> ApiKey | None:
        reviewed.append(token)
        return ApiKey(name="serviceaccount:ns/op") if token == "a.b.c" else None

    store = KeyStore(review=review)
    store.pin("sk-own", ApiKey(name="units-door"))
    store.replace([("sk-a", ApiKey(name="a"))])
    assert asyncio.run(store.authenticate("sk-own")) == ApiKey(name="units-door")
    assert asyncio.run(store.authenticate("sk-a")) == ApiKey(name="a")
    assert asyncio.run(store.authenticate("a.b.c")) == ApiKey(name="serviceaccount:ns/op")
    assert asyncio.run(store.authenticate("x.y.z")) is None
    assert reviewed == ["a.b.c", "x.y.z"]  # keys from Secrets never leave the process


def test_only_jwt_shaped_tokens_are_worth_a_token_review() -> None:
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiYWltYSJdfQ.c2lnbmF0dXJlc2lnbmF0dXJl")
    assert not looks_like_jwt("sk-test-all")
    assert not looks_like_jwt("a.b.c")


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://127.0.0.1:8080"), ("::", "http://[::1]:8080"), ("10.0.0.5", "http://10.0.0.5:8080")],
)
def test_the_units_door_reaches_its_own_gateway_on_loopback(host: str, url: str) -> None:
    assert loopback_url(host, 8080) == url
