"""The unit registry: names, schemas, examples, the envelope and error codes (no cluster)."""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

import pytest
from pydantic import BaseModel

from aima.kube import KubeClient, KubeError
from aima.settings import Settings
from aima.units import (
    Context,
    ErrorCode,
    Example,
    Input,
    Kind,
    Registry,
    Request,
    UnitError,
    command,
    execute,
    query,
    registry,
)
from aima.units.errors import exit_code, http_status

pytestmark = pytest.mark.unit

UNITS = list(registry())
EXPECTED = {
    "model.create", "model.pull", "model.import", "model.delete", "model.verify", "model.get", "model.list",
    "model.search", "model.estimate_resources",
    "engine.list", "engine.get", "engine.features",
    "service.create", "service.delete", "service.scale", "service.start", "service.stop", "service.get",
    "service.list", "service.logs", "service.recommend",
    "resource.status", "resource.can_allocate", "resource.allocations",
}  # fmt: skip
"""The units of issue 6 in the model, engine, service and resource domains; other domains add theirs."""
DESTRUCTIVE = {"model.delete", "service.delete", "service.stop"}


def test_the_registry_has_every_unit_of_the_issue() -> None:
    assert {u.name for u in UNITS} >= EXPECTED


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_every_unit_is_named_typed_documented_and_has_an_example_that_validates(unit: Any) -> None:
    assert re.fullmatch(r"[a-z]+\.[a-z_]+", unit.name)
    assert issubclass(unit.input, BaseModel)
    assert issubclass(unit.output, BaseModel)
    assert len(unit.description) > 20
    assert unit.examples
    for example in unit.examples:
        unit.input.model_validate(example.input)


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_every_unit_has_json_schemas_in_camel_case(unit: Any) -> None:
    schema = unit.input.model_json_schema(by_alias=True)
    assert schema["type"] == "object"
    assert all("_" not in name for name in schema.get("properties", {}))
    assert unit.output.model_json_schema(by_alias=True, mode="serialization")["type"] == "object"


def test_queries_are_read_only_and_deletes_and_stop_are_destructive() -> None:
    for unit in UNITS:
        assert unit.read_only == (unit.kind is Kind.QUERY)
        assert not (unit.read_only and unit.destructive), unit.name
        if unit.name in EXPECTED:
            assert unit.destructive == (unit.name in DESTRUCTIVE), unit.name


def test_unit_inputs_reject_unknown_fields_and_accept_snake_case() -> None:
    create = registry().get("model.create")
    assert create is not None
    parsed = create.input.model_validate(
        {"name": "m", "source": "hf://a/b", "type": "LLM", "secret_ref": "s"}
    )
    assert parsed.model_dump(exclude_unset=True)["secretRef"] == "s"
    with pytest.raises(ValueError, match="Extra inputs"):
        create.input.model_validate({"name": "m", "source": "hf://a/b", "type": "LLM", "sauce": 1})


def test_a_name_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Registry([UNITS[0], UNITS[0]])


def test_error_codes_map_to_http_statuses_and_exit_codes() -> None:
    assert http_status(ErrorCode.MODEL_NOT_FOUND) == 404
    assert http_status(ErrorCode.INVALID_INPUT) == 400
    assert http_status(ErrorCode.CONFLICT) == 409
    assert exit_code(ErrorCode.INTERNAL) == 1
    assert {http_status(c) for c in ErrorCode} <= {400, 401, 403, 404, 409, 500, 503, 504}


# A small registry of fake units to test the envelope without a cluster.


class Echo(Input):
    text: str
    times: int = 1


class Echoed(BaseModel):
    text: str


@query("test.echo", description="Echo the text.", examples=[Example(description="hi", input={"text": "hi"})])
async def _echo(context: Context, request: Echo) -> Echoed:
    return Echoed(text=request.text * request.times)


@command("test.fail", description="Fail the way the input says.")
async def _fail(context: Context, request: Echo) -> Echoed:
    if request.text == "missing":
        raise UnitError(ErrorCode.MODEL_NOT_FOUND, "Model x not found", {"name": "x"})
    if request.text == "refused":
        raise KubeError(status=422, reason="Invalid", message="spec.source: must start with hf://")
    if request.text == "conflict":
        raise KubeError(status=409, reason="AlreadyExists", message='models "x" already exists')
    raise RuntimeError("secret internals")


FAKES = Registry([_echo, _fail])
CONTEXT = Context(kube=cast(KubeClient, None), settings=Settings(), known_namespaces={"default"})


def run(unit: str, input_: dict[str, Any], type_: str | None = None) -> dict[str, Any]:
    request = Request.model_validate({"unit": unit, "input": input_, "type": type_})
    return asyncio.run(execute(FAKES, CONTEXT, request)).dump()


