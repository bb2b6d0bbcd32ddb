"""The HTTP door without a cluster: envelope, routes, API keys, catalog, OpenAPI and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aima.doors.http import create_app
from aima.kube import KubeClient
from aima.units import Context, Example, Input, Registry, UnitError, command, query, registry
from aima.units.errors import ErrorCode

pytestmark = pytest.mark.unit


class Echo(Input):
    text: str


class Echoed(Input):
    text: str


@query(
    "test.echo", description="Echo the text back.", examples=[Example(description="hi", input={"text": "hi"})]
)
async def _echo(context: Context, request: Echo) -> Echoed:
    return Echoed(text=request.text)


@command("test.missing", description="Always fails with MODEL_NOT_FOUND.", destructive=True)
async def _missing(context: Context, request: Echo) -> Echoed:
    raise UnitError(ErrorCode.MODEL_NOT_FOUND, f"Model {request.text} not found", {"name": request.text})


@query("test.slow", description="Takes a second.")
async def _slow(context: Context, request: Echo) -> Echoed:
    await asyncio.sleep(1)
    return Echoed(text=request.text)


FAKES = Registry([_echo, _missing, _slow])


def serve(
    scenario: Callable[[TestClient[Any, Any]], Awaitable[None]],
    *,
    keys: tuple[str, ...] = (),
    units: Registry = FAKES,
) -> None:
    async def go() -> None:
        app = create_app(registry=units, context=Context(kube=cast(KubeClient, None)), api_keys=keys)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(go())


def test_execute_returns_the_envelope() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        response = await client.post(
            "/api/v2/execute", json={"type": "query", "unit": "test.echo", "input": {"text": "a"}}
        )
        assert response.status == 200
        body = await response.json()
        assert body["success"] is True
        assert body["data"] == {"text": "a"}
        assert set(body["meta"]) == {"request_id", "duration_ms", "unit"}

    serve(scenario)


def test_options_bound_the_time_and_carry_the_callers_trace_id() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        call = {"unit": "test.slow", "input": {"text": "s"}, "options": {"timeout_seconds": 0.05}}
        response = await client.post(
            "/api/v2/execute", json=call | {"options": call["options"] | {"trace_id": "t-1"}}
        )
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (504, "TIMEOUT")
        assert body["meta"]["trace_id"] == "t-1"
        echoed = await client.post(
            "/api/v2/execute",
            json={"unit": "test.echo", "input": {"text": "e"}, "options": {"trace_id": "t-2"}},
        )
        assert (await echoed.json())["meta"]["trace_id"] == "t-2"
        bad = await client.post("/api/v2/execute", json={"unit": "test.echo", "options": {"trace_id": "a b"}})
        assert bad.status == 400

    serve(scenario)


@pytest.mark.parametrize(
    ("path", "payload", "status", "code"),
    [
        ("/api/v2/query/test.echo", {"text": "b"}, 200, None),
        ("/api/v2/command/test.echo", {"text": "b"}, 400, "INVALID_INPUT"),
        ("/api/v2/command/test.missing", {"text": "m"}, 404, "MODEL_NOT_FOUND"),
        ("/api/v2/query/test.nope", {}, 404, "UNIT_NOT_FOUND"),
        ("/api/v2/query/test.echo", {}, 400, "INVALID_INPUT"),
        ("/api/v2/execute", {"input": {}}, 400, "INVALID_INPUT"),
    ],
    ids=["query", "query as command", "unit error", "unknown unit", "missing field", "envelope without unit"],
)
def test_routes_map_error_codes_to_statuses(path: str, payload: Any, status: int, code: str | None) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        response = await client.post(path, json=payload)
        body = await response.json()
        assert response.status == status, body
        assert body["success"] is (code is None)
        if code:
            assert body["error"]["code"] == code

    serve(scenario)


def test_a_body_that_is_not_json_is_invalid_input() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        response = await client.post("/api/v2/execute", data=b"{nope")
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "INVALID_INPUT"

    serve(scenario)


def test_api_keys_guard_the_api_but_not_health_and_metrics() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        missing = await client.post("/api/v2/query/test.echo", json={"text": "a"})
        assert missing.status == 401
        assert (await missing.json())["error"]["code"] == "UNAUTHORIZED"
        wrong = await client.get("/api/v2/units", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        bearer = await client.post(
            "/api/v2/query/test.echo", json={"text": "a"}, headers={"Authorization": "Bearer k2"}
        )
        assert bearer.status == 200
        header = await client.get("/api/v2/units", headers={"X-API-Key": "k1"})
        assert header.status == 200
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/metrics")).status == 200

    serve(scenario, keys=("k1", "k2"))


def test_the_catalog_lists_units_with_schemas_hints_and_examples() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        units = (await (await client.get("/api/v2/units")).json())["units"]
        assert len(units) == len(registry())
        pull = next(u for u in units if u["name"] == "model.pull")
        assert pull["type"] == "command"
        assert pull["readOnly"] is False
        assert {"name", "source", "type", "wait"} <= set(pull["inputSchema"]["properties"])
        assert pull["outputSchema"]["title"] == "Model"
        assert pull["examples"]
        one = await client.get("/api/v2/units/service.stop")
        assert (await one.json())["destructive"] is True
        assert (await client.get("/api/v2/units/nope")).status == 404

    serve(scenario, units=registry())


def test_openapi_has_one_operation_per_unit_with_resolvable_refs() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        document = await (await client.get("/openapi.json")).json()
        assert document["openapi"].startswith("3.1")
        paths = document["paths"]
        operations = {
            p["post"]["operationId"] for k, p in paths.items() if k.startswith("/api/v2/") and "post" in p
        }
        assert {u.name.replace(".", "_") for u in registry()} | {"execute", "runPipeline"} == operations
        served = {r.canonical for r in client.app.router.resources()} - {"/api/v2/{kind}/{unit}"}
        assert served - {"/openapi.json"} <= set(paths)  # every route the door serves is documented
        stop = document["paths"]["/api/v2/command/service.stop"]["post"]
        assert stop["x-aima-destructive"] is True
        for name in {r.split("/")[-1] for r in _refs(document)}:
            assert name in document["components"]["schemas"], name
        assert "ModelPull" in document["components"]["schemas"]

    serve(scenario, units=registry())


def test_metrics_count_calls_per_unit_and_code() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.post("/api/v2/query/test.echo", json={"text": "a"})
        await client.post("/api/v2/query/test.echo", json={"text": "a"})
        await client.post("/api/v2/command/test.missing", json={"text": "a"})
        text = await (await client.get("/metrics")).text()
        assert 'aima_unit_requests_total{unit="test.echo",type="query",code="OK"} 2' in text
        assert 'aima_unit_requests_total{unit="test.missing",type="command",code="MODEL_NOT_FOUND"} 1' in text
        assert 'aima_unit_request_duration_seconds_count{unit="test.echo"} 2' in text
        assert 'aima_unit_request_duration_seconds_bucket{unit="test.echo",le="+Inf"} 2' in text

    serve(scenario)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
