"""The MCP door in-process, with the SDK's own client: generated tools, hints, modes, allow-list,
errors and resources (fake units, no cluster)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from mcp import Client, MCPError
from mcp.types import ListToolsResult
from pydantic import Field

from aima.api.common import ApiModel
from aima.doors.mcp import Policy, build_server, tool_name
from aima.doors.mcp.server import RESULT_LIMIT, instructions
from aima.kube import KubeClient
from aima.units import Context, Example, Input, Registry, UnitError, command, query, registry
from aima.units.errors import ErrorCode
from aima.units.schema import compact_schema

pytestmark = pytest.mark.unit


class Ref(Input):
    name: str = Field(min_length=1, max_length=63)
    """Name of the service."""
    namespace: str | None = None
    """Namespace; the default one when empty."""


class Listing(Input):
    namespace: str | None = None
    all_namespaces: bool = False
    many: int = 1


class Found(ApiModel):
    name: str
    namespace: str
    replicas: int = 1
    note: str | None = None


class Many(ApiModel):
    items: list[Found]


@query(
    "service.get",
    description="One fake service by name.",
    examples=[Example(description="x", input={"name": "a"})],
)
async def _get(context: Context, request: Ref) -> Found:
    if request.name == "missing":
        raise UnitError(
            ErrorCode.SERVICE_NOT_FOUND, "InferenceService missing not found", {"name": "missing"}
        )
    return Found(name=request.name, namespace=context.namespace_of(request.namespace))


@query("service.list", description="Fake services of a namespace.")
async def _list(context: Context, request: Listing) -> Many:
    namespace = context.namespace_of(request.namespace)
    return Many(items=[Found(name=f"s{i}", namespace=namespace) for i in range(request.many)])


@command("service.delete", description="Delete a fake service.", destructive=True, idempotent=True)
async def _delete(context: Context, request: Ref) -> Found:
    return Found(name=request.name, namespace=context.namespace_of(request.namespace), replicas=0)


@command("service.create", description="Create a fake service.")
async def _create(context: Context, request: Ref) -> Found:
    return Found(name=request.name, namespace=context.namespace_of(request.namespace))


@command("service.create", description="Create a fake service, reporting each of three stages.")
async def _create_slowly(context: Context, request: Ref) -> Found:
    for done in range(1, 4):
        await context.report(done, 3, f"stage {done} of 3")
    return Found(name=request.name, namespace=context.namespace_of(request.namespace))


FAKES = Registry([_get, _list, _delete, _create])
CONTEXT = Context(
    kube=cast(KubeClient, None), namespace="team-a", known_namespaces={"team-a", "team-b", "team-c", "team-x"}
)


def with_client(
    scenario: Callable[[Client], Awaitable[None]], *, policy: Policy | None = None, units: Registry = FAKES
) -> None:
    async def go() -> None:
        async with Client(
            build_server(units, lambda: CONTEXT, policy=policy), raise_exceptions=True
        ) as client:
            await scenario(client)

    asyncio.run(go())


def test_every_unit_of_the_registry_is_a_tool_with_its_schemas_and_hints() -> None:
    units = registry()

    async def scenario(client: Client) -> None:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {tool_name(u) for u in units}
        for unit in units:
            tool = tools[tool_name(unit)]
            assert tool.input_schema == compact_schema(unit.input)
            assert tool.output_schema is None  # the result is its JSON text, once
            hints = tool.annotations
            assert hints is not None
            # Only what differs from MCP's defaults: not read-only, destructive, not idempotent.
            assert bool(hints.read_only_hint) == unit.read_only
            assert (hints.destructive_hint is not False) == (unit.destructive or unit.read_only)
            assert bool(hints.idempotent_hint) == (unit.idempotent and not unit.read_only)
            assert unit.description in (tool.description or "")
        assert "Example:" in (tools["service_create"].description or "")  # modelRef's shape

    with_client(scenario, units=units)


def test_the_tool_list_fits_the_agents_budget() -> None:
    async def scenario(client: Client) -> None:
        listed = await client.list_tools()
        wire = ListToolsResult(tools=listed.tools).model_dump_json(by_alias=True, exclude_none=True)
        # About 6,700 tokens for 57 tools: a small part of an agent's context, kept so as each tool is added.
        assert len(wire) < 27_000
        assert "x-kubernetes" not in wire and "$defs" not in wire and '"title"' not in wire

    with_client(scenario, units=registry())


def test_compact_schemas_name_nested_fields_and_keep_what_a_call_needs() -> None:
    create = registry().get("service.create")
    assert create is not None
    schema = compact_schema(create.input)
    assert schema["required"] == ["modelRef", "name"]
    assert schema["properties"]["resources"]["description"].endswith(
        "; fields gpus, gpuProduct, requests, limits, sharedMemory"
    )
    assert schema["properties"]["replicas"] == {"type": "integer", "default": 1}
    assert schema["properties"]["namespace"] == {"type": "string"}


def test_a_call_returns_its_json_once_as_text() -> None:
    async def scenario(client: Client) -> None:
        result = await client.call_tool("service_get", {"name": "a"})
        assert result.is_error is False
        assert result.structured_content is None
        assert json.loads(result.content[0].text) == {"name": "a", "namespace": "team-a", "replicas": 1}  # type: ignore[union-attr]

    with_client(scenario)


def test_a_long_result_is_cut_and_says_how_to_get_all_of_it() -> None:
    async def scenario(client: Client) -> None:
        cut = await client.call_tool("service_list", {"many": 400})
        text = cut.content[0].text  # type: ignore[union-attr]
        assert len(text) <= RESULT_LIMIT
        body = json.loads(text)
        assert body["truncated"]["items"].endswith(" of 400 shown")
        assert "detail" in body["truncated"]["hint"]
        everything = await client.call_tool("service_list", {"many": 400, "detail": True})
        assert len(json.loads(everything.content[0].text)["items"]) == 400  # type: ignore[union-attr]

    with_client(scenario)


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"name": "missing"}, "SERVICE_NOT_FOUND"),
        ({"nam": "a"}, "INVALID_INPUT"),
        ({"name": ""}, "INVALID_INPUT"),
    ],
    ids=["unit error", "unknown field", "constraint"],
)
def test_failures_are_tool_errors_that_start_with_the_stable_code(
    arguments: dict[str, Any], code: str
) -> None:
    async def scenario(client: Client) -> None:
        result = await client.call_tool("service_get", arguments)
        assert result.is_error is True
        text = result.content[0].text  # type: ignore[union-attr]
        assert text.startswith(f"{code}: ")

    with_client(scenario)


def test_read_only_mode_offers_only_queries_and_no_destructive_drops_deletes() -> None:
    async def read_only(client: Client) -> None:
        assert {t.name for t in (await client.list_tools()).tools} == {"service_get", "service_list"}
        refused = await client.call_tool("service_create", {"name": "a"})
        assert refused.is_error is True
        text = refused.content[0].text  # type: ignore[union-attr]
        assert text.startswith("FORBIDDEN: service_create changes state, and this MCP server is read-only")
        assert "without --read-only" in text
        assert "read-only" in (client.instructions or "")

    async def careful(client: Client) -> None:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"service_get", "service_list", "service_create"}
        refused = await client.call_tool("service_delete", {"name": "a"})
        assert refused.content[0].text.startswith("FORBIDDEN: service_delete is destructive")  # type: ignore[union-attr]
        assert "no destructive tools" in (client.instructions or "")

    with_client(read_only, policy=Policy(read_only=True))
    with_client(careful, policy=Policy(allow_destructive=False))


def test_the_namespace_allow_list_confines_every_namespaced_call() -> None:
    async def scenario(client: Client) -> None:
        default = await client.call_tool("service_get", {"name": "a"})
        assert json.loads(default.content[0].text)["namespace"] == "team-b"  # type: ignore[union-attr]
        allowed = await client.call_tool("service_get", {"name": "a", "namespace": "team-c"})
        assert allowed.is_error is False
        other = await client.call_tool("service_delete", {"name": "a", "namespace": "kube-system"})
        assert other.is_error is True
        assert other.content[0].text.startswith("FORBIDDEN: Namespace kube-system")  # type: ignore[union-attr]
        everywhere = await client.call_tool("service_list", {"allNamespaces": True})
        assert everywhere.content[0].text.startswith("FORBIDDEN")  # type: ignore[union-attr]

    with_client(scenario, policy=Policy(namespaces=frozenset({"team-b", "team-c"})))


def test_resources_and_templates_read_through_the_query_units() -> None:
    async def scenario(client: Client) -> None:
        static = {str(r.uri) for r in (await client.list_resources()).resources}
        assert static == {"aima://services"}  # only addresses whose unit the registry has
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {
            "aima://services/{name}",
            "aima://services/{namespace}/{name}",
            "aima://namespaces/{namespace}/services",
        }
        other = await client.read_resource("aima://namespaces/team-b/services")
        assert json.loads(other.contents[0].text)["items"][0]["namespace"] == "team-b"  # type: ignore[union-attr]
        one = await client.read_resource("aima://services/team-x/web")
        assert json.loads(one.contents[0].text) == {"name": "web", "namespace": "team-x", "replicas": 1}  # type: ignore[union-attr]
        listed = await client.read_resource("aima://services")
        assert json.loads(listed.contents[0].text)["items"][0]["namespace"] == "team-a"  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="SERVICE_NOT_FOUND"):
            await client.read_resource("aima://services/missing")

    with_client(scenario)


def test_a_units_progress_reaches_the_client_as_notifications() -> None:
    heard: list[tuple[float, float | None, str | None]] = []

    async def listen(progress: float, total: float | None, message: str | None) -> None:
        heard.append((progress, total, message))

    async def scenario(client: Client) -> None:
        made = await client.call_tool("service_create", {"name": "web"}, progress_callback=listen)
        assert made.is_error is False, made.content

    with_client(scenario, units=Registry([_get, _create_slowly]))
    assert heard == [(1, 3, "stage 1 of 3"), (2, 3, "stage 2 of 3"), (3, 3, "stage 3 of 3")]


def test_the_legacy_handshake_works_too() -> None:
    async def go() -> None:
        server = build_server(FAKES, lambda: CONTEXT)
        async with Client(server, mode="legacy") as client:
            result = await client.call_tool("service_get", {"name": "a"})
            assert json.loads(result.content[0].text)["name"] == "a"  # type: ignore[union-attr]

    asyncio.run(go())


def test_the_instructions_say_once_what_every_tool_shares() -> None:
    said = instructions(Policy(namespaces=frozenset({"team-a", "team-b"})), namespace="team-a")
    assert "a tool's namespace is team-a when left empty (allowed: team-a, team-b)" in said
    assert '"detail": true' in said and f"{RESULT_LIMIT:,} characters" in said
    assert "<namespace>/<name>" in said  # how inference_* reaches another namespace's service
    assert "offers every tool" in instructions(Policy(), namespace="default")
