"""The units HTTP door fuzzed from its own OpenAPI document, against the real API server: for every
unit, bodies valid by the published input schema, bodies it refuses, and fields of any type. No
answer is a 5xx but the documented ones of an absent upstream, every error is the envelope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from aima.doors.http import create_app
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, ErrorCode, registry
from aima.units.schema import openapi
from aima_testenv import ControlPlane
from fuzzing import (
    DEEP,
    JSON,
    NOT_JSON,
    Loop,
    broken,
    check_unit_error,
    fuzz,
    instances,
    odd,
    parsed,
    serving,
    without_waits,
)

pytestmark = pytest.mark.integration

UNITS = registry()
DOCUMENT = openapi(UNITS)
DEFINITIONS = {"components": DOCUMENT["components"]}
UPSTREAM_CODES = {ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT}
"""The 5xx the door documents: the gateway (here absent, as on a cluster without one) is down or slow."""
CALLS_THE_GATEWAY = "inference"
CLOSED_PORT = "http://127.0.0.1:9"
"""The discard port, closed on test machines: where the gateway would be."""
CATALOG = Path(__file__).resolve().parents[2] / "catalog"


@pytest.fixture
def door(aima_crds: ControlPlane, namespace: str) -> Iterator[tuple[Loop, TestClient[Any, Any]]]:
    """The door of every unit, acting in this test's namespace, with no gateway to reach and no operator
    to wait for."""
    settings = Settings(catalog_dir=CATALOG, gateway_url=CLOSED_PORT, unit_settle_seconds=0)

    async def make() -> Any:
        kube = await connect(kubeconfig=aima_crds.kubeconfig)
        app = create_app(registry=UNITS, context=Context(kube=kube, settings=settings, namespace=namespace))
        app.on_cleanup.append(lambda _: kube.close())
        return app

    with serving(make) as running:
        yield running


@pytest.mark.parametrize("unit", [u.name for u in UNITS])
def test_every_unit_answers_any_body_below_500_or_with_the_envelope(
    unit: str, door: tuple[Loop, TestClient[Any, Any]], namespace: str
) -> None:
    loop, client = door
    path = f"/api/v2/{UNITS.get(unit).kind}/{unit}"  # type: ignore[union-attr]
    operation = DOCUMENT["paths"][path]["post"]
    schema = _resolved(operation["requestBody"]["content"]["application/json"]["schema"])

    def post(raw: bytes) -> tuple[int, Any]:
        status, text = loop.request(
            client, "POST", path, data=raw, headers={"Content-Type": "application/json"}
        )
        return status, parsed(text)

    def answered(status: int, body: Any) -> None:
        if status == 200:
            assert body["success"] is True and "data" in body, body
            return
        code = check_unit_error(status, body)
        assert status < 500 or (code in UPSTREAM_CODES and unit.startswith(CALLS_THE_GATEWAY)), body

    @fuzz(15)
    @given(body=instances(schema, definitions=DEFINITIONS))
    def valid(body: dict[str, Any]) -> None:
        if "namespace" in schema.get("properties", {}):
            body = body | {"namespace": namespace}  # a made-up one is only NAMESPACE_NOT_FOUND
        answered(*post(json.dumps(without_waits(body, schema)).encode()))

    @fuzz(15)
    @given(
        raw=broken(schema, definitions=DEFINITIONS).map(lambda v: json.dumps(v).encode()) | NOT_JSON | DEEP
    )
    def refused(raw: bytes) -> None:
        status, body = post(raw)
        assert check_unit_error(status, body) is ErrorCode.INVALID_INPUT

    @fuzz(15)
    @given(body=odd(schema) | st.just({}))
    def any_fields(body: dict[str, Any]) -> None:
        answered(*post(json.dumps(without_waits(body, schema)).encode()))

    valid()
    refused()
    any_fields()


def test_the_pipeline_run_route_answers_any_body_with_the_envelope(
    door: tuple[Loop, TestClient[Any, Any]],
) -> None:
    loop, client = door

    @fuzz(30)
    @given(raw=JSON.map(lambda v: json.dumps(v).encode()) | NOT_JSON | DEEP)
    def run(raw: bytes) -> None:
        status, text = loop.request(client, "POST", "/api/v2/pipelines/absent/run", data=raw)
        code = check_unit_error(status, parsed(text))
        assert code in (ErrorCode.INVALID_INPUT, ErrorCode.PIPELINE_NOT_FOUND), text

    run()


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """A `$ref` of the document's components, looked up."""
    ref = schema.get("$ref", "")
    return dict(DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[-1]]) if ref else schema
