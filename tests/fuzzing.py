"""What the fuzz tests share: deterministic hypothesis settings, values that follow a JSON schema
and values that break it, and an event loop that hypothesis's synchronous examples run doors on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from aima.units.errors import ErrorCode, http_status

T = TypeVar("T")


def fuzz(examples: int) -> settings:
    """The same `examples` inputs on every run (derandomized), no deadline, no example database."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value."""
NOT_OBJECTS: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(JSON, max_size=3)
)
"""JSON values that are no object."""
NOT_JSON: st.SearchStrategy[bytes] = st.binary(min_size=1, max_size=64).filter(
    lambda raw: bool(raw.strip()) and not _parses(raw)
)
"""Bytes that no JSON parser takes (and that are not blank, which a door may read as {})."""
DEEP: st.SearchStrategy[bytes] = st.integers(1, 100_000).map(lambda depth: b"[" * depth + b"]" * depth)
"""Arrays in arrays, deeper than a recursive parser goes."""
UNKNOWN_FIELD = "fuzzUnknownField"
"""A field no input model declares."""
NO_WAITS = {"wait": False, "waitSeconds": 0}
"""Inputs that would have a unit wait for the operator, which the fuzz tests do not run: such a wait
lasts its whole timeout (minutes), and what it waits for is tested where the operator runs."""


def without_waits(body: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with every wait the input schema offers turned off."""
    return body | {k: v for k, v in NO_WAITS.items() if k in schema.get("properties", {})}


def instances(
    schema: Mapping[str, Any], *, definitions: Mapping[str, Any] | None = None
) -> st.SearchStrategy[Any]:
    """Values valid against `schema`; `definitions` are the documents its `$ref`s point into."""
    return from_schema({**schema, **(definitions or {})})


def broken(
    schema: Mapping[str, Any], *, definitions: Mapping[str, Any] | None = None
) -> st.SearchStrategy[Any]:
    """Object bodies `schema` (an object schema) refuses: an unknown field added to a valid one, a
    required field left out, or no object at all."""
    valid = instances(schema, definitions=definitions).filter(lambda v: isinstance(v, dict))
    required = list(schema.get("required", ()))
    options = [valid.flatmap(lambda v: JSON.map(lambda extra: v | {UNKNOWN_FIELD: extra})), NOT_OBJECTS]
    if required:
        options.append(
            st.tuples(valid, st.sampled_from(required)).map(lambda pair: _without(pair[0], pair[1]))
        )
    return st.one_of(options)


def odd(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the fields `schema` names, holding any JSON (mostly of the wrong type)."""
    names = sorted(schema.get("properties", {}))
    return st.dictionaries(st.sampled_from(names), JSON, max_size=len(names)) if names else st.just({})


def check_unit_error(status: int, body: Any) -> ErrorCode:
    """Assert that `body` is the units' error envelope, sent with its code's status; the code."""
    assert isinstance(body, dict), body
    assert body["success"] is False, body
    error = body["error"]
    code = ErrorCode(error["code"])
    assert isinstance(error["message"], str) and error["message"], body
    assert "Traceback" not in error["message"], body
    assert isinstance(body["meta"]["request_id"], str), body
    assert status == http_status(code), (status, body)
    return code


class Loop:
    """One event loop, kept across the examples of a test, with a client of an app served on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()

    def run(self, work: Awaitable[T]) -> T:
        """Run `work` to completion on the loop."""
        return self._loop.run_until_complete(work)

    def request(
        self, client: TestClient[Any, Any], method: str, path: str, **options: Any
    ) -> tuple[int, str]:
        """The status and text of one request."""

        async def send() -> tuple[int, str]:
            async with client.request(method, path, **options) as response:
                return response.status, await response.text()

        return self.run(send())

    def close(self) -> None:
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()


@contextlib.contextmanager
def serving(make: Callable[[], Awaitable[web.Application]]) -> Iterator[tuple[Loop, TestClient[Any, Any]]]:
    """The app `make` builds (on the loop), served on 127.0.0.1, and a client of it."""
    loop = Loop()

    async def start() -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(await make(), host="127.0.0.1"))
        await client.start_server()
        return client

    try:
        client = loop.run(start())
        try:
            yield loop, client
        finally:
            loop.run(client.close())
    finally:
        loop.close()


def parsed(text: str) -> Any:
    """`text` as JSON, or the text itself when it is none (so an assertion shows it)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _without(value: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != key}
