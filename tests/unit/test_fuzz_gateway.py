"""The gateway in-process, fuzzed: odd JSON, bytes that are no JSON, deep nesting and multipart bodies
with odd boundaries, with and without keys, to a route whose replica echoes, one whose replica is
gone and one still starting. No 5xx but the documented upstream ones, every error OpenAI's shape."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import example, given
from hypothesis import strategies as st

from aima.gateway import create_app, open_gateway
from aima.gateway.keys import ApiKey, KeyStore
from aima.gateway.routes import Backend, ServiceView, StaticRoutes
from aima.settings import Settings
from fakes.serving import running
from fuzzing import JSON, NOT_JSON, NOT_OBJECTS, Loop, fuzz, parsed, serving

pytestmark = pytest.mark.unit

KEY = "fuzz-key"
GONE = "http://127.0.0.1:9"
"""The discard port, closed on test machines: a replica that is gone."""
UPSTREAM = {502: "upstream_error", 503: "upstream_unreachable"}
"""The 5xx the gateway documents, for a replica that fails or that no connection reaches."""
STARTING = {503: "model_not_ready"}
JSON_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MODELS = st.sampled_from(["echo", "gone", "starting", "absent", ""]) | JSON
CREDENTIALS = st.sampled_from(
    [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {}, {"Authorization": "Bearer wrong"}]
)


def service(name: str) -> ServiceView:
    return ServiceView(
        name=name, namespace="ns", served_name=None, replicas=1, suspended=False, scale_from_zero=False
    )


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path, "bytes": len(await request.read())})


@pytest.fixture(params=[False, True], ids=["open", "with keys"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[Loop, TestClient[Any, Any]]]:
    """The gateway app routing `echo` to a replica that echoes, `gone` to a closed port and
    `starting` to a service with no ready replica yet; with keys, one key that may use them all."""
    keys = KeyStore([(KEY, ApiKey(name="fuzz"))]) if request.param else None

    async def make() -> web.Application:
        stack = contextlib.AsyncExitStack()
        backend = web.Application()
        backend.router.add_route("*", "/{path:.*}", echo)
        replica = await stack.enter_async_context(running(backend))
        routes = StaticRoutes(
            {
                "echo": Backend(service=service("echo"), endpoints=(replica,), model="echo"),
                "gone": Backend(service=service("gone"), endpoints=(GONE,), model="gone"),
                "starting": Backend(service=service("starting"), endpoints=(), model="starting"),
            }
        )
        proxy = await stack.enter_async_context(
            open_gateway(
                Settings(gateway_require_api_key=False, gateway_retry_after_seconds=1),
                kube=None,
                routes=routes,
                keys=keys,
            )
        )
        app = create_app(proxy)
        app.on_cleanup.append(lambda _: stack.aclose())
        return app

    with serving(make) as running_gateway:
        yield running_gateway


def check(status: int, text: str, *, model: Any) -> None:
    """A 2xx from the echoing replica, or an OpenAI error whose 5xx is a documented upstream one."""
    body = parsed(text)
    if status < 300:
        assert model == "echo" and isinstance(body, dict) and "bytes" in body, (status, body)
        return
    assert isinstance(body, dict) and set(body) == {"error"}, (status, body)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and isinstance(error["type"], str), body
    assert isinstance(error["code"], str) and (error["param"] is None or isinstance(error["param"], str)), (
        body
    )
    if status >= 500:
        documented = UPSTREAM if model == "gone" else STARTING if model == "starting" else {}
        assert documented.get(status) == error["code"], (model, status, body)


def nested(depth: int) -> bytes:
    return b'{"model": "echo", "messages": ' + b"[" * depth + b"]" * depth + b"}"


def test_json_routes_answer_any_body_with_a_reply_or_an_openai_error(
    gateway: tuple[Loop, TestClient[Any, Any]],
) -> None:
    loop, client = gateway
    fields = {"messages": JSON, "stream": JSON, "prompt": JSON, "input": JSON}
    objects = st.fixed_dictionaries({"model": MODELS}, optional=fields) | st.fixed_dictionaries(
        {}, optional=fields
    )

    @fuzz(100)
    @given(
        path=st.sampled_from(JSON_ROUTES),
        body=objects.map(lambda o: (o.get("model"), json.dumps(o).encode()))
        | (NOT_OBJECTS.map(lambda v: json.dumps(v).encode()) | NOT_JSON).map(lambda raw: (None, raw))
        | st.integers(1, 100_000).map(lambda depth: ("echo", nested(depth))),
        headers=CREDENTIALS,
    )
    @example(path=JSON_ROUTES[0], body=("gone", b'{"model": "gone"}'), headers={"X-API-Key": KEY})
    @example(path=JSON_ROUTES[0], body=("echo", nested(100_000)), headers={"X-API-Key": KEY})
    def post(path: str, body: tuple[Any, bytes], headers: dict[str, str]) -> None:
        model, raw = body
        headers = headers | {"Content-Type": "application/json"}
        check(*loop.request(client, "POST", path, data=raw, headers=headers), model=model)

    post()


def test_audio_uploads_with_odd_boundaries_answer_a_reply_or_an_openai_error(
    gateway: tuple[Loop, TestClient[Any, Any]],
) -> None:
    loop, client = gateway
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
    plain = st.text("abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?", min_size=1, max_size=70)

    @fuzz(100)
    @given(
        boundary=plain | printable,
        declared=st.booleans(),
        model=MODELS.map(str),
        parts=st.lists(st.tuples(printable, st.binary(max_size=40)), max_size=3),
        closed=st.booleans(),
        headers=CREDENTIALS,
    )
    def upload(
        boundary: str,
        declared: bool,
        model: str,
        parts: list[tuple[str, bytes]],
        closed: bool,
        headers: dict[str, str],
    ) -> None:
        fields = [("model", model.encode()), *parts]
        raw = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
            for name, value in fields
        ) + (f"--{boundary}--\r\n".encode() if closed else b"")
        kind = f"multipart/form-data; boundary={boundary}" if declared else "multipart/form-data"
        headers = headers | {"Content-Type": kind}
        status, text = loop.request(client, "POST", "/v1/audio/transcriptions", data=raw, headers=headers)
        check(status, text, model=model.strip())

    upload()


def test_the_model_list_answers_every_caller_with_a_list_or_an_openai_error(
    gateway: tuple[Loop, TestClient[Any, Any]],
) -> None:
    loop, client = gateway

    @fuzz(10)
    @given(headers=CREDENTIALS)
    def models(headers: dict[str, str]) -> None:
        status, text = loop.request(client, "GET", "/v1/models", headers=headers)
        if status == 200:
            assert [m["id"] for m in parsed(text)["data"]] == ["echo", "gone", "starting"]
        else:
            check(status, text, model=None)
            assert status == 401

    models()