def test_a_success_carries_data_and_meta() -> None:
    response = run("test.echo", {"text": "ab", "times": 2}, "query")
    assert response["success"] is True
    assert response["data"] == {"text": "abab"}
    assert response["meta"]["request_id"].startswith("req_")
    assert response["meta"]["duration_ms"] >= 0
    assert "error" not in response


@pytest.mark.parametrize(
    ("unit", "input_", "type_", "code"),
    [
        ("test.nope", {}, None, "UNIT_NOT_FOUND"),
        ("test.echo", {"text": "a"}, "command", "INVALID_INPUT"),
        ("test.echo", {"times": "x"}, None, "INVALID_INPUT"),
        ("test.fail", {"text": "missing"}, None, "MODEL_NOT_FOUND"),
        ("test.fail", {"text": "refused"}, None, "INVALID_INPUT"),
        ("test.fail", {"text": "conflict"}, None, "CONFLICT"),
        ("test.fail", {"text": "crash"}, None, "INTERNAL"),
    ],
    ids=[
        "unknown unit",
        "wrong type",
        "invalid input",
        "unit error",
        "api server validation",
        "conflict",
        "crash",
    ],
)
def test_failures_become_error_envelopes_with_stable_codes(
    unit: str, input_: dict[str, Any], type_: str | None, code: str
) -> None:
    response = run(unit, input_, type_)
    assert response["success"] is False
    assert response["error"]["code"] == code
    assert response["error"]["message"]
    assert "data" not in response
    assert "secret internals" not in response["error"]["message"]


def test_invalid_input_names_the_field() -> None:
    response = run("test.echo", {"times": 2})
    assert "text" in response["error"]["message"]
    assert response["error"]["details"]["errors"][0]["loc"] == ["text"]


@pytest.mark.parametrize(
    ("input_", "message"),
    [
        (
            {"name": "chat", "modelRef": {"name": "tiny", "namespace": "team-b"}},
            "modelRef.namespace: unknown field; modelRef takes name",
        ),
        (
            {"name": "chat", "modelRef": {"name": "tiny"}, "scheduling": {"tolerations": [{"kee": "x"}]}},
            "scheduling.tolerations.0.kee: unknown field; scheduling.tolerations.0 takes effect, key,",
        ),
        ({"name": "chat", "modelRef": {"name": "tiny"}, "gpus": 1}, "gpus: unknown field; the input takes "),
    ],
    ids=["nested object", "list item", "top level"],
)
def test_unknown_fields_are_refused_at_every_depth_naming_the_fields_taken(
    input_: dict[str, Any], message: str
) -> None:
    request = Request(unit="service.create", input=input_)
    response = asyncio.run(execute(registry(), CONTEXT, request)).dump()
    assert response["error"]["code"] == "INVALID_INPUT"
    assert message in response["error"]["message"]


class _NoNamespaces:
    """An API server where no namespace exists (and nothing else is asked)."""

    async def get(self, resource: Any, *, name: str, namespace: str | None = None) -> None:
        assert resource.plural == "namespaces", resource
        return None


def test_a_namespace_that_does_not_exist_is_said_at_the_first_call() -> None:
    context = Context(kube=cast(KubeClient, _NoNamespaces()), settings=Settings())
    request = Request(unit="service.list", input={"namespace": "team-x"})
    error = asyncio.run(execute(registry(), context, request)).error
    assert error is not None and error.code == "NAMESPACE_NOT_FOUND"
    assert error.message.startswith("Namespace team-x does not exist; name one that does")
    assert "kubectl create namespace team-x" in error.message


class Conditioned(BaseModel):
    status: dict[str, Any]


@query("test.conditions", description="An object whose conditions explain one wait three times.")
async def _conditions(context: Context, request: Echo) -> Conditioned:
    why = "needs 8 nvidia.com/gpu on one node, but no node has that many free"
    return Conditioned(
        status={
            "conditions": [
                {"type": "Scheduled", "status": "False", "message": why},
                {"type": "Ready", "status": "False", "message": why},
                {"type": "Reconciling", "status": "True", "message": why},
                {"type": "ModelReady", "status": "True", "message": "Model tiny is ready"},
            ]
        }
    )


def test_a_message_said_by_one_condition_is_not_said_again() -> None:
    response = asyncio.run(
        execute(Registry([_conditions]), CONTEXT, Request(unit="test.conditions", input={"text": "x"}))
    )
    messages = [c["message"] for c in response.dump()["data"]["status"]["conditions"]]
    assert messages == [
        "needs 8 nvidia.com/gpu on one node, but no node has that many free",
        "As Scheduled",
        "As Scheduled",
        "Model tiny is ready",
    ]
